"""CocoVID (mmtracking) -> YouTube-VIS: the real YouTube-VIS 2019 sample, and made-up cases."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wsovvis_dagster.errors import TubeFormatError
from wsovvis_dagster.evaluation.ytvis_ap import evaluate_results, load_gt
from wsovvis_dagster.ytvis.cocovid import cocovid_to_ytvis, load_cocovid


@pytest.fixture(scope="module")
def sample(shared_data):
    return shared_data / "ytvis_sample"


@pytest.mark.shared
def test_real_sample_decodes_to_its_stored_bbox_and_area(sample):
    gt = load_cocovid(sample / "annotations.json")
    assert [(v["name"], v["length"], v["height"], v["width"]) for v in gt["videos"]] == [
        ("0043f083b5", 1, 720, 1280)
    ]
    (tube,) = gt["annotations"]
    assert tube["category_id"] == 1 and tube["iscrowd"] == 0
    mask = mask_utils.decode(tube["segmentations"][0])
    assert mask.shape == (720, 1280)  # size is [h, w]
    ys, xs = np.nonzero(mask)
    bbox = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert bbox == [1174, 335, 104, 79] and mask.sum() == 6377  # the file's own values
    assert tube["areas"] == [6377] and tube["bboxes"] == [[1174.0, 335.0, 104.0, 79.0]]


@pytest.mark.shared
def test_real_sample_counts_are_column_major(sample):
    raw = json.loads((sample / "annotations.json").read_text())["annotations"][0]["segmentation"]
    counts = raw["counts"]
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)  # starts background
    column_major = flat.reshape(1280, 720).T  # Fortran order: columns of height 720
    decoded = mask_utils.decode(load_cocovid(sample / "annotations.json")["annotations"][0][
        "segmentations"][0])
    assert np.array_equal(column_major, decoded)
    assert not np.array_equal(flat.reshape(720, 1280), decoded)


@pytest.mark.shared
def test_real_sample_self_evaluation_is_one(sample):
    gt = load_gt(sample / "annotations.json")  # CocoVID is recognised and converted
    results = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
                "segmentations": a["segmentations"]} for a in gt["annotations"]]
    for agnostic in (False, True):
        metrics = evaluate_results(gt, results, class_agnostic=agnostic)
        assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)
        assert metrics["AR1"] == 1.0


@pytest.mark.shared
def test_mmtracking_prediction_in_compressed_form_matches_the_sample(sample):
    gt = load_gt(sample / "annotations.json")
    predicted = json.loads((sample / "results.json").read_text())["track_masks"][0][0][0]
    assert isinstance(predicted["counts"], str)  # compressed RLE string, as results use
    results = [{"video_id": 1, "category_id": 1, "score": 0.9985, "segmentations": [predicted]}]
    assert evaluate_results(gt, results)["AP75"] == pytest.approx(1.0, abs=1e-12)


def _cocovid(segmentation_2nd=None, category_2nd=1):
    square = np.zeros((6, 5), dtype=np.uint8)
    square[1:3, 1:4] = 1
    runs = mask_utils.encode(np.asfortranarray(square))
    ann = {"video_id": 1, "instance_id": 7, "category_id": 1, "iscrowd": 0,
           "segmentation": {"size": [6, 5], "counts": runs["counts"].decode()}}
    anns = [{**ann, "id": 1, "image_id": 10}]
    if segmentation_2nd is not None:
        anns.append({**ann, "id": 2, "image_id": 12, "segmentation": segmentation_2nd,
                     "category_id": category_2nd})
    return {
        "videos": [{"id": 1, "name": "clip"}],
        "images": [{"id": 12, "video_id": 1, "frame_id": 2, "file_name": "clip/2.jpg",
                    "height": 6, "width": 5},
                   {"id": 11, "video_id": 1, "frame_id": 1, "file_name": "clip/1.jpg",
                    "height": 6, "width": 5},
                   {"id": 10, "video_id": 1, "frame_id": 0, "file_name": "clip/0.jpg",
                    "height": 6, "width": 5}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }


def test_frames_are_ordered_and_absent_frames_are_null():
    polygon = [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]]  # polygons are accepted too
    gt = cocovid_to_ytvis(_cocovid(segmentation_2nd=polygon))
    assert gt["videos"][0]["file_names"] == ["clip/0.jpg", "clip/1.jpg", "clip/2.jpg"]
    (tube,) = gt["annotations"]  # one tube per (video, instance_id)
    assert tube["instance_id"] == 7
    assert tube["segmentations"][1] is None and tube["areas"][0] == 6
    assert tube["areas"][2] == int(mask_utils.area(tube["segmentations"][2])) > 0


def test_inconsistent_category_and_unknown_image_are_errors():
    with pytest.raises(TubeFormatError, match=r"annotations\[1\]\.category_id"):
        cocovid_to_ytvis(_cocovid(segmentation_2nd=[[0, 0, 2, 0, 2, 2]], category_2nd=2))
    data = _cocovid()
    data["annotations"][0]["image_id"] = 99
    with pytest.raises(TubeFormatError, match=r"annotations\[0\]\.image_id"):
        cocovid_to_ytvis(data)
    data = _cocovid(segmentation_2nd={"size": [6, 5], "counts": [3, 4]})
    with pytest.raises(TubeFormatError, match="cover 7 pixels, expected 30"):
        cocovid_to_ytvis(data)
