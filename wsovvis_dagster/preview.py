"""Small overlay montages of masks on frames, for asset metadata previews."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def palette(n: int) -> np.ndarray:
    """`(n + 1, 3) uint8` distinct colours; index 0 (background) is black."""
    rng = np.random.default_rng(12345)
    colours = rng.integers(60, 256, size=(max(n, 1) + 1, 3)).astype(np.uint8)
    colours[0] = 0
    return colours


def overlay_montage(
    frames: np.ndarray, id_maps: np.ndarray, *, count: int = 4, tile_width: int = 160
) -> bytes:
    """PNG bytes of `count` evenly spaced frames `(T, H, W, 3)` with ids `(T, H, W)` overlaid."""
    t = frames.shape[0]
    picks = np.unique(np.linspace(0, t - 1, num=min(count, t)).round().astype(int))
    colours = palette(int(id_maps.max()))
    tiles = []
    for i in picks:
        ids = id_maps[i].astype(np.int64)
        blend = frames[i].astype(np.float32)
        fg = ids > 0
        blend[fg] = 0.45 * blend[fg] + 0.55 * colours[ids[fg]]
        img = Image.fromarray(blend.astype(np.uint8))
        h = max(1, round(img.height * tile_width / img.width))
        tiles.append(np.asarray(img.resize((tile_width, h), Image.BILINEAR)))
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(tiles, axis=1)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
