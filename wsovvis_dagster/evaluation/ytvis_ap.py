"""Video instance segmentation AP, as the YouTube-VIS API computes it, vectorised.

Protocol (youtubevos/cocoapi `YTVOSeval`, itself pycocotools' `COCOeval` on videos):
- st-IoU of a predicted and a GT tube = sum over frames of |d_t & g_t| / sum of |d_t | g_t|
  (a frame where one side is null adds the other's area to the union only).
- Per video and category, predictions are sorted by score (stable) and capped at 100; each is
  matched greedily to the unmatched GT with the highest st-IoU >= threshold, regular GT before
  crowd GT. Crowd GT (`iscrowd: 1`) can absorb any number of predictions, and those are
  ignored (neither TP nor FP); crowd GT never count as positives. st-IoU with a crowd GT is
  the plain st-IoU, as in YTVOSeval (not COCO's intersection-over-prediction).
- Precision is interpolated at 101 recall points; AP is the mean over IoU .50:.05:.95, the
  points, and the categories that have at least one regular GT; AR@k is the recall with k
  predictions per video, averaged over thresholds and categories. Undefined values (no GT at
  all) are -1.0, as in pycocotools. Area ranges are not reported (all areas).
- Class-agnostic mode ignores `category_id` on both sides (`useCats=0`).

The per-frame work uses pycocotools RLE operations on whole frames (areas, and all pairwise
intersections via `mask.iou` with crowd=1, which returns |d & g| / |d|); matching and
accumulation are NumPy over thresholds, predictions and recall points.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from wsovvis_dagster.atomic import write_json_atomic
from wsovvis_dagster.errors import TubeFormatError
from wsovvis_dagster.ytvis.format import (
    load_gt,
    load_results,
    normalise_gt,
    normalise_results,
)

__all__ = [
    "IOU_THRESHOLDS",
    "MAX_DETS",
    "RECALL_THRESHOLDS",
    "add_eval_arguments",
    "cli_eval",
    "evaluate_results",
    "run_eval",
    "format_metrics",
    "load_gt",
    "load_results",
    "spatiotemporal_iou",
]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
BASE_PARTITIONS = (0, 1)  # LV-VIS: 0/1 base (frequent/common), 2/3 novel
NOVEL_PARTITIONS = (2, 3)
UNDEFINED = -1.0
_T50, _T75 = 0, 5  # indices of 0.50 and 0.75 in IOU_THRESHOLDS


def spatiotemporal_iou(
    dt_segs: Sequence[Sequence[dict | None]], gt_segs: Sequence[Sequence[dict | None]]
) -> np.ndarray:
    """`(D, G) float64` st-IoU between tubes given as per-frame compressed RLE (None = absent).

    All tubes must have the same number of frames and RLE sizes; 0 where both tubes are empty.
    """
    num_d, num_g = len(dt_segs), len(gt_segs)
    out = np.zeros((num_d, num_g))
    if num_d == 0 or num_g == 0:
        return out
    length = len(dt_segs[0])
    inter = np.zeros((num_d, num_g))
    area_d = np.zeros(num_d)
    area_g = np.zeros(num_g)
    for t in range(length):
        di = [i for i, s in enumerate(dt_segs) if s[t] is not None]
        gi = [j for j, s in enumerate(gt_segs) if s[t] is not None]
        if di:
            d_rles = [dt_segs[i][t] for i in di]
            a_d = mask_utils.area(d_rles).astype(np.float64)
            area_d[di] += a_d
        if gi:
            g_rles = [gt_segs[j][t] for j in gi]
            area_g[gi] += mask_utils.area(g_rles)
        if di and gi:
            # crowd=1 makes pycocotools return |d & g| / |d|: times |d| gives the intersection
            ratio = np.asarray(mask_utils.iou(d_rles, g_rles, [1] * len(gi)))
            inter[np.ix_(di, gi)] += np.rint(ratio * a_d[:, None])
    union = area_d[:, None] + area_g[None, :] - inter
    np.divide(inter, union, out=out, where=union > 0)
    return out


@dataclass(frozen=True)
class _Evaluated:
    """Matching of one (video, category): predictions sorted by score, capped at 100."""

    scores: np.ndarray  # (D,) float
    matched: np.ndarray  # (T, D) bool
    ignored: np.ndarray  # (T, D) bool: matched to a crowd GT
    num_gt: int  # regular (non-crowd) GT tubes


def _match(ious: np.ndarray, crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of score-sorted predictions (rows) to GT (columns) at every threshold.

    Regular GT are preferred to crowd GT; among equal st-IoU the later GT wins (pycocotools).
    """
    num_t = IOU_THRESHOLDS.size
    num_d, num_g = ious.shape
    matched = np.zeros((num_t, num_d), dtype=bool)
    ignored = np.zeros((num_t, num_d), dtype=bool)
    if num_d == 0 or num_g == 0:
        return matched, ignored
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
    taken = np.zeros((num_t, num_g), dtype=bool)
    rows = np.arange(num_t)
    for d in range(num_d):
        ok = (ious[d][None, :] >= thresholds) & ~(taken & ~crowd[None, :])
        regular = ok & ~crowd[None, :]
        cand = np.where(regular.any(axis=1, keepdims=True), regular, ok & crowd[None, :])
        found = cand.any(axis=1)
        if not found.any():
            continue
        vals = np.where(cand, ious[d][None, :], -1.0)
        best = num_g - 1 - np.argmax(vals[:, ::-1], axis=1)  # last index among ties
        t_idx, g_idx = rows[found], best[found]
        matched[t_idx, d] = True
        ignored[t_idx, d] = crowd[g_idx]
        taken[t_idx, g_idx] = True
    return matched, ignored


