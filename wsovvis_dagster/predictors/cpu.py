"""The embedded CPU predictor: a class-agnostic video instance segmenter with no weights.

Per frame, pixels are foreground where they are salient in colour (saturation well above the
frame's background level) or moving against the camera (motion-compensated frame difference).
Foreground is split into instances by hue mode (peaks of the foreground hue histogram) and
connected components. Instances are tracked across frames by Hungarian matching on mask IoU
(with a gap tolerance for short occlusions). It is honest but simple: good on the synthetic
set, weak on natural video (see README for measured figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from wsovvis_dagster.predictors import PredictorOutput, compose_id_maps

VERSION = "cpu-2"


@dataclass
class _Track:
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (H, W) bool
    hue: float = 0.0
    saturation: list[float] = field(default_factory=list)
    last_frame: int = -1
    centroids: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (y, x)

    def add(self, t: int, mask: np.ndarray, saturation: float) -> None:
        self.masks[t], self.last_frame = mask, t
        self.centroids[t] = np.argwhere(mask).mean(axis=0)
        self.saturation.append(saturation)

    def predicted_shift(self, t: int) -> np.ndarray:
        """Constant-velocity guess of the (dy, dx) from the last observation to frame `t`."""
        seen = sorted(self.centroids)
        if len(seen) < 2:
            return np.zeros(2)
        a, b = seen[-2], seen[-1]
        return (self.centroids[b] - self.centroids[a]) / (b - a) * (t - b)


def _shift(mask: np.ndarray, dy: float, dx: float) -> np.ndarray:
    return np.roll(mask, (int(round(dy)), int(round(dx))), axis=(0, 1))


def _hue_peaks(hue: np.ndarray, bins: int = 36, min_share: float = 0.04) -> np.ndarray:
    """Circular hue histogram peaks (OpenCV hue in 0..179) holding >= `min_share` of pixels."""
    hist, _ = np.histogram(hue, bins=bins, range=(0, 180))
    smooth = hist + 0.5 * (np.roll(hist, 1) + np.roll(hist, -1))
    is_peak = (smooth >= np.roll(smooth, 1)) & (smooth > np.roll(smooth, -1))
    peaks = np.nonzero(is_peak & (smooth >= min_share * max(hue.size, 1)))[0]
    return (peaks + 0.5) * (180.0 / bins)


def _hue_distance(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    d = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))
    return np.minimum(d, 180.0 - d)


class CpuVideoPredictor:
    """Colour/motion saliency + hue-mode instances + IoU tracking. No weights, CPU only."""

    name = "cpu-colour-motion"
    version = VERSION

    def __init__(
        self,
        *,
        max_tracks: int = 10,
        saturation_margin: float = 60.0,
        motion_threshold: float = 40.0,
        min_area_fraction: float = 0.002,
        match_iou: float = 0.2,
        max_gap: int = 3,
        min_track_frames: int = 2,
    ) -> None:
        self.max_tracks = max_tracks
        self.saturation_margin = saturation_margin
        self.motion_threshold = motion_threshold
        self.min_area_fraction = min_area_fraction
        self.match_iou = match_iou
        self.max_gap = max_gap
        self.min_track_frames = min_track_frames
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))

    # -- per frame -------------------------------------------------------------------------
    def _motion(self, prev_grey: np.ndarray | None, grey: np.ndarray) -> np.ndarray:
        """Pixels that moved relative to the camera (global shift removed by phase correlation)."""
        if prev_grey is None:
            return np.zeros(grey.shape, dtype=bool)
        (dx, dy), _ = cv2.phaseCorrelate(prev_grey, grey)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        aligned = cv2.warpAffine(prev_grey, shift, grey.shape[::-1], borderMode=cv2.BORDER_REFLECT)
        diff = cv2.GaussianBlur(np.abs(grey - aligned), (5, 5), 0)
        return diff > self.motion_threshold

    def segment_frame(
        self, rgb: np.ndarray, prev_grey: np.ndarray | None
    ) -> tuple[list[tuple[np.ndarray, float, float]], np.ndarray]:
        """Instances of one frame as `(mask (H, W) bool, hue, mean saturation)`, and its grey."""
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        hue = hsv[..., 0].astype(np.float32)
        sat = hsv[..., 1].astype(np.float32)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        salient = sat > np.median(sat) + self.saturation_margin
        moving = self._motion(prev_grey, grey) & (sat > np.median(sat) + self.saturation_margin / 2)
        fg = (salient | moving).astype(np.uint8)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._kernel)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._kernel).astype(bool)
        min_area = self.min_area_fraction * fg.size
        instances = []
        if fg.sum() < min_area:
            return instances, grey
        peaks = _hue_peaks(hue[fg])
        if peaks.size == 0:
            peaks = np.array([float(np.median(hue[fg]))])
        nearest = np.argmin(_hue_distance(hue[..., None], peaks[None, None, :]), axis=-1)
        for k, peak in enumerate(peaks):
            part = (fg & (nearest == k)).astype(np.uint8)
            part = cv2.morphologyEx(part, cv2.MORPH_OPEN, self._kernel)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
            for lab in range(1, n):
                if stats[lab, cv2.CC_STAT_AREA] >= min_area:
                    m = labels == lab
                    instances.append((m, float(peak), float(sat[m].mean())))
        return instances, grey

    # -- whole clip ------------------------------------------------------------------------
    def predict(self, frames: np.ndarray) -> PredictorOutput:
        """Segment `(T, H, W, 3) uint8` RGB frames into tracks (see `PredictorOutput`)."""
        num_frames, h, w = frames.shape[:3]
        tracks: list[_Track] = []
        prev_grey = None
        for t in range(num_frames):
            instances, prev_grey = self.segment_frame(frames[t], prev_grey)
            active = [k for k, tr in enumerate(tracks) if t - tr.last_frame <= self.max_gap + 1]
            matched: set[int] = set()
            if active and instances:
                cost = np.ones((len(instances), len(active)))
                for i, (m, hue, _) in enumerate(instances):
                    centre = np.argwhere(m).mean(axis=0)
                    radius = np.sqrt(m.sum() / np.pi)
                    for j, k in enumerate(active):
                        tr = tracks[k]
                        if _hue_distance(hue, tr.hue) > 15:
                            continue
                        shift = tr.predicted_shift(t)
                        last = _shift(tr.masks[tr.last_frame], *shift)
                        inter = np.logical_and(m, last).sum()
                        union = np.logical_or(m, last).sum()
                        iou = inter / max(union, 1)
                        # fast movers: accept a same-hue blob near the predicted centre
                        near = np.linalg.norm(centre - tr.centroids[tr.last_frame] - shift)
                        if iou < self.match_iou and near < 2.0 * radius:
                            iou = self.match_iou
                        cost[i, j] = 1.0 - iou
                rows, cols = linear_sum_assignment(cost)
                for i, j in zip(rows, cols, strict=False):
                    if 1.0 - cost[i, j] >= self.match_iou:
                        m, _, s = instances[i]
                        tracks[active[j]].add(t, m, s)
                        matched.add(i)
            for i, (m, hue, s) in enumerate(instances):
                if i not in matched:
                    tracks.append(_Track(hue=hue))
                    tracks[-1].add(t, m, s)
        tracks = [tr for tr in tracks if len(tr.masks) >= self.min_track_frames]
        # confidence: how long the track lives and how salient it is
        scores = np.array(
            [0.5 * len(tr.masks) / num_frames + 0.5 * min(np.mean(tr.saturation) / 255.0, 1.0)
             for tr in tracks]
        )
        order = np.argsort(-scores, kind="stable")[: self.max_tracks]
        masks = np.zeros((len(order), num_frames, h, w), dtype=bool)
        for n, k in enumerate(order):
            for t, m in tracks[k].masks.items():
                masks[n, t] = m
        return compose_id_maps(masks, scores[order])
