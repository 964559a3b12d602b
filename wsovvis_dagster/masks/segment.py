"""The mask loop: videos streamed through a predictor in chunks, masks written as they come.

`segment_videos` is what `mask_pngs` runs (in the run, or in the predictor worker) and what the
GPU benchmarks call; `segment_video` is the same for one video.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsovvis_dagster.atomic import remove_stale_temp_dirs
from wsovvis_dagster.errors import FrameError, MaskFormatError, WsovvisError
from wsovvis_dagster.masks.import_masks import ImportedVideo
from wsovvis_dagster.masks.png_io import MaskFolderWriter
from wsovvis_dagster.masks.preview import montage_picks, montage_tiles
from wsovvis_dagster.paths import VideoRef, masks_dir
from wsovvis_dagster.predictors import PredictorOutput, VideoPredictor
from wsovvis_dagster.predictors.chunking import STREAM_CHUNK, ChunkStitcher, chunk_spans
from wsovvis_dagster.video.frames import ChunkedVideoReader, video_frame_files


@dataclass(frozen=True)
class VideoMasksResult:
    ref: VideoRef
    folder: Path
    frames: int
    tracks: int
    mean_area: float
    seconds: float  # the loop's wall time spent on this video (see `segment_videos`)
    skipped_frames: tuple[str, ...]
    preview_jpeg: bytes  # overlay montage (wsovvis_dagster.masks.preview)
    decode_seconds: float = 0.0  # reading + decoding its frames (overlaps the previous video)
    predict_seconds: float = 0.0  # the predictor call, or queueing it and waiting for it
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

    `before_publish` is called before each video's folder is swapped into place; an exception
    it raises that is not a `WsovvisError` (a fenced run) stops the loop with nothing published.
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

        def write(video: _StreamedVideo, k: int, indices: list[int], pending, last: bool):
            """Collect chunk k's prediction, stitch it, encode the PNGs of frames whose ids are
            final; on the last chunk, relabel and swap in. Runs on the writer thread, chunks in
            order, so the loop's thread goes back to the predictor at once (the GPU waits for
            no stitching or writing)."""
            t0, waited = time.perf_counter(), video.wait_seconds
            try:
                if video.write_error is not None:
                    raise video.write_error
                stems, maps = _stitch_chunk(video, k, indices, pending, last)
                if video.writer is None:
                    if video.dest.parent not in cleaned:  # leftovers of writers killed > 1 h ago
                        cleaned.add(video.dest.parent)
                        remove_stale_temp_dirs(video.dest.parent)
                    video.writer = MaskFolderWriter(video.dest, pool=png_pool,
                                                   before_publish=before_publish)
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
                video.write_seconds += time.perf_counter() - t0 - (video.wait_seconds - waited)

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
                predict_seconds=video.predict_seconds + video.wait_seconds,
                write_seconds=video.write_seconds,
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
                    queued = _predict_chunk(video, indices, images, predictor)
                except WsovvisError as exc:
                    error = exc
                    if not last:  # the rest of this video is not needed
                        if job is not None:
                            with contextlib.suppress(WsovvisError):
                                job.result()
                        last, nxt = True, (i + 1, 0)
                        job = loader.submit(load, *nxt) if nxt[0] < len(refs) else None
                else:
                    video.write_futures.append(writer.submit(write, video, k, indices, queued,
                                                             last))
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


def _predict_chunk(video: _StreamedVideo, indices: list[int], images: np.ndarray | None,
                   predictor: VideoPredictor) -> Callable[[], PredictorOutput] | None:
    """Start one chunk of `video` on the loop's thread and keep the frames its preview shows;
    returns what gives its checked prediction (None: no readable frame in it).

    A predictor with `launch` (VideoCutLER) only queues the chunk on its device here: the
    writer thread waits for the result, so the loop queues the next chunk while the device
    still computes this one. Any other predictor computes here."""
    if images is None:
        return None
    p0 = time.perf_counter()
    launch = getattr(predictor, "launch", None)
    with _peak_gpu_memory(predictor) as peak:  # allocations happen as the work is queued
        if launch is not None:
            pending = launch(images)
        else:
            output = predictor.predict(images)
            pending = lambda: output  # noqa: E731 - the same shape as `launch`'s
    video.predict_seconds += time.perf_counter() - p0
    if peak.get("gib") is not None:
        video.peak_gpu_gib = max(video.peak_gpu_gib or 0.0, peak["gib"])
    for pos, j in enumerate(indices):
        if j in video.picks and j not in video.tile_images:
            video.tile_images[j] = images[pos].copy()

    def collect() -> PredictorOutput:
        w0 = time.perf_counter()
        output = pending()
        video.wait_seconds += time.perf_counter() - w0
        _check_predictor_output(predictor, video.ref, images.shape, output.id_maps)
        return output

    return collect


def _stitch_chunk(video: _StreamedVideo, k: int, indices: list[int],
                  pending: Callable[[], PredictorOutput] | None,
                  last: bool) -> tuple[list[str], np.ndarray]:
    """Stitch chunk k's prediction into `video`'s tracks: (stems, `(n, H, W)` global ids) of
    the frames whose ids are final now (on the last chunk, all that are left)."""
    maps = []
    if pending is not None:
        output = pending()
        prev_end = video.prev_end
        shared = sum(1 for j in indices if prev_end is not None and j < prev_end)
        video.waiting.extend(indices[shared:])
        maps.append(video.stitcher.add(output, shared))
        video.prev_end = video.spans[k][1]
    if last:
        if video.prev_end is None:
            raise FrameError(f"no readable frame among {len(video.files)} files in "
                             f"{video.files[0].parent}")
        maps.append(video.stitcher.finish())
    done = np.concatenate(maps) if len(maps) > 1 else (
        maps[0] if maps else np.zeros((0, 1, 1), dtype=np.uint16))
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
    predict_seconds: float = 0.0  # on the loop's thread: the call, or queueing the work
    wait_seconds: float = 0.0  # on the writer's: waiting for queued work (`launch`)
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
