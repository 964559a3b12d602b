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
from scipy.optimize import linear_sum_assignment

from wsovvis_dagster.predictors import PredictorOutput

ClipPredictor = Callable[[np.ndarray], PredictorOutput]
MAX_TRACKS = 65535  # ids must fit a uint16 id map


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


def predict_chunked(
    predict: ClipPredictor,
    frames: np.ndarray,
    *,
    chunk_size: int,
    overlap: int,
    iou_threshold: float = 0.5,
    prefetch: bool = False,
) -> PredictorOutput:
    """Run `predict` on overlapping chunks of `frames` `(T, H, W, 3)` and stitch the tracks.

    prefetch: predict the next chunk in a worker thread while this one is stitched. Off by
    default: measured on an H200 with VideoCutLER, a fresh thread per video re-runs cuDNN's
    autotuning (peak memory 46-60 GiB instead of 8-21, and 25% slower), and stitching is
    only ~0.5 ms/frame, so there is little to overlap.

    Chunk-local ids are copied into the output as they come and translated once at the end
    (chunk id -> global track -> final id), so each pixel is remapped a single time.
    """
    t = len(frames)
    spans = chunk_spans(t, chunk_size, overlap)
    if len(spans) <= 1:
        return predict(frames)
    h, w = frames.shape[1:3]
    raw = np.zeros((t, h, w), dtype=np.uint16)  # chunk-local ids, translated at the end
    scores: list[list[float]] = []  # global id g -> its scores in each chunk (g = index + 1)
    regions: list[tuple[int, int, np.ndarray]] = []  # frames [a, b) hold ids of one chunk
    prev: tuple[int, np.ndarray] | None = None  # end, local -> global
    # the next chunk is predicted (e.g. on the GPU) while this one is stitched
    with ThreadPoolExecutor(1, thread_name_prefix="chunk") as pool:
        run = pool.submit if prefetch else _Done
        pending = run(predict, frames[spans[0][0]:spans[0][1]])
        for i, (start, end) in enumerate(spans):
            res = pending.result()
            if i + 1 < len(spans):
                nxt = spans[i + 1]
                pending = run(predict, frames[nxt[0]:nxt[1]])
            local = res.id_maps
            if local.shape != (end - start, h, w):
                raise ValueError(f"predictor returned id maps of shape {local.shape} for "
                                 f"frames {start}..{end} of a {h}x{w} video")
            n = max(res.scores, default=0)
            to_global = np.zeros(n + 1, dtype=np.int64)
            write_from = start
            if prev is not None:
                p_end, p_global = prev
                shared = p_end - start
                # `raw` still holds the previous chunk's own ids on the shared frames
                matches = match_tracks(raw[start:p_end], local[:shared], iou_threshold)
                for cur_id, prev_id in matches.items():
                    to_global[cur_id] = p_global[prev_id]
                write_from = start + (shared + 1) // 2
                a, _, lut = regions[-1]
                regions[-1] = (a, write_from, lut)
            for lid in range(1, n + 1):
                if to_global[lid] == 0:
                    scores.append([])
                    to_global[lid] = len(scores)
                scores[to_global[lid] - 1].append(res.scores[lid])
            if len(scores) > MAX_TRACKS:
                raise ValueError(f"more than {MAX_TRACKS} tracks across chunks: ids no longer "
                                 "fit a uint16 id map; raise the confidence threshold")
            raw[write_from:end] = local[write_from - start:]
            regions.append((write_from, end, to_global))
            prev = (end, to_global)
    return _finish(raw, regions, [float(np.mean(s)) for s in scores])


class _Done:
    """A call made at once, shaped like a Future (prefetch off)."""

    def __init__(self, fn, *args):
        self._value = fn(*args)

    def result(self):
        return self._value


def _finish(raw: np.ndarray, regions: list[tuple[int, int, np.ndarray]],
            scores: list[float]) -> PredictorOutput:
    """Chunk-local ids in `raw` -> final ids 1..N by descending score, in place, one pass.

    Tracks that own no pixel anywhere (covered by better tracks, or only in overwritten
    overlap frames) are dropped.
    """
    present = np.zeros(len(scores) + 1, dtype=bool)
    for a, b, to_global in regions:
        counts = _histogram(raw[a:b], len(to_global))
        present[to_global[np.nonzero(counts[1:])[0] + 1]] = True
    kept = [g for g in range(1, len(scores) + 1) if present[g]]
    kept.sort(key=lambda g: -scores[g - 1])
    final = np.zeros(len(scores) + 1, dtype=np.uint16)
    final[kept] = np.arange(1, len(kept) + 1, dtype=np.uint16)
    for a, b, to_global in regions:
        _apply_lut(raw[a:b], final[to_global])
    return PredictorOutput(raw, {i: scores[g - 1] for i, g in enumerate(kept, start=1)})


def _apply_lut(ids: np.ndarray, lut: np.ndarray) -> None:
    """ids[...] = lut[ids] in place; OpenCV's LUT (8-bit indices) when every id is < 256."""
    if len(lut) <= 256:
        table = np.zeros(256, dtype=np.uint16)
        table[: len(lut)] = lut
        for k in range(len(ids)):  # frame by frame: no full-size 8-bit copy
            ids[k] = cv2.LUT(ids[k].astype(np.uint8), table)
    else:
        np.take(lut, ids, out=ids, mode="clip")
