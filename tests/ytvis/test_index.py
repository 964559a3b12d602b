"""Tube index: one Parquet row per tube, with the numbers a person would compute by hand."""

import numpy as np
import polars as pl
import pytest

from wsovvis_dagster.ytvis.index import (
    build_tube_index,
    index_counts,
    top_rows_markdown,
    tube_index_path,
    write_tube_index,
)
from wsovvis_dagster.ytvis.tubes import VideoTubes, encode_id_maps, load_tube_json, write_tube_json


@pytest.fixture
def tube_json(tmp_path):
    """Video "a": track 1 a 4x5 box in frames 0-3 moving right by 2 px/frame, track 2 a single
    pixel in frames 1 and 3 only. Video "b": track 1 a 10x10 box in frame 0 only."""
    a = np.zeros((4, 20, 30), dtype=np.uint8)
    for t in range(4):
        a[t, 2:6, 3 + 2 * t : 8 + 2 * t] = 1
    a[1, 15, 25] = a[3, 15, 25] = 2
    b = np.zeros((2, 20, 30), dtype=np.uint8)
    b[0, 0:10, 0:10] = 1
    videos = [
        VideoTubes("a", 30, 20, [f"a/{t}.jpg" for t in range(4)],
                   encode_id_maps(a, {1: 0.9, 2: 0.2})),
        VideoTubes("b", 30, 20, ["b/0.jpg", "b/1.jpg"], encode_id_maps(b, {1: 0.5})),
    ]
    path = tmp_path / "val" / "tubes_val.json"
    path.parent.mkdir()
    write_tube_json(path, videos)
    return path


def test_rows_hold_extent_length_and_area(tube_json):
    df = build_tube_index(load_tube_json(tube_json), "val")
    rows = {(r["video"], r["track_id"]): r for r in df.iter_rows(named=True)}
    big = rows[("a", 1)]
    assert (big["first_frame"], big["last_frame"], big["length"], big["span"]) == (0, 3, 4, 4)
    assert big["mean_area"] == big["min_area"] == 20.0
    # x from 3 (frame 0) to 8 + 6 (frame 3, exclusive), y from 2 to 6
    assert (big["x0"], big["y0"], big["x1"], big["y1"]) == (3.0, 2.0, 14.0, 6.0)
    assert big["score"] == pytest.approx(0.9) and big["split"] == "val"
    dot = rows[("a", 2)]
    assert (dot["first_frame"], dot["last_frame"], dot["length"], dot["span"]) == (1, 3, 2, 3)
    assert rows[("b", 1)]["video_id"] == 2 and rows[("b", 1)]["mean_area"] == 100.0


def test_parquet_is_written_beside_the_json_and_reads_back(tube_json):
    path, df = write_tube_index(load_tube_json(tube_json), "val", tube_json)
    assert path == tube_json.parent / "tubes_val.parquet" == tube_index_path(tube_json, "val")
    assert pl.read_parquet(path).equals(df)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_counts_and_handy_queries(tube_json):
    df = build_tube_index(load_tube_json(tube_json), "val")
    counts = index_counts(df)
    assert counts["tubes"] == 3 and counts["videos"] == 2
    assert counts["short_tubes"] == 2  # the 2-frame dot and the 1-frame box of video b
    assert counts["tiny_tubes"] == 3  # mean areas 20, 1 and 100 px are all under 16 x 16
    assert index_counts(df, tiny_area=50)["tiny_tubes"] == 2
    assert counts["mean_score"] == pytest.approx((0.9 + 0.2 + 0.5) / 3)
    # the queries documented in ytvis.index's docstring
    assert df.filter(pl.col("length") < 3).height == 2
    tiny = df.filter(pl.col("mean_area") < 256).sort("mean_area")
    assert tiny["mean_area"].to_list() == [1, 20, 100]
    per_video = df.group_by("video").agg(pl.len().alias("tubes")).sort("tubes", descending=True)
    assert per_video.row(0) == ("a", 2)
    assert df.filter(pl.col("length") < pl.col("span"))["track_id"].to_list() == [2]
    assert index_counts(df.head(0))["tubes"] == 0


def test_top_rows_markdown_is_sorted_by_score(tube_json):
    md = top_rows_markdown(build_tube_index(load_tube_json(tube_json), "val"), n=2)
    lines = md.splitlines()
    assert lines[0].startswith("| video | track_id | score")
    assert len(lines) == 4  # header, rule, 2 rows
    assert lines[2].startswith("| a | 1 | 0.9") and lines[3].startswith("| b | 1 | 0.5")
