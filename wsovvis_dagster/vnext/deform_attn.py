"""The MultiScaleDeformableAttention op: CUDA build, or the explicit PyTorch path on CPU.

With a GPU (or `force_cuda`), `build_deform_attn_op` checks the toolkit against torch's CUDA
*before* compiling, then installs the op from CutLER's `ops/` folder into the environment.
Without one, nothing is compiled: VideoCutLER runs through the PyTorch implementation in the
patched `ms_deform_attn_func`, and the result says so (`slow_path=True`). Our patch makes the
backend explicit (`select_backend`), so there is no silent fallback either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wsovvis_dagster.errors import CudaToolkitError, OpBuildError
from wsovvis_dagster.vnext.cuda import build_toolkit, check_cuda_match, find_toolkits
from wsovvis_dagster.vnext.install import (
    VIDEOCUTLER_DIR,
    read_stamp,
    run_logged,
    torch_info,
    tree_fingerprint,
    write_stamp,
)

OPS_DIR = "videocutler/mask2former/modeling/pixel_decoder/ops"
BACKENDS = ("cuda", "pytorch")
_FUNC_MODULE = "mask2former.modeling.pixel_decoder.ops.functions.ms_deform_attn_func"


@dataclass(frozen=True)
class OpBuild:
    """What `build_deform_attn_op` did. backend "pytorch" means the slow path is active."""

    backend: str
    slow_path: bool
    torch_version: str
    torch_cuda: str | None
    toolkit: str | None  # "13.0 at /usr/local/cuda-13.0"
    arch_list: str | None
    library: str | None  # the built .so
    seconds: float
    notes: tuple[str, ...] = ()


def _pip_cuda_includes() -> list[str]:
    """Header folders of pip's nvidia-* packages (torch wheels bring CUDA headers that way)."""
    out = []
    for entry in sys.path:
        base = Path(entry) / "nvidia"
        if base.is_dir():
            out += [str(p) for p in sorted(base.glob("*/include")) if p.is_dir()]
    return out


@dataclass(frozen=True)
class OpBuildSettings:
    """How to build the op: `None`/`False` detect (toolkit: CUDA_HOME, then nvcc on PATH, then
    /usr/local/cuda; architectures: the visible GPUs; jobs: all cores)."""

    cuda_home: str | None = None
    arch_list: str | None = None  # TORCH_CUDA_ARCH_LIST, e.g. "9.0" for H100/H200
    force_cuda: bool = False  # build with no GPU visible (needs arch_list)
    max_jobs: int | None = None
    python: str = sys.executable  # the interpreter the op is built for and checked in


