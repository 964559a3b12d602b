"""Ground-truth tubes -> mask PNGs -> tube JSON -> decoded masks: exactly the originals."""

import numpy as np
from PIL import Image

from wsovvis_dagster.masks_io import write_mask_pngs
from wsovvis_dagster.ytvis.tubes import (
    decode_video_id_maps,
    load_tube_json,
    video_tubes_from_masks,
    write_tube_json,
)


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
