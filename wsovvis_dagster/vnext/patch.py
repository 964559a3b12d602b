"""Our patch of the pinned VNext + CutLER checkouts, applied by code and idempotently.

Every edit computes the new text from the old one and only writes when they differ, so a
second run changes nothing. An edit whose upstream anchor is missing, and whose patched form
is not there either, raises `PatchError` naming the file: the checkout is not at the commit
the patch was written for, or someone edited it by hand.

What it changes (see `EDITS`):
- registers our `deeplab` / `point_rend` projects in detectron2's `_PROJECTS` and writes them;
- `Image.LINEAR` -> `Image.BILINEAR` (removed in Pillow 10);
- NumPy aliases removed in NumPy 1.24 (`np.bool`, `np.int`, ...) -> builtins;
- C++/CUDA sources: THC headers and APIs removed from current torch;
- MultiScaleDeformableAttention: importable without the compiled op, explicit backend
  (`set_backend`), no bare `except` around the op, batch-size-safe `im2col_step`;
- VNext's dangling `detectron2/model_zoo/configs` symlink -> relative link to `configs/`;
- no host syncs in the forward (patch version 2; the masks are bit-identical): the pixel
  decoder keeps the feature levels' shapes as host-side ints (as Hugging Face's Deformable DETR
  does with `spatial_shapes_list`) and caches their device copies, so the forward neither reads
  a shape back from the GPU nor copies one to it; MSDeformAttn's shape assert (a read-back per
  layer) is gone; the video decoder clears fully masked attention rows with `masked_fill`
  instead of `attn_mask[torch.where(...)]` (a `nonzero` per layer) and, in inference, keeps
  only the current layer's mask logits (the earlier ones only feed the training loss).
- imports that inference does not need load on first use (patch version 3; issue 24): torchvision
  (its ops import torch._dynamo), scipy.optimize (training matcher), timm (Swin backbone) and
  mask2former_video.data_video (YouTube-VIS registrations, pycocotools, matplotlib); the
  seconds saved: benchmarks/videocutler_imports.py.
- the video decoder's attention masks (patch version 4; issue 24): on CUDA the mask logits are
  resized to each attention level as channels-last (T, B*Q) planes, on all of the GPU instead
  of 1-4 thread blocks; the CPU keeps upstream's call.

`PATCH_VERSION` is the code version of `patched_vnext` / `deform_attn_ops`; their data version
(`output_version`) moves only with `OUTPUT_VERSION` and the pinned commits, so an edit that
changes speed only does not mark the masks stale.
"""

from __future__ import annotations

import difflib
import io
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from wsovvis_dagster.errors import PatchError
from wsovvis_dagster.vnext import d2_projects
from wsovvis_dagster.vnext.sources import committed_bytes, tracked_changes

MARK = "wsovvis patch"
PATCH_VERSION = "4"  # bump when an edit changes: marks patched_vnext / deform_attn_ops stale
# bump when an edit changes what the model computes (not only how fast or how soon it loads):
# it is in those assets' data version (`output_version`), so it marks every mask_pngs stale
OUTPUT_VERSION = "1"


@dataclass(frozen=True)
class FileChange:
    """One file this run wrote. path: '<repo>/<path in repo>'; kind: edited/created/relinked."""

    path: str
    kind: str
    added: int
    removed: int
    reason: str


