'''Minimal `detectron2.projects.deeplab` and `detectron2.projects.point_rend`, written by us.

VNext's detectron2 fork ships neither project; VideoCutLER needs exactly these symbols:
`add_deeplab_config` and `build_lr_scheduler` (DeepLab's poly schedule, used in training),
`point_sample` and `get_uncertain_point_coords_with_randomness` (PointRend point features)
and `ColorAugSSDTransform`. `apply_patch` writes the files below into VNext's `projects/`
folder and registers them in `detectron2/projects/__init__.py:_PROJECTS`, the meta-path finder
an editable install of VNext uses. They are kept as text because they only import inside a
patched VNext environment.
'''

from __future__ import annotations

HEADER = "# Written by wsovvis_dagster (vnext patch); not part of upstream VNext.\n"

DEEPLAB_INIT = HEADER + '''"""DeepLab config keys and poly LR schedule that VideoCutLER imports."""
from .config import add_deeplab_config
from .lr_scheduler import WarmupPolyLR, build_lr_scheduler

__all__ = ["WarmupPolyLR", "add_deeplab_config", "build_lr_scheduler"]
'''

DEEPLAB_CONFIG = HEADER + '''from detectron2.config import CfgNode


def add_deeplab_config(cfg: CfgNode) -> None:
    """Add the DeepLab keys that Mask2Former / VideoCutLER configs set or read."""
    # Random crops are retried until no category covers more than this share of the crop.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Poly learning-rate schedule (`WarmupPolyLR`).
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    # DeepLab heads (unused by Mask2Former, but its configs may name them).
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "hard_pixel_mining"
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES = ["res2"]
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = [48]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 256
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = [6, 12, 18]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DROPOUT = 0.1
    cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = False
    # ResNet options of the DeepLab backbone; the plain ResNet builder ignores them.
    cfg.MODEL.RESNETS.RES4_DILATION = 1
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]
    cfg.MODEL.RESNETS.STEM_TYPE = "deeplab"
'''

DEEPLAB_LR = HEADER + '''import math

import torch
from detectron2.solver import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver.lr_scheduler import _get_warmup_factor_at_iter

try:  # torch >= 2.0
    from torch.optim.lr_scheduler import LRScheduler as _Base
except ImportError:  # pragma: no cover - older torch
    from torch.optim.lr_scheduler import _LRScheduler as _Base


class WarmupPolyLR(_Base):
    """lr = base_lr * warmup(it) * (1 - it / max_iters) ** power, floored at constant_ending."""

    def __init__(self, optimizer, max_iters, warmup_factor=0.001, warmup_iters=1000,
                 warmup_method="linear", last_epoch=-1, power=0.9, constant_ending=0.0):
        self.max_iters = max_iters
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        self.power = power
        self.constant_ending = constant_ending
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warmup = _get_warmup_factor_at_iter(
            self.warmup_method, self.last_epoch, self.warmup_iters, self.warmup_factor
        )
        decay = math.pow(max(0.0, 1.0 - self.last_epoch / self.max_iters), self.power)
        if self.constant_ending > 0 and warmup == 1.0 and decay < self.constant_ending:
            return [lr * self.constant_ending for lr in self.base_lrs]
        return [lr * warmup * decay for lr in self.base_lrs]


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """detectron2's scheduler builder plus `SOLVER.LR_SCHEDULER_NAME: WarmupPolyLR`."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return build_d2_lr_scheduler(cfg, optimizer)
    return WarmupPolyLR(
        optimizer,
        cfg.SOLVER.MAX_ITER,
        warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
        warmup_iters=cfg.SOLVER.WARMUP_ITERS,
        warmup_method=cfg.SOLVER.WARMUP_METHOD,
        power=cfg.SOLVER.POLY_LR_POWER,
        constant_ending=cfg.SOLVER.POLY_LR_CONSTANT_ENDING,
    )
'''

POINT_REND_INIT = HEADER + '''"""PointRend pieces that Mask2Former / VideoCutLER import."""
from .color_augmentation import ColorAugSSDTransform
from .point_features import get_uncertain_point_coords_with_randomness, point_sample

__all__ = ["ColorAugSSDTransform", "get_uncertain_point_coords_with_randomness", "point_sample"]
'''

