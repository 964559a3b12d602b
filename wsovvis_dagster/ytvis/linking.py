"""Link per-frame mask fragments into tracks by mask IoU (for predictors whose ids drift).

A fragment is one id in one frame of a `(T, H, W)` integer id map (0 = background). Frames are
visited in order; every track remembers the mask of its last frame. The fragments of frame t
are matched one-to-one to the tracks last seen in frames t-1 ... t-1-max_gap with the
Hungarian algorithm (`scipy.optimize.linear_sum_assignment`) on cost 1 - IoU, plus a small
penalty per skipped frame so that, at equal IoU, the more recent track wins. A pair is only
linked when its IoU is at least `iou_threshold`; unmatched fragments start new tracks, and a
track unseen for more than `max_gap` frames is closed.

Defaults, measured on the DAVIS OSVOS predictions in ../shared (ids shuffled per frame, then
linked): `iou_threshold=0.2` because consecutive masks of one object overlap with IoU as low as
0.24 under fast motion (median 0.46-0.66); at 0.2 horsejump-high is linked perfectly, and at
0.3 scooter-black's first object already breaks into pieces. Distinct objects are kept apart by
the one-to-one assignment rather than by a high threshold. `max_gap=5` bridges short
occlusions or missed detections (a fifth of a second at 25 fps). Each track's last mask is
compared both where it was and moved by its centroid velocity; the larger overlap counts.

The original ids stay recoverable: `LinkResult.mapping[(frame, original_id)]` is the track of
each fragment, and `restore_original_ids` rebuilds the input id maps from the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_IOU_THRESHOLD = 0.2
DEFAULT_MAX_GAP = 5
GAP_PENALTY = 1e-3  # per skipped frame, added to 1 - IoU: breaks ties towards recent tracks
MAX_TRACKS = 65535  # what a 16-bit mask PNG can hold


@dataclass(frozen=True)
class LinkParams:
    """Linker settings; picklable, so they can travel to conversion worker processes."""

    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    max_gap: int = DEFAULT_MAX_GAP

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_gap < 0:
            raise ValueError(f"max_gap must be >= 0, got {self.max_gap}")


@dataclass(frozen=True)
class LinkResult:
    """Linked id maps and how each original fragment was relabelled."""

    id_maps: np.ndarray  # (T, H, W) uint8/uint16 track ids, 0 = background
    mapping: dict[tuple[int, int], int]  # (frame, original id) -> track id

    @property
    def num_tracks(self) -> int:
        return len(set(self.mapping.values()))

    def source_ids(self, track_id: int) -> list[int | None]:
        """Per frame, the original id that became `track_id` (None where the track is absent)."""
        return self.all_source_ids().get(track_id, [None] * self.id_maps.shape[0])

    def all_source_ids(self) -> dict[int, list[int | None]]:
        """`source_ids` of every track, in one pass over the mapping."""
        out: dict[int, list[int | None]] = {}
        for (t, orig), track in self.mapping.items():
            out.setdefault(track, [None] * self.id_maps.shape[0])[t] = orig
        return out


def _dense(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(ids (K,), areas (K,), dense (H, W) int32)`: ids present and the frame as 1..K indices."""
    counts = np.bincount(frame.ravel())
    ids = np.flatnonzero(counts)
    ids = ids[ids != 0]
    lut = np.zeros(counts.size, dtype=np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return ids, counts[ids], lut[frame]


@dataclass
class _Track:
    """An open track: its pixels in the last frame it was seen, and its centroid motion."""

    frame: int
    ys: np.ndarray  # (N,) int32 rows of its last mask
    xs: np.ndarray  # (N,) int32 columns
    centre: np.ndarray  # (2,) float: (row, column) centroid of the last mask
    velocity: np.ndarray  # (2,) float: centroid displacement per frame

    def overlaps(self, t: int, dense: np.ndarray, k: int) -> np.ndarray:
        """`(k,)` pixels shared with fragments 1..k of frame `t`: the larger of the overlap of
        the last mask as it was and moved by the track's velocity (constant motion). Taking
        the larger keeps a jumpy centroid (a mask that briefly grew a second blob) harmless."""
        h, w = dense.shape
        best = np.bincount(dense[self.ys, self.xs], minlength=k + 1)[1:]
        dy, dx = np.rint(self.velocity * (t - self.frame)).astype(np.int64)
        if dy or dx:
            ys, xs = self.ys + dy, self.xs + dx
            inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            moved = np.bincount(dense[ys[inside], xs[inside]], minlength=k + 1)[1:]
            best = np.maximum(best, moved)
        return best


def link_fragments(
    id_maps: np.ndarray,
    *,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    max_gap: int = DEFAULT_MAX_GAP,
) -> LinkResult:
    """Relabel `(T, H, W)` integer id maps so that one object keeps one id across frames.

    Returns the linked `(T, H, W)` maps (uint8 when at most 255 tracks, else uint16) and the
    `(frame, original id) -> track id` mapping. See the module docstring for the algorithm.
    """
    from scipy.optimize import linear_sum_assignment  # here: conversion workers skip the import

    params = LinkParams(iou_threshold, max_gap)
    id_maps = np.asarray(id_maps)
    if id_maps.ndim != 3 or id_maps.dtype.kind not in "ui":
        raise ValueError(f"id_maps must be (T, H, W) integers, got {id_maps.shape} {id_maps.dtype}")
    out = np.zeros(id_maps.shape, dtype=np.uint16)
    mapping: dict[tuple[int, int], int] = {}
    open_tracks: dict[int, _Track] = {}
    next_track = 1
    for t in range(id_maps.shape[0]):
        ids, areas, dense = _dense(id_maps[t])
        for track in [k for k, tr in open_tracks.items() if tr.frame < t - 1 - params.max_gap]:
            del open_tracks[track]
        if ids.size == 0:
            continue
        candidates = list(open_tracks)
        assigned = np.zeros(ids.size, dtype=np.int64)
        if candidates:
            inter = np.stack(
                [open_tracks[k].overlaps(t, dense, ids.size) for k in candidates]
            ).astype(np.float64)
            track_area = np.array([open_tracks[k].ys.size for k in candidates], dtype=np.float64)
            iou = inter / (track_area[:, None] + areas[None, :] - inter)
            gap = np.array([t - 1 - open_tracks[k].frame for k in candidates], dtype=np.float64)
            cost = 1.0 - iou + GAP_PENALTY * gap[:, None]
            cost[iou < params.iou_threshold] = 1e6
            rows, cols = linear_sum_assignment(cost)
            ok = iou[rows, cols] >= params.iou_threshold
            assigned[cols[ok]] = np.asarray(candidates)[rows[ok]]
        for c in np.flatnonzero(assigned == 0):
            if next_track > MAX_TRACKS:
                raise ValueError(f"more than {MAX_TRACKS} tracks: cannot fit a 16-bit id map")
            assigned[c] = next_track
            next_track += 1
        order = np.argsort(dense, axis=None, kind="stable")  # pixels grouped by fragment
        bounds = np.cumsum(np.concatenate(([np.count_nonzero(dense == 0)], areas)))
        w = dense.shape[1]
        for c, track in enumerate(assigned.tolist()):
            flat = order[bounds[c]:bounds[c + 1]]
            ys, xs = (flat // w).astype(np.int32), (flat % w).astype(np.int32)
            centre = np.array([ys.mean(), xs.mean()])
            prev = open_tracks.get(track)
            velocity = (
                (centre - prev.centre) / (t - prev.frame) if prev is not None else np.zeros(2)
            )
            open_tracks[track] = _Track(t, ys, xs, centre, velocity)
            mapping[(t, int(ids[c]))] = track
        lut = np.concatenate(([0], assigned)).astype(np.uint16)
        out[t] = lut[dense]
    if next_track <= 256:
        out = out.astype(np.uint8)
    return LinkResult(id_maps=out, mapping=mapping)


def restore_original_ids(result: LinkResult) -> np.ndarray:
    """The id maps `link_fragments` was given, rebuilt from its result (ids as uint16)."""
    out = np.zeros(result.id_maps.shape, dtype=np.uint16)
    by_frame: dict[int, dict[int, int]] = {}
    for (t, orig), track in result.mapping.items():
        by_frame.setdefault(t, {})[track] = orig
    for t, inverse in by_frame.items():
        lut = np.zeros(max(inverse) + 1, dtype=np.uint16)
        lut[list(inverse)] = list(inverse.values())
        out[t] = lut[result.id_maps[t]]
    return out


def frame_consistency(linked: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of frames where `linked` equals `reference` under one global relabelling.

    The relabelling (linked id -> reference id, one-to-one) maximises the pixels on which the
    two `(T, H, W)` id maps agree (Hungarian on their joint histogram); a frame counts as right
    when every pixel agrees after relabelling. 1.0 means every track was linked correctly.
    """
    from scipy.optimize import linear_sum_assignment

    if linked.shape != reference.shape:
        raise ValueError(f"shapes differ: {linked.shape} vs {reference.shape}")
    lin = linked.astype(np.int64)
    ref = reference.astype(np.int64)
    kl, kr = int(lin.max()) + 1, int(ref.max()) + 1
    joint = np.bincount((lin * kr + ref).ravel(), minlength=kl * kr).reshape(kl, kr)
    rows, cols = linear_sum_assignment(-joint[1:, 1:])
    lut = np.full(kl, -1, dtype=np.int64)
    lut[0] = 0
    lut[rows + 1] = cols + 1
    right = (lut[lin] == ref).reshape(lin.shape[0], -1).all(axis=1)
    return float(right.mean()) if right.size else 1.0


def shuffle_ids(id_maps: np.ndarray, rng: np.random.Generator, pool: int = 50) -> np.ndarray:
    """Give every frame's objects fresh random ids from 1..`pool`, as a per-frame detector would.

    For measuring the linker: `link_fragments(shuffle_ids(x, rng))` should recover `x`'s tracks.
    """
    out = np.zeros(id_maps.shape, dtype=np.uint16)
    for t, frame in enumerate(id_maps):
        ids = np.unique(frame)
        ids = ids[ids != 0]
        lut = np.zeros(int(frame.max()) + 1, dtype=np.uint16)
        lut[ids] = rng.choice(np.arange(1, pool + 1), size=ids.size, replace=False)
        out[t] = lut[frame]
    return out
