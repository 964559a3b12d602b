"""Tube index: one Parquet row per tube of a split's tube JSON, for queries and the UI.

Written atomically beside the JSON as `tubes_<split>.parquet`. Columns:
    split, video_id, video (name), track_id, category_id, score,
    first_frame, last_frame (frame indices where present), length (frames present),
    span (last_frame - first_frame + 1), mean_area, min_area (pixels, over frames present),
    x0, y0, x1, y1 (extent of the union of per-frame boxes, pixels, x1/y1 exclusive)

Handy queries (polars):

    import polars as pl
    tubes = pl.read_parquet("outputs/val/tubes_val.parquet")
    # short tubes: present in fewer than 3 frames (often flicker or a missed link)
    tubes.filter(pl.col("length") < 3).sort("length")
    # tiny masks: mean area under 16x16 pixels
    tubes.filter(pl.col("mean_area") < 256).sort("mean_area")
    # tubes per video, busiest first, with their mean score
    tubes.group_by("video").agg(pl.len().alias("tubes"), pl.col("score").mean()).sort(
        "tubes", descending=True)
    # tubes with holes: present in fewer frames than they span
    tubes.filter(pl.col("length") < pl.col("span"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from pycocotools import mask as mask_utils

from wsovvis_dagster.atomic import atomic_file
from wsovvis_dagster.ytvis.results import video_name

SHORT_TUBE_FRAMES = 3  # tubes present in fewer frames count as "short"
TINY_TUBE_AREA = 16 * 16  # tubes with a smaller mean area (pixels) count as "tiny"

SCHEMA = {
    "split": pl.String,
    "video_id": pl.Int64,
    "video": pl.String,
    "track_id": pl.Int64,
    "category_id": pl.Int64,
    "score": pl.Float64,
    "first_frame": pl.Int64,
    "last_frame": pl.Int64,
    "length": pl.Int64,
    "span": pl.Int64,
    "mean_area": pl.Float64,
    "min_area": pl.Float64,
    "x0": pl.Float64,
    "y0": pl.Float64,
    "x1": pl.Float64,
    "y1": pl.Float64,
}


def _areas_boxes(ann: dict, present: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """`(N,)` areas and `(N, 4)` [x, y, w, h] boxes of the frames present: stored or computed."""
    areas, boxes = ann.get("areas"), ann.get("bboxes")
    if (
        isinstance(areas, list) and isinstance(boxes, list)
        and all(areas[t] is not None and boxes[t] is not None for t in present)
    ):
        return (
            np.array([areas[t] for t in present], dtype=np.float64),
            np.array([boxes[t] for t in present], dtype=np.float64).reshape(-1, 4),
        )
    rles = [ann["segmentations"][t] for t in present]
    return mask_utils.area(rles).astype(np.float64), mask_utils.toBbox(rles).reshape(-1, 4)


def _index_row(ann: dict, split: str, video: str) -> dict:
    """The index row of one tube (annotation) of the video named `video`."""
    present = [t for t, s in enumerate(ann["segmentations"]) if s is not None]
    if present:
        areas, boxes = _areas_boxes(ann, present)
        x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
        x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
        first, last = present[0], present[-1]
        mean_area, min_area = float(areas.mean()), float(areas.min())
    else:  # an empty tube: kept, so that validation problems stay visible here too
        x0 = y0 = x1 = y1 = mean_area = min_area = 0.0
        first = last = -1
    return {
        "split": split,
        "video_id": ann["video_id"],
        "video": video,
        "track_id": ann.get("track_id", ann.get("id")),
        "category_id": ann.get("category_id", 1),
        "score": float(ann.get("score", 1.0)),
        "first_frame": first,
        "last_frame": last,
        "length": len(present),
        "span": last - first + 1 if present else 0,
        "mean_area": mean_area,
        "min_area": min_area,
        "x0": float(x0),
        "y0": float(y0),
        "x1": float(x1),
        "y1": float(y1),
    }


class TubeIndexRows:
    """The index of a split built video by video as `write_tube_json` streams (a
    `tubes.TubeCollector`): one row per tube, kept as columns until `frame()`."""

    def __init__(self, split: str) -> None:
        self.split = split
        self.columns: dict[str, list] = {k: [] for k in SCHEMA}

    def add(self, video: dict, annotations: list[dict]) -> None:
        name = video_name(video)
        for ann in annotations:
            self.add_tube(ann, name)

    def add_tube(self, ann: dict, video: str) -> None:
        """The row of one annotation of the video named `video`."""
        for key, value in _index_row(ann, self.split, video).items():
            self.columns[key].append(value)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.columns, schema=SCHEMA)


def build_tube_index(data: dict, split: str) -> pl.DataFrame:
    """One row per tube of a tube JSON dict (see the module docstring for the columns)."""
    names = {v["id"]: video_name(v) for v in data["videos"]}
    rows = TubeIndexRows(split)
    for ann in data["annotations"]:
        rows.add_tube(ann, names.get(ann["video_id"], str(ann["video_id"])))
    return rows.frame()


def tube_index_path(tube_json: Path, split: str) -> Path:
    """`tubes_<split>.parquet` beside the split's tube JSON."""
    return Path(tube_json).with_name(f"tubes_{split}.parquet")


def write_index_frame(df: pl.DataFrame, tube_json: Path, split: str) -> Path:
    """Write an index atomically beside `tube_json`; returns its path."""
    path = tube_index_path(tube_json, split)
    with atomic_file(path, "wb") as fh:
        df.write_parquet(fh)
    return path


def write_tube_index(data: dict, split: str, tube_json: Path) -> tuple[Path, pl.DataFrame]:
    """Build the index of `data` and write it atomically beside `tube_json`."""
    df = build_tube_index(data, split)
    return write_index_frame(df, tube_json, split), df


def index_counts(
    df: pl.DataFrame, *, short_frames: int = SHORT_TUBE_FRAMES, tiny_area: float = TINY_TUBE_AREA
) -> dict[str, int | float]:
    """Summary numbers of an index: tubes, videos, short and tiny tubes, median length, score."""
    if df.height == 0:
        return {"tubes": 0, "videos": 0, "short_tubes": 0, "tiny_tubes": 0,
                "median_length": 0.0, "mean_score": 0.0}
    return {
        "tubes": df.height,
        "videos": df["video_id"].n_unique(),
        "short_tubes": int((df["length"] < short_frames).sum()),
        "tiny_tubes": int((df["mean_area"] < tiny_area).sum()),
        "median_length": float(df["length"].median()),
        "mean_score": float(df["score"].mean()),
    }


def top_rows_markdown(
    df: pl.DataFrame,
    n: int = 10,
    *,
    by: str = "score",
    descending: bool = True,
    columns: tuple[str, ...] = (
        "video", "track_id", "score", "first_frame", "last_frame", "length", "mean_area",
    ),
) -> str:
    """The first `n` rows sorted by `by`, as a Markdown table (for `MetadataValue.md`)."""
    top = df.sort(by, descending=descending).head(n).select(list(columns))

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in top.iter_rows()]
    return "\n".join(lines)
