"""The predictor's plain settings, shared by `factory` and every backend.

Their own module so a backend (e.g. `videocutler`) can take them without importing `factory`,
which imports the backends.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


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
    precision: str = "fp32"  # "fp32", or "bf16"/"fp16" autocast (fast path only)
    deform_attn: str = "auto"  # "cuda" op, "pytorch" (slow), auto: cuda on GPU, pytorch on CPU
    cudnn_benchmark: bool = True  # CUDA: cuDNN autotuning
    gpu_memory_gib: float = 0.0  # CUDA: cap on this process's PyTorch allocator (0: none)
    warmup: bool = True  # CUDA: one chunk at build time, so autotuning happens before video 1
    # cpu-slow backend: seconds each predict() sleeps after the cpu prediction (tests/benchmarks)
    hold_seconds: float = 0.0


SETTINGS_FIELDS = tuple(f.name for f in fields(PredictorSettings))
