"""Bring your own masks: per-frame instance-id PNGs from another model -> the outputs layout.

Source layout: `<src>/<video_id>/<frame stem>.png` (or `mask_<frame stem>.png`), one PNG per
frame that has a mask, pixel value = instance id, 0 = background: DAVIS palette PNGs (mode `P`,
the palette index is the id), 8-bit greyscale (`L`) or 16-bit greyscale (`I;16`). Frames without
a PNG are frames without objects (null in the tube JSON).

Everything is checked before anything is written: every folder names a video of the split
(`<data_root>/<split>/JPEGImages/<video_id>/`), every PNG names one of its frames and has that
frame's size (read from both headers, no decode). Each video is then written with
`png_io.write_mask_pngs`, the writer the predictors use (same PNG format, `tracks.json` with
the scores, atomic swap), plus `source.json` recording the origin and a content fingerprint.
A rerun with the same PNGs and scores finds the fingerprint in place and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wsovvis_dagster.atomic import remove_stale_temp_dirs
from wsovvis_dagster.errors import FrameError, MaskFormatError, UnsafeNameError
from wsovvis_dagster.masks.png_io import (
    MASK_PREFIX,
    MAX_ID,
    list_mask_files,
    load_id_map,
    read_mask_source,
    write_mask_pngs,
)
from wsovvis_dagster.paths import VideoRef, check_split, frames_dir, masks_dir
from wsovvis_dagster.video.frames import (
    image_size,
    list_frame_files,
    natural_key,
    open_image,
)

IMPORT_VERSION = "1"  # bump when the import changes what it writes (part of the fingerprint)
ID_MODES = ("P", "L", "I;16")


@dataclass(frozen=True)
class ImportedVideo:
    ref: VideoRef
    folder: Path  # the mask folder written under the output root
    masks: int  # frames with a mask PNG
    frames: int  # frames of the video
    tracks: int
    fingerprint: str
    written: bool  # False: the same import was already in place (nothing rewritten)


@dataclass(frozen=True)
class ImportReport:
    split: str
    source: Path
    videos: tuple[ImportedVideo, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # hidden entries of src -> why


@dataclass(frozen=True)
class _Plan:
    ref: VideoRef
    src: Path
    frames: list[Path]
    masks: list[tuple[int, Path]]  # (frame index, source PNG) in frame order


def load_scores(path: Path) -> dict[str, dict[int, float]]:
    """`{"<video_id>": {"<track id>": score}}` from a JSON file; finite numbers only."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MaskFormatError(f"cannot read scores file {path}: {exc}") from exc
    example = '{"<video_id>": {"1": 0.93, "2": 0.41}}'
    if not isinstance(data, dict):
        raise MaskFormatError(f"scores file {path} must be a JSON object like {example}")
    out: dict[str, dict[int, float]] = {}
    for video, tracks in data.items():
        if not isinstance(tracks, dict):
            raise MaskFormatError(f"scores file {path}: {video!r} must map track ids to scores, "
                                  f"like {example}")
        out[video] = {}
        for tid, score in tracks.items():
            ok_id = isinstance(tid, str) and tid.isdigit() and 1 <= int(tid) <= MAX_ID
            ok_score = (isinstance(score, int | float) and not isinstance(score, bool)
                        and math.isfinite(score))
            if not (ok_id and ok_score):
                raise MaskFormatError(
                    f"scores file {path}: {video!r} track {tid!r}: expected a track id 1..{MAX_ID}"
                    f" mapped to a finite number, got {score!r}"
                )
            out[video][int(tid)] = float(score)
    return out


def _source_pngs(folder: Path) -> list[Path]:
    try:
        files = [p for p in folder.iterdir()
                 if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.is_file()]
    except OSError as exc:
        raise MaskFormatError(f"cannot list mask folder {folder}: {exc}") from exc
    return sorted(files, key=lambda p: natural_key(p.name))


