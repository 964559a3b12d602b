"""Mask PNGs <-> tube JSON: exact round trips (ground-truth tubes -> PNGs -> tube JSON ->
decoded masks), the one-pass encoder, parallel conversion and optional linking."""

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mask_maps import blobs, write_video
from wsovvis_dagster.errors import MaskFormatError, TubeFormatError
from wsovvis_dagster.masks.png_io import write_mask_pngs
from wsovvis_dagster.ytvis.linking import LinkParams
from wsovvis_dagster.ytvis.tubes import (
    convert_mask_folders,
    decode_video_id_maps,
    default_workers,
    encode_id_map,
    load_tube_json,
    video_tubes_from_masks,
    write_tube_json,
)


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (5, 6), (31, 17)])
def test_encoder_equals_pycocotools_per_id(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        frame = rng.integers(0, 4, size=shape)
        if trial % 2:
            frame = frame * 300  # 16-bit ids
        ids, rles, areas, boxes = encode_id_map(frame)
        assert ids.tolist() == [int(i) for i in np.unique(frame) if i]
        for k, i in enumerate(ids):
            ref = mask_utils.encode(np.asfortranarray((frame == i).astype(np.uint8)))
            assert rles[k]["counts"] == ref["counts"].decode()
            assert rles[k]["size"] == list(shape)
            assert areas[k] == mask_utils.area(ref)
            assert boxes[k].tolist() == mask_utils.toBbox(ref).tolist()


def test_tube_json_to_pngs_to_tube_json_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    first = tmp_path / "first.json"
    for v in range(2):
        write_video(tmp_path / "masks" / f"v{v}", blobs(rng, 5, 24, 32, 4))
    items = [(tmp_path / "masks" / f"v{v}", f"v{v}") for v in range(2)]
    write_tube_json(first, convert_mask_folders(items))
    data = load_tube_json(first)

    # decode the JSON back to PNGs (scores from the JSON), then convert those again
    for video in data["videos"]:
        id_maps = decode_video_id_maps(data, video["id"])
        scores = {a["track_id"]: a["score"] for a in data["annotations"]
                  if a["video_id"] == video["id"]}
        write_video(tmp_path / "again" / video["name"], id_maps, scores)
    again = tmp_path / "again.json"
    write_tube_json(again, convert_mask_folders(
        [(tmp_path / "again" / v["name"], v["name"]) for v in data["videos"]]))
    assert load_tube_json(again) == data
    assert sum(s is None for a in data["annotations"] for s in a["segmentations"]) > 0


def test_parallel_conversion_keeps_input_order(tmp_path):
    rng = np.random.default_rng(1)
    items = []
    for v in range(7):
        write_video(tmp_path / f"v{v}", blobs(rng, 3 + v % 3, 16, 20, 3))
        items.append((tmp_path / f"v{v}", f"video{v}"))
    serial = list(convert_mask_folders(items, workers=1))
    parallel = list(convert_mask_folders(items, workers=2, chunksize=2))
    assert [v.name for v in parallel] == [f"video{v}" for v in range(7)]
    assert parallel == serial


def test_default_conversion_processes_follow_the_cores_and_the_videos(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert default_workers(100) == 8 and default_workers(3) == 3 and default_workers(0) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_workers(100) == 2


def test_parallel_conversion_reraises_a_video_error(tmp_path):
    write_video(tmp_path / "good", blobs(np.random.default_rng(2), 2, 8, 8, 2))
    (tmp_path / "empty").mkdir()
    items = [(tmp_path / "good", "good"), (tmp_path / "empty", "empty")]
    with pytest.raises(MaskFormatError, match="no mask_"):
        list(convert_mask_folders(items, workers=2))


def test_linking_option_relinks_and_keeps_source_ids(tmp_path):
    maps = np.zeros((4, 20, 40), dtype=np.uint8)
    for t in range(4):  # one square moving right; its id changes every frame
        maps[t, 5:15, 2 + 2 * t : 12 + 2 * t] = t + 1
    write_video(tmp_path / "v", maps, {1: 0.9, 2: 0.7, 3: 0.5, 4: 0.3})
    plain = video_tubes_from_masks(tmp_path / "v", "v")
    assert len(plain.tubes) == 4 and plain.tubes[0].source_ids is None
    linked = video_tubes_from_masks(tmp_path / "v", "v", linking=LinkParams())
    (tube,) = linked.tubes
    assert tube.source_ids == [1, 2, 3, 4]
    assert tube.score == pytest.approx(0.6)  # mean of its fragments' scores
    write_tube_json(tmp_path / "t.json", [linked])
    assert load_tube_json(tmp_path / "t.json")["annotations"][0]["source_ids"] == [1, 2, 3, 4]


def _random_id_maps(rng, t, h, w, n_ids):
    """Blocky random id maps with `n_ids` tracks; some tracks skip frames."""
    base = rng.integers(0, n_ids + 1, size=(t, h // 4, w // 4))
    maps = np.kron(base, np.ones((1, 4, 4), dtype=np.int64))
    maps[1][maps[1] == 1] = 0  # track 1 absent in frame 1 -> a null segmentation
    return maps.astype(np.uint16)


def _roundtrip(tmp_path, id_maps):
    stems = [f"{i * 5:05d}" for i in range(id_maps.shape[0])]  # non-contiguous frame names
    scores = {int(i): 1.0 - int(i) / 1e5 for i in np.unique(id_maps) if i}
    folder = tmp_path / "masks" / "v1"
    summary = write_mask_pngs(folder, stems, list(id_maps), scores)
    write_tube_json(tmp_path / "tubes.json", [video_tubes_from_masks(folder, "v1")])
    data = load_tube_json(tmp_path / "tubes.json")
    return summary, folder, stems, data


def test_roundtrip_is_exact(tmp_path):
    id_maps = _random_id_maps(np.random.default_rng(0), 5, 48, 64, 6)
    summary, folder, stems, data = _roundtrip(tmp_path, id_maps)
    assert not summary.sixteen_bit
    assert Image.open(folder / f"mask_{stems[0]}.png").mode == "L"
    assert np.array_equal(decode_video_id_maps(data, 1), id_maps)
    assert data["videos"][0]["file_names"] == [f"v1/{s}.jpg" for s in stems]
    track1 = next(a for a in data["annotations"] if a["track_id"] == 1)
    assert track1["segmentations"][1] is None and track1["areas"][1] is None
    assert isinstance(track1["segmentations"][0]["counts"], str)


def test_roundtrip_over_255_ids_uses_16_bit(tmp_path):
    rng = np.random.default_rng(1)
    id_maps = np.zeros((3, 40, 40), dtype=np.uint16)
    ids = rng.permutation(np.arange(1, 301))  # 300 distinct tracks, ids up to 300
    for t in range(3):
        id_maps[t].flat[rng.choice(1600, size=300, replace=False)] = ids
    summary, folder, stems, data = _roundtrip(tmp_path, id_maps)
    assert summary.sixteen_bit and summary.tracks == 300
    assert Image.open(folder / f"mask_{stems[0]}.png").mode == "I;16"
    assert len(data["annotations"]) == 300
    assert np.array_equal(decode_video_id_maps(data, 1), id_maps)


def test_scores_travel_with_tracks(tmp_path):
    id_maps = _random_id_maps(np.random.default_rng(2), 3, 32, 32, 3)
    _, _, _, data = _roundtrip(tmp_path, id_maps)
    scores = {a["track_id"]: a["score"] for a in data["annotations"]}
    assert scores == {i: 1.0 - i / 1e5 for i in scores}


def test_truncated_tube_json_is_a_typed_error_naming_the_file(tmp_path):
    path = tmp_path / "tubes_val.json"
    path.write_text('{"videos": [{"id": 1, "name": "v"')
    with pytest.raises(TubeFormatError) as err:
        load_tube_json(path)
    assert str(path) in str(err.value)


def test_mask_folder_with_garbage_is_a_typed_error(tmp_path):
    folder = tmp_path / "v"
    write_mask_pngs(folder, ["0", "1"], [np.ones((3, 3), np.uint8)] * 2, {1: 0.9})
    (folder / "mask_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(MaskFormatError, match="mask_1.png"):
        video_tubes_from_masks(folder, "v")
    (folder / "mask_1.png").unlink()
    (folder / "tracks.json").write_text('{"scores": [1, 2]}')
    with pytest.raises(MaskFormatError, match="tracks.json is malformed"):
        video_tubes_from_masks(folder, "v")
