"""Per-video and per-split steps of the graph, as plain functions (the assets call these)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from wsovvis_dagster.atomic import remove_stale_temp_dirs
from wsovvis_dagster.errors import (
    FrameError,
    MaskFormatError,
    MissingMasksError,
    OutputWriteError,
    WsovvisError,
)
from wsovvis_dagster.frames import list_frame_files, load_frame
from wsovvis_dagster.linking import LinkParams
from wsovvis_dagster.mask_import import ImportedVideo, import_masks, is_imported
from wsovvis_dagster.mask_loop import (  # noqa: F401 - the loop's API, re-exported
    VideoMasksResult,
    VideoOutcome,
    segment_video,
    segment_videos,
)
from wsovvis_dagster.masks_io import (
    frame_stem,
    list_mask_files,
    load_id_map,
    read_mask_source,
)
from wsovvis_dagster.paths import VideoRef, frames_dir, masks_dir, tube_json_path
from wsovvis_dagster.preview import montage_picks, montage_tiles
from wsovvis_dagster.ytvis.tubes import convert_mask_folders, write_tube_json


def import_video(
    data_root: Path,
    output_root: Path,
    ref: VideoRef,
    import_root: Path,
    *,
    scores_file: Path | None = None,
) -> tuple[VideoMasksResult, ImportedVideo]:
    """Import `<import_root>/<video_id>/` as this video's masks (`mask_import.import_masks`),
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
        if is_imported(folder):
            try:
                found[ref] = read_mask_source(folder) or {}
            except MaskFormatError:
                found[ref] = {}
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


@dataclass(frozen=True)
class SplitTubesResult:
    split: str
    path: Path
    videos: int
    tubes: int
    frames: int
    bytes: int
    # videos whose frame folder vanished: left out of the JSON (their masks cannot be checked and
    # their file names would point at nothing), never a crash
    missing_frames: tuple[str, ...]
    # every registered video not in the JSON, partition key -> why (no masks, frames gone)
    left_out: dict[str, str] = field(default_factory=dict)
    # where the masks came from: "mask_pngs" (a predictor) or "import:<origin>" -> video count
    mask_sources: dict[str, int] = field(default_factory=dict)
    # videos left out because converting them failed (also in left_out): key -> the error
    broken: dict[str, str] = field(default_factory=dict)


def find_videos_without_masks(output_root: Path, refs: Iterable[VideoRef]) -> list[VideoRef]:
    return [r for r in refs if not masks_dir(output_root, r).is_dir()]