@dataclass(frozen=True)
class PatchReport:
    changes: tuple[FileChange, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def summary(self) -> str:
        if not self.changes:
            return "no changes (already patched)"
        return "\n".join(f"{c.kind:8s} {c.path} (+{c.added} -{c.removed}): {c.reason}"
                         for c in self.changes)


Transform = Callable[[str, str], str]  # (text, path for messages) -> new text


@dataclass(frozen=True)
class Edit:
    repo: str  # "VNext" or "CutLER"
    patterns: tuple[str, ...]  # globs relative to the repo root
    transform: Transform
    reason: str
    required: bool = True  # every pattern must match at least one file
    since: str = "1"  # the PATCH_VERSION that added it (benchmarks compare with older patches)


# ---------------------------------------------------------------- transforms


def _ensure_replaced(old: str, new: str) -> Transform:
    """Replace `old` with `new`; fine if `new` is already there; PatchError if neither is."""

    def run(text: str, where: str) -> str:
        if new in text and old not in text:
            return text
        if old not in text:
            raise PatchError(f"{where}: expected upstream text {old[:80]!r} not found; is the "
                             "checkout at the pinned commit? Re-materialise patched_vnext")
        return text.replace(old, new)

    return run


def _regex(pattern: str, repl: str, flags: int = 0) -> Transform:
    rx = re.compile(pattern, flags)
    return lambda text, where: rx.sub(repl, text)


def _chain(*steps: Transform) -> Transform:
    def run(text: str, where: str) -> str:
        for step in steps:
            text = step(text, where)
        return text

    return run


def _register_projects(text: str, where: str) -> str:
    m = re.search(r"_PROJECTS\s*=\s*\{(?P<body>[^}]*)\}", text)
    if not m:
        raise PatchError(f"{where}: no `_PROJECTS = {{...}}` mapping found; is the checkout at the "
                         "pinned VNext commit?")
    body = m.group("body")
    missing = [(k, v) for k, v in d2_projects.PROJECTS.items() if f'"{k}"' not in body]
    if not missing:
        return text
    stripped = body.rstrip()
    if stripped and not stripped.endswith(","):
        stripped += ","
    entries = "".join(f'\n    "{k}": "{v}",  # {MARK}' for k, v in missing)
    new_body = stripped + entries + "\n"
    return text[: m.start("body")] + new_body + text[m.end("body"):]


# NumPy 1.24 removed these aliases of builtins; `np.bool_`, `np.int64` etc. are untouched.
_NP_ALIAS = re.compile(r"\bnp\.(bool|int|float|object|str|long|unicode)\b(?![\w.])")
_NP_BUILTIN = {"bool": "bool", "int": "int", "float": "float", "object": "object", "str": "str",
               "long": "int", "unicode": "str"}


def _numpy_aliases(text: str, where: str) -> str:
    return _NP_ALIAS.sub(lambda m: _NP_BUILTIN[m.group(1)], text)


# C++ / CUDA sources written against torch 1.x: THC is gone, .type() and .data<T>() too.
_CSRC = _chain(
    _regex(r"#include\s*<THC/THCAtomics\.cuh>", "#include <ATen/cuda/Atomic.cuh>"),
    _regex(r"\bAT_ERROR\(", "TORCH_CHECK(false, "),
    _regex(r"\bAT_ASSERTM\(", "TORCH_CHECK("),
    _regex(r"\.type\(\)\.is_cuda\(\)", ".is_cuda()"),
    _regex(r"(AT_DISPATCH_\w+\(\s*\w+)\.type\(\)", r"\1.scalar_type()"),
    _regex(r"\.data<", ".data_ptr<"),
)

_MSDA_IMPORT_OLD = re.compile(
    r"try:\n    import MultiScaleDeformableAttention as MSDA\n"
    r"except ModuleNotFoundError as e:\n.*?raise ModuleNotFoundError\(info_string\)\n",
    re.S,
)
_MSDA_IMPORT_NEW = f'''# {MARK}: importable without the compiled op; the backend is chosen
# explicitly with set_backend() and the PyTorch path is never taken silently.
try:
    import MultiScaleDeformableAttention as MSDA
except ModuleNotFoundError:
    MSDA = None

_MISSING_OP = (
    "MultiScaleDeformableAttention is not built. Materialise the deform_attn_ops asset (CUDA "
    "build), or choose the slow PyTorch path explicitly: set_backend('pytorch')."
)
BACKEND = "cuda" if MSDA is not None else None


def set_backend(name):
    """'cuda': the compiled op (its errors surface); 'pytorch': ms_deform_attn_core_pytorch."""
    global BACKEND
    if name not in ("cuda", "pytorch"):
        raise ValueError("deformable-attention backend must be 'cuda' or 'pytorch', got %r" % name)
    if name == "cuda" and MSDA is None:
        raise ModuleNotFoundError(_MISSING_OP)
    BACKEND = name
'''


def _msda_import(text: str, where: str) -> str:
    if "def set_backend(" in text:
        return text
    new, n = _MSDA_IMPORT_OLD.subn(_MSDA_IMPORT_NEW.replace("\\", "\\\\"), text)
    if n != 1:
        raise PatchError(f"{where}: the MultiScaleDeformableAttention import block was not found; "
                         "is the checkout at the pinned CutLER commit?")
    return new


_MSDA_CALL_OLD = re.compile(
    r"        try:\n            output = MSDeformAttnFunction\.apply\(\n"
    r".*?\n        except:\n            # CPU\n"
    r"            output = ms_deform_attn_core_pytorch\([^\n]*\)\n",
    re.S,
)
_MSDA_CALL_NEW = f'''        # {MARK}: explicit backend, no bare except: a CUDA error surfaces.
        if _msda_func.BACKEND == "cuda":
            output = MSDeformAttnFunction.apply(
                value, input_spatial_shapes, input_level_start_index, sampling_locations,
                attention_weights, _im2col_step(N, self.im2col_step))
        elif _msda_func.BACKEND == "pytorch":
            output = ms_deform_attn_core_pytorch(
                value, input_spatial_shapes, sampling_locations, attention_weights)
        else:
            raise RuntimeError(_msda_func._MISSING_OP)
'''
_MSDA_HELPER_ANCHOR = "from ..functions.ms_deform_attn_func import ms_deform_attn_core_pytorch\n"
_MSDA_HELPER = f'''from ..functions import ms_deform_attn_func as _msda_func  # {MARK}


def _im2col_step(batch, step):
    """Largest divisor of `batch` that is <= `step`: the CUDA op requires one ({MARK})."""
    step = max(1, min(batch, step))
    while batch % step:
        step -= 1
    return step
'''


def _msda_call(text: str, where: str) -> str:
    if "_msda_func.BACKEND" in text:
        return text
    new, n = _MSDA_CALL_OLD.subn(_MSDA_CALL_NEW, text)
    if n != 1 or _MSDA_HELPER_ANCHOR not in new:
        raise PatchError(f"{where}: the try/except around MSDeformAttnFunction was not found; is "
                         "the checkout at the pinned CutLER commit?")
    return new.replace(_MSDA_HELPER_ANCHOR, _MSDA_HELPER_ANCHOR + _MSDA_HELPER, 1)


# ---- no host syncs in the forward (PATCH_VERSION 2) ----------------------------------------

_LEVELS_OLD = (
    "        spatial_shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, "
    "device=src_flatten.device)\n"
    "        level_start_index = torch.cat((spatial_shapes.new_zeros((1, )), "
    "spatial_shapes.prod(1).cumsum(0)[:-1]))\n"
)
_LEVELS_NEW = (
    f"        # {MARK}: the shapes stay host-side ints (no read-back from the device); their\n"
    "        # device copies are made once per shape (no host->device copy in the forward)\n"
    "        spatial_shapes_list = [tuple(s) for s in spatial_shapes]\n"
    "        spatial_shapes, level_start_index = _level_tensors(spatial_shapes_list, "
    "src_flatten.device)\n"
)
_LEVEL_TENSORS = f'''

_LEVEL_TENSORS = {{}}  # {MARK}: (shapes, device) -> (spatial_shapes, level_start_index)


def _level_tensors(shapes, device):
    """Device tensors of the levels' (H, W) and start offsets, made once per shape list."""
    key = (tuple(shapes), str(device))
    if key not in _LEVEL_TENSORS:
        with torch.inference_mode(False), torch.no_grad():  # usable in and out of inference
            t = torch.as_tensor(shapes, dtype=torch.long, device=device)
            _LEVEL_TENSORS[key] = (t, torch.cat((t.new_zeros((1, )), t.prod(1).cumsum(0)[:-1])))
    return _LEVEL_TENSORS[key]
'''
_ENCODER_CALL_OLD = (
    "        memory = self.encoder(src_flatten, spatial_shapes, level_start_index, valid_ratios, "
    "lvl_pos_embed_flatten, mask_flatten)\n\n"
    "        return memory, spatial_shapes, level_start_index\n"
)
_ENCODER_CALL_NEW = (
    "        memory = self.encoder(src_flatten, spatial_shapes, level_start_index, valid_ratios, "
    "lvl_pos_embed_flatten, mask_flatten,\n"
    f"                              spatial_shapes_list=spatial_shapes_list)  # {MARK}\n\n"
    f"        return memory, spatial_shapes_list, level_start_index  # {MARK}: host-side\n"
)
_ENCODER_FWD_OLD = (
    "    def forward(self, src, spatial_shapes, level_start_index, valid_ratios, pos=None, "
    "padding_mask=None):\n"
    "        output = src\n"
    "        reference_points = self.get_reference_points(spatial_shapes, valid_ratios, "
    "device=src.device)\n"
)
_ENCODER_FWD_NEW = (
    "    def forward(self, src, spatial_shapes, level_start_index, valid_ratios, pos=None, "
    "padding_mask=None,\n"
    f"                spatial_shapes_list=None):  # {MARK}: host-side (H, W) per level\n"
    "        output = src\n"
    "        reference_points = self.get_reference_points(\n"
    "            spatial_shapes if spatial_shapes_list is None else spatial_shapes_list,\n"
    "            valid_ratios, device=src.device)\n"
)
_SPLIT_OLD = (
    "        split_size_or_sections = [None] * self.transformer_num_feature_levels\n"
    "        for i in range(self.transformer_num_feature_levels):\n"
    "            if i < self.transformer_num_feature_levels - 1:\n"
    "                split_size_or_sections[i] = level_start_index[i + 1] - level_start_index[i]\n"
    "            else:\n"
    "                split_size_or_sections[i] = y.shape[1] - level_start_index[i]\n"
    "        y = torch.split(y, split_size_or_sections, dim=1)\n"
)
_SPLIT_NEW = (
    f"        # {MARK}: split sizes from the host-side shapes (no read-back)\n"
    "        y = torch.split(y, [h * w for h, w in spatial_shapes], dim=1)\n"
)


def _add_level_tensors(text: str, where: str) -> str:
    if "def _level_tensors(" in text:
        return text
    anchor = "from .ops.modules import MSDeformAttn\n"
    if anchor not in text:
        raise PatchError(f"{where}: `{anchor.strip()}` not found; is the checkout at the pinned "
                         "CutLER commit?")
    return text.replace(anchor, anchor + _LEVEL_TENSORS, 1)


_PIXEL_DECODER = _chain(
    _ensure_replaced(_LEVELS_OLD, _LEVELS_NEW),
    _ensure_replaced(_ENCODER_CALL_OLD, _ENCODER_CALL_NEW),
    _ensure_replaced(_ENCODER_FWD_OLD, _ENCODER_FWD_NEW),
    _ensure_replaced(_SPLIT_OLD, _SPLIT_NEW),
    _add_level_tensors,
)
_SHAPE_ASSERT = _ensure_replaced(
    "        assert (input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum() == Len_in\n",
    f"        # {MARK}: no shape assert: it read the shapes back from the device every layer\n",
)
_DECODER = _chain(
    _ensure_replaced(
        "            attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False\n",
        f"            # {MARK}: fully masked rows attend everywhere, without a nonzero (sync)\n"
        "            attn_mask.masked_fill_(attn_mask.all(-1, keepdim=True), False)\n",
    ),
    _ensure_replaced(
        "            predictions_class.append(outputs_class)\n"
        "            predictions_mask.append(outputs_mask)\n",
        "            predictions_class.append(outputs_class)\n"
        f"            if not self.training:  # {MARK}: inference reads the last layer's masks\n"
        "                predictions_mask[-1] = None  # only; free the earlier ones (memory)\n"
        "            predictions_mask.append(outputs_mask)\n",
    ),
)


# ---- the attention masks' resize, on all of the GPU (PATCH_VERSION 4) ------------------------
# The decoder resizes its mask logits (B, Q, T, h, w) to each attention level (e.g. 12x20):
# upstream's NCHW F.interpolate gives a GPU thread per output pixel, and so 1-4 thread blocks
# that each loop over all B*Q*T planes (17 % of the mask loop's kernel time, H200 profile).
_ATTN_RESIZE_OLD = (
    "        attn_mask = F.interpolate(outputs_mask.flatten(0, 1), size=attn_mask_target_size, "
    'mode="bilinear", align_corners=False).view(\n'
    "            b, q, t, attn_mask_target_size[0], attn_mask_target_size[1])\n"
)
_ATTN_RESIZE_NEW = (
    f"        attn_mask = _resize_mask_logits(outputs_mask, attn_mask_target_size)  # {MARK}\n"
)
_ATTN_RESIZE_DEF = f'''

def _resize_mask_logits(outputs_mask, size):  # {MARK}: see wsovvis_dagster/vnext/patch.py
    """Bilinear resize of the (B, Q, T, h, w) mask logits to (B, Q, T, *size), as upstream.
    On CUDA the (T, B*Q) planes go channels-last: the kernel then runs one thread per output
    value, where upstream's NCHW call looped over all planes in each of a few threads."""
    b, q, t = outputs_mask.shape[:3]
    planes = outputs_mask.flatten(0, 1)
    if not planes.is_cuda:
        return F.interpolate(planes, size=size, mode="bilinear", align_corners=False).view(
            b, q, t, *size)
    planes = planes.transpose(0, 1).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(planes, size=size, mode="bilinear", align_corners=False)
    return out.transpose(0, 1).reshape(b, q, t, *size)
'''


def _append_once(block: str, name: str) -> Transform:
    """Append `block`, which defines `name`, unless the file defines `name` already."""

    def run(text: str, where: str) -> str:
        return text if f"\ndef {name}(" in text else text.rstrip("\n") + "\n" + block

    return run


_ATTN_RESIZE = _chain(_ensure_replaced(_ATTN_RESIZE_OLD, _ATTN_RESIZE_NEW),
                      _append_once(_ATTN_RESIZE_DEF, "_resize_mask_logits"))


# ---- imports that inference does not need, deferred to first use (PATCH_VERSION 3) ---------
# Building the model imported torchvision (~1.5 s on a CPU core: its ops import torch._dynamo),
# scipy.optimize (the training matcher), timm (the Swin backbone) and the YouTube-VIS data and
# evaluation code (pycocotools, matplotlib, dataset registrations). The same objects load on
# their first use; what inference runs, and so the masks, is unchanged.


def _defer_import(line: str, module: str, *names: str, alias: str = "") -> Transform:
    """Replace the top-level import `line` with stand-ins that import `module` on first use:
    a function per name (they are only called: functions, classes built), or, with `alias`,
    an object whose attributes come from the module."""
    if alias:
        stand_ins = (f"class _Deferred{alias.title().replace('_', '')}:\n"
                     f"    def __getattr__(self, attr):  # {MARK}: imported on first use\n"
                     f"        import {module} as deferred\n\n"
                     "        return getattr(deferred, attr)\n\n\n"
                     f"{alias} = _Deferred{alias.title().replace('_', '')}()\n")
    else:
        stand_ins = "".join(
            f"def {name}(*args, **kwargs):  # {MARK}: {module} imported on first use\n"
            f"    from {module} import {name} as deferred\n\n"
            "    return deferred(*args, **kwargs)\n\n\n" for name in names)
    return _ensure_replaced(f"\n{line}\n", f"\n# {MARK}: import time, see patch.py\n{stand_ins}")


_DATA_VIDEO_OLD = (
    "from .data_video import (\n"
    "    YTVISDatasetMapper,\n"
    "    YTVISEvaluator,\n"
    "    build_detection_train_loader,\n"
    "    build_detection_test_loader,\n"
    "    get_detection_dataset_dicts,\n"
    ")\n"
)
_DATA_VIDEO_NEW = f'''# {MARK}: data_video (YouTube-VIS registrations, pycocotools,
# matplotlib) is imported when one of these names is first used, not with the model
_DATA_VIDEO = ("YTVISDatasetMapper", "YTVISEvaluator", "build_detection_train_loader",
               "build_detection_test_loader", "get_detection_dataset_dicts")


def __getattr__(name):
    if name in _DATA_VIDEO:
        from . import data_video

        return getattr(data_video, name)
    raise AttributeError(f"module {{__name__!r}} has no attribute {{name!r}}")
'''
_TV_OPS = "torchvision.ops"
_LSA = ("from scipy.optimize import linear_sum_assignment", "scipy.optimize",
        "linear_sum_assignment")
_DEFERRED_IMPORTS: tuple[tuple[str, str, Transform], ...] = (
    ("VNext", "detectron2/layers/roi_align.py",
     _defer_import(f"from {_TV_OPS} import roi_align", _TV_OPS, "roi_align")),
    ("VNext", "detectron2/layers/deform_conv.py",
     _defer_import(f"from {_TV_OPS} import deform_conv2d", _TV_OPS, "deform_conv2d")),
    ("VNext", "detectron2/layers/nms.py", _chain(
        _defer_import(f"from {_TV_OPS} import boxes as box_ops", f"{_TV_OPS}.boxes",
                      alias="box_ops"),
        _defer_import(f"from {_TV_OPS} import nms  # noqa . for compatibility", _TV_OPS, "nms"))),
    ("VNext", "detectron2/modeling/poolers.py",
     _defer_import(f"from {_TV_OPS} import RoIPool", _TV_OPS, "RoIPool")),
    ("VNext", "detectron2/utils/collect_env.py",
     _defer_import("import torchvision", "torchvision", alias="torchvision")),
    ("CutLER", "videocutler/mask2former/utils/misc.py",
     _defer_import("import torchvision", "torchvision", alias="torchvision")),
    ("CutLER", "videocutler/mask2former/modeling/matcher.py", _defer_import(*_LSA)),
    ("CutLER", "videocutler/mask2former_video/modeling/matcher.py", _defer_import(*_LSA)),
    ("CutLER", "videocutler/mask2former/modeling/backbone/swin.py",
     _defer_import("from timm.models.layers import DropPath, to_2tuple, trunc_normal_",
                   "timm.models.layers", "DropPath", "to_2tuple", "trunc_normal_")),
    ("CutLER", "videocutler/mask2former_video/__init__.py",
     _ensure_replaced(_DATA_VIDEO_OLD, _DATA_VIDEO_NEW)),
)

_PIXEL_DECODER_FILE = "videocutler/mask2former/modeling/pixel_decoder/msdeformattn.py"
_VIDEO_DECODER_FILE = ("videocutler/mask2former_video/modeling/transformer_decoder/"
                       "video_mask2former_transformer_decoder.py")

_OPS = "videocutler/mask2former/modeling/pixel_decoder/ops"

EDITS: tuple[Edit, ...] = (
    Edit("VNext", ("detectron2/projects/__init__.py",), _register_projects,
         "register deeplab/point_rend with the projects finder"),
    Edit("VNext", ("detectron2/data/transforms/transform.py",),
         _ensure_replaced("Image.LINEAR", "Image.BILINEAR"), "Image.LINEAR removed in Pillow 10"),
    Edit("VNext", ("detectron2/**/*.py",), _numpy_aliases,
         "NumPy aliases removed in NumPy 1.24", required=False),
    Edit("CutLER", ("videocutler/**/*.py",), _numpy_aliases,
         "NumPy aliases removed in NumPy 1.24", required=False),
    Edit("VNext", ("detectron2/layers/csrc/**/*.cu", "detectron2/layers/csrc/**/*.h",
                   "detectron2/layers/csrc/**/*.cpp", "detectron2/layers/csrc/**/*.cuh"),
         _CSRC, "THC / deprecated ATen APIs removed from current torch"),
    Edit("CutLER", (f"{_OPS}/src/**/*.cu", f"{_OPS}/src/**/*.cuh", f"{_OPS}/src/**/*.h",
                    f"{_OPS}/src/**/*.cpp"),
         _CSRC, "THC / deprecated ATen APIs removed from current torch"),
    Edit("CutLER", (f"{_OPS}/functions/ms_deform_attn_func.py",), _msda_import,
         "importable without the compiled op; explicit backend"),
    Edit("CutLER", (f"{_OPS}/modules/ms_deform_attn.py",), _msda_call,
         "no bare except around the op; im2col_step divides the batch"),
    Edit("CutLER", (_PIXEL_DECODER_FILE,), _PIXEL_DECODER,
         "host-side level shapes: no read-back or copy of shapes in the forward", since="2"),
    Edit("CutLER", (f"{_OPS}/modules/ms_deform_attn.py",), _SHAPE_ASSERT,
         "no shape assert that reads the shapes back every layer", since="2"),
    Edit("CutLER", (_VIDEO_DECODER_FILE,), _DECODER,
         "masked_fill instead of a nonzero per layer; inference keeps one layer's masks",
         since="2"),
    *(Edit(repo, (path,), transform, "imports that inference does not need, on first use",
           since="3") for repo, path, transform in _DEFERRED_IMPORTS),
    Edit("CutLER", (_VIDEO_DECODER_FILE,), _ATTN_RESIZE,
         "attention masks resized channels-last on CUDA: all of the GPU, not 1-4 blocks",
         since="4"),
)


# ---------------------------------------------------------------- application


def _files(root: Path, patterns: Iterable[str]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in root.glob(pattern) if p.is_file() and not p.is_symlink())
    return sorted(found)


def _counts(old: str, new: str) -> tuple[int, int]:
    added = removed = 0
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added, removed


def _write_if_changed(path: Path, new: str, label: str, reason: str) -> FileChange | None:
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old == new:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")
    added, removed = _counts(old or "", new)
    return FileChange(label, "created" if old is None else "edited", added, removed, reason)


def _fix_model_zoo_link(vnext: Path) -> FileChange | None:
    """VNext commits `detectron2/model_zoo/configs` as a link to its authors' machine."""
    link = vnext / "detectron2" / "model_zoo" / "configs"
    if not link.is_symlink() or link.exists():  # absent, a real folder, or a working link
        return None
    link.unlink()
    os.symlink(os.path.join("..", "..", "configs"), link)
    return FileChange("VNext/detectron2/model_zoo/configs", "relinked", 1, 1,
                      "dangling absolute symlink -> ../../configs")


def _changed_since_checkout(root: Path) -> set[str]:
    """Tracked files of git checkout `root` that differ from HEAD; none when not a checkout."""
    return set(tracked_changes(root)) if (root / ".git").exists() else set()


def apply_patch(vnext_root: Path, cutler_root: Path, *,
                edits: Iterable[Edit] = EDITS) -> PatchReport:
    """Apply every edit to the two checkouts; return what this run changed (empty if none).

    `edits`: a subset (e.g. those of an older patch version) for benchmarks comparing patches.
    """
    roots = {"VNext": Path(vnext_root), "CutLER": Path(cutler_root)}
    for name, root in roots.items():
        if not root.is_dir():
            raise PatchError(f"{root} does not exist: materialise patched_vnext to check out "
                             f"{name}")
    # every file's edits, in order, applied to its committed text where an earlier patch
    # changed it: an edit whose new text changed since then still finds the upstream lines
    per_file: dict[tuple[str, Path], list[Edit]] = {}
    for edit in edits:
        root = roots[edit.repo]
        files = _files(root, edit.patterns)
        if edit.required and not files:
            raise PatchError(f"{edit.repo}: no file matches {edit.patterns} under {root}; is the "
                             "checkout at the pinned commit?")
        for path in files:
            per_file.setdefault((edit.repo, path), []).append(edit)
    patched_before = {name: _changed_since_checkout(root) for name, root in roots.items()}
    changes: list[FileChange] = []
    for (repo, path), file_edits in per_file.items():
        rel = path.relative_to(roots[repo]).as_posix()
        # decoded as `read_text` does (UTF-8, universal newlines), so both compare alike
        text = (io.TextIOWrapper(io.BytesIO(committed_bytes(roots[repo], rel)),
                                 encoding="utf-8").read()
                if rel in patched_before[repo] else path.read_text(encoding="utf-8"))
        for edit in file_edits:
            text = edit.transform(text, f"{repo}/{rel}")
        change = _write_if_changed(path, text, f"{repo}/{rel}",
                                   "; ".join(dict.fromkeys(e.reason for e in file_edits)))
        if change:
            changes.append(change)
    for rel, text in d2_projects.FILES.items():
        change = _write_if_changed(roots["VNext"] / rel, text, f"VNext/{rel}",
                                   "minimal DeepLab / PointRend project written by us")
        if change:
            changes.append(change)
    link = _fix_model_zoo_link(roots["VNext"])
    if link:
        changes.append(link)
    return PatchReport(tuple(changes))


def output_version(vnext_commit: str, cutler_commit: str) -> str:
    """What the patched sources compute: Dagster's data version of `patched_vnext` (and, with
    the op's backend, `deform_attn_ops`). Without it Dagster derives one from the code version,
    so a new PATCH_VERSION, e.g. faster imports with bit-identical masks, would mark every
    `mask_pngs` partition stale once the two assets are re-materialised."""
    return f"out{OUTPUT_VERSION}-vnext@{vnext_commit[:12]}-cutler@{cutler_commit[:12]}"


def patched_files(vnext_root: Path, cutler_root: Path) -> list[str]:
    """Every file our patch owns or touched, whether by this run or an earlier one."""
    out = [f"VNext/{p}" for p in tracked_changes(Path(vnext_root))]
    out += [f"CutLER/{p}" for p in tracked_changes(Path(cutler_root))]
    out += [f"VNext/{rel}" for rel in d2_projects.FILES if (Path(vnext_root) / rel).exists()]
    return sorted(set(out))
