"""Generated mask id maps and the mask-PNG folders written from them."""

import filecmp

import numpy as np

from wsovvis_dagster.masks.png_io import write_mask_pngs


def blobs(rng, t, h, w, n_ids, dtype=np.uint8) -> np.ndarray:
    """`(t, h, w)` id maps: random rectangles per frame, some ids absent in some frames."""
    maps = np.zeros((t, h, w), dtype=dtype)
    for f in range(t):
        for k in rng.permutation(np.arange(1, n_ids + 1))[: rng.integers(1, n_ids + 1)]:
            y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
            maps[f, y : y + rng.integers(2, h // 2), x : x + rng.integers(2, w // 2)] = k
    return maps


def write_video(folder, id_maps, scores=None):
    stems = [f"{i:05d}" for i in range(id_maps.shape[0])]
    ids = [int(i) for i in np.unique(id_maps) if i]
    write_mask_pngs(folder, stems, list(id_maps), scores or {i: 1 - i / 1000 for i in ids})




def assert_identical_to_reference(data, out, ref_root, keys) -> None:
    """Each video's mask folder under `out` equals, file for file and byte for byte, the cpu
    predictor's uninterrupted one-host output (written under `ref_root`)."""
    from wsovvis_dagster.masks.segment import segment_video
    from wsovvis_dagster.paths import VideoRef, masks_dir
    from wsovvis_dagster.predictors.cpu import CpuVideoPredictor

    for key in keys:
        ref = VideoRef.from_partition_key(key)
        segment_video(data, ref_root, ref, CpuVideoPredictor(max_tracks=10))
        got, want = masks_dir(out, ref), masks_dir(ref_root, ref)
        cmp = filecmp.dircmp(got, want)
        assert cmp.common_files and not cmp.left_only and not cmp.right_only, key
        _, mismatch, errors = filecmp.cmpfiles(got, want, cmp.common_files, shallow=False)
        assert not mismatch and not errors, (key, mismatch)
