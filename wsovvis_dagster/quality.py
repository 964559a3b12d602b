"""Class-agnostic quality of predicted tracks against ground-truth tubes.

`mean_best_iou`: for each GT tube, the spatio-temporal IoU (sum over frames of intersections /
sum of unions) of its best-matching predicted track, averaged over GT tubes. `davis_j`: the
DAVIS region similarity J (mean per-frame IoU) of the best predicted track against a
single-object ground truth.
"""

from __future__ import annotations

import numpy as np


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
    import json
    from pathlib import Path

    from wsovvis_dagster.frames import read_video
    from wsovvis_dagster.paths import VideoRef, gt_json_path

    out = {}
    for split in splits:
        path = gt_json_path(Path(data_root), split)
        if not path.exists():
            continue
        gt = json.loads(path.read_text())
        per_tube = []
        for video in gt["videos"]:
            frames = read_video(Path(data_root), VideoRef(split, video["name"]))
            masks = gt_tube_masks(gt, video)
            if masks.shape[0]:
                pred = id_maps_to_masks(predictor.predict(frames.images).id_maps)
                best = (st_iou_matrix(masks, pred).max(axis=1) if pred.shape[0]
                        else np.zeros(masks.shape[0]))
                per_tube.extend(best.tolist())
            if progress:
                progress(1)
        out[split] = float(np.mean(per_tube)) if per_tube else float("nan")
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


def davis_quality(
    predictor, davis_root, sequences=None, progress=None, max_frames=None
) -> dict[str, dict[str, float]]:
    """DAVIS-2016 scores per sequence: `{"J": union of ids vs GT, "J_best": best track, "frames",
    "seconds"}` (predict() only). `sequences`: names to score (default: every folder)."""
    import time

    from PIL import Image

    from wsovvis_dagster.errors import FrameError
    from wsovvis_dagster.frames import list_frame_files, read_frames

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
        gt = []
        for stem in frames.stems:
            path = ann_dir / name / f"{stem}.png"
            if not path.is_file():
                raise FrameError(f"{path}: ground truth missing for frame {stem} of {name}")
            with Image.open(path) as img:
                if img.mode not in ("1", "L", "P"):  # e.g. one 'LA' frame in DAVIS-2016 bear
                    img = img.convert("L")
                gt.append(np.asarray(img) > 0)
        gt = np.stack(gt)
        start = time.perf_counter()
        id_maps = predictor.predict(frames.images).id_maps
        seconds = time.perf_counter() - start
        out[name] = {"J": davis_j_union(gt, id_maps), "J_best": davis_j(gt, id_maps),
                     "frames": len(files), "seconds": seconds}
        if progress:
            progress(1)
    return out
