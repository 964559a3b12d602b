"""Generated mask id maps and the mask-PNG folders written from them."""

import numpy as np

from wsovvis_dagster.masks_io import write_mask_pngs


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