def build_split_tubes(
    data_root: Path,
    output_root: Path,
    split: str,
    refs: list[VideoRef],
    *,
    allow_partial: bool = False,
    linking: LinkParams | None = None,
    workers: int = 1,
    progress: Callable[[int, int, VideoRef], None] | None = None,
    failed: Collection[str] = (),
) -> SplitTubesResult:
    """Convert the mask folders of `refs` (one split) into `tubes_<split>.json`.

    Every mask is checked against its video's frames (stem and size), and each video's length,
    file names and size are its frames' (`tubes.video_tubes_from_masks`). Conversion runs over
    `workers` processes in one streaming pass; with `linking`, ids are relinked into tracks by
    mask IoU (tubes keep the predictor's ids in `source_ids`).

    Videos with no masks yet raise `MissingMasksError` listing them, unless `allow_partial`,
    which leaves them out and lists them in `left_out`. A registered video whose frame folder
    was deleted is named in `missing_frames` and left out (no frames to check its masks against).
    A video that cannot be converted (frames emptied or changed under its masks, a broken mask,
    a path out of the roots) is left out too, its error in `broken` and `left_out`: one bad
    video costs itself, never the split (unless no video is left). So is a video without masks
    whose last `mask_pngs` run `failed` (partition keys): it is named, not an error.
    """
    frames_root = Path(data_root) / split / "JPEGImages"
    broken: dict[str, str] = {}  # videos that cannot be converted: left out, named
    usable = []
    for r in refs:
        try:  # a symlink out of a root costs its video, not the split
            frames_dir(data_root, r), masks_dir(output_root, r)
        except WsovvisError as exc:
            broken[r.partition_key] = str(exc)
        else:
            usable.append(r)
    refs = usable
    gone = {r for r in refs if not frames_dir(data_root, r).is_dir()}
    without_masks = find_videos_without_masks(output_root, refs)
    # only when the split's frame folder exists: an unmounted data root is not a deletion
    deleted = gone if frames_root.is_dir() else set()
    failed = set(failed)
    for r in without_masks:
        if r not in deleted and r.partition_key in failed:
            broken[r.partition_key] = ("its last mask_pngs run failed (see that run); fix the "
                                       "cause and materialise mask_pngs for it again")
    missing = [r for r in without_masks if r not in deleted and r.partition_key not in broken]
    if missing and not allow_partial:
        listed = ", ".join(r.partition_key for r in missing[:20])
        more = f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""
        raise MissingMasksError(
            f"{len(missing)} of {len(refs)} {split} videos have no mask PNGs yet: {listed}{more}. "
            "Materialise mask_pngs for them first (or import masks: wsovvis import-masks), or "
            "set allow_partial: true"
        )
    left_out = {r.partition_key: "no mask PNGs yet (mask_pngs not materialised)" for r in missing}
    for r in refs:
        if r in deleted:
            left_out[r.partition_key] = f"frame folder {frames_dir(data_root, r)} was deleted"
    ready = [r for r in refs if r.partition_key not in left_out and r.partition_key not in broken]
    if not ready and not allow_partial:
        raise MissingMasksError(
            f"none of the {len(refs)} registered {split} videos has mask PNGs and frames "
            f"({len(deleted)} were deleted from {frames_root}); refusing to write an empty "
            f"{tube_json_path(output_root, split).name}. Materialise mask_pngs first"
        )
    missing_frames = tuple(r.partition_key for r in refs if r in gone)
    if ready and not frames_root.is_dir():
        raise FrameError(
            f"{frames_root} does not exist, so the masks of {len(ready)} {split} videos cannot "
            "be checked against their frames: is the data root mounted (WSOVVIS_DATA_ROOT)?"
        )
    sources: dict[str, int] = {}
    order: deque = deque()  # (ref, mask source) of the items handed to the converter

    def items():  # lazily: one frame listing per video as conversion reaches it
        for ref in ready:
            try:
                folder = masks_dir(output_root, ref)
                frames = list_frame_files(frames_dir(data_root, ref))
                if not frames:
                    raise FrameError(
                        f"video folder {frames_dir(data_root, ref)} holds no frames (emptied?), "
                        "so its masks cannot be checked: restore its frames, or re-ingest it "
                        "and re-run mask_pngs")
                source = read_mask_source(folder)
            except WsovvisError as exc:
                broken[ref.partition_key] = str(exc)
                continue
            order.append((ref, f"import:{source.get('origin', '?')}" if source else "mask_pngs"))
            yield folder, ref.video_id, frames

    def videos():
        converted = convert_mask_folders(items(), workers=workers, linking=linking,
                                         keep_going=True)
        done = 0
        for i, video in enumerate(converted):
            ref, label = order.popleft()
            if progress:
                progress(i, len(ready), ref)
            if isinstance(video, WsovvisError):
                # one bad video (frames changed under its masks, a broken mask) costs itself
                broken[ref.partition_key] = str(video)
                continue
            sources[label] = sources.get(label, 0) + 1  # info is written after the videos
            done += 1
            yield video
        if not done and broken:  # nothing usable: keep the previous JSON (atomic write)
            raise MaskFormatError(
                f"none of the {len(ready)} {split} videos with masks could be converted: "
                + "; ".join(f"{k}: {v}" for k, v in list(broken.items())[:5]))

    path = tube_json_path(output_root, split)
    remove_stale_temp_dirs(path.parent)  # temp files of tube_json runs killed over an hour ago
    info = {"split": split, "source": "wsovvis mask_pngs", "mask_sources": sources}
    if linking is not None:
        info["linking"] = asdict(linking)
    try:
        counts = write_tube_json(path, videos(), info=info)
    except OSError as exc:
        raise OutputWriteError(
            f"cannot write {path}: {exc}. The previous {path.name} (if any) is unchanged; free "
            "disk space (or fix permissions) and re-run tube_json"
        ) from exc
    left_out.update(broken)
    return SplitTubesResult(
        split=split, path=path, videos=counts["videos"], tubes=counts["tubes"],
        frames=counts["frames"], bytes=path.stat().st_size, missing_frames=missing_frames,
        left_out=left_out, mask_sources=sources, broken=broken,
    )