def _accumulate(evals: list[_Evaluated]) -> tuple[np.ndarray, np.ndarray]:
    """`precision (T, R, M)` and `recall (T, M)` of one category over its videos (-1: no GT)."""
    num_t, num_r, num_m = IOU_THRESHOLDS.size, RECALL_THRESHOLDS.size, len(MAX_DETS)
    precision = np.full((num_t, num_r, num_m), UNDEFINED)
    recall = np.full((num_t, num_m), UNDEFINED)
    num_gt = sum(e.num_gt for e in evals)
    if num_gt == 0:
        return precision, recall
    for m, max_det in enumerate(MAX_DETS):
        scores = np.concatenate([e.scores[:max_det] for e in evals])
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate([e.matched[:, :max_det] for e in evals], axis=1)[:, order]
        ignored = np.concatenate([e.ignored[:, :max_det] for e in evals], axis=1)[:, order]
        num_d = order.size
        if num_d == 0:
            precision[:, :, m] = 0.0
            recall[:, m] = 0.0
            continue
        tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
        fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
        rc = tp / num_gt
        pr = tp / (fp + tp + np.spacing(1))
        recall[:, m] = rc[:, -1]
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
        for t in range(num_t):
            idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
            reached = idx < num_d
            precision[t, :, m] = np.where(reached, pr[t, np.minimum(idx, num_d - 1)], 0.0)
    return precision, recall


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > UNDEFINED]
    return float(defined.mean()) if defined.size else UNDEFINED


def evaluate_results(
    gt: dict, results: list[dict], *, class_agnostic: bool = False
) -> dict[str, float]:
    """Video AP of `results` against YouTube-VIS `gt` (see the module docstring for the protocol).

    Returns "AP", "AP50", "AP75", "AR1", "AR10", "AR100"; with per-category `partition` in the
    GT (and not class-agnostic) also "APb", "APn", "AP50b", "AP50n"; class-agnostic also
    "recall@0.5" and "recall@0.75" (fraction of regular GT tubes matched one-to-one at that
    st-IoU, 100 predictions per video). Raises `TubeFormatError` on malformed input.
    Predictions of categories absent from `gt["categories"]` are ignored unless class-agnostic.
    """
    gt = normalise_gt(gt)
    return _evaluate(gt, normalise_results(results, gt), class_agnostic=class_agnostic)


