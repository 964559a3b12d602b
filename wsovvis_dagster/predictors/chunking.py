"""Long videos in overlapping chunks, tracks stitched across chunks by mask IoU.

Generic over any clip predictor (`(T, H, W, 3) uint8 -> PredictorOutput`): each chunk of at
most `chunk_size` frames is predicted on its own, so a model's memory stays flat in video
length. Consecutive chunks share at least `overlap` frames; on those frames the tracks of the
two chunks are matched one-to-one (Hungarian, on IoU summed over the shared frames), and a
match above `iou_threshold` continues the earlier track. The shared frames are split in the
middle: the earlier chunk's id maps are kept for the first half, the later chunk's for the
second. Final ids are renumbered 1..N by descending score (a track's score is the mean of its
scores in the chunks it appears in).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from wsovvis_dagster.predictors import PredictorOutput

ClipPredictor = Callable[[np.ndarray], PredictorOutput]
MAX_TRACKS = 65535  # ids must fit a uint16 id map
# (frames per chunk, shared frames) the mask loop streams a video through a predictor that
# names no `stream_chunk` of its own (the embedded one): DAVIS / LV-VIS clips (<= 104 frames)
# are one chunk, and 128 frames at 854x480 keep the embedded predictor near 0.6 GB
STREAM_CHUNK = (128, 16)


def chunk_spans(num_frames: int, chunk_size: int, overlap: int) -> list[tuple[int, int]]:
    """`[start, end)` spans covering `num_frames`; neighbours share >= `overlap` frames.

    All spans have `chunk_size` frames when the video is at least that long (the last one is
    shifted back rather than cut short, so a model sees one input shape).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise ValueError(f"overlap must be in [0, chunk_size), got {overlap} (chunk {chunk_size})")
    if num_frames <= chunk_size:
        return [(0, num_frames)] if num_frames > 0 else []
    step = chunk_size - overlap
    spans = []
    start = 0
    while start + chunk_size < num_frames:
        spans.append((start, start + chunk_size))
        start += step
    spans.append((num_frames - chunk_size, num_frames))
    return spans


