"""`evaluate_results` wall time on 1,000 synthetic predicted tubes (and as many GT tubes).

Synthetic videos of moving ellipses; predictions are jittered copies of the GT tubes (some
frames dropped, some shifted), plus false positives, with random scores. Reports the time of
input checking, of the st-IoU matrices, and of the full evaluation, and compares the st-IoU
step with the YouTube-VIS API's way (two `mask.merge` + `mask.area` per tube pair and frame).

    python -m benchmarks.evaluator                 # 100 videos x 10 tubes x 20 frames, 360x640
    python -m benchmarks.evaluator --videos 50 --frames 36
    python -m benchmarks.evaluator --json benchmarks/results/evaluator.json
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from benchmarks.results_io import add_json_args, context, write_result
from wsovvis_dagster.evaluation.ytvis_ap import evaluate_results, spatiotemporal_iou
from wsovvis_dagster.ytvis.format import normalise_gt, normalise_results
from wsovvis_dagster.ytvis.tubes import encode_id_map


def _tube_frames(rng, frames: int, h: int, w: int, k: int, shift: float = 0.0):
    centre = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h])
    speed = rng.uniform(-3, 3, size=2)
    axes = (int(rng.uniform(10, 50)), int(rng.uniform(10, 50)))
    for t in range(frames):
        cx, cy = centre + speed * t + shift
        frame = np.zeros((h, w), dtype=np.uint8)
        cv2.ellipse(frame, (int(cx), int(cy)), axes, 0.0, 0, 360, k, -1)
        yield frame


def _rles(frames) -> list[dict | None]:
    out = []
    for frame in frames:
        _, rles, _, _ = encode_id_map(frame)
        out.append(rles[0] if rles else None)
    return out


def make_data(videos: int, tubes: int, frames: int, h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"}
                                                          for c in range(1, 6)]}
    results = []
    for v in range(1, videos + 1):
        gt["videos"].append({"id": v, "name": f"v{v}", "height": h, "width": w, "length": frames})
        for _ in range(tubes):
            seed_k = int(rng.integers(1 << 30))
            segs = _rles(_tube_frames(np.random.default_rng(seed_k), frames, h, w, 1))
            cat = int(rng.integers(1, 6))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "video_id": v,
                                      "category_id": cat, "iscrowd": 0, "segmentations": segs})
            if rng.random() < 0.8:  # a jittered copy of the GT tube
                pred = _rles(_tube_frames(np.random.default_rng(seed_k), frames, h, w, 1,
                                          shift=float(rng.uniform(0, 8))))
                pred = [s if rng.random() > 0.1 else None for s in pred]
            else:  # a false positive
                pred = _rles(_tube_frames(rng, frames, h, w, 1))
            results.append({"video_id": v, "category_id": cat, "score": float(rng.random()),
                            "segmentations": pred})
    return gt, results


def ytvis_pairwise_stiou(dts, gts) -> np.ndarray:
    """The YouTube-VIS API's st-IoU: per pair and frame, merge+area for intersection and union."""
    out = np.zeros((len(dts), len(gts)))
    for i, d_seq in enumerate(dts):
        for j, g_seq in enumerate(gts):
            inter = union = 0.0
            for d, g in zip(d_seq, g_seq, strict=True):
                if d and g:
                    inter += mask_utils.area(mask_utils.merge([d, g], True))
                    union += mask_utils.area(mask_utils.merge([d, g], False))
                elif g:
                    union += mask_utils.area(g)
                elif d:
                    union += mask_utils.area(d)
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--tubes", type=int, default=10, help="GT tubes per video")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for our timings")
    add_json_args(parser)
    args = parser.parse_args(argv)

    def best(fn):
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return min(times), out


    gt, results = make_data(args.videos, args.tubes, args.frames, args.height, args.width)
    print(f"{len(results)} predicted tubes, {len(gt['annotations'])} GT tubes, "
          f"{args.videos} videos x {args.frames} frames, {args.width}x{args.height}")

    t_check, (ngt, nres) = best(lambda: (lambda g: (g, normalise_results(results, g)))(
        normalise_gt(gt)))

    by_video = {}
    for r in nres:
        by_video.setdefault(r["video_id"], [[], []])[0].append(r["segmentations"])
    for a in ngt["annotations"]:
        by_video.setdefault(a["video_id"], [[], []])[1].append(a["segmentations"])
    t_iou, ours = best(lambda: [spatiotemporal_iou(d, g) for d, g in by_video.values()])
    sample = list(by_video.values())[: max(1, args.videos // 10)]
    t0 = time.perf_counter()
    ref = [ytvis_pairwise_stiou(d, g) for d, g in sample]
    t_ref = (time.perf_counter() - t0) * len(by_video) / len(sample)
    assert all(np.allclose(a, b) for a, b in zip(ours, ref, strict=False))

    t_total, metrics = best(lambda: evaluate_results(gt, results))
    t_agnostic, _ = best(lambda: evaluate_results(gt, results, class_agnostic=True))

    print(f"{'step':<42} {'seconds':>8}")
    print(f"{'input checks (normalise GT + results)':<42} {t_check:8.2f}")
    print(f"{'st-IoU, ours (per-frame batched RLE ops)':<42} {t_iou:8.2f}")
    print(f"{'st-IoU, YTVOSeval pairwise (extrapolated)':<42} {t_ref:8.2f}"
          f"   ({t_ref / t_iou:.1f}x slower)")
    print(f"{'evaluate_results, class-aware (all steps)':<42} {t_total:8.2f}")
    print(f"{'evaluate_results, class-agnostic':<42} {t_agnostic:8.2f}")
    print("AP {AP:.3f}  AP50 {AP50:.3f}  AR100 {AR100:.3f}".format(**metrics))
    if args.json:
        sizes = {k: getattr(args, k) for k in ("videos", "tubes", "frames", "height", "width",
                                                "repeat")}
        sizes.update(predicted_tubes=len(results), gt_tubes=len(gt["annotations"]),
                     reference_sample_videos=len(sample))
        steps = [
            {"step": "input checks (normalise GT + results)", "seconds": t_check},
            {"step": "st-IoU, ours (per-frame batched RLE ops)", "seconds": t_iou},
            {"step": "st-IoU, YTVOSeval pairwise (extrapolated from the sample)",
             "seconds": t_ref, "vs_ours": t_ref / t_iou},
            {"step": "evaluate_results, class-aware (all steps)", "seconds": t_total},
            {"step": "evaluate_results, class-agnostic", "seconds": t_agnostic},
        ]
        write_result(
            args.json, benchmark="evaluator",
            title="`evaluate_results` wall time on synthetic predicted and GT tubes",
            measures="library ceiling: `evaluate_results`, the function `wsovvis eval` calls "
                     "(CLI start-up and JSON loading not included)",
            ctx=context(argv, sizes, args.note),
            results={"steps": steps, "metrics": {k: metrics[k] for k in ("AP", "AP50",
                                                                          "AR100")}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
