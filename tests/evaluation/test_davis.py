"""Real DAVIS data: OSVOS predictions scored against DAVIS-2016 ground truth.

The evaluator's st-IoU (RLE operations) is checked against a plain NumPy computation on the
decoded PNGs, and its AP / AR against the values derived by hand from those st-IoUs.
"""

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from wsovvis_dagster.evaluation.ytvis_ap import IOU_THRESHOLDS, evaluate_results, spatiotemporal_iou
from wsovvis_dagster.ytvis.tubes import encode_id_maps

SEQUENCES = ("horsejump-high", "scooter-black")
pytestmark = pytest.mark.shared


def _stack(folder) -> np.ndarray:
    return np.stack([np.array(Image.open(p)) for p in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def davis(shared_data):
    """seq -> (GT foreground (T, H, W) bool, OSVOS ids (T, H, W) uint8)."""
    out = {}
    for seq in SEQUENCES:
        gt = _stack(shared_data / "davis" / "Annotations" / seq)
        assert set(np.unique(gt)) <= {0, 255}
        out[seq] = (gt == 255, _stack(shared_data / "davis" / "osvos" / seq))
    return out


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode("ascii")}


@pytest.fixture(scope="module")
def gt_dict(davis):
    """One category, one GT tube per sequence (DAVIS-2016 merges all objects)."""
    videos, anns = [], []
    for vid, seq in enumerate(SEQUENCES, start=1):
        fg, _ = davis[seq]
        t, h, w = fg.shape
        videos.append({"id": vid, "name": seq, "height": h, "width": w, "length": t})
        anns.append({"id": vid, "video_id": vid, "category_id": 1, "iscrowd": 0,
                     "segmentations": [_rle(m) if m.any() else None for m in fg]})
    return {"videos": videos, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def _numpy_stiou(pred: np.ndarray, gt: np.ndarray) -> float:
    return float((pred & gt).sum() / (pred | gt).sum())


def test_frames_line_up_with_the_readme_sanity_numbers(davis):
    for seq, expected in (("horsejump-high", 0.77), ("scooter-black", 0.67)):
        fg, ids = davis[seq]
        per_frame = [(p & g).sum() / (p | g).sum() for p, g in zip(ids > 0, fg, strict=True)]
        assert np.mean(per_frame) == pytest.approx(expected, abs=0.01)


def test_stiou_per_sequence_matches_numpy(davis, gt_dict):
    for vid, seq in enumerate(SEQUENCES, start=1):
        fg, ids = davis[seq]
        tubes = encode_id_maps(ids)  # the library's own PNG -> tube conversion
        assert [t.track_id for t in tubes] == [1, 2]
        if seq == "scooter-black":  # id 1 is missing in 5 frames: null segmentations
            assert sum(s is None for s in tubes[0].segmentations) == 5
        (merged,) = encode_id_maps((ids > 0).astype(np.uint8))
        preds = [t.segmentations for t in tubes] + [merged.segmentations]
        ours = spatiotemporal_iou(preds, [gt_dict["annotations"][vid - 1]["segmentations"]])
        expected = [_numpy_stiou(ids == 1, fg), _numpy_stiou(ids == 2, fg),
                    _numpy_stiou(ids > 0, fg)]
        np.testing.assert_allclose(ours[:, 0], expected, rtol=1e-12)


def test_ap_and_ar_follow_from_the_stiou(davis, gt_dict):
    # One prediction per video (all OSVOS objects merged); horsejump-high scores higher.
    stiou, results = [], []
    for vid, (seq, score) in enumerate(zip(SEQUENCES, (0.9, 0.8), strict=True), start=1):
        fg, ids = davis[seq]
        stiou.append(_numpy_stiou(ids > 0, fg))
        results.append({"video_id": vid, "category_id": 1, "score": score,
                        "segmentations": [_rle(m) if m.any() else None for m in ids > 0]})
    m = evaluate_results(gt_dict, results)

    # Per threshold: both found -> AP 1; only the first-ranked -> precision 1 up to recall
    # 0.5, so 51 of 101 points; only the second -> precision 1/2 up to recall 0.5 -> 25.5/101.
    def ap_at(t):
        hit = [u >= t for u in stiou]
        return {(True, True): 1.0, (True, False): 51 / 101, (False, True): 25.5 / 101,
                (False, False): 0.0}[tuple(hit)]

    assert m["AP"] == pytest.approx(np.mean([ap_at(t) for t in IOU_THRESHOLDS]), abs=1e-12)
    assert m["AP50"] == pytest.approx(ap_at(0.5), abs=1e-12)
    recall = np.mean([np.mean([u >= t for u in stiou]) for t in IOU_THRESHOLDS])
    assert m["AR1"] == m["AR100"] == pytest.approx(recall, abs=1e-12)
    assert 0 < m["AP"] < 1  # real predictions: neither trivial extreme