def match_tracks(prev: np.ndarray, cur: np.ndarray, iou_threshold: float) -> dict[int, int]:
    """Match ids of two id-map stacks of the same frames `(S, H, W)`: {cur id: prev id}.

    One-to-one (Hungarian on IoU over all S frames); pairs below `iou_threshold` are dropped.
    """
    n_prev = int(prev.max(initial=0))
    n_cur = int(cur.max(initial=0))
    if n_prev == 0 or n_cur == 0:
        return {}
    joint = _joint_histogram(prev, cur, n_prev + 1, n_cur + 1)
    inter = joint[1:, 1:].astype(np.float64)
    area_prev = joint[1:, :].sum(1, dtype=np.float64)
    area_cur = joint[:, 1:].sum(0, dtype=np.float64)
    union = area_prev[:, None] + area_cur[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    # imported here: loading the code location (every run worker) skips scipy (~0.25 s)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-iou)
    pairs = zip(rows, cols, strict=True)
    return {int(c) + 1: int(r) + 1 for r, c in pairs if iou[r, c] >= iou_threshold}


def _joint_histogram(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> np.ndarray:
    """`(na, nb)` counts of pixel pairs (a, b); OpenCV's histogram when the pairs fit 16 bits."""
    if na * nb <= 65536:
        pair = a.astype(np.uint16) * np.uint16(nb) + b.astype(np.uint16)
        return _histogram(pair, na * nb).reshape(na, nb)
    flat = a.astype(np.int64).ravel() * nb + b.astype(np.int64).ravel()
    return np.bincount(flat, minlength=na * nb).reshape(na, nb)


def _histogram(values: np.ndarray, bins: int) -> np.ndarray:
    """Counts of 0..bins-1 in a uint8/uint16 array (OpenCV: no int64 copy, unlike bincount)."""
    flat = np.ascontiguousarray(values).reshape(-1, values.shape[-1] if values.ndim > 1 else 1)
    hist = cv2.calcHist([flat], [0], None, [bins], [0, bins])
    return hist.ravel().astype(np.int64)


class ChunkStitcher:
    """Stitches the predictions of consecutive overlapping chunks, one chunk at a time, and
    hands back each frame's ids as soon as no later chunk can change it, so a caller that
    writes them out keeps only about one chunk of id maps in memory.

    Ids handed back are global track ids, numbered in order of first appearance; `relabel`
    gives, at the end, the map to the final ids 1..N by descending score (tracks that own no
    pixel anywhere dropped). On the shared frames of two chunks the earlier chunk's ids are
    kept for the first half and the later chunk's for the second (see the module docstring).
    """

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = iou_threshold
        self.scores: list[list[float]] = []  # global id g -> its scores in each chunk
        self._present: list[bool] = [False]  # global id g owns a pixel in a handed-back frame
        self._last: np.ndarray | None = None  # the last chunk's local ids, all its frames
        self._pending: np.ndarray | None = None  # its frames not handed back yet
        self._to_global: np.ndarray | None = None  # last chunk's local id -> global id

    @property
    def num_ids(self) -> int:
        """Global ids handed out so far (the largest id any handed-back frame can hold)."""
        return len(self.scores)

    def add(self, output: PredictorOutput, shared: int) -> np.ndarray:
        """Take the next chunk's prediction, whose first `shared` frames are the previous
        chunk's last `shared`; return the frames now final, `(n, H, W)` uint16 global ids."""
        local = output.id_maps
        n = max(output.scores, default=0)
        to_global = np.zeros(n + 1, dtype=np.int64)
        done = np.zeros((0, *local.shape[1:]), dtype=np.uint16)
        keep_from = 0
        if self._pending is not None:
            if not 0 <= shared <= min(len(self._last), len(local)):
                raise ValueError(f"{shared} shared frames, but the previous chunk has "
                                 f"{len(self._last)} frames and this one {len(local)}")
            tail = self._last[len(self._last) - shared:]
            for cur_id, prev_id in match_tracks(tail, local[:shared],
                                                self.iou_threshold).items():
                to_global[cur_id] = self._to_global[prev_id]
            # frames already handed back stay as they are (a last chunk shifted far back)
            keep_from = max((shared + 1) // 2, shared - len(self._pending))
            done = self._hand_back(self._pending[:len(self._pending) - shared + keep_from])
        for lid in range(1, n + 1):
            if to_global[lid] == 0:
                self.scores.append([])
                self._present.append(False)
                to_global[lid] = len(self.scores)
            self.scores[to_global[lid] - 1].append(output.scores[lid])
        if len(self.scores) > MAX_TRACKS:
            raise ValueError(f"more than {MAX_TRACKS} tracks across chunks: ids no longer "
                             "fit a uint16 id map; raise the confidence threshold")
        self._last, self._pending, self._to_global = local, local[keep_from:], to_global
        return done

    def finish(self) -> np.ndarray:
        """The frames still pending after the last chunk, `(n, H, W)` uint16 global ids."""
        if self._pending is None:
            raise ValueError("no chunk was added")
        done, self._pending, self._last = self._hand_back(self._pending), None, None
        return done

    def _hand_back(self, local: np.ndarray) -> np.ndarray:
        out = self._to_global.astype(np.uint16)[local]
        counts = _histogram(out, len(self.scores) + 1)
        for g in np.nonzero(counts[1:])[0] + 1:
            self._present[g] = True
        return out

    def relabel(self) -> tuple[np.ndarray, dict[int, float]]:
        """`(lut, scores)`: `lut[g]` is global id g's final id (0: dropped, it owns no pixel),
        finals 1..N by descending mean score; `scores` per final id."""
        mean = [float(np.mean(s)) for s in self.scores]
        kept = [g for g in range(1, len(mean) + 1) if self._present[g]]
        kept.sort(key=lambda g: -mean[g - 1])
        lut = np.zeros(len(mean) + 1, dtype=np.uint16)
        lut[kept] = np.arange(1, len(kept) + 1, dtype=np.uint16)
        return lut, {i: mean[g - 1] for i, g in enumerate(kept, start=1)}


def predict_chunked(
    predict: ClipPredictor,
    frames: np.ndarray,
    *,
    chunk_size: int,
    overlap: int,
    iou_threshold: float = 0.5,
    prefetch: bool = False,
) -> PredictorOutput:
    """Run `predict` on overlapping chunks of `frames` `(T, H, W, 3)` and stitch the tracks
    (`ChunkStitcher`).

    prefetch: predict the next chunk in a worker thread while this one is stitched. Off by
    default: measured on an H200 with VideoCutLER, a fresh thread per video re-runs cuDNN's
    autotuning (peak memory 46-60 GiB instead of 8-21, and 25% slower), and stitching is
    only ~0.5 ms/frame, so there is little to overlap.

    Ids are copied into the output as they come and translated once at the end (global
    track -> final id), so each pixel is remapped a single time.
    """
    t = len(frames)
    spans = chunk_spans(t, chunk_size, overlap)
    if len(spans) <= 1:
        return predict(frames)
    h, w = frames.shape[1:3]
    out = np.zeros((t, h, w), dtype=np.uint16)
    stitcher = ChunkStitcher(iou_threshold)
    filled = 0
    prev_end = None
    # the next chunk is predicted (e.g. on the GPU) while this one is stitched
    with ThreadPoolExecutor(1, thread_name_prefix="chunk") as pool:
        run = pool.submit if prefetch else _Done
        pending = run(predict, frames[spans[0][0]:spans[0][1]])
        for i, (start, end) in enumerate(spans):
            res = pending.result()
            if i + 1 < len(spans):
                nxt = spans[i + 1]
                pending = run(predict, frames[nxt[0]:nxt[1]])
            if res.id_maps.shape != (end - start, h, w):
                raise ValueError(f"predictor returned id maps of shape {res.id_maps.shape} "
                                 f"for frames {start}..{end} of a {h}x{w} video")
            done = stitcher.add(res, 0 if prev_end is None else prev_end - start)
            out[filled:filled + len(done)] = done
            filled += len(done)
            prev_end = end
    out[filled:] = stitcher.finish()
    lut, scores = stitcher.relabel()
    apply_lut(out, lut)
    return PredictorOutput(out, scores)


class _Done:
    """A call made at once, shaped like a Future (prefetch off)."""

    def __init__(self, fn, *args):
        self._value = fn(*args)

    def result(self):
        return self._value


def apply_lut(ids: np.ndarray, lut: np.ndarray) -> None:
    """ids[...] = lut[ids] in place; OpenCV's LUT (8-bit indices) when every id is < 256."""
    if len(lut) <= 256:
        table = np.zeros(256, dtype=np.uint16)
        table[: len(lut)] = lut
        for k in range(len(ids)):  # frame by frame: no full-size 8-bit copy
            ids[k] = cv2.LUT(ids[k].astype(np.uint8), table)
    else:
        np.take(lut, ids, out=ids, mode="clip")
