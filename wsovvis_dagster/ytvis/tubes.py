"""Mask PNG folders -> YouTube-VIS style tube JSON (one JSON per split), and back.

Tube JSON layout (YouTube-VIS 2019 style, extended with `track_id` and `score`):
    {"info": ..., "categories": [{"id": 1, "name": "object"}],
     "videos": [{"id", "name", "width", "height", "length", "file_names"}],
     "annotations": [{"id", "video_id", "category_id", "track_id", "score", "iscrowd",
                      "height", "width", "length",
                      "segmentations": [RLE | null per frame], "areas": [...], "bboxes": [...]}]}
RLE is pycocotools' compressed form with `counts` as str; `null` where the track is absent.
Tubes made with the linker also carry `"source_ids": [original id | null per frame]`.

Given the video's frame files, a video's `length`, `file_names` (each frame's real name),
`width` and `height` come from the frames, not the masks: every mask must be named after a frame
and have that frame's size (`MaskFormatError` naming the file otherwise), and frames without a
mask get `null` in every tube. Frame sizes are read from the image headers, never decoded.

Conversion encodes all ids of a frame in one pass (`encode_id_map`), reads one frame at a time,
and can spread videos over processes (`convert_mask_folders`) while `write_tube_json` streams,
handing each video to collectors (the index and results written beside the JSON).
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol

import numpy as np
from pycocotools import mask as mask_utils

from wsovvis_dagster.atomic import atomic_file
from wsovvis_dagster.errors import FrameError, MaskFormatError, TubeFormatError, WsovvisError
from wsovvis_dagster.masks.png_io import frame_stem, list_mask_files, load_id_map, read_track_scores
from wsovvis_dagster.video.frames import image_size
from wsovvis_dagster.ytvis.linking import LinkParams, link_fragments

AGNOSTIC_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


@dataclass(frozen=True)
class Tube:
    """One track of one video: per-frame RLE (None where absent).

    `source_ids[t]` is the predictor's own id of the fragment that the linker put on this
    track in frame t (None where absent); None when the tube was not linked.
    """

    track_id: int
    score: float
    segmentations: list[dict | None]
    areas: list[int | None]
    bboxes: list[list[float] | None]
    source_ids: list[int | None] | None = None


@dataclass(frozen=True)
class VideoTubes:
    name: str
    width: int
    height: int
    file_names: list[str]
    tubes: list[Tube]


def encode_id_map(
    frame: np.ndarray,
) -> tuple[np.ndarray, list[dict], np.ndarray, np.ndarray]:
    """Encode every id of one `(H, W)` integer id map at once.

    Returns `ids (K,)` (sorted, non-zero), compressed RLEs (`counts` as str), `areas (K,)` and
    `bboxes (K, 4)` [x, y, w, h], identical to pycocotools' `encode`/`area`/`toBbox` per id.
    Run boundaries come from one vectorised comparison of vertically adjacent pixels (plus
    column starts), so no transposed copy of the frame is made; grouping the runs by id gives
    each id's uncompressed RLE, which pycocotools compresses. Cost: O(H*W) once, not per id.
    """
    h, w = frame.shape
    n = h * w
    # column-major index of each pixel that differs from the one above it (same column) ...
    below = np.flatnonzero(frame[1:] != frame[:-1])
    rows, cols = np.divmod(below, w)
    # ... and of each column top that differs from the previous column's bottom pixel
    tops = (np.flatnonzero(frame[0, 1:] != frame[-1, :-1]) + 1) * h
    change = np.sort(np.concatenate((cols * h + rows + 1, tops)))
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    values = frame[starts % h, starts // h]
    fg = values != 0
    order = np.argsort(values[fg], kind="stable")  # runs grouped by id, in pixel order
    s, e, v = starts[fg][order], ends[fg][order], values[fg][order]
    if v.size == 0:
        return np.zeros(0, dtype=np.int64), [], np.zeros(0, np.int64), np.zeros((0, 4))
    first = np.flatnonzero(np.concatenate(([True], v[1:] != v[:-1])))
    prev_end = np.concatenate(([0], e[:-1]))
    prev_end[first] = 0
    counts = np.empty(2 * s.size, dtype=np.int64)
    counts[0::2] = s - prev_end  # background before each run (from the id's previous run)
    counts[1::2] = e - s
    bounds = np.append(first, s.size)
    uncompressed = []
    for k in range(first.size):
        c = counts[2 * bounds[k] : 2 * bounds[k + 1]]
        tail = n - e[bounds[k + 1] - 1]
        uncompressed.append({"size": [h, w], "counts": np.append(c, tail) if tail else c})
    rles = mask_utils.frPyObjects(uncompressed, h, w)
    boxes = mask_utils.toBbox(rles)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return v[first].astype(np.int64), rles, np.add.reduceat(e - s, first), boxes


class _TubeBuilder:
    """Accumulates per-frame encodings; memory holds RLEs only, never the id maps."""

    def __init__(self) -> None:
        self.num_frames = 0  # video length: frames after the last mask stay null
        self.per_track: dict[int, dict[int, tuple[dict, int, list[float]]]] = {}

    def add_frame(self, frame: np.ndarray, t: int | None = None) -> None:
        """Encode `frame` as frame `t` of the video (default: the next one)."""
        ids, rles, areas, boxes = encode_id_map(frame)
        t = self.num_frames if t is None else t
        for k, tid in enumerate(ids.tolist()):
            box = [float(x) for x in boxes[k]]
            self.per_track.setdefault(tid, {})[t] = (rles[k], int(areas[k]), box)
        self.num_frames = max(self.num_frames, t + 1)

    def tubes(
        self, scores: dict[int, float], sources: dict[int, list[int | None]] | None = None
    ) -> list[Tube]:
        out = []
        for tid in sorted(self.per_track):
            frames = [self.per_track[tid].get(t) for t in range(self.num_frames)]
            out.append(
                Tube(
                    track_id=int(tid),
                    score=float(scores.get(tid, 1.0)),
                    segmentations=[f[0] if f else None for f in frames],
                    areas=[f[1] if f else None for f in frames],
                    bboxes=[f[2] if f else None for f in frames],
                    source_ids=sources.get(tid) if sources is not None else None,
                )
            )
        return out


def encode_id_maps(id_maps: np.ndarray, scores: dict[int, float] | None = None) -> list[Tube]:
    """Turn `(T, H, W)` integer id maps into one `Tube` per distinct non-zero id."""
    builder = _TubeBuilder()
    for frame in id_maps:
        builder.add_frame(frame)
    return builder.tubes(scores or {})


def _iter_mask_folder(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    """`(stem, (H, W) ids)` per mask PNG in frame order; all frames must share one size."""
    files = list_mask_files(folder)
    if not files:
        raise MaskFormatError(f"mask folder {folder} has no mask_*.png files; re-run mask_pngs")
    shape = None
    for f in files:
        m = load_id_map(f)
        if shape is None:
            shape = m.shape
        elif m.shape != shape:
            raise MaskFormatError(
                f"mask {f} is {m.shape[1]}x{m.shape[0]}, but {files[0].name} is "
                f"{shape[1]}x{shape[0]}; re-run mask_pngs for this video"
            )
        yield frame_stem(f), m


def read_mask_folder(folder: Path) -> tuple[list[str], np.ndarray]:
    """Stems and `(T, H, W)` ids of a mask folder; all frames must share one size."""
    pairs = list(_iter_mask_folder(folder))
    maps = [m for _, m in pairs]
    dtype = np.uint16 if any(m.dtype == np.uint16 for m in maps) else np.uint8
    return [s for s, _ in pairs], np.stack(maps).astype(dtype)


def _linked_scores(
    scores: dict[int, float], sources: dict[int, list[int | None]]
) -> dict[int, float]:
    """A linked track's score: the mean score of its fragments' original ids."""
    out = {}
    for tid, src in sources.items():
        vals = [scores.get(s, 1.0) for s in src if s is not None]
        out[tid] = float(np.mean(vals)) if vals else 1.0
    return out


def _frame_size(path: Path) -> tuple[int, int]:
    """`(height, width)` of a frame from its header (no decode); `FrameError` naming it."""
    try:
        w, h = image_size(path)
    except FrameError as exc:
        raise FrameError(f"{exc}; tube_json needs every frame's size to check its mask") from exc
    return h, w


class _FrameCheck:
    """Places masks on the frames of their video and checks each against its frame.

    `index(stem)` is the frame a mask belongs to; `check(mask_file, shape)` compares a decoded
    mask with its frame's size (read from the frame's header once per frame).
    """

    def __init__(self, mask_folder: Path, frames: Sequence[Path]) -> None:
        if not frames:
            raise FrameError(f"no frames given for the masks in {mask_folder}")
        self.folder = Path(mask_folder)
        self.frames = [Path(f) for f in frames]
        self.position = {f.stem: t for t, f in enumerate(self.frames)}
        self.height, self.width = _frame_size(self.frames[0])

    def index(self, mask_file: Path) -> int:
        stem = frame_stem(mask_file)
        t = self.position.get(stem)
        if t is None:
            raise MaskFormatError(
                f"mask {mask_file} has no frame: {self.frames[0].parent} holds no frame named "
                f"{stem!r} (.jpg/.jpeg/.png), so the mask would describe a frame that does not "
                "exist. Every mask must be named mask_<frame stem>.png after a frame of its "
                "video: delete or rename the mask, or re-run mask_pngs / import-masks"
            )
        return t

    def check(self, mask_file: Path, t: int, shape: tuple[int, int]) -> None:
        frame = self.frames[t]
        size = (self.height, self.width) if t == 0 else _frame_size(frame)
        if size != (self.height, self.width):
            raise FrameError(
                f"frame {frame} is {size[1]}x{size[0]} but {self.frames[0].name} is "
                f"{self.width}x{self.height}: all frames of a video must share one size; resize "
                "or remove the odd frame"
            )
        if tuple(shape) != size:
            raise MaskFormatError(
                f"mask {mask_file} is {shape[1]}x{shape[0]} but its frame {frame} is "
                f"{size[1]}x{size[0]}: the mask does not line up with the frame. Re-run "
                "mask_pngs for this video, or re-import masks made at the frames' resolution"
            )


def _iter_checked(folder: Path, check: _FrameCheck) -> Iterator[tuple[int, np.ndarray]]:
    """`(frame index, (H, W) ids)` per mask PNG of `folder`, each checked against its frame."""
    files = list_mask_files(folder)
    if not files:
        raise MaskFormatError(f"mask folder {folder} has no mask_*.png files; re-run mask_pngs")
    placed = [(check.index(f), f) for f in files]  # every stem checked before any decode
    for t, f in placed:
        m = load_id_map(f)
        check.check(f, t, m.shape)
        yield t, m


def _iter_unchecked(folder: Path, stems: list[str]) -> Iterator[tuple[int, np.ndarray]]:
    """`(index, ids)` per mask PNG, the masks taken as the whole video; appends their stems."""
    for t, (stem, m) in enumerate(_iter_mask_folder(folder)):
        stems.append(stem)
        yield t, m


def video_tubes_from_masks(
    folder: Path,
    video_name: str,
    frame_suffix: str = ".jpg",
    *,
    frames: Sequence[Path] | None = None,
    linking: LinkParams | None = None,
) -> VideoTubes:
    """Read one video's mask folder into `VideoTubes`.

    With `frames` (the video's frame files in order, as `frames.list_frame_files` gives them;
    what `tube_json` passes), the video's length, file names and size are the frames', every
    mask is checked against its frame and frames without a mask are null. Without `frames`
    (masks alone, e.g. tests and benchmarks), the video is the masks: file names are
    `<stem><frame_suffix>` and the size is the masks'.

    Frames are read and encoded one at a time. With `linking`, the ids are first relinked into
    consistent tracks (`link_fragments`, whole video in memory); each tube then keeps the
    original ids in `source_ids`, and its score is the mean of its fragments' scores.
    """
    scores = read_track_scores(folder)
    builder = _TubeBuilder()
    if frames is not None:
        check = _FrameCheck(folder, frames)
        pairs: Iterable[tuple[int, np.ndarray]] = _iter_checked(folder, check)
        file_names = [f"{video_name}/{f.name}" for f in check.frames]
        shape = (check.height, check.width)
    else:
        stems: list[str] = []
        pairs = _iter_unchecked(folder, stems)
        shape = None
    if linking is None:
        for t, frame in pairs:
            builder.add_frame(frame, t)
            shape = shape or frame.shape
        tubes_scores, sources = scores, None
    else:
        placed = list(pairs)
        if not placed:
            raise MaskFormatError(f"mask folder {folder} has no mask_*.png files")
        maps = [m for _, m in placed]
        dtype = np.uint16 if any(m.dtype == np.uint16 for m in maps) else np.uint8
        shape = shape or maps[0].shape
        linked = link_fragments(
            np.stack(maps).astype(dtype), iou_threshold=linking.iou_threshold,
            max_gap=linking.max_gap,
        )
        for (t, _), frame in zip(placed, linked.id_maps, strict=True):
            builder.add_frame(frame, t)
        length = len(file_names) if frames is not None else len(placed)
        # source ids per video frame (null where the frame has no mask)
        sources = {}
        for tid, src in linked.all_source_ids().items():
            full: list[int | None] = [None] * length
            for (t, _), s in zip(placed, src, strict=True):
                full[t] = s
            sources[tid] = full
        tubes_scores = _linked_scores(scores, sources)
    if frames is not None:
        builder.num_frames = len(file_names)
    else:
        file_names = [f"{video_name}/{s}{frame_suffix}" for s in stems]
    tubes = builder.tubes(tubes_scores, sources)
    return VideoTubes(
        name=video_name,
        width=int(shape[1]),
        height=int(shape[0]),
        file_names=file_names,
        tubes=tubes,
    )


# A conversion item: (mask folder, video name) or (mask folder, video name, frame files)
Item = tuple[Path, str] | tuple[Path, str, Sequence[Path]]


def _convert_one(item: Item, frame_suffix: str, linking: LinkParams | None) -> VideoTubes:
    folder, name, *rest = item
    frames = rest[0] if rest else None
    return video_tubes_from_masks(folder, name, frame_suffix, frames=frames, linking=linking)


def _convert_chunk(
    chunk: list[Item], frame_suffix: str, linking: LinkParams | None, keep_going: bool = False
) -> list[VideoTubes | WsovvisError]:
    return [_convert_or_error(item, frame_suffix, linking, keep_going) for item in chunk]


def _convert_or_error(
    item: Item, frame_suffix: str, linking: LinkParams | None, keep_going: bool
) -> VideoTubes | WsovvisError:
    try:
        return _convert_one(item, frame_suffix, linking)
    except WsovvisError as exc:
        if not keep_going:
            raise
        return exc


def default_workers(videos: int) -> int:
    """Conversion processes when none are asked for: one per CPU core this process may use,
    at most 8 (as the mask loop's decode pool), and at most one per video (a process converts
    whole videos)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1, videos))


