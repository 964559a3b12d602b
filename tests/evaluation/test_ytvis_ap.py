"""Video AP (YouTube-VIS protocol): hand-worked cases, edge cases, and pycocotools as a referee."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from wsovvis_dagster.errors import TubeFormatError, WsovvisError
from wsovvis_dagster.evaluation.ytvis_ap import (
    cli_eval,
    evaluate_results,
    load_gt,
    load_results,
    spatiotemporal_iou,
)

H, W = 8, 8


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": out["size"], "counts": out["counts"].decode("ascii")}


def block(y: int, x: int, size: int = 2) -> dict:
    """RLE of a size x size square with top-left corner (y, x) in an H x W frame."""
    m = np.zeros((H, W), dtype=np.uint8)
    m[y : y + size, x : x + size] = 1
    return rle(m)


def video(vid: int, length: int) -> dict:
    return {"id": vid, "name": f"v{vid}", "height": H, "width": W, "length": length}


def gt_dict(videos, anns, categories=({"id": 1, "name": "thing"},)) -> dict:
    annotations = [
        {"id": i + 1, "iscrowd": 0, "category_id": 1, **a} for i, a in enumerate(anns)
    ]
    return {"videos": list(videos), "annotations": annotations, "categories": list(categories)}


def res(vid: int, score: float, segs, category_id: int = 1) -> dict:
    return {"video_id": vid, "category_id": category_id, "score": score, "segmentations": segs}


G1 = [block(0, 0), block(0, 0)]  # video 1: a 2x2 square (4 px) in both frames
G2 = [block(4, 4), block(4, 4)]  # video 2: another one


def test_ground_truth_as_predictions_scores_one():
    gt = gt_dict([video(1, 2), video(2, 2)],
                 [{"video_id": 1, "segmentations": G1}, {"video_id": 2, "segmentations": G2}])
    results = [res(a["video_id"], 1.0, a["segmentations"]) for a in gt["annotations"]]
    for agnostic in (False, True):
        m = evaluate_results(gt, results, class_agnostic=agnostic)
        for key in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
            assert m[key] == pytest.approx(1.0, abs=1e-12), key
    assert m["recall@0.5"] == m["recall@0.75"] == 1.0


def test_two_videos_missed_frame_false_positive_duplicate():
    gt = gt_dict([video(1, 2), video(2, 2)],
                 [{"video_id": 1, "segmentations": G1}, {"video_id": 2, "segmentations": G2}])
    results = [
        res(1, 0.9, [block(0, 0), None]),  # p1: misses frame 1 -> st-IoU 4 / (4 + 4) = 0.5
        res(2, 0.8, G2),  # p2: exact
        res(2, 0.7, G2),  # p3: duplicate of p2 -> FP (its GT is taken)
        res(1, 0.6, [block(6, 6), block(6, 6)]),  # p4: false positive (IoU 0)
    ]
    # IoU 0.50: p1 TP, p2 TP, p3 FP, p4 FP. Recall [.5, 1, 1, 1], precision [1, 1, 2/3, 1/2];
    #   the envelope is 1 up to recall 1, so the 101-point AP is 1.
    # IoU 0.55 ... 0.95 (9 thresholds): p1 FP, p2 TP, p3 FP, p4 FP. Recall [0, .5, .5, .5],
    #   precision [0, 1/2, 1/3, 1/4], envelope [1/2, 1/2, 1/3, 1/4]: recall points 0.00 ... 0.50
    #   (51 of 101) get 1/2, the 50 above 0.5 get 0. AP = 25.5 / 101.
    # AP = (1 + 9 * 25.5 / 101) / 10 = 330.5 / 1010. Recall: 1 at 0.50, 0.5 at the other nine
    #   -> AR100 = 5.5 / 10; with 1 prediction per video p1 and p2 are kept -> AR1 the same.
    m = evaluate_results(gt, results)
    assert m["AP50"] == pytest.approx(1.0, rel=1e-12)
    assert m["AP75"] == pytest.approx(25.5 / 101, rel=1e-12)
    assert m["AP"] == pytest.approx(330.5 / 1010, rel=1e-12)
    assert m["AR1"] == m["AR10"] == m["AR100"] == pytest.approx(0.55, rel=1e-12)
    agnostic = evaluate_results(gt, results, class_agnostic=True)
    assert agnostic["recall@0.5"] == 1.0 and agnostic["recall@0.75"] == 0.5
    assert spatiotemporal_iou([results[0]["segmentations"]], [G1])[0, 0] == 0.5


def test_max_detections_cap_recall():
    # one video, two GT; both predicted exactly. AR1 sees only the top prediction -> 1/2.
    gt = gt_dict([video(1, 2)],
                 [{"video_id": 1, "segmentations": G1}, {"video_id": 1, "segmentations": G2}])
    m = evaluate_results(gt, [res(1, 0.9, G1), res(1, 0.8, G2)])
    assert m["AR1"] == 0.5 and m["AR10"] == m["AR100"] == 1.0


def test_empty_results_score_zero():
    gt = gt_dict([video(1, 2)], [{"video_id": 1, "segmentations": G1}])
    m = evaluate_results(gt, [])
    assert m == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR1": 0.0, "AR10": 0.0, "AR100": 0.0}


def test_no_ground_truth_at_all_is_undefined():
    gt = gt_dict([video(1, 2)], [])
    m = evaluate_results(gt, [res(1, 0.5, G1)])
    assert set(m.values()) == {-1.0}


def test_category_without_ground_truth_is_left_out_of_the_mean():
    cats = ({"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"})
    gt = gt_dict([video(1, 2)], [{"video_id": 1, "segmentations": G1}], cats)
    exact = res(1, 0.9, G1)
    # category 2 has no GT: its false positive changes nothing; category 3 has nothing at all
    with_fp = evaluate_results(gt, [exact, res(1, 0.95, G2, category_id=2)])
    assert with_fp["AP"] == pytest.approx(1.0, abs=1e-12)
    # the only category with GT has no prediction -> 0 (not -1, not averaged with others)
    assert evaluate_results(gt, [res(1, 0.9, G1, category_id=2)])["AP"] == 0.0


def test_null_frames_count_in_the_union_only():
    gt = gt_dict([video(1, 3)], [{"video_id": 1, "segmentations": [block(0, 0), None, None]}])
    # frame 0 exact (4 px), frame 1 predicted where GT is absent (+4 to the union), frame 2
    # absent on both sides (nothing): st-IoU = 4 / 8
    pred = [block(0, 0), block(0, 0), None]
    assert spatiotemporal_iou([pred], [gt["annotations"][0]["segmentations"]])[0, 0] == 0.5
    m = evaluate_results(gt, [res(1, 1.0, pred)])
    assert m["AP50"] == pytest.approx(1.0, abs=1e-12) and m["AP75"] == 0.0


def test_crowd_ground_truth_absorbs_predictions_and_is_never_missed():
    anns = [{"video_id": 1, "segmentations": G1},
            {"video_id": 1, "segmentations": G2, "iscrowd": 1}]
    results = [res(1, 0.95, G2), res(1, 0.9, G2), res(1, 0.5, G1)]
    # crowd: the two predictions on the crowd tube are ignored, the regular GT is found -> 1
    crowd = evaluate_results(gt_dict([video(1, 2)], anns), results)
    assert crowd["AP"] == pytest.approx(1.0, abs=1e-12) and crowd["AR100"] == 1.0
    # not crowd: TP, FP, TP -> recall [.5, .5, 1], precision envelope [1, 2/3, 2/3]:
    # 51 recall points at 1, 50 at 2/3 -> AP = (51 + 100/3) / 101 = 253 / 303
    anns[1]["iscrowd"] = 0
    plain = evaluate_results(gt_dict([video(1, 2)], anns), results)
    assert plain["AP"] == pytest.approx(253 / 303, rel=1e-12)


def test_base_and_novel_ap_from_partitions():
    cats = ({"id": 1, "name": "base", "partition": 0}, {"id": 2, "name": "novel", "partition": 2})
    gt = gt_dict([video(1, 2)], [{"video_id": 1, "segmentations": G1, "category_id": 1},
                                 {"video_id": 1, "segmentations": G2, "category_id": 2}], cats)
    m = evaluate_results(gt, [res(1, 0.9, G1, category_id=1)])
    assert m["APb"] == pytest.approx(1.0, abs=1e-12) and m["AP50b"] == pytest.approx(1.0, abs=1e-12)
    assert m["APn"] == 0.0 and m["AP50n"] == 0.0
    assert m["AP"] == pytest.approx(0.5, abs=1e-12)
    assert "APb" not in evaluate_results(gt, [], class_agnostic=True)


def test_class_agnostic_ignores_categories():
    gt = gt_dict([video(1, 2)], [{"video_id": 1, "segmentations": G1}])
    wrong_class = [res(1, 0.9, G1, category_id=99)]
    assert evaluate_results(gt, wrong_class)["AP"] == 0.0
    agnostic = evaluate_results(gt, wrong_class, class_agnostic=True)
    assert agnostic["AP"] == pytest.approx(1.0, abs=1e-12) and agnostic["recall@0.5"] == 1.0


def test_uncompressed_rle_is_accepted():
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[0:2, 0:2] = 1
    # column-major runs: 0 background, 2 on (column 0), 6 off, 2 on (column 1), rest off
    uncompressed = {"size": [H, W], "counts": [0, 2, 6, 2, H * W - 10]}
    gt = gt_dict([video(1, 1)], [{"video_id": 1, "segmentations": [uncompressed]}])
    m = evaluate_results(gt, [res(1, 1.0, [rle(mask)])])
    assert m["AP"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda g: g["annotations"][0]["segmentations"].append(None),
         "annotations[0].segmentations"),
        (lambda g: g["annotations"][0]["segmentations"][1].update(size=[4, 4]),
         "annotations[0].segmentations[1]"),
        (lambda g: g["annotations"][0]["segmentations"][1].update(counts="0:0;"),
         "annotations[0].segmentations[1]"),
        (lambda g: g["annotations"][0]["segmentations"].__setitem__(1, {"size": [H, W],
                                                                         "counts": [3, 4]}),
         "annotations[0].segmentations[1]"),
        (lambda g: g["annotations"][0].update(video_id=7), "annotations[0].video_id"),
        (lambda g: g["annotations"][0].update(category_id=5), "annotations[0].category_id"),
    ],
)
def test_malformed_ground_truth_names_the_json_path(tmp_path, mutate, where):
    gt = gt_dict([video(1, 2)], [{"video_id": 1, "segmentations": copy.deepcopy(G1)}])
    mutate(gt)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(TubeFormatError) as info:
        load_gt(path)
    assert where in str(info.value) and str(path) in str(info.value)


def test_malformed_results_name_the_json_path(tmp_path):
    gt = gt_dict([video(1, 2)], [{"video_id": 1, "segmentations": G1}])
    path = tmp_path / "results.json"
    path.write_text(json.dumps([res(1, 0.5, G1), res(2, 0.5, G1)]))
    with pytest.raises(TubeFormatError, match=r"results\[1\]\.video_id"):
        load_results(path, gt)
    path.write_text(json.dumps([res(1, 0.5, G1[:1])]))
    with pytest.raises(TubeFormatError, match=r"results\[0\]\.segmentations: expected a list of 2"):
        load_results(path, gt)
    path.write_text(json.dumps([{**res(1, 0.5, G1), "score": "high"}]))
    with pytest.raises(TubeFormatError, match=r"results\[0\]\.score"):
        load_results(path, gt)


def test_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    gt = gt_dict([video(1, 2)], [{"video_id": 1, "segmentations": G1}])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps([res(1, 0.9, [block(0, 0), None])]))
    argv = [str(tmp_path / "gt.json"), str(tmp_path / "res.json"), "--class-agnostic",
            "--json", str(tmp_path / "out" / "metrics.json")]
    assert cli_eval(argv) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "recall@0.5" in out and "1.0000" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == 0.0


def test_cli_reports_bad_input_with_exit_status_2(tmp_path, capsys):
    (tmp_path / "gt.json").write_text("{not json")
    assert cli_eval([str(tmp_path / "gt.json"), str(tmp_path / "gt.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_eval(["--help"])
    assert info.value.code == 0
    assert "--class-agnostic" in capsys.readouterr().out


# --- referee: pycocotools' own COCOeval, with st-IoU from dense NumPy masks -------------------


def _random_case(rng):
    h, w = 12, 16
    videos, anns, results = [], [], []
    for v in range(1, 5):
        length = int(rng.integers(2, 5))
        videos.append({"id": v, "height": h, "width": w, "length": length})
        tubes = []
        for _ in range(int(rng.integers(0, 4))):
            segs = [rle(rng.random((h, w)) < 0.3) if rng.random() > 0.2 else None
                    for _ in range(length)]
            anns.append({"video_id": v, "category_id": int(rng.integers(1, 3)),
                         "iscrowd": int(rng.random() < 0.2), "segmentations": segs})
            tubes.append(anns[-1])
        for _ in range(int(rng.integers(0, 6))):
            if tubes and rng.random() < 0.6:
                src = tubes[int(rng.integers(len(tubes)))]
                segs = [s if rng.random() < 0.8 else None for s in src["segmentations"]]
                cat = src["category_id"]
            else:
                segs = [rle(rng.random((h, w)) < 0.3) for _ in range(length)]
                cat = int(rng.integers(1, 3))
            score = float(rng.choice([0.3, 0.6, 0.9])) if rng.random() < 0.3 else rng.random()
            results.append(res(v, float(score), segs, cat))
    for i, a in enumerate(anns):
        a["id"] = i + 1
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    return {"videos": videos, "annotations": anns, "categories": cats}, results


def _dense_stiou(d_segs, g_segs) -> float:
    inter = union = 0
    for d, g in zip(d_segs, g_segs, strict=True):
        dm = mask_utils.decode(d).astype(bool) if d else np.zeros((1, 1), bool)
        gm = mask_utils.decode(g).astype(bool) if g else np.zeros((1, 1), bool)
        inter += int((dm & gm).sum()) if d and g else 0
        union += int((dm | gm).sum()) if d and g else int(dm.sum() + gm.sum())
    return inter / union if union else 0.0


def _cocoeval_reference(gt, results, agnostic) -> dict:
    """COCOeval with videos as images and computeIoU replaced by dense st-IoU (YTVOSeval)."""
    images = [{"id": v["id"]} for v in gt["videos"]]

    def coco(anns):
        c = COCO()
        c.dataset = {"images": images, "annotations": anns, "categories": gt["categories"]}
        with contextlib.redirect_stdout(io.StringIO()):
            c.createIndex()
        return c

    base = {"area": 1.0, "bbox": [0, 0, 1, 1]}
    cg = coco([{**base, "id": a["id"], "image_id": a["video_id"], "iscrowd": a["iscrowd"],
                "category_id": a["category_id"], "segs": a["segmentations"]}
               for a in gt["annotations"]])
    cd = coco([{**base, "id": i + 1, "image_id": r["video_id"], "iscrowd": 0, "score": r["score"],
                "category_id": r["category_id"], "segs": r["segmentations"]}
               for i, r in enumerate(results)])
    ev = COCOeval(cg, cd, "bbox")
    ev.params.useCats = 0 if agnostic else 1
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]

    def compute_iou(img, cat):
        p = ev.params
        cats = [cat] if p.useCats else p.catIds
        g = [x for c in cats for x in ev._gts[img, c]]
        d = [x for c in cats for x in ev._dts[img, c]]
        if not g and not d:
            return []
        d = [d[i] for i in np.argsort([-x["score"] for x in d], kind="mergesort")][:100]
        return np.array([[_dense_stiou(x["segs"], y["segs"]) for y in g] for x in d])

    ev.computeIoU = compute_iou
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    prec, rec = ev.eval["precision"][:, :, :, 0, :], ev.eval["recall"][:, :, 0, :]

    def mean(x):
        return float(x[x > -1].mean()) if (x > -1).any() else -1.0

    return {"AP": mean(prec[..., 2]), "AP50": mean(prec[0, ..., 2]), "AP75": mean(prec[5, ..., 2]),
            "AR1": mean(rec[..., 0]), "AR10": mean(rec[..., 1]), "AR100": mean(rec[..., 2])}


@pytest.mark.parametrize("seed", range(6))
def test_matches_pycocotools_cocoeval_on_random_videos(seed):
    gt, results = _random_case(np.random.default_rng(seed))
    for agnostic in (False, True):
        ours = evaluate_results(gt, results, class_agnostic=agnostic)
        ref = _cocoeval_reference(copy.deepcopy(gt), copy.deepcopy(results), agnostic)
        for key, value in ref.items():
            assert ours[key] == pytest.approx(value, abs=1e-12), (key, agnostic)




def _rle_4x4() -> dict:
    from pycocotools import mask as mask_utils

    m = np.zeros((4, 4), np.uint8)
    m[:2, :2] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _gt_doc() -> dict:
    return {
        "videos": [{"id": 1, "name": "v", "width": 4, "height": 4, "length": 2,
                    "file_names": ["v/0.jpg", "v/1.jpg"]}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                         "segmentations": [_rle_4x4(), None], "areas": [4, None],
                         "bboxes": [[0, 0, 2, 2], None]}],
    }


MALFORMED_RESULTS = {  # results JSON -> the JSON path the error must name
    "not_a_list": ({"video_id": 1}, "results must be a JSON list"),
    "segmentation_without_counts": (
        [{"video_id": 1, "category_id": 1, "score": 0.9,
          "segmentations": ["RLE", {"size": [4, 4]}]}],
        "[0].segmentations[1]"),
    "score_is_text": (
        [{"video_id": 1, "category_id": 1, "score": "high", "segmentations": [None, None]}],
        "[0].score"),
    "unknown_video": (
        [{"video_id": 7, "category_id": 1, "score": 0.5, "segmentations": [None, None]}],
        "[0].video_id"),
    "truncated": ('[{"video_id": 1, "score": 0.9, "segm', "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_RESULTS))
def test_evaluator_names_the_json_path_of_a_malformed_result(case, tmp_path):
    from wsovvis_dagster.evaluation import ytvis_ap as evaluation

    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(_gt_doc()))
    gt = evaluation.load_gt(gt_path)
    doc, json_path = MALFORMED_RESULTS[case]
    if isinstance(doc, list):
        for r in doc:
            r["segmentations"] = [_rle_4x4() if s == "RLE" else s for s in r["segmentations"]]
    results_path = tmp_path / "results.json"
    results_path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(WsovvisError) as err:
        evaluation.evaluate_results(gt, evaluation.load_results(results_path, gt))
    assert str(results_path) in str(err.value)
    assert json_path in str(err.value)


def test_evaluator_names_the_json_path_of_a_malformed_ground_truth(tmp_path):
    from wsovvis_dagster.evaluation import ytvis_ap as evaluation

    gt = _gt_doc()
    gt["annotations"][0]["segmentations"] = [_rle_4x4()]  # 1 entry for a 2-frame video
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    with pytest.raises(WsovvisError) as err:
        evaluation.load_gt(gt_path)
    assert "annotations[0].segmentations" in str(err.value) and str(gt_path) in str(err.value)
