"""Partition keys, video ids and the on-disk layout.

Layout (LV-VIS style, splits kept apart):
    <data_root>/<split>/JPEGImages/<video_id>/<frame>.jpg
    <output_root>/<split>/masks/<video_id>/mask_<frame>.png
    <output_root>/<split>/tubes_<split>.json
    <data_root>/annotations/<split>_instances.json   (ground truth, where there is any)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from wsovvis_dagster.errors import UnsafeNameError

SPLITS = ("train", "val", "test")
KEY_SEPARATOR = "__"
# Unicode word characters, dot and dash; must start with a word character (no leading dash or
# dot, so no option-like names and no hidden folders). `..` is refused separately: Dagster's
# `--partition-range A...B` splits on it.
_SAFE_ID = re.compile(r"^\w[\w.\-]*$")
MAX_ID_LENGTH = 200
# Bytes, not characters: folder names are limited to 255 bytes (NAME_MAX), and the writers add
# up to ~20 bytes around the id for their temp and lock names (see `atomic.atomic_dir`).
MAX_ID_BYTES = 200


def check_video_id(video_id: str) -> str:
    """Return `video_id` unchanged if safe as a folder name and a partition key, else raise."""
    if not isinstance(video_id, str) or not video_id:
        raise UnsafeNameError("empty video id: rename the folder to a non-empty name")
    problem = None
    if len(video_id) > MAX_ID_LENGTH or len(video_id.encode("utf-8", "replace")) > MAX_ID_BYTES:
        problem = f"longer than {MAX_ID_LENGTH} characters or {MAX_ID_BYTES} UTF-8 bytes"
    elif ".." in video_id:
        problem = "contains '..'"
    elif not _SAFE_ID.fullmatch(video_id):  # fullmatch: `$` alone lets a trailing \n through
        problem = (
            "must start with a letter, digit or '_' and contain only letters, digits, '_', '.', '-'"
            " (no '/', spaces, commas or leading '-')"
        )
    if problem:
        raise UnsafeNameError(f"unsafe video id {video_id!r}: {problem}; rename the video folder")
    return video_id


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UnsafeNameError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return split


@dataclass(frozen=True, order=True)
class VideoRef:
    """One video of one split; the unit of a `mask_pngs` partition."""

    split: str
    video_id: str

    def __post_init__(self) -> None:
        check_split(self.split)
        check_video_id(self.video_id)

    @property
    def partition_key(self) -> str:
        return f"{self.split}{KEY_SEPARATOR}{self.video_id}"

    @classmethod
    def from_partition_key(cls, key: str) -> VideoRef:
        split, sep, video_id = key.partition(KEY_SEPARATOR)
        if not sep:
            raise UnsafeNameError(
                f"partition key {key!r} is not '<split>{KEY_SEPARATOR}<video_id>'"
            )
        return cls(split, video_id)


def resolve_inside(root: Path, *parts: str) -> Path:
    """Join `parts` under `root` and refuse any result that resolves outside `root`.

    Symlinks are followed before the check, so a link inside the root that leads outside it is
    refused too. The root itself may be a symlink (it is resolved first).
    """
    root = Path(root).resolve()
    joined = root.joinpath(*parts)
    path = joined.resolve()
    if path != root and root not in path.parents:
        raise UnsafeNameError(
            f"path {joined} escapes its root {root} (it resolves to {path}): a '..' or a "
            "symlink leads out of the configured folder; move the data under the root (or point "
            "the root at the real location) instead of linking out of it"
        )
    return path


def frames_dir(data_root: Path, ref: VideoRef) -> Path:
    return resolve_inside(data_root, ref.split, "JPEGImages", ref.video_id)


def masks_dir(output_root: Path, ref: VideoRef) -> Path:
    return resolve_inside(output_root, ref.split, "masks", ref.video_id)


def gt_json_path(data_root: Path, split: str) -> Path:
    """Where a dataset keeps a split's YouTube-VIS ground truth (the synthetic one does)."""
    return Path(data_root) / "annotations" / f"{check_split(split)}_instances.json"


def tube_json_path(output_root: Path, split: str) -> Path:
    return resolve_inside(output_root, check_split(split), f"tubes_{split}.json")