def convert_mask_folders(
    items: Iterable[Item],
    *,
    workers: int = 1,
    chunksize: int = 1,
    linking: LinkParams | None = None,
    frame_suffix: str = ".jpg",
    keep_going: bool = False,
) -> Iterator[VideoTubes | WsovvisError]:
    """`VideoTubes` of each `(mask folder, video name[, frame files])`, in input order, over
    `workers` processes (with frame files, masks are checked against them: see
    `video_tubes_from_masks`; `frame_suffix` only names frames of items without them).

    At most `2 * workers` chunks of `chunksize` videos are in flight, so memory stays flat
    however long `items` is (pair with `write_tube_json`, which streams). `workers <= 1`
    converts in this process. Errors of a video (e.g. `MaskFormatError`) are re-raised here,
    or, with `keep_going`, yielded in its place (the other videos go on).
    """
    items = iter(items)
    if workers <= 1:
        for item in items:
            yield _convert_or_error(item, frame_suffix, linking, keep_going)
        return
    # forkserver: no fork of a multi-threaded parent (Dagster, loggers), cheap worker start
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # workers fork with this module already imported
    pending: collections.deque[Future] = collections.deque()
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        try:
            while True:
                while len(pending) < 2 * workers:
                    chunk = list(islice(items, chunksize))
                    if not chunk:
                        break
                    pending.append(pool.submit(_convert_chunk, chunk, frame_suffix, linking,
                                                keep_going))
                if not pending:
                    return
                yield from pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


