"""Joining tube JSON, ground truth and features into per-video training samples.

Weak supervision: a video's label is the set of base categories of its GT annotations (its
tags); no masks and no tube-to-object matching are used in training.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from wsovvis_dagster.training.errors import TrainingDataError
from wsovvis_dagster.ytvis.results import gt_video_ids, video_name

__all__ = [
    "VideoSample", "annotations_by_video", "build_samples", "gt_video_ids", "video_name",
    "video_tags",
]


def annotations_by_video(data: dict) -> dict[int, list[dict]]:
    """Annotations grouped by `video_id`, in file order."""
    out: dict[int, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        out[ann["video_id"]].append(ann)
    return out


def video_tags(gt: dict, category_ids: Iterable[int]) -> dict[str, set[int]]:
    """Video name -> its tags: GT category ids restricted to `category_ids` (the base set)."""
    allowed = set(category_ids)
    names = {v["id"]: video_name(v) for v in gt["videos"]}
    tags: dict[str, set[int]] = {name: set() for name in names.values()}
    for ann in gt["annotations"]:
        if ann["category_id"] in allowed and ann["video_id"] in names:
            tags[names[ann["video_id"]]].add(int(ann["category_id"]))
    return tags


@dataclass(frozen=True)
class VideoSample:
    """One training video: tube features `(N, F) float32` and base tags `(B,) float32` 0/1."""

    name: str
    features: np.ndarray
    tags: np.ndarray


def build_samples(
    features: dict[str, np.ndarray], tags: dict[str, set[int]], base_ids: tuple[int, ...]
) -> tuple[list[VideoSample], dict[str, int]]:
    """Samples for videos that have both tubes and GT; returns them and counts of the rest."""
    column = {c: i for i, c in enumerate(base_ids)}
    samples, skipped = [], {"no_gt": 0, "no_tubes": 0, "no_base_tags": 0}
    for name in sorted(features):
        feats = features[name]
        if name not in tags:
            skipped["no_gt"] += 1
            continue
        if len(feats) == 0:
            skipped["no_tubes"] += 1
            continue
        target = np.zeros(len(base_ids), dtype=np.float32)
        for c in tags[name]:
            target[column[c]] = 1.0
        if not target.any():
            # still useful: every base category is a negative here
            skipped["no_base_tags"] += 1
        samples.append(VideoSample(name, feats.astype(np.float32), target))
    if not samples:
        raise TrainingDataError(
            "no training video has both tubes and ground truth: check that the tube JSON and "
            "the GT JSON describe the same videos (matched by name)"
        )
    return samples, skipped
