"""Small overlay montages of masks on frames, for asset metadata previews."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PREVIEW_MIME = "image/jpeg"


def palette(n: int) -> np.ndarray:
    """`(n + 1, 3) uint8` distinct bright colours; index 0 (background) is black."""
    rng = np.random.default_rng(12345)
    colours = rng.integers(80, 256, size=(max(n, 1) + 1, 3)).astype(np.uint8)
    colours[0] = 0
    return colours


def _boundaries(ids: np.ndarray) -> np.ndarray:
    """`(H, W)` bool: pixels of a track whose 4-neighbour has another id."""
    edge = np.zeros(ids.shape, dtype=bool)
    edge[1:] |= ids[1:] != ids[:-1]
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return edge & (ids > 0)


def montage_picks(num_frames: int, count: int = 4) -> list[int]:
    """The evenly spaced frame indices a montage of `count` tiles shows (first and last)."""
    return np.unique(np.linspace(0, num_frames - 1, num=min(count, num_frames)).round()
                     .astype(int)).tolist()


def overlay_montage(
    frames: np.ndarray, id_maps: np.ndarray, *, count: int = 4, tile_width: int = 200
) -> bytes:
    """JPEG bytes of `count` evenly spaced frames `(T, H, W, 3)` with ids `(T, H, W)` overlaid.

    The background is dimmed and each track is tinted and outlined in its colour, so masks stay
    visible over saturated objects. JPEG keeps the event log small (~15 KB per video).
    """
    picks = montage_picks(frames.shape[0], count)
    return montage_tiles([frames[i] for i in picks], [id_maps[i] for i in picks],
                         tile_width=tile_width)


def montage_tiles(
    frames: list[np.ndarray], id_maps: list[np.ndarray], *, tile_width: int = 200
) -> bytes:
    """`overlay_montage` of the picked frames only: `(H, W, 3)` frames with `(H, W)` ids, side
    by side (what a loop that streams a video keeps for its preview)."""
    colours = palette(max((int(m.max()) for m in id_maps), default=0)).astype(np.float32)
    tiles = []
    for i in range(len(frames)):
        img = Image.fromarray(frames[i])
        h = max(1, round(img.height * tile_width / img.width))
        small = np.asarray(img.resize((tile_width, h), Image.BILINEAR)).astype(np.float32)
        ids = np.asarray(
            Image.fromarray(id_maps[i].astype(np.int32)).resize((tile_width, h), Image.NEAREST)
        ).astype(np.int64)
        fg = ids > 0
        out = small * 0.45  # dimmed background
        out[fg] = 0.5 * small[fg] + 0.5 * colours[ids[fg]]
        edge = _boundaries(ids)
        out[edge] = colours[ids[edge]]
        tiles.append(out.clip(0, 255).astype(np.uint8))
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(tiles, axis=1)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()
