"""Mask PNGs: one integer id map per frame, `mask_<frame stem>.png`.

Pixel value = track id (0 = background). 8-bit greyscale while every id fits, 16-bit
greyscale when any id exceeds 255. A `tracks.json` beside the PNGs keeps each id's score.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsovvis_dagster.atomic import atomic_dir
from wsovvis_dagster.errors import MaskFormatError
from wsovvis_dagster.frames import natural_key

MASK_PREFIX = "mask_"
TRACKS_FILE = "tracks.json"
MAX_ID = 65535


def mask_png_name(stem: str) -> str:
    return f"{MASK_PREFIX}{stem}.png"


def save_id_map(path: Path, id_map: np.ndarray, *, sixteen_bit: bool) -> None:
    """Save `(H, W)` integer ids losslessly as an 8- or 16-bit greyscale PNG."""
    if sixteen_bit:
        img = Image.fromarray(id_map.astype(np.uint16))  # PIL mode I;16
    else:
        img = Image.fromarray(id_map.astype(np.uint8), mode="L")
    img.save(path, format="PNG", optimize=False, compress_level=1)


def load_id_map(path: Path) -> np.ndarray:
    """Read one mask PNG as `(H, W)` integer ids (uint8 or uint16)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I;16", "I"):
                raise MaskFormatError(
                    f"mask {path} has mode {img.mode}: expected a greyscale or palette id map "
                    "(8-bit L/P or 16-bit I;16); re-run mask_pngs for this video"
                )
            arr = np.asarray(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise MaskFormatError(
            f"cannot read mask {path}: {exc}; delete the video's mask folder and re-run mask_pngs"
        ) from exc
    if arr.ndim != 2:
        raise MaskFormatError(f"mask {path} is not a single-channel id map (shape {arr.shape})")
    if arr.dtype.kind not in "ui" or (arr.size and (arr.min() < 0 or arr.max() > MAX_ID)):
        raise MaskFormatError(f"mask {path} holds ids outside 0..{MAX_ID}")
    return arr


@dataclass(frozen=True)
class MaskWriteSummary:
    frames: int
    tracks: int
    mean_area: float  # mean pixels per (track, frame where present)
    sixteen_bit: bool


def write_mask_pngs(
    dest: Path,
    stems: Iterable[str],
    id_maps: Iterable[np.ndarray],
    scores: dict[int, float],
) -> MaskWriteSummary:
    """Write one PNG per frame into `dest`, atomically: `dest` appears complete or not at all.

    `id_maps` yields `(H, W)` integer arrays (consumed one at a time). `scores` maps each track
    id to its confidence; all ids appearing in the maps must be in it.
    """
    sixteen_bit = max(scores, default=0) > 255
    if max(scores, default=0) > MAX_ID:
        raise MaskFormatError(f"{len(scores)} tracks for {dest}: at most {MAX_ID} ids fit a PNG")
    frames = 0
    area_sum = 0
    present = 0
    with atomic_dir(dest) as tmp:
        for stem, id_map in zip(stems, id_maps, strict=True):
            save_id_map(tmp / mask_png_name(stem), id_map, sixteen_bit=sixteen_bit)
            counts = np.bincount(id_map.ravel().astype(np.int64))
            fg = counts[1:]
            area_sum += int(fg.sum())
            present += int((fg > 0).sum())
            frames += 1
        tracks = {str(k): float(v) for k, v in sorted(scores.items())}
        (tmp / TRACKS_FILE).write_text(json.dumps({"scores": tracks}))
    return MaskWriteSummary(
        frames=frames,
        tracks=len(scores),
        mean_area=area_sum / present if present else 0.0,
        sixteen_bit=sixteen_bit,
    )


def list_mask_files(folder: Path) -> list[Path]:
    files = [p for p in Path(folder).glob(f"{MASK_PREFIX}*.png") if not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def frame_stem(mask_file: Path) -> str:
    return mask_file.stem[len(MASK_PREFIX):]


def read_track_scores(folder: Path) -> dict[int, float]:
    """Scores from `tracks.json`; empty when the folder came from elsewhere (e.g. DAVIS PNGs)."""
    path = Path(folder) / TRACKS_FILE
    if not path.exists():
        return {}
    try:
        return {int(k): float(v) for k, v in json.loads(path.read_text())["scores"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise MaskFormatError(f"{path} is malformed ({exc}); re-run mask_pngs for this video") from exc