def build_deform_attn_op(
    cutler_root: Path,
    settings: OpBuildSettings | None = None,
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> OpBuild:
    """Build and install MultiScaleDeformableAttention, or choose the PyTorch path on CPU."""
    settings = settings or OpBuildSettings()
    python, cuda_home, arch_list = settings.python, settings.cuda_home, settings.arch_list
    force_cuda, max_jobs = settings.force_cuda, settings.max_jobs
    env = dict(os.environ if env is None else env)
    info = torch_info(python)
    if not (info.cuda_available or force_cuda):
        return OpBuild("pytorch", True, info.version, info.cuda, None, None, None, 0.0,
                       ("no CUDA device visible: the op is not compiled; VideoCutLER runs the "
                        "PyTorch implementation (slow path)",))
    toolkit = build_toolkit(cuda_home, env)
    check = check_cuda_match(info.cuda, info.version, toolkit, find_toolkits())
    check.raise_if_error()
    if not arch_list:
        if not info.capabilities:
            raise CudaToolkitError(
                "force_cuda is set but no GPU is visible, so the target architecture is unknown: "
                "set arch_list (TORCH_CUDA_ARCH_LIST), e.g. '9.0' for H100/H200"
            )
        arch_list = ";".join(info.capabilities)
    notes = [check.message]
    env.update(CUDA_HOME=str(toolkit.home), TORCH_CUDA_ARCH_LIST=arch_list, FORCE_CUDA="1")
    if max_jobs:
        env["MAX_JOBS"] = str(max_jobs)
    if not (toolkit.home / "include" / "cuda_runtime.h").exists():
        extra = _pip_cuda_includes()
        env["CPATH"] = os.pathsep.join([*extra, env.get("CPATH", "")]).strip(os.pathsep)
        notes.append(f"{toolkit.home}/include lacks cuda_runtime.h: added pip CUDA headers {extra}")
    ops = Path(cutler_root) / OPS_DIR
    fingerprint = tree_fingerprint(
        ops, ("setup.py", "src/**/*"),
        {"python": python, "torch": info.version, "toolkit": str(toolkit.home),
         "arch": arch_list},
    )
    library = op_library(python)
    if library and read_stamp(ops) == fingerprint:
        return OpBuild("cuda", False, info.version, info.cuda,
                       f"{toolkit.version} at {toolkit.home}", arch_list, library, 0.0,
                       (*notes, "already built from these sources: build skipped"))
    cmd = [python, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
           "--disable-pip-version-check", "--use-pep517", "--no-index", str(ops.resolve())]
    seconds = run_logged(cmd, cwd=ops, env=env, log_path=log_path,
                         what="building MultiScaleDeformableAttention")
    write_stamp(ops, fingerprint, torch=info.version, arch=arch_list)
    library = op_library(python)
    if library is None:
        raise OpBuildError(f"the build of {ops} succeeded but `import "
                           f"MultiScaleDeformableAttention` fails in {python}; see {log_path}")
    return OpBuild("cuda", False, info.version, info.cuda,
                   f"{toolkit.version} at {toolkit.home}", arch_list, library, seconds,
                   tuple(notes))


def op_library(python: str = sys.executable) -> str | None:
    """Path of the installed compiled op, or None when it does not import."""
    code = "import torch, MultiScaleDeformableAttention as m; print(m.__file__)"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else None


def select_backend(name: str) -> None:
    """Choose the deformable-attention path for this process (VideoCutLER must be importable).

    "cuda": the compiled op; its errors (including on CPU tensors) surface. "pytorch": the
    reference implementation, slower and heavier on memory.
    """
    if name not in BACKENDS:
        raise ValueError(f"deformable-attention backend must be one of {BACKENDS}, got {name!r}")
    import importlib

    func = importlib.import_module(_FUNC_MODULE)
    if not hasattr(func, "set_backend"):
        raise OpBuildError(f"{func.__file__} is not patched (no set_backend): re-materialise "
                           "patched_vnext")
    func.set_backend(name)


_COMPARE = """
import json, sys, torch
sys.path.insert(0, {videocutler!r})
from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn_func as f
torch.manual_seed(0)
dev = "cuda"
shapes = torch.as_tensor([[48, 80], [24, 40], [12, 20]], dtype=torch.long, device=dev)
start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
n, m, d, q, p = 4, 8, 32, 500, 4
s = int((shapes[:, 0] * shapes[:, 1]).sum())
value = torch.rand(n, s, m, d, device=dev)
loc = torch.rand(n, q, m, 3, p, 2, device=dev)
w = torch.rand(n, q, m, 3, p, device=dev)
w = w / w.sum((-1, -2), keepdim=True)
ref = f.ms_deform_attn_core_pytorch(value.double(), shapes, loc.double(), w.double())
out = f.MSDeformAttnFunction.apply(value, shapes, start, loc, w, 2)
print(json.dumps({{"max_abs_err": float((out.double() - ref).abs().max())}}))
"""


def compare_with_pytorch(cutler_root: Path, *, python: str = sys.executable) -> float:
    """Max |CUDA op - float64 PyTorch reference| on random inputs (needs a GPU)."""
    videocutler = str((Path(cutler_root) / VIDEOCUTLER_DIR).resolve())
    proc = subprocess.run([python, "-c", _COMPARE.format(videocutler=videocutler)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OpBuildError(f"comparing the CUDA op with PyTorch failed:\n{proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["max_abs_err"])
