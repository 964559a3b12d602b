"""Scoring tubes against the full vocabulary, YouTube-VIS results JSON, and two baselines.

Results JSON (YouTube-VIS 2019): a list of
    {"video_id": <GT video id>, "category_id": int, "score": float,
     "segmentations": [RLE | null per frame]}
with up to `topk` entries (categories) per tube.

Baselines, scored with the same evaluation:
- random: each tube gets uniform random category scores (the floor);
- oracle: each tube gets the category of the GT tube it overlaps best (spatio-temporal mask
  IoU), scored by that IoU (the ceiling that the tubes' quality allows).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from wsovvis_dagster.training.data import annotations_by_video, video_name
from wsovvis_dagster.training.model import TubeTextModel
from wsovvis_dagster.training.text import CategoryBank

Results = list[dict]


@torch.no_grad()
def score_tubes(model: TubeTextModel, features: np.ndarray, text: np.ndarray, *,
                background: bool = True) -> np.ndarray:
    """Category probabilities `(N, C) float32` of N tubes `(N, F)` against `text` `(C, D)`.

    With `background`, the softmax includes the background column (tubes that look like
    nothing tagged score low everywhere); without it, only the categories compete.
    """
    if len(features) == 0:
        return np.zeros((0, len(text)), dtype=np.float32)
    model.eval()
    device = next(model.parameters()).device
    logits = model(torch.as_tensor(features, device=device), torch.as_tensor(text, device=device))
    if not background:
        logits = logits[:, :-1]
    return torch.softmax(logits, dim=1)[:, : len(text)].cpu().numpy().astype(np.float32)


def _tube_entries(tube_data: dict, gt_ids: dict[str, int]):
    """(GT video id, video, its tube annotations) for tube-JSON videos that the GT knows."""
    by_video = annotations_by_video(tube_data)
    for video in tube_data["videos"]:
        name = video_name(video)
        if name in gt_ids:
            yield gt_ids[name], video, by_video.get(video["id"], [])


def scores_to_results(tube_data: dict, gt_ids: dict[str, int], category_ids: tuple[int, ...],
                      score_video: Callable[[str, list[dict]], np.ndarray],
                      topk: int) -> Results:
    """Results from `score_video(name, tube annotations) -> (N, C)`; top-k categories per tube."""
    cats = np.asarray(category_ids)
    k = min(topk, len(cats))
    results = []
    for gt_id, video, anns in _tube_entries(tube_data, gt_ids):
        if not anns:
            continue
        scores = score_video(video_name(video), anns)
        for ann, row in zip(anns, scores, strict=True):
            for c in np.argsort(-row, kind="stable")[:k]:
                results.append({"video_id": gt_id, "category_id": int(cats[c]),
                                "score": float(row[c]), "segmentations": ann["segmentations"]})
    return results


def model_results(model: TubeTextModel, bank: CategoryBank, tube_data: dict,
                  features: dict[str, np.ndarray], gt_ids: dict[str, int], *, topk: int,
                  background: bool = True) -> Results:
    """The trained model's results on every tube, against the full vocabulary (novel included)."""
    return scores_to_results(
        tube_data, gt_ids, bank.category_ids,
        lambda name, anns: score_tubes(model, features[name], bank.embeddings,
                                       background=background),
        topk,
    )


def random_results(tube_data: dict, gt_ids: dict[str, int], category_ids: tuple[int, ...], *,
                   topk: int, seed: int = 0) -> Results:
    """Floor: uniform random category scores per tube."""
    rng = np.random.default_rng(seed)
    return scores_to_results(
        tube_data, gt_ids, category_ids,
        lambda name, anns: rng.random((len(anns), len(category_ids))), topk,
    )


def oracle_results(tube_data: dict, gt: dict, gt_ids: dict[str, int]) -> Results:
    """Ceiling: each tube labelled with its best-overlapping GT tube's category, score = IoU."""
    from wsovvis_dagster.evaluation.ytvis_ap import spatiotemporal_iou

    gt_by_video = annotations_by_video(gt)
    results = []
    for gt_id, _, anns in _tube_entries(tube_data, gt_ids):
        gts = gt_by_video.get(gt_id, [])
        if not anns or not gts:
            continue
        ious = spatiotemporal_iou([a["segmentations"] for a in anns],
                                  [g["segmentations"] for g in gts])  # (N, G)
        for ann, row in zip(anns, ious, strict=True):
            best = int(np.argmax(row))
            if row[best] > 0:
                results.append({"video_id": gt_id, "category_id": int(gts[best]["category_id"]),
                                "score": float(row[best]), "segmentations": ann["segmentations"]})
    return results


def evaluate(gt: dict, results: Results) -> dict[str, float]:
    """YouTube-VIS AP / AR (+ APb / APn) of `results` against `gt`, via the project's evaluator."""
    from wsovvis_dagster.evaluation.ytvis_ap import evaluate_results

    return {k: float(v) for k, v in evaluate_results(gt, results).items()}