# what to do about a source PNG that does not read (it is the user's file, not ours)
SOURCE_FIX = ("the file is damaged or not a PNG: export it again from the tool that made it, "
              "or delete it (a frame without a PNG has no objects), then import again")


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and `(width, height)` of a PNG from its header."""
    with open_image(path, MaskFormatError, "mask", f"; {SOURCE_FIX}") as img:
        return img.mode, img.size


def _plan_video(src: Path, data_root: Path, split: str) -> _Plan:
    """Check one source folder against its video's frames (headers only)."""
    try:
        ref = VideoRef(split, src.name)
    except UnsafeNameError as exc:
        raise UnsafeNameError(f"mask folder {src}: {exc}") from exc
    frames_folder = frames_dir(data_root, ref)
    if not frames_folder.is_dir():
        raise MaskFormatError(
            f"mask folder {src} names no video of the {split} split: {frames_folder} does not "
            f"exist. Name each mask folder after its video's frame folder (ids under "
            f"{frames_folder.parent}), or ingest the video first"
        )
    frames = list_frame_files(frames_folder)
    if not frames:
        raise FrameError(f"video folder {frames_folder} has no .jpg/.png frames")
    position = {f.stem: t for t, f in enumerate(frames)}
    pngs = _source_pngs(src)
    if not pngs:
        raise MaskFormatError(
            f"mask folder {src} holds no .png files: expected one <frame stem>.png per frame"
        )
    taken: dict[int, Path] = {}
    sizes: dict[int, tuple[int, int]] = {}
    for png in pngs:
        stem = png.stem
        if stem not in position and stem.startswith(MASK_PREFIX):
            stem = stem[len(MASK_PREFIX):]  # our own layout (mask_<stem>.png) is fine too
        t = position.get(stem)
        if t is None:
            raise MaskFormatError(
                f"mask {png} has no frame: {frames_folder} holds no frame named {png.stem!r} "
                f"(frames run {frames[0].name} .. {frames[-1].name}). Name each PNG after its "
                "frame (<frame stem>.png), or delete it"
            )
        if t in taken:
            raise MaskFormatError(
                f"masks {taken[t].name} and {png.name} in {src} are both for frame "
                f"{frames[t].name}; keep one of them"
            )
        mode, size = _header(png)
        if mode not in ID_MODES:
            raise MaskFormatError(
                f"mask {png} has mode {mode}: expected an instance-id PNG (palette P, 8-bit L or "
                "16-bit I;16, pixel value = instance id). Colour (RGB) masks must be converted to "
                "ids first"
            )
        if t not in sizes:
            sizes[t] = image_size(frames[t])
        if size != sizes[t]:
            raise MaskFormatError(
                f"mask {png} is {size[0]}x{size[1]} but its frame {frames[t]} is "
                f"{sizes[t][0]}x{sizes[t][1]}: masks must have their frames' size. Export the "
                "masks at the frames' resolution (or resize them with nearest-neighbour)"
            )
        taken[t] = png
    return _Plan(ref, src, frames, sorted(taken.items()))


def _fingerprint(plan: _Plan, scores: dict[int, float]) -> str:
    """Content of an import: the PNG bytes per frame, the scores and the import version."""
    h = hashlib.sha1(f"wsovvis import {IMPORT_VERSION}\n".encode())
    for t, png in plan.masks:
        h.update(f"{plan.frames[t].stem}\0".encode())
        h.update(hashlib.sha1(png.read_bytes()).digest())
    h.update(json.dumps(sorted(scores.items())).encode())
    return h.hexdigest()[:16]


def _in_place(dest: Path, fingerprint: str, plan: _Plan) -> bool:
    """The same import is already written in `dest` (a rerun): nothing to do."""
    try:
        source = read_mask_source(dest) if dest.is_dir() else None
    except MaskFormatError:
        return False
    return (
        source is not None
        and source.get("fingerprint") == fingerprint
        and len(list_mask_files(dest)) == len(plan.masks)
    )


