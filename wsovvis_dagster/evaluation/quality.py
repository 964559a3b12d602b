"""Class-agnostic quality of predicted tracks against ground-truth tubes.

`mean_best_iou`: for each GT tube, the spatio-temporal IoU (sum over frames of intersections /
sum of unions) of its best-matching predicted track, averaged over GT tubes. `davis_j`: the
DAVIS region similarity J (mean per-frame IoU) of the best predicted track against a
single-object ground truth. `tracks_per_object`: how many ids an object was split into (one
per object is the goal: tube JSON makes one training instance of each id).
"""

from __future__ import annotations

import numpy as np

from wsovvis_dagster.results_file import run_context, write_results_file


def st_iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """`(G, T, H, W)` and `(P, T, H, W)` bool -> `(G, P)` spatio-temporal IoU."""
    g = gt.reshape(gt.shape[0], -1).astype(np.float32)
    p = pred.reshape(pred.shape[0], -1).astype(np.float32)
    inter = g @ p.T
    union = g.sum(1)[:, None] + p.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def id_maps_to_masks(id_maps: np.ndarray) -> np.ndarray:
    """`(T, H, W)` ids -> `(N, T, H, W)` bool, one per non-zero id in ascending order."""
    ids = np.unique(id_maps)
    ids = ids[ids != 0]
    return id_maps[None] == ids[:, None, None, None]


def mean_best_iou(gt_masks: np.ndarray, id_maps: np.ndarray) -> float:
    """Mean over GT tubes `(G, T, H, W)` of the best st-IoU among predicted tracks."""
    pred = id_maps_to_masks(id_maps)
    if gt_masks.shape[0] == 0:
        return float("nan")
    if pred.shape[0] == 0:
        return 0.0
    return float(st_iou_matrix(gt_masks, pred).max(axis=1).mean())


def davis_j(gt_fg: np.ndarray, id_maps: np.ndarray) -> float:
    """J of the best single predicted track vs `(T, H, W)` bool foreground."""
    pred = id_maps_to_masks(id_maps)
    if pred.shape[0] == 0:
        return 0.0
    inter = np.logical_and(pred, gt_fg[None]).sum(axis=(2, 3))
    union = np.logical_or(pred, gt_fg[None]).sum(axis=(2, 3))
    per_frame = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(per_frame.mean(axis=1).max())


def davis_j_union(gt_fg: np.ndarray, id_maps: np.ndarray) -> float:
    """DAVIS-2016 unsupervised J: mean per-frame IoU of all ids > 0 vs the GT foreground."""
    pred = id_maps > 0
    inter = np.logical_and(pred, gt_fg).sum(axis=(1, 2))
    union = np.logical_or(pred, gt_fg).sum(axis=(1, 2))
    return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())


def tracks_per_object(objects: np.ndarray, id_maps: np.ndarray) -> list[int]:
    """Per GT object `(G, T, H, W)` bool: how many distinct predicted ids were, in some frame,
    the id covering most of it (frames where it is visible and any id covers it). 1 = the
    object stayed in one track; 0 = never found."""
    out = []
    for obj in objects:
        dominant = set()
        for mask, ids in zip(obj, id_maps, strict=True):
            covered = ids[mask]
            covered = covered[covered > 0]
            if covered.size:
                dominant.add(int(np.bincount(covered).argmax()))
        out.append(len(dominant))
    return out


def _agnostic_results(video_id: int, id_maps: np.ndarray, scores: dict) -> list[dict]:
    """One class-agnostic result per predicted id, as `wsovvis eval` reads them."""
    from wsovvis_dagster.ytvis.tubes import encode_id_maps

    return [{"video_id": video_id, "category_id": 1, "score": tube.score,
             "segmentations": tube.segmentations} for tube in encode_id_maps(id_maps, scores)]


def gt_tube_masks(gt: dict, video: dict) -> np.ndarray:
    """`(G, T, H, W)` bool masks of one GT video's tubes (null frames empty)."""
    from pycocotools import mask as mask_utils

    shape = (video["height"], video["width"])
    tubes = []
    for ann in gt["annotations"]:
        if ann["video_id"] != video["id"]:
            continue
        tubes.append(np.stack([
            mask_utils.decode(s).astype(bool) if s else np.zeros(shape, bool)
            for s in ann["segmentations"]
        ]))
    if not tubes:
        return np.zeros((0, video["length"], *shape), dtype=bool)
    return np.stack(tubes)


