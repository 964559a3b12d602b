"""What a predictor worker's start costs on the GPU, by cuDNN autotuning choice.

A first backfill waits for its worker's build (issue 24: 13.7 s on the H200, 8.8 s of it the
warm-up chunk, where cuDNN autotuned the chunk's convolutions while that was the default).
Each variant builds VideoCutLER as a worker does (the code location's settings on
`WSOVVIS_PREDICTOR=videocutler`, `WSOVVIS_GPUS=0`, random weights; the variant's change on
top) in a fresh process, then times the first real 64-frame chunk (did the warm-up cover it?)
and the steady chunks after it, and records the allocator's peak. Rows side by side, one
run; `defaults` runs first and last (the first process on a machine also pays cold file
caches), the ratios are to the last:

    # on the GPU machine, after benchmarks/gpu_device_setup.sh
    python3 -m benchmarks.gpu_warmup --frames .gpu/frames --out $OUT

Variants: `defaults` (no autotuning); `autotune` (`WSOVVIS_CUDNN_BENCHMARK=1`); `autotune_limit_1`
(autotuning that tries one algorithm per convolution: `torch.backends.cudnn.benchmark_limit`,
10 by PyTorch's default); `autotune_no_cap` (`WSOVVIS_GPU_MEMORY_GIB=0` too: autotuning may
take any workspace). Each row records the autotuning it ran with (`cudnn_benchmark`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "defaults": {},
    "autotune": {"env": {"WSOVVIS_CUDNN_BENCHMARK": "1"}},
    "autotune_limit_1": {"env": {"WSOVVIS_CUDNN_BENCHMARK": "1"}, "benchmark_limit": 1},
    "autotune_no_cap": {"env": {"WSOVVIS_CUDNN_BENCHMARK": "1", "WSOVVIS_GPU_MEMORY_GIB": "0"}},
}
BASE_ENV = {"WSOVVIS_PREDICTOR": "videocutler", "WSOVVIS_GPUS": "0",
            "WSOVVIS_ALLOW_RANDOM_WEIGHTS": "1"}


def child(variant: str, frames: Path, chunks: int) -> dict:
    """Build, then time the chunks, in this process (a fresh one per variant)."""
    t0 = time.monotonic()
    import torch  # before the build, to set the variant's limit: its import is timed here

    torch_s = time.monotonic() - t0
    import definitions
    from benchmarks.gpu_common import load_video
    from benchmarks.gpu_model_only import wall_median
    from wsovvis_dagster.predictors.factory import build_predictor

    spec = VARIANTS[variant]
    if "benchmark_limit" in spec:
        torch.backends.cudnn.benchmark_limit = spec["benchmark_limit"]
    settings = definitions.loaded_predictor(os.environ).settings("cuda:0")
    pred = build_predictor(settings)
    built = time.monotonic() - t0
    video = load_video(frames, settings.chunk_size)
    first = wall_median(lambda: pred.predict_clip(video), warm=0, reps=1)
    steady = wall_median(lambda: pred.predict_clip(video), warm=0, reps=chunks)
    return {"variant": variant, "built_s": round(built, 2), "torch_s": round(torch_s, 2),
            "warmup_s": round(pred.load_times.warmup, 2), "first_chunk_s": round(first, 3),
            "steady_chunk_s": round(steady, 3),
            "steady_fps": round(settings.chunk_size / steady, 1),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "benchmark_limit": torch.backends.cudnn.benchmark_limit,
            "gpu_memory_gib": settings.gpu_memory_gib}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--frames", type=Path, required=True, help="folder of 640x360 JPEGs")
    ap.add_argument("--out", type=Path, required=True)
    # defaults twice: the first process on a machine also pays cold file caches
    ap.add_argument("--variants", default=",".join([*VARIANTS, "defaults"]))
    ap.add_argument("--chunks", type=int, default=5, help="steady chunks timed per variant")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.frames, args.chunks)))
        return 0
    from benchmarks.results_io import context, write_result

    rows = []
    for name in args.variants.split(","):
        env = {**os.environ, **BASE_ENV, **VARIANTS[name].get("env", {}),
               "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_warmup", "--child", name,
                               "--frames", str(args.frames), "--out", str(args.out),
                               "--chunks", str(args.chunks)],
                              cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode:
            rows.append({"variant": name, "error": proc.stderr[-800:]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = next((r for r in reversed(rows)
                 if r.get("variant") == "defaults" and "error" not in r), None)
    for r in rows:
        if base and "error" not in r:
            r["warmup_vs_defaults"] = round(r["warmup_s"] / base["warmup_s"], 2)
            r["steady_fps_vs_defaults"] = round(r["steady_fps"] / base["steady_fps"], 3)
    args.out.mkdir(parents=True, exist_ok=True)
    write_result(args.out / "gpu_warmup.json", benchmark="gpu_warmup",
                 title="A predictor worker's start by cuDNN autotuning choice",
                 measures="library: VideoCutLER built as a worker builds it, in a fresh process "
                          "per variant (random weights, 640x360 frames, one 64-frame chunk)",
                 ctx=context(sys.argv), results={"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