def _write_video(
    plan: _Plan, output_root: Path, origin: Path, scores: dict[int, float],
    scores_file: Path | None,
) -> ImportedVideo:
    dest = masks_dir(output_root, plan.ref)
    fingerprint = _fingerprint(plan, scores)
    if _in_place(dest, fingerprint, plan):
        return ImportedVideo(plan.ref, dest, len(plan.masks), len(plan.frames),
                             len(read_mask_source(dest).get("track_ids", [])), fingerprint, False)
    maps = []
    for t, png in plan.masks:
        m = load_id_map(png, fix=SOURCE_FIX)
        w, h = image_size(plan.frames[t])
        if m.shape != (h, w):  # the header said otherwise: a broken file
            raise MaskFormatError(f"mask {png} decodes to {m.shape[1]}x{m.shape[0]}, its frame "
                                  f"{plan.frames[t]} is {w}x{h}")
        maps.append(m)
    ids = sorted(set().union(*(set(m[m > 0].ravel().tolist()) for m in maps)))
    unknown = sorted(set(scores) - set(ids))
    if unknown:
        raise MaskFormatError(
            f"scores file {scores_file}: video {plan.ref.video_id!r} has no track "
            f"{', '.join(map(str, unknown))} in {plan.src} (ids present: {ids or 'none'})"
        )
    remove_stale_temp_dirs(dest.parent)  # leftovers of writers killed over an hour ago
    source = {
        "kind": "import",
        "origin": str(origin),
        "folder": str(plan.src),
        "fingerprint": fingerprint,
        "import_version": IMPORT_VERSION,
        "scores_file": str(scores_file) if scores_file else None,
        "track_ids": ids,
        "masks": len(plan.masks),
        "frames": len(plan.frames),
    }
    write_mask_pngs(
        dest, [plan.frames[t].stem for t, _ in plan.masks], maps,
        {i: scores.get(i, 1.0) for i in ids}, source=source,
    )
    return ImportedVideo(plan.ref, dest, len(plan.masks), len(plan.frames), len(ids),
                         fingerprint, True)


def import_masks(
    src: Path,
    data_root: Path,
    output_root: Path,
    split: str,
    *,
    scores_file: Path | None = None,
    videos: list[str] | None = None,
    progress: Callable[[ImportedVideo], None] | None = None,
) -> ImportReport:
    """Import `<src>/<video_id>/*.png` into `<output_root>/<split>/masks/<video_id>/`.

    `videos` limits the import to those folders of `src`; `scores_file` gives per-track scores
    (`load_scores`, default 1.0). All folders are checked (names, stems, sizes, modes, scores)
    before the first is written; each video is then swapped in atomically. Raises
    `MaskFormatError` / `UnsafeNameError` / `FrameError` naming the file and the fix.
    """
    check_split(split)
    src = Path(src)
    if not src.is_dir():
        raise MaskFormatError(f"mask source {src} is not a folder of <video_id>/ mask folders")
    origin = src.resolve()
    skipped: dict[str, str] = {}
    folders = []
    for p in sorted(src.iterdir(), key=lambda p: natural_key(p.name)):
        if not p.is_dir():
            continue
        if p.name.startswith("."):
            skipped[p.name] = "hidden folder (name starts with '.'): not imported"
            continue
        folders.append(p)
    if videos is not None:
        wanted = set(videos)
        absent = sorted(wanted - {p.name for p in folders})
        if absent:
            raise MaskFormatError(f"no mask folder {', '.join(absent)} in {src}")
        folders = [p for p in folders if p.name in wanted]
    if not folders:
        raise MaskFormatError(
            f"{src} holds no mask folders: expected {src}/<video_id>/<frame stem>.png"
        )
    scores = load_scores(scores_file) if scores_file else {}
    stray = sorted(set(scores) - {p.name for p in folders})
    if stray:
        raise MaskFormatError(
            f"scores file {scores_file} names videos with no mask folder in {src}: "
            f"{', '.join(stray[:10])}"
        )
    plans = [_plan_video(p, Path(data_root), split) for p in folders]  # check all first
    done = []
    for plan in plans:
        video = _write_video(plan, Path(output_root), origin,
                             scores.get(plan.ref.video_id, {}), scores_file)
        done.append(video)
        if progress:
            progress(video)
    return ImportReport(split, origin, tuple(done), skipped)
