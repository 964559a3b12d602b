"""Seeded fuzzing of the readers and converters: only typed `WsovvisError`s may come out.

Each test draws a bounded number of cases (`CASES`) from a fixed seed, so a failure replays
exactly; the case index is in the assertion message.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsovvis_dagster.errors import MaskFormatError, UnsafeNameError, WsovvisError
from wsovvis_dagster.masks.png_io import MAX_ID, list_mask_files, load_id_map, write_mask_pngs
from wsovvis_dagster.paths import VideoRef, check_video_id, resolve_inside
from wsovvis_dagster.video.frames import FrameError, list_frame_files, load_frame, natural_key
from wsovvis_dagster.ytvis.tubes import (
    decode_video_id_maps,
    read_mask_folder,
    video_tubes_from_masks,
    write_tube_json,
)

CASES = 200
DAVIS_FRAME = (Path(__file__).resolve().parents[2] / "shared" / "data" / "davis" / "JPEGImages"
               / "horsejump-high" / "00000.jpg")


def _encode(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    """Valid files to mutate: a real JPEG (small copy of a DAVIS frame where present) and PNGs."""
    rng = np.random.default_rng(0)
    if DAVIS_FRAME.exists():
        base = Image.open(DAVIS_FRAME).convert("RGB").resize((96, 54))
    else:
        base = Image.fromarray(rng.integers(0, 255, (54, 96, 3), dtype=np.uint8))
    ids8 = Image.fromarray(rng.integers(0, 6, (24, 32), dtype=np.uint8), mode="L")
    ids16 = Image.fromarray(rng.integers(0, 900, (24, 32)).astype(np.uint16))
    return {"jpeg": _encode(base, "JPEG"), "png_rgb": _encode(base, "PNG"),
            "png_ids8": _encode(ids8, "PNG"), "png_ids16": _encode(ids16, "PNG")}


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """Bit flips, cuts, inserted junk, or a damaged header."""
    b = bytearray(data)
    kind = rng.choice(["flip", "cut", "insert", "header", "random"])
    if kind == "random" or not b:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "cut":
        b = b[: rng.randrange(len(b))]
    elif kind == "insert":
        at = rng.randrange(len(b))
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(min(len(b), 40))] = rng.randrange(256)
    return bytes(b)


def test_frame_reader_gives_an_image_or_frame_error(seeds, tmp_path):
    rng = random.Random(1)
    path = tmp_path / "frame.jpg"
    for case in range(CASES):
        path.write_bytes(_mutate(rng, seeds[rng.choice(sorted(seeds))]))
        try:
            img = load_frame(path)
        except FrameError as exc:
            assert str(path) in str(exc), case
            continue
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, case


def test_mask_reader_gives_an_id_map_or_mask_format_error(seeds, tmp_path):
    rng = random.Random(2)
    path = tmp_path / "mask_00000.png"
    for case in range(CASES):
        path.write_bytes(_mutate(rng, seeds[rng.choice(["png_ids8", "png_ids16", "jpeg"])]))
        try:
            ids = load_id_map(path)
        except MaskFormatError as exc:
            assert str(path) in str(exc), case
            continue
        assert ids.ndim == 2 and ids.dtype.kind in "ui" and int(ids.max(initial=0)) <= MAX_ID


def test_converter_on_damaged_mask_folders_raises_only_typed_errors(seeds, tmp_path):
    rng = random.Random(3)
    for case in range(CASES // 2):
        folder = tmp_path / f"v{case}"
        maps = [np.full((24, 32), 1 + t % 3, np.uint8) for t in range(3)]
        write_mask_pngs(folder, ["0", "1", "2"], maps, {1: 0.9, 2: 0.8, 3: 0.7})
        victim = rng.choice([*list_mask_files(folder), folder / "tracks.json"])
        if victim.name == "tracks.json" and rng.random() < 0.5:
            victim.write_text(json.dumps(rng.choice(
                [[], {"scores": []}, {"scores": {"x": 1}}, {"scores": {"1": "high"}}, None, 3])))
        else:
            victim.write_bytes(_mutate(rng, victim.read_bytes()))
        try:
            video_tubes_from_masks(folder, "v")
        except WsovvisError:
            pass


def _random_id_maps(rng: np.random.Generator) -> tuple[np.ndarray, dict[int, float]]:
    t, h, w = (int(x) for x in rng.integers(1, [4, 33, 33], endpoint=True))
    top = int(rng.choice([1, 3, 255, 256, 1000, MAX_ID]))
    n_ids = int(rng.integers(1, min(top, 400), endpoint=True))
    ids = np.unique(rng.integers(1, top, n_ids, endpoint=True))
    maps = np.where(rng.random((t, h, w)) < 0.3, 0, rng.choice(ids, (t, h, w)))
    dtype = rng.choice([np.uint8, np.uint16, np.int32, np.int64]) if top <= 255 else \
        rng.choice([np.uint16, np.int32, np.int64])
    return maps.astype(dtype), {int(i): float(rng.random()) for i in ids}


def test_random_id_maps_round_trip_through_pngs_and_tube_json(tmp_path):
    rng = np.random.default_rng(4)
    for case in range(CASES):
        maps, scores = _random_id_maps(rng)
        folder = tmp_path / "masks" / f"v{case}"
        stems = [f"{int(s):05d}" for s in np.sort(rng.choice(100000, len(maps), replace=False))]
        write_mask_pngs(folder, stems, list(maps), scores)
        got_stems, got = read_mask_folder(folder)
        assert got_stems == stems and np.array_equal(got, maps), case
        tube_path = tmp_path / "tubes.json"
        write_tube_json(tube_path, [video_tubes_from_masks(folder, f"v{case}")])
        data = json.loads(tube_path.read_text())
        assert np.array_equal(decode_video_id_maps(data, 1), maps), case


def test_id_maps_that_no_png_holds_are_refused(tmp_path):
    rng = np.random.default_rng(5)
    for case in range(CASES // 4):
        maps = rng.integers(-3, 70000, (2, 5, 5))
        bad = maps.min() < 0 or maps.max() > MAX_ID
        try:
            write_mask_pngs(tmp_path / f"v{case}", ["0", "1"], list(maps),
                            {int(i): 0.5 for i in np.unique(maps) if 0 < i <= MAX_ID})
        except MaskFormatError:
            assert bad, case
            assert not (tmp_path / f"v{case}").exists()
        else:
            assert not bad, case


_ALPHABET = ("abcXYZ019_-. /\\\n\t\x00,:*?\"<>|" "éüßΩ日本語ビデオ٣𝟘" "\u0301\u200d\u202e\ufeff"
             "\udcff")


def test_random_video_ids_are_accepted_only_when_safe(tmp_path):
    rng = random.Random(6)
    (tmp_path / "root").mkdir()
    for case in range(CASES):
        vid = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.05:
            vid = vid * 40
        try:
            assert check_video_id(vid) == vid
        except UnsafeNameError:
            continue
        assert ".." not in vid and not vid.startswith(("-", ".")), (case, vid)
        assert not any(c in vid for c in "/\\\n\t\x00 ,:"), (case, vid)
        ref = VideoRef("val", vid)
        assert VideoRef.from_partition_key(ref.partition_key) == ref
        folder = resolve_inside(tmp_path / "root", vid)
        folder.mkdir(exist_ok=True)  # a real folder name on this file system
        assert folder.parent == (tmp_path / "root").resolve()


def test_random_frame_names_sort_and_list_without_crashing(tmp_path):
    rng = random.Random(7)
    pieces = ["0", "00", "7", "10", "007", "٣", "𝟘", "a", "B", "_", "-", ".", "é", "frame"]
    for case in range(CASES // 4):
        folder = tmp_path / f"v{case}"
        folder.mkdir()
        names = {"".join(rng.choice(pieces) for _ in range(rng.randint(1, 5)))
                 + rng.choice([".jpg", ".JPG", ".png", ".txt", ""]) for _ in range(12)}
        for name in names - {".", ".."}:
            (folder / name).write_bytes(b"")
        try:
            files = list_frame_files(folder)
        except FrameError as exc:  # two frames with one stem
            assert "share the stem" in str(exc), case
            continue
        keys = [natural_key(p.name) for p in files]
        assert keys == sorted(keys), case
        assert all(not p.name.startswith(".") for p in files)
