"""Mask PNG folders -> YouTube-VIS style tube JSON (one JSON per split), and back.

Tube JSON layout (YouTube-VIS 2019 style, extended with `track_id` and `score`):
    {"info": ..., "categories": [{"id": 1, "name": "object"}],
     "videos": [{"id", "name", "width", "height", "length", "file_names"}],
     "annotations": [{"id", "video_id", "category_id", "track_id", "score", "iscrowd",
                      "height", "width", "length",
                      "segmentations": [RLE | null per frame], "areas": [...], "bboxes": [...]}]}
RLE is pycocotools' compressed form with `counts` as str; `null` where the track is absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from wsovvis_dagster.atomic import atomic_file
from wsovvis_dagster.errors import MaskFormatError, TubeFormatError
from wsovvis_dagster.masks_io import frame_stem, list_mask_files, load_id_map, read_track_scores

AGNOSTIC_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


@dataclass(frozen=True)
class Tube:
    """One track of one video: per-frame RLE (None where absent)."""

    track_id: int
    score: float
    segmentations: list[dict | None]
    areas: list[int | None]
    bboxes: list[list[float] | None]


@dataclass(frozen=True)
class VideoTubes:
    name: str
    width: int
    height: int
    file_names: list[str]
    tubes: list[Tube]


def encode_id_maps(id_maps: np.ndarray, scores: dict[int, float] | None = None) -> list[Tube]:
    """Turn `(T, H, W)` integer id maps into one `Tube` per distinct non-zero id.

    Each frame is encoded once per id present, with pycocotools on a Fortran-ordered stack.
    """
    scores = scores or {}
    num_frames = id_maps.shape[0]
    per_track: dict[int, list] = {}
    for t in range(num_frames):
        frame = id_maps[t]
        ids = np.unique(frame)
        ids = ids[ids != 0]
        if ids.size == 0:
            continue
        # (H, W, K) uint8 in Fortran order: one encode call per frame for all ids
        stack = np.asfortranarray((frame[:, :, None] == ids[None, None, :]).astype(np.uint8))
        rles = mask_utils.encode(stack)
        areas = stack.sum(axis=(0, 1))  # mask_utils.area overflows past 255 RLEs per call
        boxes = mask_utils.toBbox(rles)
        for k, tid in enumerate(ids.tolist()):
            rle = rles[k]
            rle["counts"] = rle["counts"].decode("ascii")
            per_track.setdefault(tid, [None] * num_frames)[t] = (rle, int(areas[k]), boxes[k])
    tubes = []
    for tid in sorted(per_track):
        frames = per_track[tid]
        tubes.append(
            Tube(
                track_id=int(tid),
                score=float(scores.get(tid, 1.0)),
                segmentations=[f[0] if f else None for f in frames],
                areas=[f[1] if f else None for f in frames],
                bboxes=[[float(x) for x in f[2]] if f else None for f in frames],
            )
        )
    return tubes


def read_mask_folder(folder: Path) -> tuple[list[str], np.ndarray]:
    """Stems and `(T, H, W)` ids of a mask folder; all frames must share one size."""
    files = list_mask_files(folder)
    if not files:
        raise MaskFormatError(f"mask folder {folder} has no mask_*.png files; re-run mask_pngs")
    maps = [load_id_map(f) for f in files]
    shape = maps[0].shape
    for f, m in zip(files, maps):
        if m.shape != shape:
            raise MaskFormatError(
                f"mask {f} is {m.shape[1]}x{m.shape[0]}, but {files[0].name} is "
                f"{shape[1]}x{shape[0]}; re-run mask_pngs for this video"
            )
    dtype = np.uint16 if any(m.dtype == np.uint16 for m in maps) else np.uint8
    return [frame_stem(f) for f in files], np.stack(maps).astype(dtype)


def video_tubes_from_masks(
    folder: Path, video_name: str, frame_suffix: str = ".jpg"
) -> VideoTubes:
    """Read one video's mask folder into `VideoTubes` (file names mirror the JPEG frames)."""
    stems, id_maps = read_mask_folder(folder)
    tubes = encode_id_maps(id_maps, read_track_scores(folder))
    return VideoTubes(
        name=video_name,
        width=int(id_maps.shape[2]),
        height=int(id_maps.shape[1]),
        file_names=[f"{video_name}/{s}{frame_suffix}" for s in stems],
        tubes=tubes,
    )


def write_tube_json(
    path: Path, videos: Iterable[VideoTubes], info: dict | None = None
) -> dict[str, int]:
    """Stream videos into one tube JSON at `path` (atomic); returns counts.

    Annotations are written as each video arrives, so memory holds one video at a time.
    """
    counts = {"videos": 0, "tubes": 0, "frames": 0}
    video_entries = []
    with atomic_file(path) as fh:
        fh.write('{"info": ' + json.dumps(info or {}))
        fh.write(', "categories": ' + json.dumps([AGNOSTIC_CATEGORY]))
        fh.write(', "annotations": [')
        ann_id = 0
        for vid_index, video in enumerate(videos, start=1):
            length = len(video.file_names)
            video_entries.append(
                {
                    "id": vid_index,
                    "name": video.name,
                    "width": video.width,
                    "height": video.height,
                    "length": length,
                    "file_names": video.file_names,
                }
            )
            for tube in video.tubes:
                ann_id += 1
                ann = {
                    "id": ann_id,
                    "video_id": vid_index,
                    "category_id": AGNOSTIC_CATEGORY["id"],
                    "track_id": tube.track_id,
                    "score": tube.score,
                    "iscrowd": 0,
                    "height": video.height,
                    "width": video.width,
                    "length": length,
                    "segmentations": tube.segmentations,
                    "areas": tube.areas,
                    "bboxes": tube.bboxes,
                }
                fh.write(("," if ann_id > 1 else "") + json.dumps(ann))
            counts["videos"] += 1
            counts["tubes"] += len(video.tubes)
            counts["frames"] += length
        fh.write('], "videos": ' + json.dumps(video_entries) + "}")
    return counts


def load_tube_json(path: Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TubeFormatError(f"cannot read tube JSON {path}: {exc}") from exc
    for key in ("videos", "annotations"):
        if not isinstance(data.get(key), list):
            raise TubeFormatError(f"{path}: top-level '{key}' must be a list")
    return data


def decode_video_id_maps(data: dict, video_id: int) -> np.ndarray:
    """Rebuild `(T, H, W)` id maps (ids = `track_id`) of one video from a tube JSON dict."""
    video = next((v for v in data["videos"] if v["id"] == video_id), None)
    if video is None:
        raise TubeFormatError(f"video id {video_id} not in videos[]")
    shape = (video["length"], video["height"], video["width"])
    dtype = np.uint16 if any(a["track_id"] > 255 for a in data["annotations"]) else np.uint8
    out = np.zeros(shape, dtype=dtype)
    for ann in data["annotations"]:
        if ann["video_id"] != video_id:
            continue
        for t, rle in enumerate(ann["segmentations"]):
            if rle is not None:
                out[t][mask_utils.decode(rle).astype(bool)] = ann["track_id"]
    return out


def iter_video_tubes(items: Iterable[tuple[Path, str]]) -> Iterator[VideoTubes]:
    for folder, name in items:
        yield video_tubes_from_masks(folder, name)
