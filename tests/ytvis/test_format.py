"""Tube JSON validation: a converted tube JSON has no problems, and each defect is named with
its JSON path."""

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mask_maps import blobs, write_video
from wsovvis_dagster.ytvis.format import validate_tube_json
from wsovvis_dagster.ytvis.tubes import convert_mask_folders, load_tube_json, write_tube_json


@pytest.fixture
def valid_tubes(tmp_path):
    write_video(tmp_path / "v", blobs(np.random.default_rng(3), 3, 12, 12, 2))
    write_tube_json(tmp_path / "t.json", convert_mask_folders([(tmp_path / "v", "v")]))
    return load_tube_json(tmp_path / "t.json")


def test_valid_tube_json_has_no_problems(valid_tubes):
    assert validate_tube_json(valid_tubes, "t.json") == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["annotations"][0]["segmentations"].pop(), "annotations[0].segmentations"),
        (lambda d: next(s for s in d["annotations"][0]["segmentations"] if s).update(
            size=[5, 5]), "does not match its video"),
        (lambda d: next(s for s in d["annotations"][0]["segmentations"] if s).update(
            counts="0000"), "runs cover"),
        (lambda d: d["annotations"][0].update(
            segmentations=[None] * len(d["annotations"][0]["segmentations"])), "empty tube"),
        (lambda d: d["annotations"][1].update(track_id=d["annotations"][0]["track_id"]),
         "same video_id/track_id"),
        (lambda d: d["annotations"][0].update(video_id=42), "annotations[0].video_id"),
        (lambda d: d["annotations"][0]["areas"].pop(), "annotations[0].areas"),
    ],
)
def test_validation_names_each_problem(valid_tubes, mutate, expected):
    data = copy.deepcopy(valid_tubes)
    mutate(data)
    problems = validate_tube_json(data, "t.json")
    assert problems and all(p.startswith("t.json: ") for p in problems)
    assert any(expected in p for p in problems), problems


def test_all_zero_masks_are_an_empty_tube(valid_tubes):
    data = json.loads(json.dumps(valid_tubes))
    zero = mask_utils.encode(np.zeros((12, 12, 1), dtype=np.uint8, order="F"))[0]
    ann = data["annotations"][0]
    ann["segmentations"] = [{"size": [12, 12], "counts": zero["counts"].decode()}] * len(
        ann["segmentations"])
    assert any("zero area" in p for p in validate_tube_json(data, "t.json"))


@pytest.mark.parametrize("batch_chars", [1, 40])
def test_rles_checked_in_small_batches_name_the_same_bad_frames(valid_tubes, monkeypatch,
                                                                 batch_chars):
    """The RLE check runs in batches of a bounded number of characters (so its memory is
    bounded); however small the batches, each bad RLE is named at its own JSON path."""
    from wsovvis_dagster.ytvis import format as tube_format

    data = copy.deepcopy(valid_tubes)
    bad = [(i, t) for i, ann in enumerate(data["annotations"])
           for t, s in enumerate(ann["segmentations"]) if s][1::3]
    assert len(bad) >= 2  # sanity: more than one bad RLE, in different batches below
    for i, t in bad:
        data["annotations"][i]["segmentations"][t]["counts"] = "0000"
    whole = validate_tube_json(copy.deepcopy(data), "t.json")
    monkeypatch.setattr(tube_format, "_CHECK_CHARS", batch_chars)
    assert validate_tube_json(data, "t.json") == whole
    assert [p.split(": ")[1] for p in whole if "runs cover" in p] == [
        f"annotations[{i}].segmentations[{t}]" for i, t in bad]
    assert validate_tube_json(valid_tubes, "t.json") == []