def synthetic_quality(
    predictor, data_root, splits=("train", "val"), progress=None
) -> dict[str, float]:
    """Mean best-match st-IoU per GT tube of `predictor` on a synthetic dataset, per split."""
    report = synthetic_report(predictor, data_root, splits, progress)
    return {split: r["st_iou"] for split, r in report.items()}


def synthetic_report(
    predictor, data_root, splits=("train", "val"), progress=None
) -> dict[str, dict]:
    """Per split of a synthetic dataset: `st_iou` (mean best-match st-IoU per GT tube),
    `tracks_per_object` (mean over GT tubes), class-agnostic `AP` / `AP50` (the protocol of
    `wsovvis eval --class-agnostic`), and the numbers of `videos` and `objects`."""
    import json
    from pathlib import Path

    from wsovvis_dagster.evaluation.ytvis_ap import evaluate_results
    from wsovvis_dagster.paths import VideoRef, gt_json_path
    from wsovvis_dagster.video.frames import read_video

    out = {}
    for split in splits:
        path = gt_json_path(Path(data_root), split)
        if not path.exists():
            continue
        gt = json.loads(path.read_text())
        per_tube, per_object, results = [], [], []
        for video in gt["videos"]:
            frames = read_video(Path(data_root), VideoRef(split, video["name"]))
            masks = gt_tube_masks(gt, video)
            output = predictor.predict(frames.images)
            results += _agnostic_results(video["id"], output.id_maps, output.scores)
            if masks.shape[0]:
                pred = id_maps_to_masks(output.id_maps)
                best = (st_iou_matrix(masks, pred).max(axis=1) if pred.shape[0]
                        else np.zeros(masks.shape[0]))
                per_tube.extend(best.tolist())
                per_object += tracks_per_object(masks, output.id_maps)
            if progress:
                progress(1)
        metrics = evaluate_results(gt, results, class_agnostic=True) if per_tube else {}
        out[split] = {
            "st_iou": float(np.mean(per_tube)) if per_tube else float("nan"),
            "tracks_per_object": float(np.mean(per_object)) if per_object else float("nan"),
            "AP": metrics.get("AP", float("nan")), "AP50": metrics.get("AP50", float("nan")),
            "videos": len(gt["videos"]), "objects": len(per_tube),
        }
    return out


def davis_layout(davis_root) -> tuple:
    """`(frames_dir, annotations_dir)` of a DAVIS folder: `<root>/{JPEGImages,Annotations}/480p/`
    (DAVIS-2016 as released) or flat `<root>/{JPEGImages,Annotations}/` (../shared/data/davis)."""
    from pathlib import Path

    from wsovvis_dagster.errors import FrameError

    root = Path(davis_root)
    for sub in ("480p", ""):
        frames, annotations = root / "JPEGImages" / sub, root / "Annotations" / sub
        if sub and not frames.is_dir():
            continue
        if frames.is_dir() and annotations.is_dir():
            return frames, annotations
    raise FrameError(
        f"{root}: not a DAVIS folder; expected {root}/JPEGImages/480p/<seq>/ and "
        f"{root}/Annotations/480p/<seq>/ (or the same without 480p/)"
    )


def read_sequence_list(path) -> list[str]:
    """Sequence names from a split file: one name per line, or DAVIS-2016 `ImageSets` lines
    (`/JPEGImages/480p/<seq>/00000.jpg /Annotations/...`); order kept, duplicates dropped."""
    from pathlib import Path

    from wsovvis_dagster.errors import FrameError

    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: split file not found (one sequence name per line)")
    names: list[str] = []
    for line in path.read_text().splitlines():
        token = line.split()[0] if line.split() else ""
        if "/" in token:  # an ImageSets line: the sequence is the frame's folder
            token = token.strip("/").split("/")[-2]
        if token and not token.startswith("#") and token not in names:
            names.append(token)
    return names


def _read_png_stack(folder, stems, what: str) -> np.ndarray:
    """`(T, H, W)` label arrays of `<folder>/<stem>.png`, one per frame stem."""
    from PIL import Image

    from wsovvis_dagster.errors import FrameError

    out = []
    for stem in stems:
        path = folder / f"{stem}.png"
        if not path.is_file():
            raise FrameError(f"{path}: {what} missing for frame {stem} of {folder.name}")
        with Image.open(path) as img:
            if img.mode not in ("1", "L", "P"):  # e.g. one 'LA' frame in DAVIS-2016 bear
                img = img.convert("L")
            out.append(np.asarray(img))
    return np.stack(out)


