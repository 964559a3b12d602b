"""Per-video and per-split steps of the graph, as plain functions (the assets call these)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
from wsovvis_dagster.frames import (
    ChunkedVideoReader,
    list_frame_files,
    load_frame,
    video_frame_files,
)
from wsovvis_dagster.linking import LinkParams
from wsovvis_dagster.mask_import import ImportedVideo, import_masks, is_imported
from wsovvis_dagster.masks_io import (
    MaskFolderWriter,
    frame_stem,
    list_mask_files,
    load_id_map,
    read_mask_source,
)
from wsovvis_dagster.paths import VideoRef, frames_dir, masks_dir, tube_json_path
from wsovvis_dagster.predictors import VideoPredictor
from wsovvis_dagster.predictors.chunking import STREAM_CHUNK, ChunkStitcher, chunk_spans
from wsovvis_dagster.preview import montage_picks, montage_tiles
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
) -> Iterator[VideoOutcome]:
    """Segment `refs` in a pipeline; yield one `VideoOutcome` per video, in input order.

    Each video streams through the predictor in overlapping chunks of frames (`stream_chunking`:
    the predictor's own `stream_chunk`, else `STREAM_CHUNK`), tracks stitched across chunks by
    mask IoU (`chunking.ChunkStitcher`), so memory stays flat in video length: frames are read
    a chunk at a time and each frame's masks are written as soon as no later chunk can change
    them (final ids settled at the end: `MaskFolderWriter`). A clip no longer than one chunk is
    predicted whole, exactly as before.

    While the predictor runs a chunk on the calling thread (a GPU model keeps one thread, so
    cuDNN's per-thread autotuning happens once), the next chunk (of this video or the next one)
    is read and decoded in a background thread (frames in a pool of `workers`) and finished
    frames are encoded to PNG in another pool, the folder swapped into place atomically once
    complete. A video is yielded once its folder is complete on disk. A bad video (broken frame,
    unsafe name, bad predictor output, failed write) yields its `WsovvisError` and the loop goes
    on; any other exception propagates.

    `seconds` of each result is the loop's wall time spent on that video (waiting for its
    frames, predicting, and waiting for its writes when the loop has to), so the seconds of a
    run add up to the loop's wall time and `frames / seconds` is the loop's throughput.
    """
    refs = list(refs)
    workers = workers or default_workers()
    chunk, overlap = stream_chunking(predictor)
    cleaned: set[Path] = set()
    with ThreadPoolExecutor(1, thread_name_prefix="prefetch") as loader, \
            ThreadPoolExecutor(workers, thread_name_prefix="decode") as decode_pool, \
            ThreadPoolExecutor(1, thread_name_prefix="writer") as writer, \
            ThreadPoolExecutor(workers, thread_name_prefix="png") as png_pool:
        opened: dict[int, _StreamedVideo] = {}

        def load(i: int, k: int):
            """(video, good file indices, frames, seconds) of chunk k of video i."""
            t0 = time.perf_counter()
            if k == 0:
                ref = refs[i]
                dest = masks_dir(output_root, ref)  # refuses a key or symlink out of the root
                files = video_frame_files(data_root, ref)
                opened[i] = _StreamedVideo(
                    ref, dest, files, chunk_spans(len(files), chunk, overlap),
                    ChunkedVideoReader(files, skip_bad_frames=skip_bad_frames, pool=decode_pool),
                    picks=set(montage_picks(len(files))))
            video = opened[i]
            indices, images = video.reader.read(*video.spans[k])
            return video, indices, images, time.perf_counter() - t0

        def write(video: _StreamedVideo, stems: list[str], maps: np.ndarray, last: bool):
            """PNGs of frames whose ids are final; on the last chunk, relabel and swap in."""
            t0 = time.perf_counter()
            try:
                if video.write_error is not None:
                    raise video.write_error
                if video.writer is None:
                    if video.dest.parent not in cleaned:  # leftovers of writers killed > 1 h ago
                        cleaned.add(video.dest.parent)
                        remove_stale_temp_dirs(video.dest.parent)
                    video.writer = MaskFolderWriter(video.dest, pool=png_pool)
                for stem, ids in zip(stems, maps, strict=True):
                    video.writer.add(stem, ids, sixteen_bit=video.stitcher.num_ids > 255)
                if not last:
                    return None
                lut, scores = video.stitcher.relabel()
                summary = video.writer.finish(scores, lut=lut)
                picked = sorted(video.tile_maps)
                preview = montage_tiles([video.tile_images[j] for j in picked],
                                        [lut[video.tile_maps[j]] for j in picked])
                return summary, preview
            except WsovvisError as exc:
                if video.writer is not None:
                    video.writer.abort()
                video.write_error = exc
                if last:
                    raise
                return None
            finally:
                video.write_seconds += time.perf_counter() - t0

        def finish(entry) -> VideoOutcome:
            ref, job, info = entry
            if isinstance(job, WsovvisError):
                return VideoOutcome(ref, error=job)
            w0 = time.perf_counter()
            try:
                summary, preview = job.result()
            except WsovvisError as exc:
                return VideoOutcome(ref, error=exc)
            video = info.pop("video")
            info["seconds"] += time.perf_counter() - w0
            return VideoOutcome(ref, VideoMasksResult(
                ref=ref, folder=video.dest, frames=summary.frames, tracks=summary.tracks,
                mean_area=summary.mean_area, preview_jpeg=preview,
                skipped_frames=tuple(video.reader.skipped), decode_seconds=video.decode_seconds,
                predict_seconds=video.predict_seconds, write_seconds=video.write_seconds,
                peak_gpu_gib=video.peak_gpu_gib, **info))

        pending: deque = deque()  # (ref, last write future | error, partial result fields)
        spent = [0.0] * len(refs)
        i, k = 0, 0
        job = loader.submit(load, 0, 0) if refs else None
        while job is not None:
            t0 = time.perf_counter()
            video, error = None, None
            try:
                video, indices, images, decode_s = job.result()
                video.decode_seconds += decode_s
            except WsovvisError as exc:
                error = exc
            last = video is None or k + 1 == len(video.spans)
            # read the next chunk (of this video, or the next video's first) during predict
            nxt = (i + 1, 0) if last else (i, k + 1)
            job = loader.submit(load, *nxt) if nxt[0] < len(refs) else None
            if error is None:
                try:
                    stems, maps = _predict_chunk(video, k, indices, images, predictor, last)
                except WsovvisError as exc:
                    error = exc
                    if not last:  # the rest of this video is not needed
                        if job is not None:
                            with contextlib.suppress(WsovvisError):
                                job.result()
                        last, nxt = True, (i + 1, 0)
                        job = loader.submit(load, *nxt) if nxt[0] < len(refs) else None
                else:
                    video.write_futures.append(writer.submit(write, video, stems, maps, last))
            spent[i] += time.perf_counter() - t0
            if not last:  # bound the frames queued for writing: one chunk behind at most
                while len(video.write_futures) > 1:
                    video.write_futures.pop(0).result()
                i, k = nxt
                continue
            opened.pop(i, None)
            if error is not None:
                if video is not None and video.write_futures:
                    writer.submit(_abort_writer, video)
                pending.append((refs[i], error, None))
            else:
                pending.append((refs[i], video.write_futures[-1],
                                {"video": video, "seconds": spent[i]}))
            # hand back finished videos in order; wait only when too many writes are queued
            while pending and (len(pending) > max_pending_writes or _ready(pending[0][1])):
                yield finish(pending.popleft())
            i, k = nxt
        while pending:
            yield finish(pending.popleft())


def _abort_writer(video: _StreamedVideo) -> None:
    if video.writer is not None:
        video.writer.abort()


def _predict_chunk(video: _StreamedVideo, k: int, indices: list[int],
                   images: np.ndarray | None, predictor: VideoPredictor,
                   last: bool) -> tuple[list[str], np.ndarray]:
    """Predict chunk k of `video` and stitch it: (stems, `(n, H, W)` global ids) of the frames
    whose ids are final now (on the last chunk, all that are left)."""
    maps = []
    if images is not None:
        p0 = time.perf_counter()
        with _peak_gpu_memory(predictor) as peak:
            output = predictor.predict(images)
        video.predict_seconds += time.perf_counter() - p0
        if peak.get("gib") is not None:
            video.peak_gpu_gib = max(video.peak_gpu_gib or 0.0, peak["gib"])
        _check_predictor_output(predictor, video.ref, images.shape, output.id_maps)
        prev_end = video.prev_end
        shared = sum(1 for j in indices if prev_end is not None and j < prev_end)
        for pos, j in enumerate(indices):
            if j in video.picks and j not in video.tile_images:
                video.tile_images[j] = images[pos].copy()
        video.waiting.extend(indices[shared:])
        maps.append(video.stitcher.add(output, shared))
        video.prev_end = video.spans[k][1]
    if last:
        if video.prev_end is None:
            raise FrameError(f"no readable frame among {len(video.files)} files in "
                             f"{video.files[0].parent}")
        maps.append(video.stitcher.finish())
    done = np.concatenate(maps) if maps else np.zeros((0, 1, 1), dtype=np.uint16)
    stems = []
    for ids in done:
        j = video.waiting.popleft()
        stems.append(video.files[j].stem)
        if j in video.picks:
            video.tile_maps[j] = ids.copy()  # not a view that keeps the chunk alive
    return stems, done


def stream_chunking(predictor: VideoPredictor) -> tuple[int, int]:
    """(frames per chunk, shared frames) the loop feeds `predictor`: its own `stream_chunk`
    (VideoCutLER: its chunk_size / chunk_overlap), else `chunking.STREAM_CHUNK`."""
    return tuple(getattr(predictor, "stream_chunk", STREAM_CHUNK))


@dataclass
class _StreamedVideo:
    """One video in the loop: its files, chunk spans, reader, stitcher and writer."""

    ref: VideoRef
    dest: Path
    files: list[Path]
    spans: list[tuple[int, int]]
    reader: ChunkedVideoReader
    stitcher: ChunkStitcher = field(default_factory=ChunkStitcher)
    writer: MaskFolderWriter | None = None
    prev_end: int | None = None
    waiting: deque = field(default_factory=deque)  # file indices of frames not handed back
    tile_images: dict = field(default_factory=dict)  # preview: file index -> frame
    tile_maps: dict = field(default_factory=dict)  # preview: file index -> global ids
    picks: set = field(default_factory=set)  # preview: the file indices it shows
    write_futures: list = field(default_factory=list)
    write_error: WsovvisError | None = None
    decode_seconds: float = 0.0
    predict_seconds: float = 0.0
    write_seconds: float = 0.0
    peak_gpu_gib: float | None = None


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