def _evaluate(gt: dict, results: list[dict], *, class_agnostic: bool) -> dict[str, float]:
    """`evaluate_results` on already normalised input."""
    cat_ids = sorted({c["id"] for c in gt["categories"]})
    keys = [-1] if class_agnostic else cat_ids

    def key_of(track: dict) -> int:
        return -1 if class_agnostic else track["category_id"]

    # Agnostic mode keeps pycocotools' order (by category, then file order) for tie-breaking.
    rank = {c: i for i, c in enumerate(cat_ids)}
    gts: dict[int, list[dict]] = defaultdict(list)
    dts: dict[int, list[dict]] = defaultdict(list)
    for ann in sorted(gt["annotations"], key=lambda a: rank[a["category_id"]]):
        gts[ann["video_id"]].append(ann)
    for res in sorted(results, key=lambda r: rank.get(r["category_id"], len(rank))):
        if class_agnostic or res["category_id"] in rank:
            dts[res["video_id"]].append(res)

    per_key: dict[int, list[_Evaluated]] = defaultdict(list)
    for vid in sorted(v["id"] for v in gt["videos"]):
        v_gt = gts.get(vid, [])
        by_key: dict[int, list[dict]] = defaultdict(list)
        for res in dts.get(vid, []):
            by_key[key_of(res)].append(res)
        kept: list[dict] = []
        for key, group in by_key.items():
            order = np.argsort([-r["score"] for r in group], kind="mergesort")[: MAX_DETS[-1]]
            by_key[key] = [group[i] for i in order]
            kept.extend(by_key[key])
        if not v_gt and not kept:
            continue
        ious = spatiotemporal_iou(
            [r["segmentations"] for r in kept], [a["segmentations"] for a in v_gt]
        )
        row = {id(r): i for i, r in enumerate(kept)}
        for key in keys:
            g_idx = [j for j, a in enumerate(v_gt) if key_of(a) == key]
            k_dts = by_key.get(key, [])
            if not g_idx and not k_dts:
                continue
            crowd = np.array([v_gt[j]["iscrowd"] == 1 for j in g_idx], dtype=bool)
            sub = ious[np.ix_([row[id(r)] for r in k_dts], g_idx)]
            matched, ignored = _match(sub, crowd)
            scores = np.array([r["score"] for r in k_dts], dtype=np.float64)
            per_key[key].append(_Evaluated(scores, matched, ignored, int((~crowd).sum())))

    acc = [_accumulate(per_key.get(key, [])) for key in keys]
    precision = np.stack([p for p, _ in acc], axis=2)  # (T, R, K, M)
    recall = np.stack([r for _, r in acc], axis=1)  # (T, K, M)
    out = _summarise(precision, recall, slice(None))
    if class_agnostic:
        out["recall@0.5"] = float(recall[_T50, 0, -1])
        out["recall@0.75"] = float(recall[_T75, 0, -1])
    elif any("partition" in c for c in gt["categories"]):
        part = {c["id"]: c.get("partition") for c in gt["categories"]}
        for suffix, parts in (("b", BASE_PARTITIONS), ("n", NOVEL_PARTITIONS)):
            sel = np.array([part[c] in parts for c in cat_ids], dtype=bool)
            sub = _summarise(precision, recall, sel)
            out[f"AP{suffix}"] = sub["AP"]
            out[f"AP50{suffix}"] = sub["AP50"]
    return out


def _summarise(precision: np.ndarray, recall: np.ndarray, cats) -> dict[str, float]:
    p = precision[:, :, cats, :]
    r = recall[:, cats, :]
    return {
        "AP": _mean_defined(p[..., -1]),
        "AP50": _mean_defined(p[_T50, ..., -1]),
        "AP75": _mean_defined(p[_T75, ..., -1]),
        **{f"AR{k}": _mean_defined(r[..., m]) for m, k in enumerate(MAX_DETS)},
    }


# ---------------------------------------------------------------------------------------------
# `wsovvis eval`

