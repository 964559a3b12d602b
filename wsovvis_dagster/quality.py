"""Class-agnostic quality of predicted tracks against ground-truth tubes.

`mean_best_iou`: for each GT tube, the spatio-temporal IoU (sum over frames of intersections /
sum of unions) of its best-matching predicted track, averaged over GT tubes. `davis_j`: the
DAVIS region similarity J (mean per-frame IoU) of the best predicted track against a
single-object ground truth.
"""

from __future__ import annotations

import numpy as np


def st_iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """`(G, T, H, W)` and `(P, T, H, W)` bool -> `(G, P)` spatio-temporal IoU."""
    g = gt.reshape(gt.shape[0], -1).astype(np.float32)
    p = pred.reshape(pred.shape[0], -1).astype(np.float32)
    inter = g @ p.T
    union = g.sum(1)[:, None] + p.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def id_maps_to_masks(id_maps: np.ndarray) -> np.ndarray:
    """`(T, H, W)` ids -> `(N, T, H, W)` bool, one per non-zero id in ascending order."""
    ids = np.unique(id_maps)
    ids = ids[ids != 0]
    return id_maps[None] == ids[:, None, None, None]


def mean_best_iou(gt_masks: np.ndarray, id_maps: np.ndarray) -> float:
    """Mean over GT tubes `(G, T, H, W)` of the best st-IoU among predicted tracks."""
    pred = id_maps_to_masks(id_maps)
    if gt_masks.shape[0] == 0:
        return float("nan")
    if pred.shape[0] == 0:
        return 0.0
    return float(st_iou_matrix(gt_masks, pred).max(axis=1).mean())


def davis_j(gt_fg: np.ndarray, id_maps: np.ndarray) -> float:
    """J of the best single predicted track vs `(T, H, W)` bool foreground."""
    pred = id_maps_to_masks(id_maps)
    if pred.shape[0] == 0:
        return 0.0
    inter = np.logical_and(pred, gt_fg[None]).sum(axis=(2, 3))
    union = np.logical_or(pred, gt_fg[None]).sum(axis=(2, 3))
    per_frame = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(per_frame.mean(axis=1).max())
