"""`wsovvis_dagster.masks.png_io`: bit depth, long names, concurrent writers and write errors."""

from __future__ import annotations

import errno
import json
import threading

import numpy as np
import pytest
from PIL import Image

from video_files import tree_bytes
from wsovvis_dagster import atomic
from wsovvis_dagster.errors import (
    MaskFormatError,
    OutputWriteError,
)
from wsovvis_dagster.masks.png_io import list_mask_files, load_id_map, write_mask_pngs


def test_ids_beyond_the_declared_bit_depth_are_refused_not_wrapped(tmp_path):
    maps = [np.full((4, 5), 300, np.uint16)]  # 300 would wrap to 44 in an 8-bit PNG
    with pytest.raises(MaskFormatError, match="do not fit 0..255"):
        write_mask_pngs(tmp_path / "m", ["00000"], maps, {1: 0.5})
    with pytest.raises(MaskFormatError, match="not integer"):
        write_mask_pngs(tmp_path / "m", ["00000"], [np.full((4, 5), 1.5)], {1: 0.5})
    assert not (tmp_path / "m").exists()


def test_longest_unicode_id_fits_the_writers_temp_names(tmp_path):
    vid = "日" * 66  # 198 UTF-8 bytes: the longest accepted; temp names must still fit NAME_MAX
    maps = [np.zeros((2, 2), np.uint8)]
    write_mask_pngs(tmp_path / vid, ["0"], maps, {})
    assert [p.name for p in list_mask_files(tmp_path / vid)] == ["mask_0.png"]


def test_concurrent_writers_of_one_folder_never_mix_and_never_vanish(tmp_path):
    """Two writers with different content interleave frame by frame; a reader polls meanwhile."""
    target = tmp_path / "masks" / "v"
    write_mask_pngs(target, ["0", "1", "2"], [np.zeros((4, 4), np.uint8)] * 3, {})
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    stop = threading.Event()
    seen: list[int] = []

    def writer(value: int):
        def maps():
            for _ in range(3):
                barrier.wait(timeout=30)  # lockstep: both temp folders are half full together
                yield np.full((4, 4), value, np.uint8)

        try:
            write_mask_pngs(target, ["0", "1", "2"], maps(), {value: 0.5})
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    def reader():
        while not stop.is_set():
            if not target.is_dir():  # the swap is one atomic exchange: never a gap
                errors.append(AssertionError(f"{target} vanished during a swap"))
            seen.append(1)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (7, 9)]
    poll = threading.Thread(target=reader if atomic._renameat2 else stop.wait)
    poll.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    poll.join(60)
    assert not errors, errors
    values = {int(np.unique(load_id_map(f))[0]) for f in list_mask_files(target)}
    assert values in ({7}, {9})  # one writer's folder, whole
    assert json.loads((target / "tracks.json").read_text())["scores"] == {str(values.pop()): 0.5}


def test_write_mask_pngs_translates_write_errors(tmp_path, monkeypatch):
    import wsovvis_dagster.masks.png_io as masks_io

    target = tmp_path / "v"
    write_mask_pngs(target, ["0"], [np.ones((3, 3), np.uint8)], {1: 0.9})
    before = tree_bytes(target)
    calls = []

    def flaky(path, id_map, *, sixteen_bit):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        Image.fromarray(id_map.astype(np.uint8)).save(path)

    monkeypatch.setattr(masks_io, "save_id_map", flaky)
    with pytest.raises(OutputWriteError, match="No space left on device") as err:
        write_mask_pngs(target, ["0", "1"], [np.full((3, 3), 2, np.uint8)] * 2, {1: .5, 2: .5})
    assert isinstance(err.value, OSError)  # callers catching OSError keep working
    assert tree_bytes(target) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
