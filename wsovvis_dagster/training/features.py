"""Tube features: pool per-frame features inside each tube's masks, average over its frames.

An extractor turns one frame and the masks of the tubes present in it into one row per tube;
`video_tube_features` streams a video's frames through it and averages over each tube's frames.
Results are cached per video as `.npy`, keyed by the video's tubes and the extractor's id, so
retraining on the same tube JSON reads them back instead of recomputing.

Extractors:
- `HandcraftedExtractor` (default, no weights): colour histograms in HSV and Lab, an LBP
  texture histogram and shape descriptors (Hu moments, solidity, eccentricity, polygon
  vertex and Harris corner counts) computed with scikit-image.
- `OpenClipExtractor`: a frozen open_clip image backbone on masked crops, loaded from a local
  weights file; fails with `MissingWeightsError` / `MissingDependencyError` naming what to get.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from skimage.feature import corner_harris, corner_peaks, local_binary_pattern
from skimage.measure import approximate_polygon, find_contours, regionprops

from wsovvis_dagster.atomic import atomic_file
from wsovvis_dagster.paths import resolve_inside
from wsovvis_dagster.training.errors import MissingDependencyError, MissingWeightsError
from wsovvis_dagster.video.frames import load_frame

MIN_SHAPE_PIXELS = 12  # below this, shape descriptors are noise: left at zero


class FrameFeatureExtractor(Protocol):
    """Per-frame features of masked regions."""

    id: str  # name + version: part of the feature cache key
    dim: int

    def frame_features(self, rgb: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
        """`rgb` `(H, W, 3) uint8`, `masks` K x `(H, W) bool` -> `(K, dim) float32`."""
        ...


def _hist(values: np.ndarray, bins: int, lo: float, hi: float, weights=None) -> np.ndarray:
    h, _ = np.histogram(values, bins=bins, range=(lo, hi), weights=weights)
    total = h.sum()
    return h / total if total > 0 else h.astype(np.float64)


class HandcraftedExtractor:
    """Frozen hand-crafted descriptors; 83 dimensions, no weights, CPU only."""

    id = "handcrafted-v1"
    dim = 83

    def __init__(self) -> None:
        self._lbp_bins = 10  # uniform LBP with P=8 has P + 2 codes

    def frame_features(self, rgb: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        lbp = local_binary_pattern(grey, P=8, R=1, method="uniform")
        out = np.zeros((len(masks), self.dim), dtype=np.float32)
        for k, m in enumerate(masks):
            if m.any():
                out[k] = np.concatenate(
                    [self._colour(hsv[m], lab[m]), _hist(lbp[m], self._lbp_bins, 0, 10),
                     _shape(m)]
                )
        return out

    @staticmethod
    def _colour(hsv: np.ndarray, lab: np.ndarray) -> np.ndarray:
        """`(P, 3)` HSV and Lab pixels (OpenCV 8-bit ranges) -> 55 colour features."""
        sat = hsv[:, 1] / 255.0
        parts = [
            _hist(hsv[:, 0], 12, 0, 180, weights=sat + 1e-3),  # hue, weighted by saturation
            _hist(hsv[:, 1], 4, 0, 256),
            _hist(hsv[:, 2], 4, 0, 256),
            np.histogram2d(lab[:, 1], lab[:, 2], bins=5, range=[[0, 256], [0, 256]])[0].ravel()
            / len(lab),
            _hist(lab[:, 0], 4, 0, 256),
            lab.mean(axis=0) / 255.0,
            lab.std(axis=0) / 64.0,
        ]
        return np.concatenate(parts)


def _shape(mask: np.ndarray) -> np.ndarray:
    """`(H, W) bool` -> 18 shape features: Hu moments (7), solidity, eccentricity, extent,
    circularity, polygon vertex one-hot {3, 4, 5, 6, >=7} (5), Harris corners, sqrt area."""
    out = np.zeros(18, dtype=np.float64)
    area = int(mask.sum())
    if area < MIN_SHAPE_PIXELS:
        return out
    ys, xs = np.nonzero(mask)
    crop = np.pad(mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1], 2)
    props = regionprops(crop.astype(np.uint8))[0]
    hu = props.moments_hu
    out[:7] = np.clip(-np.sign(hu) * np.log10(np.abs(hu) + 1e-12), -12, 12) / 10.0
    perimeter = max(props.perimeter, 1.0)
    out[7:11] = [props.solidity, props.eccentricity, props.extent,
                 min(4 * np.pi * area / perimeter**2, 1.5)]
    contours = find_contours(crop.astype(np.float32), 0.5)
    if contours:
        contour = max(contours, key=len)
        polygon = approximate_polygon(contour, tolerance=0.08 * np.sqrt(area))
        vertices = max(len(polygon) - 1, 0)
        out[11 + min(max(vertices, 3), 7) - 3] = 1.0
    corners = corner_peaks(corner_harris(crop.astype(np.float32), sigma=1.5), min_distance=3,
                           threshold_rel=0.1)
    out[16] = min(len(corners), 10) / 10.0
    out[17] = np.sqrt(area / mask.size)
    return out


class OpenClipExtractor:
    """A frozen open_clip image encoder on masked crops (background filled with grey).

    Needs `pip install open-clip-torch` and a local weights file for `arch`; nothing is
    downloaded. Features are the L2-normalised image embeddings, `(K, D) float32`.
    """

    def __init__(self, weights: str | Path, *, arch: str = "ViT-B-16", device: str = "cpu",
                 crop_margin: float = 0.1) -> None:
        weights = Path(weights) if weights else None
        if weights is None or not weights.is_file():
            raise MissingWeightsError(
                f"open_clip weights not found at {weights or '(no path given)'}: download the "
                f"{arch} checkpoint (e.g. open_clip_pytorch_model.bin of "
                f"laion/CLIP-{arch}-laion2B-s34B-b88K on the Hugging Face hub) on a machine that "
                "can reach it, copy it there and set extractor_weights, or use extractor: "
                "handcrafted"
            )
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise MissingDependencyError(
                f"extractor open_clip needs open-clip-torch ({exc}): pip install open-clip-torch"
            ) from exc
        self._torch = torch
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=str(weights), device=device
        )
        self._model = model.eval()
        self._preprocess = preprocess
        self._device = device
        self._margin = crop_margin
        self.dim = int(model.visual.output_dim)
        size = weights.stat().st_size
        self.id = f"open_clip-{arch}-{weights.stem}-{size}"

    def frame_features(self, rgb: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image

        crops = []
        for m in masks:
            ys, xs = np.nonzero(m)
            if ys.size == 0:
                crops.append(np.full((8, 8, 3), 128, dtype=np.uint8))
                continue
            pad_y = int(self._margin * (ys.max() - ys.min() + 1))
            pad_x = int(self._margin * (xs.max() - xs.min() + 1))
            y0, y1 = max(ys.min() - pad_y, 0), min(ys.max() + pad_y + 1, m.shape[0])
            x0, x1 = max(xs.min() - pad_x, 0), min(xs.max() + pad_x + 1, m.shape[1])
            crop = rgb[y0:y1, x0:x1].copy()
            crop[~m[y0:y1, x0:x1]] = 128
            crops.append(crop)
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = self._torch.stack([self._preprocess(Image.fromarray(c)) for c in crops])
        with self._torch.no_grad():
            emb = self._model.encode_image(batch.to(self._device)).float()
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return emb.cpu().numpy().astype(np.float32)


def build_extractor(name: str, *, weights: str | None = None,
                    device: str = "cpu") -> FrameFeatureExtractor:
    """`handcrafted` (default) or `open_clip[:<arch>]` with a local `weights` path."""
    kind, _, arch = name.partition(":")
    if kind == "handcrafted":
        return HandcraftedExtractor()
    if kind == "open_clip":
        return OpenClipExtractor(weights or "", arch=arch or "ViT-B-16", device=device)
    raise ValueError(f"unknown extractor {name!r}: use handcrafted or open_clip:<arch>")


def video_tube_features(
    extractor: FrameFeatureExtractor, frame_paths: Sequence[Path],
    tubes: Sequence[Sequence[dict | None]],
) -> np.ndarray:
    """Average each tube's per-frame features over the frames where it is present.

    `tubes[n][t]` is tube n's RLE in frame t (None when absent); frames are read one at a
    time. Returns `(N, dim) float32`; a tube present in no frame gets zeros.
    """
    sums = np.zeros((len(tubes), extractor.dim), dtype=np.float64)
    counts = np.zeros(len(tubes), dtype=np.int64)
    for t, path in enumerate(frame_paths):
        present = [n for n, tube in enumerate(tubes) if t < len(tube) and tube[t] is not None]
        if not present:
            continue
        rgb = load_frame(path)
        masks = [mask_utils.decode(tubes[n][t]).astype(bool) for n in present]
        feats = extractor.frame_features(rgb, masks)
        for row, n in enumerate(present):
            if masks[row].any():
                sums[n] += feats[row]
                counts[n] += 1
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def video_cache_key(extractor_id: str, video: dict, annotations: Sequence[dict]) -> str:
    """Digest of what a video's features depend on: extractor, frames and tube masks."""
    payload = json.dumps(
        {"extractor": extractor_id, "file_names": video["file_names"],
         "tubes": [[a.get("track_id"), a["segmentations"]] for a in annotations]},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached_video_features(
    extractor: FrameFeatureExtractor, *, frames_root: Path, video: dict,
    annotations: Sequence[dict], cache_dir: Path,
) -> tuple[np.ndarray, bool]:
    """Features `(N, dim) float32` of one video's tubes (in `annotations` order), from the
    cache when present; returns them and whether they came from the cache.

    `frames_root` is `<data_root>/<split>/JPEGImages`, which the tube JSON's `file_names`
    are relative to.
    """
    key = video_cache_key(extractor.id, video, annotations)
    stem = Path(video["file_names"][0]).parent.name if video["file_names"] else "video"
    path = Path(cache_dir) / extractor.id / f"{video.get('name') or stem}-{key}.npy"
    if path.is_file():
        feats = np.load(path)
        if feats.shape == (len(annotations), extractor.dim):
            return feats, True
    frame_paths = [resolve_inside(frames_root, f) for f in video["file_names"]]
    feats = video_tube_features(extractor, frame_paths, [a["segmentations"] for a in annotations])
    with atomic_file(path, "wb") as fh:
        np.save(fh, feats)
    return feats, False