def davis_quality(
    predictor, davis_root, sequences=None, progress=None, max_frames=None, instances=None
) -> dict[str, dict[str, float]]:
    """DAVIS-2016 scores per sequence: `{"J": union of ids vs GT, "J_best": best track,
    "tracks": ids the GT foreground was split into, "frames", "seconds"}` (predict() only).
    `sequences`: names to score (default: every folder).

    `instances`: a folder of per-object id PNGs (`<seq>/<stem>.png`, 0 = background, e.g.
    ../shared/data/davis/osvos) taken as the objects: adds "objects", "tracks_per_object"
    (mean over objects) and class-agnostic "AP" / "AP50" of the tracks against them."""
    import time
    from pathlib import Path

    from wsovvis_dagster.errors import FrameError
    from wsovvis_dagster.video.frames import list_frame_files, read_frames

    frames_dir, ann_dir = davis_layout(davis_root)
    names = list(sequences) if sequences is not None else sorted(
        d.name for d in frames_dir.iterdir() if d.is_dir())
    out = {}
    for name in names:
        seq_dir = frames_dir / name
        if not seq_dir.is_dir():
            raise FrameError(f"{seq_dir}: sequence {name!r} of the split has no frame folder")
        files = list_frame_files(seq_dir)[:max_frames]
        frames = read_frames(files)
        gt = _read_png_stack(ann_dir / name, frames.stems, "ground truth") > 0
        start = time.perf_counter()
        output = predictor.predict(frames.images)
        seconds = time.perf_counter() - start
        id_maps = output.id_maps
        out[name] = {"J": davis_j_union(gt, id_maps), "J_best": davis_j(gt, id_maps),
                     "tracks": tracks_per_object(gt[None], id_maps)[0],
                     "frames": len(files), "seconds": seconds}
        if instances is not None:
            out[name].update(_instance_scores(
                _read_png_stack(Path(instances) / name, frames.stems, "instance mask"),
                output))
        if progress:
            progress(1)
    return out


def _instance_scores(labels: np.ndarray, output) -> dict:
    """Tracks per object and class-agnostic AP of `output` against `(T, H, W)` object ids."""
    from wsovvis_dagster.evaluation.ytvis_ap import evaluate_results

    objects = id_maps_to_masks(labels)
    t, h, w = labels.shape
    gt = {"videos": [{"id": 1, "name": "v", "height": h, "width": w, "length": t}],
          "categories": [{"id": 1, "name": "object"}],
          "annotations": [{"id": k + 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                           "segmentations": r["segmentations"]}
                          for k, r in enumerate(_agnostic_results(1, labels, {}))]}
    metrics = evaluate_results(gt, _agnostic_results(1, output.id_maps, output.scores),
                               class_agnostic=True)
    counts = tracks_per_object(objects, output.id_maps)
    return {"objects": len(counts), "tracks_per_object": float(np.mean(counts)) if counts
            else float("nan"), "AP": metrics["AP"], "AP50": metrics["AP50"]}


def quality_summary(per_sequence: dict[str, dict]) -> dict:
    """Means over sequences of `davis_quality`'s figures (frames summed, frames/s pooled)."""
    rows = list(per_sequence.values())
    if not rows:
        return {}
    out = {"frames": sum(r["frames"] for r in rows),
           "frames_per_s": sum(r["frames"] for r in rows) / max(
               sum(r["seconds"] for r in rows), 1e-9)}
    for key in ("J", "J_best", "tracks", "tracks_per_object", "AP", "AP50"):
        if all(key in r for r in rows):
            out[key] = float(np.mean([r[key] for r in rows]))
    if all("objects" in r for r in rows):
        out["objects"] = sum(r["objects"] for r in rows)
    return out


def write_quality_json(path, report: dict, command: str) -> None:
    """`report` with the command and its conditions, in the result-file envelope every
    benchmark writes (`wsovvis_dagster.results_file`), written atomically."""
    predictor = report.get("predictor", {})
    write_results_file(
        path, benchmark="predictor_quality",
        title=f"Quality of the embedded predictor ({predictor.get('version', '?')})",
        measures="product path: `wsovvis quality`, the predictor `mask_pngs` builds on its "
                 "defaults; predict() only in frames/s",
        context=run_context(command), results=report)