_DESCRIPTION = """\
Score YouTube-VIS results against ground truth: video AP with spatio-temporal mask IoU
(YouTube-VIS protocol: AP over IoU .50:.05:.95, AP50, AP75, AR@1/10/100; base/novel AP when the
GT categories carry an LV-VIS `partition`).

GT.json      YouTube-VIS GT (videos, annotations with per-frame `segmentations`, categories);
             mmtracking's CocoVID layout (images + per-frame annotations) is converted on the fly.
RESULTS.json YouTube-VIS results: [{video_id, category_id, score, segmentations}], or a tube JSON
             written by the pipeline (matched to the GT videos by name).
"""

_EPILOG = """\
examples:
  wsovvis eval data/demo/annotations/val_instances.json outputs/val/results_val.json
  wsovvis eval gt.json outputs/val/tubes_val.json --class-agnostic --json metrics.json

Values of -1 mean "undefined" (no ground truth to score against), as in pycocotools.
Exit status: 0 on success, 2 on unreadable or malformed input (the message names the JSON path).
"""


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `wsovvis eval`'s arguments to `parser` (also usable as a subcommand parser)."""
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("gt", type=Path, metavar="GT.json", help="ground-truth JSON")
    parser.add_argument("results", type=Path, metavar="RESULTS.json", help="results or tube JSON")
    parser.add_argument(
        "--class-agnostic",
        action="store_true",
        help="ignore categories (score object tubes); adds recall@0.5 and recall@0.75",
    )
    parser.add_argument(
        "--json", type=Path, metavar="OUT", help="also write the metrics to OUT as JSON"
    )
    return parser


def format_metrics(metrics: dict[str, float]) -> str:
    """The metrics as a two-column text table (undefined values shown as n/a)."""
    width = max(len(k) for k in metrics) if metrics else 6
    lines = [f"{'metric':<{width}}   value", f"{'-' * width}   ------"]
    for key, value in metrics.items():
        shown = "   n/a" if value == UNDEFINED else f"{value:6.4f}"
        lines.append(f"{key:<{width}}   {shown}")
    return "\n".join(lines)


def evaluate_split_tubes(tube_json: Path, gt_path: Path) -> dict[str, float]:
    """Class-agnostic AP / AR / recall of a split's tubes against its ground truth."""
    gt = load_gt(gt_path)
    return evaluate_results(gt, _tube_json_results(tube_json, gt), class_agnostic=True)


def _tube_json_results(path: Path, gt: dict) -> list[dict]:
    """A tube JSON's results, its videos mapped to the GT's by name."""
    from wsovvis_dagster.ytvis.results import tubes_to_results
    from wsovvis_dagster.ytvis.tubes import load_tube_json

    return tubes_to_results(load_tube_json(path), gt=gt)


def _read_results_for(path: Path, gt: dict) -> list[dict]:
    with open(path) as fh:
        head = fh.read(4096).lstrip()[:1]
    if head == "{":  # a tube JSON: convert, mapping its videos to the GT's by name
        return normalise_results(_tube_json_results(path, gt), gt)
    return load_results(path, gt)


def run_eval(args: argparse.Namespace) -> int:
    """Run `wsovvis eval` from arguments parsed by a parser set up with `add_eval_arguments`."""
    try:
        gt = load_gt(args.gt)
        results = _read_results_for(args.results, gt)
        metrics = _evaluate(gt, results, class_agnostic=args.class_agnostic)
    except (TubeFormatError, OSError) as exc:
        sys.stderr.write(f"wsovvis eval: {exc}\n")
        return 2
    mode = "class-agnostic" if args.class_agnostic else f"{len(gt['categories'])} categories"
    sys.stdout.write(
        f"{args.results.name} vs {args.gt.name}: {len(gt['videos'])} videos, "
        f"{len(gt['annotations'])} GT tubes, {len(results)} predicted tubes, {mode}\n"
    )
    sys.stdout.write(format_metrics(metrics) + "\n")
    if args.json:
        write_json_atomic(args.json, metrics)
        sys.stdout.write(f"metrics written to {args.json}\n")
    return 0


def cli_eval(argv: list[str] | None = None) -> int:
    """`wsovvis eval GT.json RESULTS.json [--class-agnostic] [--json OUT]`; returns exit status."""
    parser = add_eval_arguments(argparse.ArgumentParser(prog="wsovvis eval"))
    return run_eval(parser.parse_args(argv))
