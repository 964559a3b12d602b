"""A small fake VNext + CutLER tree for tests: the file names our patch edits, holding only the
lines it looks for (no upstream code). `make_fake_checkouts` can also commit each tree to a git
repository, so `checkout_pinned` can be tested without the network.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

OPS = "videocutler/mask2former/modeling/pixel_decoder/ops"
PIXEL_DECODER = "videocutler/mask2former/modeling/pixel_decoder/msdeformattn.py"
VIDEO_DECODER = ("videocutler/mask2former_video/modeling/transformer_decoder/"
                 "video_mask2former_transformer_decoder.py")

VNEXT_FILES = {
    "setup.py": "# fake VNext setup.py\n",
    "configs/Base.yaml": "MODEL: {}\n",
    "detectron2/__init__.py": '__version__ = "0.6"\n',
    "detectron2/projects/__init__.py": (
        "_PROJECTS = {\n"
        '    "idol": "IDOL",\n'
        '    "seqformer": "SeqFormer"\n'
        "}\n"
    ),
    "detectron2/data/transforms/transform.py": (
        "from PIL import Image\n\n\n"
        "class ExtentTransform:\n"
        "    def __init__(self, src_rect, output_size, interp=Image.LINEAR, fill=0):\n"
        "        self.interp = interp\n"
    ),
    "detectron2/structures/masks.py": (
        "import numpy as np\n\n\n"
        "def empty(h, w):\n"
        "    return np.zeros((h, w)).astype(np.bool)\n\n\n"
        "def keep(x):\n"
        "    return np.asarray(x, dtype=np.bool_), np.int64(1), np.float(2), x.astype(np.int)\n"
    ),
    "detectron2/layers/csrc/deformable/deform_conv_cuda_kernel.cu": (
        "#include <THC/THCAtomics.cuh>\n"
        "void f(at::Tensor input) {\n"
        '  if (input.dim() != 4) AT_ERROR("bad input ", input.dim());\n'
        "  float* p = input.data<float>();\n"
        "}\n"
    ),
    # imports deferred by the patch (version 3): the import lines, one use of each name
    "detectron2/layers/roi_align.py": (
        "from torch import nn\nfrom torchvision.ops import roi_align\n\n\n"
        "def align(x, rois):\n    return roi_align(x, rois)\n"
    ),
    "detectron2/layers/deform_conv.py": (
        "import math\nfrom torchvision.ops import deform_conv2d\n\n\n"
        "def conv(x, offset, weight):\n    return deform_conv2d(x, offset, weight)\n"
    ),
    "detectron2/layers/nms.py": (
        "import math\nfrom torchvision.ops import boxes as box_ops\n"
        "from torchvision.ops import nms  # noqa . for compatibility\n\n\n"
        "def batched_nms(boxes, scores, idxs, iou_threshold):\n"
        "    return box_ops.batched_nms(boxes, scores, idxs, iou_threshold)\n"
    ),
    "detectron2/modeling/poolers.py": (
        "import math\nfrom torchvision.ops import RoIPool\n\n\n"
        "def pooler(size, scale):\n    return RoIPool(size, spatial_scale=scale)\n"
    ),
    "detectron2/utils/collect_env.py": (
        "import os\nimport torchvision\n\n\n"
        "def collect_env_info():\n    return torchvision.__version__\n"
    ),
    "assets/demo.gif": "GIF89a fake\n",
}

CUTLER_FILES = {
    f"{OPS}/functions/__init__.py": "from .ms_deform_attn_func import MSDeformAttnFunction\n",
    f"{OPS}/functions/ms_deform_attn_func.py": (
        "try:\n"
        "    import MultiScaleDeformableAttention as MSDA\n"
        "except ModuleNotFoundError as e:\n"
        "    info_string = (\n"
        '        "please compile the op"\n'
        "    )\n"
        "    raise ModuleNotFoundError(info_string)\n\n\n"
        "class MSDeformAttnFunction:\n"
        "    @staticmethod\n"
        "    def apply(value, shapes, start, locations, weights, step):\n"
        "        return MSDA.ms_deform_attn_forward(\n"
        "            value, shapes, start, locations, weights, step)\n"
        "\n\n"
        "def ms_deform_attn_core_pytorch(value, shapes, locations, weights):\n"
        '    return ("pytorch", value)\n'
    ),
    f"{OPS}/modules/__init__.py": "from .ms_deform_attn import MSDeformAttn\n",
    f"{OPS}/modules/ms_deform_attn.py": (
        "from ..functions import MSDeformAttnFunction\n"
        "from ..functions.ms_deform_attn_func import ms_deform_attn_core_pytorch\n\n\n"
        "class MSDeformAttn:\n"
        "    im2col_step = 128\n\n"
        "    def forward(self, value, input_spatial_shapes=None, input_level_start_index=None,\n"
        "                sampling_locations=None, attention_weights=None):\n"
        "        N = len(value)\n"
        "        assert (input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum() == Len_in\n"
        "        try:\n"
        "            output = MSDeformAttnFunction.apply(\n"
        "                value, input_spatial_shapes, input_level_start_index, sampling_locations,"
        " attention_weights, self.im2col_step)\n"
        "        except:\n"
        "            # CPU\n"
        "            output = ms_deform_attn_core_pytorch(value, input_spatial_shapes,"
        " sampling_locations, attention_weights)\n"
        "        return output\n"
    ),
    PIXEL_DECODER: (
        "import torch\n"
        "from .ops.modules import MSDeformAttn\n\n\n"
        "class MSDeformAttnTransformerEncoderOnly:\n"
        "    def forward(self, spatial_shapes, src_flatten, valid_ratios, lvl_pos_embed_flatten,\n"
        "                mask_flatten):\n"
        "        spatial_shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, "
        "device=src_flatten.device)\n"
        "        level_start_index = torch.cat((spatial_shapes.new_zeros((1, )), "
        "spatial_shapes.prod(1).cumsum(0)[:-1]))\n"
        "        memory = self.encoder(src_flatten, spatial_shapes, level_start_index, "
        "valid_ratios, lvl_pos_embed_flatten, mask_flatten)\n\n"
        "        return memory, spatial_shapes, level_start_index\n\n\n"
        "class MSDeformAttnTransformerEncoder:\n"
        "    def forward(self, src, spatial_shapes, level_start_index, valid_ratios, pos=None, "
        "padding_mask=None):\n"
        "        output = src\n"
        "        reference_points = self.get_reference_points(spatial_shapes, valid_ratios, "
        "device=src.device)\n"
        "        return output, reference_points\n\n\n"
        "class MSDeformAttnPixelDecoder:\n"
        "    def forward_features(self, srcs, pos):\n"
        "        y, spatial_shapes, level_start_index = self.transformer(srcs, pos)\n"
        "        split_size_or_sections = [None] * self.transformer_num_feature_levels\n"
        "        for i in range(self.transformer_num_feature_levels):\n"
        "            if i < self.transformer_num_feature_levels - 1:\n"
        "                split_size_or_sections[i] = level_start_index[i + 1] - "
        "level_start_index[i]\n"
        "            else:\n"
        "                split_size_or_sections[i] = y.shape[1] - level_start_index[i]\n"
        "        y = torch.split(y, split_size_or_sections, dim=1)\n"
        "        return y\n"
    ),
    VIDEO_DECODER: (
        "import torch\nfrom torch.nn import functional as F\n\n\n"
        "class VideoMultiScaleMaskedTransformerDecoder:\n"
        "    def forward(self, attn_mask, outputs_class, outputs_mask):\n"
        "        predictions_class, predictions_mask = [outputs_class], [outputs_mask]\n"
        "        for i in range(self.num_layers):\n"
        "            attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False\n"
        "            outputs_class, outputs_mask, attn_mask = self.heads(attn_mask)\n"
        "            predictions_class.append(outputs_class)\n"
        "            predictions_mask.append(outputs_mask)\n"
        "        return predictions_class, predictions_mask, attn_mask\n\n"
        "    def forward_prediction_heads(self, outputs_mask, attn_mask_target_size):\n"
        "        b, q, t, _, _ = outputs_mask.shape\n"
        "        attn_mask = F.interpolate(outputs_mask.flatten(0, 1), size=attn_mask_target_size, "
        'mode="bilinear", align_corners=False).view(\n'
        "            b, q, t, attn_mask_target_size[0], attn_mask_target_size[1])\n"
        "        return attn_mask\n"
    ),
    f"{OPS}/src/ms_deform_attn.h": (
        "at::Tensor ms_deform_attn_forward(const at::Tensor &value) {\n"
        "    if (value.type().is_cuda()) { return value; }\n"
        '    AT_ERROR("Not implemented on the CPU");\n'
        "}\n"
    ),
    f"{OPS}/src/cuda/ms_deform_attn_cuda.cu": (
        "at::Tensor fwd(const at::Tensor &value, int batch, int step) {\n"
        '    AT_ASSERTM(value.type().is_cuda(), "value must be a CUDA tensor");\n'
        '    AT_ASSERTM(batch % step == 0, "batch(%d) must divide im2col_step(%d)", batch, step);\n'
        '    AT_DISPATCH_FLOATING_TYPES(value.type(), "ms_deform_attn_forward_cuda", ([&] {\n'
        "        g(value.data<scalar_t>());\n"
        "    }));\n"
        "}\n"
    ),
    f"{OPS}/src/cuda/ms_deform_im2col_cuda.cuh": "#include <THC/THCAtomics.cuh>\n",
    "videocutler/mask2former/utils/misc.py": (
        "import torch\nimport torchvision\n\n\n"
        "def tracing():\n    return torchvision._is_tracing()\n"
    ),
    "videocutler/mask2former/modeling/matcher.py": (
        "import torch\nfrom scipy.optimize import linear_sum_assignment\n\n\n"
        "def match(cost):\n    return linear_sum_assignment(cost)\n"
    ),
    "videocutler/mask2former_video/modeling/matcher.py": (
        "import torch\nfrom scipy.optimize import linear_sum_assignment\n\n\n"
        "def match(cost):\n    return linear_sum_assignment(cost)\n"
    ),
    "videocutler/mask2former/modeling/backbone/swin.py": (
        "import torch\nfrom timm.models.layers import DropPath, to_2tuple, trunc_normal_\n\n\n"
        "def block(p, size):\n    return DropPath(p), to_2tuple(size), trunc_normal_\n"
    ),
    "videocutler/mask2former_video/__init__.py": (
        "from . import modeling\n\n"
        "# video\n"
        "from .data_video import (\n"
        "    YTVISDatasetMapper,\n"
        "    YTVISEvaluator,\n"
        "    build_detection_train_loader,\n"
        "    build_detection_test_loader,\n"
        "    get_detection_dataset_dicts,\n"
        ")\n"
    ),
    "videocutler/mask2former_video/modeling/__init__.py": "",
    "videocutler/mask2former_video/data_video/__init__.py": (
        "YTVISDatasetMapper = YTVISEvaluator = build_detection_train_loader = object\n"
        "build_detection_test_loader = get_detection_dataset_dicts = object\n"
    ),
    "docs/demo.gif": "GIF89a fake\n",
}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _commit(root: Path) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=root,
                              env=env, check=True, capture_output=True, text=True).stdout.strip()

    if not (root / ".git").exists():
        git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "fake upstream")
    return git("rev-parse", "HEAD")


def make_fake_checkouts(root: Path, *, git: bool = False) -> tuple[Path, Path, str | None,
                                                                    str | None]:
    """Write fake `root/VNext` and `root/CutLER`; with `git`, commit each.

    Returns (vnext, cutler, vnext_commit, cutler_commit); commits are None without git.
    """
    vnext, cutler = Path(root) / "VNext", Path(root) / "CutLER"
    _write(vnext, VNEXT_FILES)
    _write(cutler, CUTLER_FILES)
    link = vnext / "detectron2" / "model_zoo" / "configs"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        os.symlink("/opt/tiger/Detectron2_ECCV22/configs", link)  # dangling, as upstream
    if not git:
        return vnext, cutler, None, None
    return vnext, cutler, _commit(vnext), _commit(cutler)
