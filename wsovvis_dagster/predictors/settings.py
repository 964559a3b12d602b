"""The predictor's plain settings, shared by `factory` and every backend.

Their own module so a backend (e.g. `videocutler`) can take them without importing `factory`,
which imports the backends.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

# What one GPU's runs may take together, in GiB of PyTorch allocator (nvidia-smi shows about
# 0.5-1 GiB of CUDA context per process on top). Without a cap, cuDNN's autotuning (when
# turned on) takes as much as it is given: 44-55 GiB on an H200 for a worker's first video or
# a new clip length.
GPU_MEMORY_BUDGET_GIB = 18.0


def default_gpu_memory_gib(runs_per_gpu: int = 1) -> float:
    """Each run's allocator cap when none is set: the GPU's budget shared by its runs."""
    return GPU_MEMORY_BUDGET_GIB / max(1, runs_per_gpu)


@dataclass(frozen=True)
class PredictorSettings:
    """Everything any backend needs; each backend reads only its own fields."""

    backend: str = "cpu"
    device: str = "cpu"  # "cpu" or "cuda:N" (the GPU slot the run holds)
    max_tracks: int = 10
    # videocutler backend
    vnext_root: str = "third_party/VNext"
    cutler_root: str = "third_party/CutLER"
    config_file: str = ""  # default: CutLER's video_mask2former_R50_cls_agnostic.yaml
    weights: str = ""  # local path to videocutler_m2f_rn50.pth
    confidence: float = 0.6
    chunk_size: int = 64
    chunk_overlap: int = 8
    allow_random_weights: bool = False  # testing only: loudly logged
    fast_path: bool = True  # on-device pre/post-processing (False: upstream's steps exactly)
    # "tf32" (fp32 tensors, TF32 matmuls), "fp32", or "bf16"/"fp16" autocast (fast path only);
    # tf32 agrees with fp32 on >= 99.8 % of pixels (docs/gpu.md) and runs ~1.3x faster
    precision: str = "tf32"
    deform_attn: str = "auto"  # "cuda" op, "pytorch" (slow), auto: cuda on GPU, pytorch on CPU
    # CUDA: cuDNN autotuning. Off by default: on an H200 it gave no steady speed (356-360 fps
    # either way) but re-tuned on every new clip length (96 videos of 8-56 frames: 35.6 fps
    # with it, 191.8 without) and doubled a worker's warm-up (docs/gpu.md)
    cudnn_benchmark: bool = False
    gpu_memory_gib: float = GPU_MEMORY_BUDGET_GIB  # CUDA: this process's allocator cap (0: none)
    # CUDA: one chunk at build time, so CUDA's lazy kernel loading (and autotuning, if on)
    # happens before video 1
    warmup: bool = True
    # cpu-slow backend: seconds each predict() sleeps after the cpu prediction (tests/benchmarks)
    hold_seconds: float = 0.0


SETTINGS_FIELDS = tuple(f.name for f in fields(PredictorSettings))
