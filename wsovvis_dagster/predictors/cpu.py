"""The embedded CPU predictor: a class-agnostic video object segmenter with no weights.

Works at a reduced resolution (`work_width`) and upsamples its masks. Per video:

1. **Motion against the camera.** Dense DIS optical flow forward and backward; a homography
   fitted to each flow with RANSAC stands for the camera; what the homography does not explain
   (the residual flow, the smaller of the forward and backward one so that occlusion halos do not
   count), times a broad centre prior, is object motion; it is normalised by its frame's Otsu
   threshold, so slow and fast objects are treated alike.
2. **Appearance.** A per-video colour model (3-D colour histograms of confidently moving vs
   confidently static pixels) gives each pixel a foreground likelihood, gated by a location
   prior (near where motion was seen), so static parts of a moving object are recovered.
   Saturation above the frame's median counts too, weighted by how well it agrees with motion
   in this video (strong on saturated objects over a dull scene, off for sky or grass).
3. **Space and time.** Motion and appearance evidence are fused as log-odds, averaged over SLIC
   superpixels (sharp edges) and smoothed forwards and backwards along the flow.
4. **Tracks.** Foreground components (nearby fragments merged, split by hue where the parts
   are clearly different saturated colours) are linked by Hungarian matching on IoU with the
   previous masks warped along the flow, with a short gap tolerance. The resulting tracks are
   then joined where they are pieces of one object: side by side and moving alike, or one
   starting where another of the same colours ended (up to `link_gap` frames later). Ids are
   ordered by score (size x persistence x confidence), the primary object first.

Tuned on the DAVIS-2016 train split (and the synthetic train split) only; see
docs/predictor.md for the protocol and figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from wsovvis_dagster.predictors import PredictorOutput, VideoPredictor, _drop_vanished

VERSION = "cpu-4"


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _hue_peaks(hue: np.ndarray, bins: int = 36, min_share: float = 0.15) -> np.ndarray:
    """Circular hue histogram peaks (OpenCV hue in 0..179) holding >= `min_share` of pixels."""
    hist, _ = np.histogram(hue, bins=bins, range=(0, 180))
    smooth = hist + 0.5 * (np.roll(hist, 1) + np.roll(hist, -1))
    is_peak = (smooth >= np.roll(smooth, 1)) & (smooth > np.roll(smooth, -1))
    peaks = np.nonzero(is_peak & (smooth >= min_share * max(hue.size, 1)))[0]
    return (peaks + 0.5) * (180.0 / bins)


def _hue_distance(a, b) -> np.ndarray:
    d = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))
    return np.minimum(d, 180.0 - d)


@dataclass
class _Track:
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (h, w) bool, work res
    confidence: list[float] = field(default_factory=list)
    last_frame: int = -1
    hue: float | None = None  # of a saturated object, else None

    def add(self, t: int, mask: np.ndarray, confidence: float, hue: float | None) -> None:
        self.masks[t], self.last_frame = mask, t
        self.confidence.append(confidence)
        if hue is not None:
            self.hue = hue


class CpuVideoPredictor:
    """Flow + camera compensation + colour model + superpixels + flow tracking. No weights."""

    name = "cpu-colour-motion"  # kept from cpu-2: `version` tells them apart
    version = VERSION

    def __init__(
        self,
        *,
        max_tracks: int = 10,
        work_width: int = 214,
        motion_floor: float = 0.1,  # residual flow (work-res px/frame) that is surely noise
        motion_slope: float = 2.0,  # log-odds per log(residual / the frame's Otsu threshold)
        centre_power: float = 1.0,  # weight of the centre prior on the residual
        motion_clip: float = 3.0,  # |log-odds| motion alone may reach
        motion_weight: float = 1.0,
        appearance_weight: float = 1.5,
        prior_radius: float = 0.08,  # location prior: blur of the motion mask, x image width
        prior_floor: float = 0.5,  # appearance counts this much even far from any motion
        chroma_weight: float = 5.0,  # saturation above the frame's median, where it agrees
        temporal: float = 0.2,  # weight of the flow-warped neighbour frames' belief
        superpixels: int = 300,
        threshold: float = 0.5,
        min_area_fraction: float = 0.002,
        merge_radius: float = 0.02,  # fragments closer than this (x width) form one instance
        hue_split_saturation: float = 90.0,
        match_iou: float = 0.1,
        max_gap: int = 3,
        min_track_frames: int = 2,
        link_radius: float = 0.05,  # fragments this close (x width) may be one object
        link_size: float = 1.2,  # ... or this close x sqrt(area), if that is more
        link_touch: float = 0.5,  # ... if that close in this share of their common frames
        link_motion: float = 3.0,  # ... and their mean flows differ by less (work px/frame)
        link_handover: int = 2,  # tracks sharing no more frames are one after the other
        link_gap: int = 30,  # a track may continue one that ended up to this many frames ago
        link_colour: float = 0.5,  # ... if their colour histograms agree this much
    ) -> None:
        self.max_tracks = max_tracks
        self.work_width = work_width
        self.motion_floor = motion_floor
        self.motion_slope = motion_slope
        self.centre_power = centre_power
        self.motion_clip = motion_clip
        self.motion_weight = motion_weight
        self.appearance_weight = appearance_weight
        self.prior_radius = prior_radius
        self.prior_floor = prior_floor
        self.chroma_weight = chroma_weight
        self.temporal = temporal
        self.superpixels = superpixels
        self.threshold = threshold
        self.min_area_fraction = min_area_fraction
        self.merge_radius = merge_radius
        self.hue_split_saturation = hue_split_saturation
        self.match_iou = match_iou
        self.max_gap = max_gap
        self.min_track_frames = min_track_frames
        self.link_radius = link_radius
        self.link_size = link_size
        self.link_touch = link_touch
        self.link_handover = link_handover
        self.link_motion = link_motion
        self.link_gap = link_gap
        self.link_colour = link_colour

    # -- motion ----------------------------------------------------------------------------
    @staticmethod
    def _camera_residual(flow: np.ndarray, grid: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """|flow - homography fitted to it|: motion the camera does not explain."""
        h, w = flow.shape[:2]
        src = grid[sample]
        dst = src + flow.reshape(-1, 2)[sample]
        hom, _ = cv2.findHomography(src, dst, cv2.RANSAC, 1.0, maxIters=500)
        if hom is None:
            hom = np.eye(3)
        cam = cv2.perspectiveTransform(grid[None], hom)[0] - grid
        return np.linalg.norm(flow.reshape(-1, 2) - cam, axis=1).reshape(h, w)

    def _motion(self, greys: list[np.ndarray]) -> tuple[np.ndarray, list, list]:
        """Per-frame p(object motion) `(T, h, w)`, forward and backward flows (None at ends)."""
        num, (h, w) = len(greys), greys[0].shape
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        ys, xs = np.mgrid[0:h, 0:w]
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
        step = max(2, int(round(np.sqrt(h * w / 1500))))
        sample = ((ys % step == step // 2) & (xs % step == step // 2)).ravel()
        fwd: list = [None] * num
        bwd: list = [None] * num
        for t in range(num - 1):
            fwd[t] = dis.calc(greys[t], greys[t + 1], None)
            bwd[t + 1] = dis.calc(greys[t + 1], greys[t], None)
        prob = np.zeros((num, h, w), dtype=np.float32)
        if num < 2:
            return prob, fwd, bwd
        from skimage.filters import threshold_otsu  # not at import: see `predict`
        # objects of interest tend to sit near the centre: a weak multiplicative prior
        centre = np.exp(-0.5 * (((xs - w / 2) / (0.3 * w)) ** 2 + ((ys - h / 2) / (0.35 * h)) ** 2))
        centre = (centre ** self.centre_power).astype(np.float32)
        for t in range(num):
            res = [self._camera_residual(f, grid, sample)
                   for f in (fwd[t], bwd[t]) if f is not None]
            r = (np.minimum(res[0], res[1]) if len(res) == 2 else res[0]) * centre
            # Otsu splits each frame's residual into "moving" and "camera": a per-frame scale
            level = max(self.motion_floor, float(threshold_otsu(r)) if np.ptp(r) > 0 else 0.0)
            prob[t] = _sigmoid(self.motion_slope * np.log((r + 1e-3) / level))
        return prob, fwd, bwd

    # -- appearance ------------------------------------------------------------------------
    @staticmethod
    def _colour_bins(rgb: np.ndarray) -> np.ndarray:
        q = (rgb >> 4).astype(np.int32)
        return (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2]

    def _appearance(self, bins: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """p(foreground | colour) from histograms of confidently moving vs static pixels."""
        fg = np.bincount(bins[motion > 0.8], minlength=4096).astype(np.float64)
        bg = np.bincount(bins[motion < 0.2], minlength=4096).astype(np.float64)
        if fg.sum() < 50 or bg.sum() < 50:
            return np.full(bins.shape, 0.5, dtype=np.float32)
        # smooth in colour space so unseen neighbouring colours are not certain either way
        fg = cv2.GaussianBlur(fg.reshape(16, 256), (3, 3), 0).ravel() / fg.sum()
        bg = cv2.GaussianBlur(bg.reshape(16, 256), (3, 3), 0).ravel() / bg.sum()
        ratio = (fg + 1e-6) / (fg + bg + 2e-6)
        return ratio[bins].astype(np.float32)

    @staticmethod
    def _chroma(rgb: np.ndarray, margin: float = 60.0) -> np.ndarray:
        """Saturation well above the frame's median (a saturated object on a dull scene) as
        log-odds in [-2, 2]."""
        sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32)
        return np.clip((sat - float(np.median(sat)) - margin) / 20.0, -2.0, 2.0)

    # -- whole clip ------------------------------------------------------------------------
    def segment(self, frames: np.ndarray) -> tuple[np.ndarray, list, list]:
        """Work-resolution foreground probability `(T, h, w)` and the flows."""
        num, height, width = frames.shape[:3]
        scale = min(1.0, self.work_width / width)
        size = (max(8, int(round(width * scale))), max(8, int(round(height * scale))))
        small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small]
        motion, fwd, bwd = self._motion(greys)
        bins = self._colour_bins(small)
        app = self._appearance(bins, motion)
        sigma = self.prior_radius * size[0]
        chroma, chroma_weight = None, 0.0
        if self.chroma_weight:
            # trust saturation only in videos where it picks out what moves (the synthetic
            # set's saturated objects; not sky or grass): weight by their IoU
            chroma = np.stack([self._chroma(f) for f in small])
            moving, saturated = motion > 0.5, chroma > 0
            agree = (moving & saturated).sum() / max((moving | saturated).sum(), 1)
            chroma_weight = self.chroma_weight * float(np.clip((agree - 0.3) / 0.1, 0, 1))
        logits = np.empty_like(motion)
        for t in range(num):
            prior = cv2.GaussianBlur((motion[t] > 0.5).astype(np.float32), (0, 0), sigma)
            prior = prior / max(float(prior.max()), 1e-6)
            gate = self.prior_floor + (1.0 - self.prior_floor) * prior
            logits[t] = (self.motion_weight * np.clip(_logit(motion[t]), -self.motion_clip,
                                                      self.motion_clip)
                         + self.appearance_weight * (_logit(app[t]) * gate - (1.0 - gate)))
            if chroma is not None:
                logits[t] += chroma_weight * chroma[t]
        logits = self._superpixel_mean(small, logits)
        belief = self._smooth_in_time(logits, fwd, bwd)
        return _sigmoid(belief), fwd, bwd

    def _superpixel_mean(self, small: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self.superpixels <= 0:
            return logits
        from skimage.segmentation import slic  # not at import: see `predict`

        out = np.empty_like(logits)
        for t in range(len(small)):
            seg = slic(small[t], n_segments=self.superpixels, compactness=10, start_label=0,
                       enforce_connectivity=False)
            sums = np.bincount(seg.ravel(), weights=logits[t].ravel())
            counts = np.maximum(np.bincount(seg.ravel()), 1)
            out[t] = (sums / counts)[seg]
        return out

    def _smooth_in_time(self, logits: np.ndarray, fwd: list, bwd: list) -> np.ndarray:
        """Forward and backward recursive averaging of log-odds, warped along the flow."""
        num = len(logits)
        if num < 2 or self.temporal <= 0:
            return logits
        a = self.temporal
        h, w = logits.shape[1:]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)

        def warp(x, flow):  # value at t from frame t±1, sampled where the flow points
            return cv2.remap(x, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)

        ahead = logits.copy()
        for t in range(1, num):
            ahead[t] = (1 - a) * logits[t] + a * warp(ahead[t - 1], bwd[t])
        back = logits.copy()
        for t in range(num - 2, -1, -1):
            back[t] = (1 - a) * logits[t] + a * warp(back[t + 1], fwd[t])
        # each pass already counts the frame itself once: remove the double count
        return (ahead + back - (1 - a) * logits) / (1 + a)

    def _instances(self, fg: np.ndarray, prob: np.ndarray, hsv: np.ndarray) -> list:
        """Instances of one frame as `(mask, confidence, hue or None)` at work resolution.

        Nearby fragments join one instance; a mostly saturated instance whose hues form
        separate modes is split by hue (touching objects of different colours)."""
        h, w = fg.shape
        min_area = self.min_area_fraction * h * w
        radius = max(1, int(round(self.merge_radius * w)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        grown = cv2.dilate(fg.astype(np.uint8), kernel)
        n, labels = cv2.connectedComponents(grown, connectivity=8)
        hue, saturated = hsv[..., 0].astype(np.float32), hsv[..., 1] > self.hue_split_saturation
        out = []
        for lab in range(1, n):
            m = (labels == lab) & fg
            if m.sum() < min_area:
                continue
            parts = [m]
            chromatic = saturated[m].mean() > 0.5
            if chromatic:
                peaks = _hue_peaks(hue[m & saturated], min_share=0.1)
                if len(peaks) > 1:
                    near = np.argmin(_hue_distance(hue[..., None], peaks), axis=-1)
                    parts = []
                    for k in range(len(peaks)):
                        cnt, sub = cv2.connectedComponents((m & (near == k)).astype(np.uint8))
                        parts += [sub == j for j in range(1, cnt)]
            for part in parts:
                if part.sum() >= min_area:
                    tone = None
                    if chromatic and (part & saturated).any():
                        tone = float(np.median(hue[part & saturated]))
                    out.append((part, float(prob[part].mean()), tone))
        return out

    def predict(self, frames: np.ndarray) -> PredictorOutput:
        """Segment `(T, H, W, 3) uint8` RGB frames into tracks (see `PredictorOutput`)."""
        # scipy and scikit-image are imported where used: the code location (every run
        # worker and step process) imports this module for its version, not to predict
        from scipy.optimize import linear_sum_assignment

        num, height, width = frames.shape[:3]
        prob, fwd, bwd = self.segment(frames)
        h, w = prob.shape[1:]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        tracks: list[_Track] = []
        smalls = []
        for t in range(num):
            small = cv2.resize(frames[t], (w, h), interpolation=cv2.INTER_AREA)
            smalls.append(small)
            hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
            instances = self._instances(prob[t] > self.threshold, prob[t], hsv)
            active = [k for k, tr in enumerate(tracks) if t - tr.last_frame <= self.max_gap + 1]
            matched: set[int] = set()
            if active and instances:
                cost = np.ones((len(instances), len(active)))
                for j, k in enumerate(active):
                    last = tracks[k].masks[tracks[k].last_frame].astype(np.float32)
                    if bwd[t] is not None:
                        last = cv2.remap(last, xs + bwd[t][..., 0], ys + bwd[t][..., 1],
                                         cv2.INTER_LINEAR)
                    last = last > 0.5
                    for i, (m, _, tone) in enumerate(instances):
                        if (tone is not None and tracks[k].hue is not None
                                and _hue_distance(tone, tracks[k].hue) > 20):
                            continue  # a different colour is a different object
                        inter = np.logical_and(m, last).sum()
                        cost[i, j] = 1.0 - inter / max(np.logical_or(m, last).sum(), 1)
                rows, cols = linear_sum_assignment(cost)
                for i, j in zip(rows, cols, strict=False):
                    if 1.0 - cost[i, j] >= self.match_iou:
                        tracks[active[j]].add(t, *instances[i])
                        matched.add(i)
            for i, inst in enumerate(instances):
                if i not in matched:
                    tracks.append(_Track())
                    tracks[-1].add(t, *inst)
        tracks = self._link_fragments(tracks, fwd, bwd, smalls)
        tracks = [tr for tr in tracks if len(tr.masks) >= self.min_track_frames]
        # score: how much of the clip the track covers (area x frames) and how sure it is
        mass = np.array([sum(float(m.mean()) for m in tr.masks.values()) for tr in tracks])
        conf = np.array([float(np.mean(tr.confidence)) for tr in tracks])
        scores = conf * np.sqrt(mass / max(float(mass.max(initial=0.0)), 1e-9))
        order = np.argsort(-scores, kind="stable")[: self.max_tracks]
        return self._compose(tracks, order, scores, num, (height, width))

    def _link_fragments(self, tracks: list, fwd: list, bwd: list, small: list) -> list:
        """Join tracks that are pieces of one object.

        Two tracks are joined when (a) they live side by side for several frames, close to
        each other (within `reach`, which grows with the object's size) and moving alike (a
        rider and the bike, a body cut in two by an occluder), or (b) one starts near where
        the other ends, within `link_gap` frames, with similar colours (the tracker lost the
        object for a while: fast motion, a split, an occlusion, a hue split of one object).
        Side-by-side tracks of clearly different saturated hues stay apart. `small`: the
        frames at work resolution."""
        tracks = [tr for tr in tracks if tr.masks]
        if len(tracks) < 2 or self.link_radius <= 0:
            return tracks
        w = small[0].shape[1]

        def flow_at(t):
            if fwd[t] is not None:
                return fwd[t]
            return -bwd[t] if bwd[t] is not None else None

        stats = []
        for tr in tracks:
            hist = np.zeros(512)
            motion, boxes, centres = {}, {}, {}
            for t, m in tr.masks.items():
                q = (small[t][m] >> 5).astype(np.int32)
                hist += np.bincount((q[:, 0] << 6) | (q[:, 1] << 3) | q[:, 2], minlength=512)
                ys, xs = np.nonzero(m)
                boxes[t] = (xs.min(), ys.min(), xs.max(), ys.max())
                centres[t] = np.array([xs.mean(), ys.mean()])
                f = flow_at(t)
                if f is not None:
                    motion[t] = f[m].mean(axis=0)
            area = float(np.mean([m.sum() for m in tr.masks.values()]))
            stats.append({"hist": hist / max(hist.sum(), 1.0), "motion": motion,
                          "boxes": boxes, "centres": centres, "area": area,
                          "span": (min(tr.masks), max(tr.masks))})

        def box_gap(ba, bb):
            dx = max(bb[0] - ba[2], ba[0] - bb[2], 0)
            dy = max(bb[1] - ba[3], ba[1] - bb[3], 0)
            return float(np.hypot(dx, dy))

        def mask_gap(ma, mb):
            dist = cv2.distanceTransform((~ma).astype(np.uint8), cv2.DIST_L2, 3)
            return float(dist[mb].min())

        parent = list(range(len(tracks)))

        def root(k):
            while parent[k] != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        for a in range(len(tracks)):
            for b in range(a + 1, len(tracks)):
                ta, tb, sa, sb = tracks[a], tracks[b], stats[a], stats[b]
                reach = max(self.link_radius * w,
                            self.link_size * np.sqrt(min(sa["area"], sb["area"])))
                common = sorted(set(ta.masks) & set(tb.masks))
                if len(common) > self.link_handover:
                    if ta.hue is not None and tb.hue is not None and _hue_distance(
                            ta.hue, tb.hue) > 20:
                        continue  # side by side in different colours: different objects
                    near = [t for t in common if box_gap(sa["boxes"][t], sb["boxes"][t]) <= reach]
                    if len(near) < self.link_touch * len(common):
                        continue
                    sample = near[:: max(1, len(near) // 8)]
                    close = sum(mask_gap(ta.masks[t], tb.masks[t]) <= reach for t in sample)
                    diffs = [np.linalg.norm(sa["motion"][t] - sb["motion"][t]) for t in common
                             if t in sa["motion"] and t in sb["motion"]]
                    if (close * len(near) >= self.link_touch * len(common) * len(sample)
                            and (not diffs or np.median(diffs) < self.link_motion)):
                        parent[root(b)] = root(a)
                    continue
                # one after the other (or handing over within a frame or two)
                first, second = (a, b) if sa["span"][0] <= sb["span"][0] else (b, a)
                end, start = stats[first]["span"][1], stats[second]["span"][0]
                gap = start - end
                if gap > self.link_gap or stats[second]["span"][1] <= end:
                    continue
                colour = float(np.sqrt(sa["hist"] * sb["hist"]).sum())  # Bhattacharyya
                if colour < self.link_colour:
                    continue
                # where the first would be at the second's start, at its last velocity
                # (np.roll wraps at the border: an object leaving one side may be continued by
                # one entering the other, if their colours agree; kept as frozen for cpu-4)
                cf = stats[first]["centres"]
                velocity = (cf[end] - cf[end - 1]) if end - 1 in cf else np.zeros(2)
                shift = velocity * max(gap, 0)
                moved = np.roll(tracks[first].masks[end], tuple(np.round(shift[::-1]).astype(
                    int)), axis=(0, 1))
                if moved.any() and mask_gap(moved, tracks[second].masks[start]) <= reach * (
                        1.0 + 0.1 * max(gap, 0)):
                    parent[root(b)] = root(a)
        groups: dict[int, list[int]] = {}
        for k in range(len(tracks)):
            groups.setdefault(root(k), []).append(k)
        out = []
        for members in groups.values():
            if len(members) == 1:
                out.append(tracks[members[0]])
                continue
            joined = _Track()
            for t in sorted({t for k in members for t in tracks[k].masks}):
                parts = [tracks[k].masks[t] for k in members if t in tracks[k].masks]
                joined.masks[t] = np.logical_or.reduce(parts)
            joined.last_frame = max(joined.masks)
            joined.confidence = [c for k in members for c in tracks[k].confidence]
            joined.hue = next((tracks[k].hue for k in members if tracks[k].hue is not None),
                              None)
            out.append(joined)
        return out

    def _compose(self, tracks, order, scores, num, full) -> PredictorOutput:
        """Upsample each frame's track masks smoothly to full size; ids by descending score."""
        height, width = full
        id_maps = np.zeros((num, height, width), dtype=np.uint16)
        for t in range(num):
            present = [(n + 1, tracks[k].masks[t]) for n, k in enumerate(order)
                       if t in tracks[k].masks]
            if not present:
                continue
            for start in range(0, len(present), 4):  # cv2.resize takes up to 4 channels
                chunk = present[start:start + 4]
                stack = np.stack([m for _, m in chunk], axis=-1).astype(np.float32)
                big = cv2.resize(stack, (width, height), interpolation=cv2.INTER_LINEAR)
                big = big.reshape(height, width, len(chunk))
                best = big.argmax(axis=-1)
                keep = (big.max(axis=-1) > 0.5) & (id_maps[t] == 0)
                ids = np.array([i for i, _ in chunk], dtype=np.uint16)
                id_maps[t][keep] = ids[best[keep]]
        out_scores = {n + 1: float(scores[k]) for n, k in enumerate(order)}
        return _drop_vanished(PredictorOutput(id_maps, out_scores))


class HeldPredictor:
    """The `cpu-slow` test backend: `inner`'s output unchanged, returned `hold_seconds` later.

    Lets orchestration tests hold a "GPU" for a known time per video. Output (and `version`)
    are the inner predictor's, so its PNGs are byte-identical to the plain cpu backend's.
    """

    def __init__(self, inner: VideoPredictor, *, hold_seconds: float, device: str) -> None:
        self.inner, self.hold_seconds, self.device = inner, hold_seconds, device
        self.name = f"{inner.name}+hold{hold_seconds:g}s"
        self.version = inner.version

    def predict(self, frames: np.ndarray) -> PredictorOutput:
        output = self.inner.predict(frames)
        time.sleep(self.hold_seconds)
        return output