POINT_FEATURES = HEADER + '''import torch
from torch.nn import functional as F


def point_sample(input, point_coords, **kwargs):
    """Sample `input` (N, C, H, W) at normalised [0, 1] x [0, 1] points.

    point_coords: (N, P, 2) or (N, Hgrid, Wgrid, 2), (x, y) order.
    Returns (N, C, P) or (N, C, Hgrid, Wgrid). kwargs go to `F.grid_sample`.
    """
    squeeze = point_coords.dim() == 3
    if squeeze:
        point_coords = point_coords.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * point_coords - 1.0, **kwargs)
    return output.squeeze(3) if squeeze else output


def get_uncertain_point_coords_with_randomness(
    coarse_logits, uncertainty_func, num_points, oversample_ratio, importance_sample_ratio
):
    """Pick `num_points` points per mask: the most uncertain of an oversampled random set,
    topped up with uniform random points.

    coarse_logits: (N, C, H, W) or (N, 1, H, W). uncertainty_func maps point logits
    (N, C, P) to uncertainties (N, 1, P). Returns (N, num_points, 2) coordinates in [0, 1].
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1]: {importance_sample_ratio}")
    n = coarse_logits.shape[0]
    device = coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=device)
    uncertainties = uncertainty_func(point_sample(coarse_logits, coords, align_corners=False))
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainties[:, 0, :], k=num_uncertain, dim=1)[1]
    idx = idx + num_sampled * torch.arange(n, dtype=torch.long, device=device)[:, None]
    coords = coords.view(-1, 2)[idx.view(-1), :].view(n, num_uncertain, 2)
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(n, num_random, 2, device=device)], dim=1)
    return coords
'''

COLOR_AUG = HEADER + '''import random

import cv2
import numpy as np
from fvcore.transforms.transform import Transform


class ColorAugSSDTransform(Transform):
    """SSD-style photometric jitter: brightness, then contrast / saturation / hue in a random
    order. Geometry is unchanged, so coordinates and segmentations pass through."""

    def __init__(self, img_format, brightness_delta=32, contrast_low=0.5, contrast_high=1.5,
                 saturation_low=0.5, saturation_high=1.5, hue_delta=18):
        super().__init__()
        if img_format not in ("BGR", "RGB"):
            raise ValueError(f"ColorAugSSDTransform needs BGR or RGB images, got {img_format}")
        self.is_rgb = img_format == "RGB"
        self.brightness_delta = brightness_delta
        self.contrast_low = contrast_low
        self.contrast_high = contrast_high
        self.saturation_low = saturation_low
        self.saturation_high = saturation_high
        self.hue_delta = hue_delta

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation

    def apply_image(self, img, interp=None):
        if self.is_rgb:
            img = img[:, :, ::-1]
        img = self._brightness(img)
        if random.randrange(2):
            img = self._hue(self._saturation(self._contrast(img)))
        else:
            img = self._contrast(self._hue(self._saturation(img)))
        if self.is_rgb:
            img = img[:, :, ::-1]
        return np.ascontiguousarray(img)

    @staticmethod
    def _convert(img, alpha=1.0, beta=0.0):
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _brightness(self, img):
        if random.randrange(2):
            return self._convert(img, beta=random.uniform(-self.brightness_delta,
                                                          self.brightness_delta))
        return img

    def _contrast(self, img):
        if random.randrange(2):
            return self._convert(img, alpha=random.uniform(self.contrast_low, self.contrast_high))
        return img

    def _saturation(self, img):
        if random.randrange(2):
            hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2HSV)
            hsv[:, :, 1] = self._convert(
                hsv[:, :, 1], alpha=random.uniform(self.saturation_low, self.saturation_high)
            )
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img

    def _hue(self, img):
        if random.randrange(2):
            hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2HSV)
            shift = random.randint(-self.hue_delta, self.hue_delta)
            hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int32) + shift) % 180).astype(np.uint8)
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img
'''

# path inside the VNext checkout -> file text
FILES: dict[str, str] = {
    "projects/DeepLab/deeplab/__init__.py": DEEPLAB_INIT,
    "projects/DeepLab/deeplab/config.py": DEEPLAB_CONFIG,
    "projects/DeepLab/deeplab/lr_scheduler.py": DEEPLAB_LR,
    "projects/PointRend/point_rend/__init__.py": POINT_REND_INIT,
    "projects/PointRend/point_rend/point_features.py": POINT_FEATURES,
    "projects/PointRend/point_rend/color_augmentation.py": COLOR_AUG,
}

# detectron2.projects.<name> -> folder under projects/
PROJECTS = {"deeplab": "DeepLab", "point_rend": "PointRend"}
