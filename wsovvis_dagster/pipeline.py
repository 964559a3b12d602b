"""Per-video and per-split steps of the graph, as plain functions (the assets call these)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
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
from wsovvis_dagster.frames import list_frame_files, read_video
from wsovvis_dagster.linking import LinkParams
from wsovvis_dagster.mask_import import ImportedVideo, import_masks
from wsovvis_dagster.masks_io import (
    frame_stem,
    list_mask_files,
    load_id_map,
    read_mask_source,
    write_mask_pngs,
)
from wsovvis_dagster.paths import VideoRef, frames_dir, masks_dir, tube_json_path
from wsovvis_dagster.predictors import VideoPredictor
from wsovvis_dagster.preview import overlay_montage
from wsovvis_dagster.ytvis.tubes import convert_mask_folders, write_tube_json


@dataclass(frozen=True)
class VideoMasksResult:
    ref: VideoRef
    folder: Path
    frames: int
    tracks: int
    mean_area: float
    seconds: float  # the loop's wall time spent on this video (see `segment_videos`)
    skipped_frames: tuple[str, ...]
    preview_jpeg: bytes  # overlay montage (wsovvis_dagster.preview)
    decode_seconds: float = 0.0  # reading + decoding its frames (overlaps the previous video)
    predict_seconds: float = 0.0  # the predictor call (on the loop's own thread)
    write_seconds: float = 0.0  # PNG encoding + atomic swap (overlaps the next video)
    peak_gpu_gib: float | None = None  # torch's peak reserved memory during predict (CUDA only)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class VideoOutcome:
    """One video of `segment_videos` / `import_videos`: its result, or the typed error that
    failed it (`imported`: what an import wrote)."""

    ref: VideoRef
    result: VideoMasksResult | None = None
    error: WsovvisError | None = None
    imported: ImportedVideo | None = None


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def segment_videos(
    data_root: Path,
    output_root: Path,
    refs: Iterable[VideoRef],
    predictor: VideoPredictor,
    *,
    skip_bad_frames: bool = False,
    workers: int | None = None,
    max_pending_writes: int = 2,
    before_publish: Callable[[], None] | None = None,
) -> Iterator[VideoOutcome]:
    """Segment `refs` in a pipeline; yield one `VideoOutcome` per video, in input order.

    While the predictor runs video i on the calling thread (a GPU model keeps one thread, so
    cuDNN's per-thread autotuning happens once), video i+1 is read and decoded in a
    background thread (frames in a pool of `workers`) and the PNGs of video i-1 are encoded
    in another pool and swapped into place atomically. A video is yielded once its folder is
    complete on disk. A bad video (broken frame, unsafe name, bad predictor output, failed
    write) yields its `WsovvisError` and the loop goes on; any other exception propagates.

    `seconds` of each result is the loop's wall time spent on that video (waiting for its
    frames, predicting, and waiting for its write when the loop has to), so the seconds of a
    run add up to the loop's wall time and `frames / seconds` is the loop's throughput.

    `before_publish` is called before each video's folder is swapped into place; an exception
    it raises that is not a `WsovvisError` (a fenced run) stops the loop with nothing published.
    """
    refs = list(refs)
    workers = workers or default_workers()
    cleaned: set[Path] = set()
    with ThreadPoolExecutor(1, thread_name_prefix="prefetch") as loader, \
            ThreadPoolExecutor(workers, thread_name_prefix="decode") as decode_pool, \
            ThreadPoolExecutor(1, thread_name_prefix="writer") as writer, \
            ThreadPoolExecutor(workers, thread_name_prefix="png") as png_pool:

        def load(ref: VideoRef):
            t0 = time.perf_counter()
            dest = masks_dir(output_root, ref)  # refuses a key or symlink out of output_root
            frames = read_video(data_root, ref, skip_bad_frames=skip_bad_frames,
                                pool=decode_pool)
            return dest, frames, time.perf_counter() - t0

        def write(dest, frames, output):
            t0 = time.perf_counter()
            if dest.parent not in cleaned:  # leftovers of writers killed over an hour ago
                cleaned.add(dest.parent)
                remove_stale_temp_dirs(dest.parent)
            summary = write_mask_pngs(dest, frames.stems, output.id_maps, output.scores,
                                      pool=png_pool, before_publish=before_publish)
            preview = overlay_montage(frames.images, output.id_maps)
            return summary, preview, time.perf_counter() - t0

        pending: deque = deque()  # (ref, write future | error, partial result fields)

        def finish(entry) -> VideoOutcome:
            ref, job, info = entry
            if isinstance(job, WsovvisError):
                return VideoOutcome(ref, error=job)
            w0 = time.perf_counter()
            try:
                summary, preview, write_s = job.result()
            except WsovvisError as exc:
                return VideoOutcome(ref, error=exc)
            info["seconds"] += time.perf_counter() - w0
            return VideoOutcome(ref, VideoMasksResult(
                ref=ref, folder=info.pop("dest"), frames=summary.frames, tracks=summary.tracks,
                mean_area=summary.mean_area, preview_jpeg=preview, write_seconds=write_s,
                **info,
            ))

        loads = deque()
        if refs:
            loads.append(loader.submit(load, refs[0]))
        for i, ref in enumerate(refs):
            t0 = time.perf_counter()
            job = loads.popleft()
            if i + 1 < len(refs):  # decode the next video while this one is predicted
                loads.append(loader.submit(load, refs[i + 1]))
            try:
                dest, frames, decode_s = job.result()
                p0 = time.perf_counter()
                with _peak_gpu_memory(predictor) as peak:
                    output = predictor.predict(frames.images)
                predict_s = time.perf_counter() - p0
                _check_predictor_output(predictor, ref, frames.images.shape, output.id_maps)
            except WsovvisError as exc:
                pending.append((ref, exc, None))
            else:
                info = {"dest": dest, "skipped_frames": frames.skipped, "decode_seconds": decode_s,
                        "predict_seconds": predict_s, "peak_gpu_gib": peak.get("gib")}
                future = writer.submit(write, dest, frames, output)
                info["seconds"] = time.perf_counter() - t0
                pending.append((ref, future, info))
            del job
            # hand back finished videos in order; wait only when too many writes are queued
            while pending and (len(pending) > max_pending_writes or _ready(pending[0][1])):
                yield finish(pending.popleft())
        while pending:
            yield finish(pending.popleft())


def _ready(job) -> bool:
    return isinstance(job, WsovvisError) or job.done()


@contextlib.contextmanager
def _peak_gpu_memory(predictor):
    """{'gib': peak reserved GiB} of the predictor's CUDA device during the block, if any."""
    out: dict = {}
    device = getattr(predictor, "device", None)
    torch = sys.modules.get("torch")  # never imports torch for a CPU predictor
    on_cuda = (torch is not None and getattr(device, "type", None) == "cuda"
               and torch.cuda.is_available())
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if on_cuda:
        out["gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)


def segment_video(
    data_root: Path,
    output_root: Path,
    ref: VideoRef,
    predictor: VideoPredictor,
    *,
    skip_bad_frames: bool = False,
) -> VideoMasksResult:
    """Read one video, run the predictor, write its mask PNGs atomically (`segment_videos`
    for one video: the same code path).

    Inputs are checked before the predictor runs (unsafe names, a missing or broken video, frames
    of different sizes raise typed errors); its output is checked against the frames before
    anything is written, so a mask can never be misaligned with its frame.
    """
    (outcome,) = segment_videos(data_root, output_root, [ref], predictor,
                                skip_bad_frames=skip_bad_frames)
    if outcome.error is not None:
        raise outcome.error
    return outcome.result


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
    frames = read_video(data_root, ref)
    maps = np.zeros(frames.images.shape[:3], dtype=np.uint16)
    position = {s: t for t, s in enumerate(frames.stems)}
    for f in list_mask_files(video.folder):
        maps[position[frame_stem(f)]] = load_id_map(f)
    present = maps[maps > 0]
    per_track_frame = sum(len(np.unique(m[m > 0])) for m in maps)
    result = VideoMasksResult(
        ref=ref, folder=video.folder, frames=video.masks, tracks=video.tracks,
        mean_area=present.size / per_track_frame if per_track_frame else 0.0,
        seconds=time.perf_counter() - start, skipped_frames=(),
        preview_jpeg=overlay_montage(frames.images, maps),
    )
    return result, video


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


def _check_predictor_output(
    predictor: VideoPredictor, ref: VideoRef, frames_shape: tuple, id_maps: np.ndarray
) -> None:
    expected = tuple(frames_shape[:3])
    got = tuple(getattr(id_maps, "shape", ()))
    if got != expected:
        raise MaskFormatError(
            f"predictor {getattr(predictor, 'name', predictor)!r} returned id maps of shape {got} "
            f"for video {ref.partition_key}, whose frames are (T, H, W) = {expected}; the masks "
            "would not line up with the frames, so nothing was written. Fix the backend"
        )


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
) -> SplitTubesResult:
    """Convert the mask folders of `refs` (one split) into `tubes_<split>.json`.

    Every mask is checked against its video's frames (stem and size), and each video's length,
    file names and size are its frames' (`tubes.video_tubes_from_masks`). Conversion runs over
    `workers` processes in one streaming pass; with `linking`, ids are relinked into tracks by
    mask IoU (tubes keep the predictor's ids in `source_ids`).

    Videos with no masks yet raise `MissingMasksError` listing them, unless `allow_partial`,
    which leaves them out and lists them in `left_out`. A registered video whose frame folder
    was deleted is named in `missing_frames` and left out (no frames to check its masks against).
    """
    frames_root = Path(data_root) / split / "JPEGImages"
    gone = {r for r in refs if not frames_dir(data_root, r).is_dir()}
    without_masks = find_videos_without_masks(output_root, refs)
    # only when the split's frame folder exists: an unmounted data root is not a deletion
    deleted = gone if frames_root.is_dir() else set()
    missing = [r for r in without_masks if r not in deleted]
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
    ready = [r for r in refs if r.partition_key not in left_out]
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
    for ref in ready:
        source = read_mask_source(masks_dir(output_root, ref))
        label = f"import:{source.get('origin', '?')}" if source else "mask_pngs"
        sources[label] = sources.get(label, 0) + 1

    def videos():
        items = (  # lazily: one frame listing per video as conversion reaches it
            (masks_dir(output_root, ref), ref.video_id,
             list_frame_files(frames_dir(data_root, ref)))
            for ref in ready
        )
        converted = convert_mask_folders(items, workers=workers, linking=linking)
        for i, (ref, video) in enumerate(zip(ready, converted, strict=True)):
            if progress:
                progress(i, len(ready), ref)
            yield video

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
    return SplitTubesResult(
        split=split, path=path, videos=counts["videos"], tubes=counts["tubes"],
        frames=counts["frames"], bytes=path.stat().st_size, missing_frames=missing_frames,
        left_out=left_out, mask_sources=sources,
    )
