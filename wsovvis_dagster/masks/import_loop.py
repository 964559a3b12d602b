"""Imported masks in the `mask_pngs` loop: import a video, keep one a predictor run
must not replace, summarise a mask folder (the counterpart of `segment.py`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from wsovvis_dagster.errors import (
    FrameError,
    MaskFormatError,
    WsovvisError,
)
from wsovvis_dagster.masks.import_masks import ImportedVideo, import_masks
from wsovvis_dagster.masks.png_io import (
    frame_stem,
    list_mask_files,
    load_id_map,
    read_mask_source,
)
from wsovvis_dagster.masks.preview import montage_picks, montage_tiles
from wsovvis_dagster.masks.segment import (
    VideoMasksResult,
    VideoOutcome,
)
from wsovvis_dagster.paths import VideoRef, frames_dir, masks_dir
from wsovvis_dagster.video.frames import list_frame_files, load_frame


def import_video(
    data_root: Path,
    output_root: Path,
    ref: VideoRef,
    import_root: Path,
    *,
    scores_file: Path | None = None,
) -> tuple[VideoMasksResult, ImportedVideo]:
    """Import `<import_root>/<video_id>/` as this video's masks (`import_masks.import_masks`),
    with the same summary and preview `segment_video` gives for predictor output."""
    start = time.perf_counter()
    report = import_masks(import_root, data_root, output_root, ref.split,
                          scores_file=scores_file, videos=[ref.video_id])
    video = report.videos[0]
    result = summarise_mask_folder(data_root, ref, video.folder, start=start)
    return replace(result, frames=video.masks, tracks=video.tracks), video


def summarise_mask_folder(
    data_root: Path, ref: VideoRef, folder: Path, *, start: float | None = None
) -> VideoMasksResult:
    """Summary and preview of masks already on disk (imported ones), one mask at a time: only
    the preview's few frames are decoded, so memory does not grow with the video."""
    start = time.perf_counter() if start is None else start
    files = list_frame_files(frames_dir(data_root, ref))
    if not files:
        raise FrameError(f"video folder {frames_dir(data_root, ref)} has no .jpg/.png frames")
    masks = {frame_stem(f): f for f in list_mask_files(folder)}
    picks = montage_picks(len(files))
    tiles, tile_maps = [], []
    area = per_track_frame = 0
    ids: set[int] = set()
    for f in masks.values():
        m = load_id_map(f)
        counts = np.bincount(m.ravel().astype(np.int64))[1:]
        area += int(counts.sum())
        per_track_frame += int((counts > 0).sum())
        ids.update((np.flatnonzero(counts) + 1).tolist())
    for i in picks:
        frame = load_frame(files[i])
        mask = masks.get(files[i].stem)
        tiles.append(frame)
        tile_maps.append(load_id_map(mask) if mask is not None
                         else np.zeros(frame.shape[:2], dtype=np.uint16))
    return VideoMasksResult(
        ref=ref, folder=folder, frames=len(masks), tracks=len(ids),
        mean_area=area / per_track_frame if per_track_frame else 0.0,
        seconds=time.perf_counter() - start, skipped_frames=(),
        preview_jpeg=montage_tiles(tiles, tile_maps),
    )


def find_imported_masks(output_root: Path, refs: Iterable[VideoRef]) -> dict[VideoRef, dict]:
    """The refs whose mask folder holds imported masks (`source.json`: a user's data, never
    replaced by a predictor unless asked by name) -> that record (`{}` if unreadable)."""
    found = {}
    for ref in refs:
        try:
            folder = masks_dir(output_root, ref)
        except WsovvisError:  # an unsafe key: the predictor loop reports it
            continue
        try:
            source = read_mask_source(folder)
        except MaskFormatError:  # imported, but its record does not read
            source = {}
        if source is not None:
            found[ref] = source
    return found


def import_videos(
    data_root: Path,
    output_root: Path,
    refs: Iterable[VideoRef],
    import_root: Path,
    *,
    scores_file: Path | None = None,
) -> Iterator[VideoOutcome]:
    """`import_video` for each ref, in order; a bad video yields its error, not an exception,
    as `segment_videos` does, so one asset loop serves both."""
    for ref in refs:
        try:
            result, imported = import_video(data_root, output_root, ref, import_root,
                                            scores_file=scores_file)
        except WsovvisError as exc:
            yield VideoOutcome(ref, error=exc)
        else:
            yield VideoOutcome(ref, result=result, imported=imported)


def kept_imported_videos(
    data_root: Path, output_root: Path, kept: dict[VideoRef, dict]
) -> Iterator[VideoOutcome]:
    """An outcome per video whose imported masks a predictor run keeps (`find_imported_masks`):
    their summary and preview, nothing written; a bad one yields its error."""
    for ref, source in kept.items():
        try:
            result = summarise_mask_folder(data_root, ref, masks_dir(output_root, ref))
        except WsovvisError as exc:
            yield VideoOutcome(ref, error=exc)
            continue
        imported = ImportedVideo(
            ref, result.folder, result.frames,
            int(source.get("frames") or len(list_frame_files(frames_dir(data_root, ref)))),
            result.tracks, str(source.get("fingerprint", "unknown")), written=False)
        yield VideoOutcome(ref, result=result, imported=imported)
