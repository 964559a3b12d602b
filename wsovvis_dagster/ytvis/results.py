"""Tube JSON -> YouTube-VIS results list, the input of `wsovvis eval` and evaluation servers.

Results layout: `[{"video_id": int, "category_id": int, "score": float,
                   "segmentations": [RLE | null per frame]}]`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from wsovvis_dagster.atomic import atomic_file, write_json_atomic
from wsovvis_dagster.errors import TubeFormatError


def video_name(video: dict) -> str:
    """A video's name: its `name`, else the folder of its first file name (YouTube-VIS GT)."""
    if video.get("name"):
        return str(video["name"])
    names = video.get("file_names") or []
    if names:
        return PurePosixPath(names[0]).parent.name
    raise TubeFormatError(f"video {video.get('id')!r} has neither a name nor file_names")


def gt_video_ids(gt: dict) -> dict[str, int]:
    """Video name -> GT video id."""
    return {video_name(v): v["id"] for v in gt["videos"]}


def tubes_to_results(tubes: dict, *, gt: dict | None = None) -> list[dict]:
    """One result per tube of a tube JSON dict.

    Without `gt`, video ids are the tube JSON's own. With `gt`, they are the GT's, matched by
    video name; tubes of videos that the GT does not have are left out (a GT may cover part of
    a split).
    """
    by_id = {v["id"]: v for v in tubes["videos"]}
    target = gt_video_ids(gt) if gt is not None else None
    out = []
    for i, ann in enumerate(tubes["annotations"]):
        video = by_id.get(ann["video_id"])
        if video is None:
            raise TubeFormatError(f"annotations[{i}].video_id {ann['video_id']} not in videos")
        if target is None:
            vid = ann["video_id"]
        else:
            vid = target.get(video_name(video))
            if vid is None:
                continue
        out.append(_result(ann, vid))
    return out


def _result(ann: dict, video_id: int) -> dict:
    """The result of one tube (annotation), under `video_id`."""
    return {
        "video_id": video_id,
        "category_id": ann.get("category_id", 1),
        "score": float(ann.get("score", 1.0)),
        "segmentations": ann["segmentations"],
    }


@dataclass(frozen=True)
class ResultsExport:
    path: Path
    results: int  # tubes written
    skipped_videos: tuple[str, ...]  # tube videos absent from the GT (with `gt` only)


def export_results(tubes: dict, path: Path, *, gt: dict | None = None) -> ResultsExport:
    """Write `tubes_to_results(tubes, gt=gt)` atomically to `path` (JSON list)."""
    results = tubes_to_results(tubes, gt=gt)
    skipped: tuple[str, ...] = ()
    if gt is not None:
        known = gt_video_ids(gt)
        skipped = tuple(n for n in (video_name(v) for v in tubes["videos"]) if n not in known)
    write_json_atomic(Path(path), results)
    return ResultsExport(Path(path), len(results), skipped)


class ResultsStream:
    """`export_results` video by video as `write_tube_json` streams (a `tubes.TubeCollector`):
    each result is written as its video arrives, so no video is held after it. Use through
    `stream_results`, which writes the same bytes as `export_results`, atomically."""

    def __init__(self, fh: IO[str], path: Path, gt: dict | None) -> None:
        self._fh, self.path = fh, path
        self._target = gt_video_ids(gt) if gt is not None else None
        self.results = 0
        self.skipped_videos: list[str] = []

    def add(self, video: dict, annotations: list[dict]) -> None:
        vid = None  # without GT: each tube's own video id
        if self._target is not None:
            vid = self._target.get(video_name(video))
            if vid is None:
                self.skipped_videos.append(video_name(video))
                return
        for ann in annotations:
            result = _result(ann, ann["video_id"] if vid is None else vid)
            # json.dump's own separators, so that the file is byte for byte export_results'
            self._fh.write((", " if self.results else "") + json.dumps(result))
            self.results += 1

    def export(self) -> ResultsExport:
        return ResultsExport(self.path, self.results, tuple(self.skipped_videos))


@contextmanager
def stream_results(path: Path, *, gt: dict | None = None) -> Iterator[ResultsStream]:
    """A `ResultsStream` into `path`: the file replaces `path` only if the block succeeds."""
    with atomic_file(Path(path)) as fh:
        fh.write("[")
        stream = ResultsStream(fh, Path(path), gt)
        yield stream
        fh.write("]")


def results_json_path(tube_json: Path, split: str) -> Path:
    """`results_<split>.json` beside the split's tube JSON."""
    return Path(tube_json).with_name(f"results_{split}.json")
