"""Tube JSON -> YouTube-VIS results: ids mapped to the GT's by video name, written atomically."""

import json

import numpy as np
import pytest

from wsovvis_dagster.evaluation.ytvis_ap import evaluate_results, load_results
from wsovvis_dagster.ytvis.results import (
    export_results,
    results_json_path,
    tubes_to_results,
    video_name,
)
from wsovvis_dagster.ytvis.tubes import VideoTubes, encode_id_maps, load_tube_json, write_tube_json


@pytest.fixture
def tubes(tmp_path):
    maps = np.zeros((2, 8, 8), dtype=np.uint8)
    maps[:, 1:4, 1:4] = 1
    maps[1, 5:7, 5:7] = 2
    videos = [VideoTubes(n, 8, 8, [f"{n}/0.jpg", f"{n}/1.jpg"], encode_id_maps(maps, {1: 0.8}))
              for n in ("alpha", "beta")]
    path = tmp_path / "val" / "tubes_val.json"
    path.parent.mkdir()
    write_tube_json(path, videos)
    return load_tube_json(path), path


def _gt(tubes_data):
    """GT for video "beta" only, with its own id (7) and YouTube-VIS style file_names."""
    beta = next(v for v in tubes_data["videos"] if v["name"] == "beta")
    track1 = next(a for a in tubes_data["annotations"]
                  if a["video_id"] == beta["id"] and a["track_id"] == 1)
    return {
        "videos": [{"id": 7, "height": 8, "width": 8, "length": 2,
                    "file_names": ["beta/00000.jpg", "beta/00001.jpg"]}],
        "annotations": [{"id": 1, "video_id": 7, "category_id": 1, "iscrowd": 0,
                         "segmentations": track1["segmentations"]}],
        "categories": [{"id": 1, "name": "object"}],
    }


def test_one_result_per_tube_with_the_tube_json_ids(tubes):
    data, _ = tubes
    results = tubes_to_results(data)
    assert len(results) == len(data["annotations"]) == 4
    assert {(r["video_id"], r["score"]) for r in results} == {(1, 0.8), (1, 1.0), (2, 0.8),
                                                              (2, 1.0)}
    assert set(results[0]) == {"video_id", "category_id", "score", "segmentations"}


def test_export_maps_videos_to_gt_ids_by_name_and_evaluates(tubes):
    data, path = tubes
    gt = _gt(data)
    assert video_name(gt["videos"][0]) == "beta"
    out = results_json_path(path, "val")
    assert out == path.parent / "results_val.json"
    export = export_results(data, out, gt=gt)
    assert export.results == 2 and export.skipped_videos == ("alpha",)
    loaded = load_results(out, gt)
    assert {r["video_id"] for r in loaded} == {7}
    metrics = evaluate_results(gt, loaded, class_agnostic=True)
    # track 1 is the GT (score 0.8); track 2 (score 1.0) ranks first and is a false positive:
    # precision 0 then 1/2 at recall 1, whose envelope is 1/2 at every recall point -> AP 0.5
    assert metrics["recall@0.5"] == 1.0 and metrics["AP"] == pytest.approx(0.5)
    assert json.loads(out.read_text()) == loaded