class TubeCollector(Protocol):
    """Takes each video of a tube JSON as `write_tube_json` writes it (e.g. the Parquet index
    and the results export), so that nothing has to read the JSON back."""

    def add(self, video: dict, annotations: list[dict]) -> None:
        """`video`: its `videos[]` entry; `annotations`: its tubes, as written."""


def write_tube_json(
    path: Path,
    videos: Iterable[VideoTubes],
    info: dict | None = None,
    *,
    collectors: Sequence[TubeCollector] = (),
) -> dict[str, int]:
    """Stream videos into one tube JSON at `path` (atomic); returns counts.

    Annotations are written as each video arrives, so memory holds one video at a time; each
    video's entry and annotations are then handed to every collector.
    `info` is written last, so a caller may fill it in while `videos` streams (e.g. counts of
    the videos actually converted).
    """
    counts = {"videos": 0, "tubes": 0, "frames": 0}
    video_entries = []
    with atomic_file(path) as fh:
        fh.write('{"categories": ' + json.dumps([AGNOSTIC_CATEGORY]))
        fh.write(', "annotations": [')
        ann_id = 0
        for vid_index, video in enumerate(videos, start=1):
            length = len(video.file_names)
            entry = {
                "id": vid_index,
                "name": video.name,
                "width": video.width,
                "height": video.height,
                "length": length,
                "file_names": video.file_names,
            }
            video_entries.append(entry)
            annotations = []
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
                if tube.source_ids is not None:
                    ann["source_ids"] = tube.source_ids
                fh.write(("," if ann_id > 1 else "") + json.dumps(ann))
                annotations.append(ann)
            for collector in collectors:
                collector.add(entry, annotations)
            counts["videos"] += 1
            counts["tubes"] += len(video.tubes)
            counts["frames"] += length
        fh.write('], "videos": ' + json.dumps(video_entries))
        fh.write(', "info": ' + json.dumps(info or {}) + "}")
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

