"""Shared helpers of the GPU benchmarks (`gpu_setup.py`, `gpu_videocutler.py`,
`gpu_throughput.py`, `gpu_dagster.py`, `gpu_profile.py`): frames, videos of a given length,
the asset's loop, timing and peak memory.

The benchmarks run on a GPU machine from the repository root, with the patched checkouts in
`--third-party` (default `third_party`, the layout `patched_vnext` produces) and 640x360 JPEG
frames in `--frames` (a video of N frames plays them forward and back, as often as needed).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.results_io import context, write_result


def frame_files(folder: Path, n: int) -> list[Path]:
    """`n` frame paths playing the folder's JPEGs forward, backward, forward... (ping-pong)."""
    files = sorted(Path(folder).glob("*.jpg"))
    if not files:
        raise SystemExit(f"no JPEG frames in {folder}")
    cycle = files + files[-2:0:-1] if len(files) > 1 else files
    return [cycle[i % len(cycle)] for i in range(n)]


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot decode {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_video(folder: Path, n: int, workers: int = 8) -> np.ndarray:
    """`(n, H, W, 3) uint8` RGB frames."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(read_rgb, frame_files(folder, n))))


def settings(third_party: Path, **kw):
    from wsovvis_dagster.predictors.settings import PredictorSettings

    base = dict(backend="videocutler", device="cuda:0", vnext_root=str(third_party / "VNext"),
                cutler_root=str(third_party / "CutLER"), allow_random_weights=True)
    base.update(kw)
    return PredictorSettings(**base)


def cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cuda_median(fn: Callable[[], object], warm: int = 2, reps: int = 5) -> float:
    """Median GPU seconds of `fn()` between two CUDA events (work already queued excluded)."""
    import torch

    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def measure(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> dict:
    """Median wall seconds of `fn()` (device synchronised) and peak allocated GiB."""
    import torch

    for _ in range(warmup):
        fn()
    cuda_sync()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        cuda_sync()
        t0 = time.perf_counter()
        fn()
        cuda_sync()
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "all_seconds": times,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def _track_overlaps(a: np.ndarray, b: np.ndarray):
    """Intersections `(na, nb)` and areas of every track pair of two `(T, H, W)` id maps."""
    na, nb = int(a.max(initial=0)), int(b.max(initial=0))
    joint = np.bincount(a.astype(np.int64).ravel() * (nb + 1) + b.astype(np.int64).ravel(),
                        minlength=(na + 1) * (nb + 1)).reshape(na + 1, nb + 1)
    return joint[1:, 1:].astype(float), joint[1:, :].sum(1), joint[:, 1:].sum(0)


def matched_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU of Hungarian-matched tracks of two `(T, H, W)` id maps (unmatched count 0)."""
    from scipy.optimize import linear_sum_assignment

    inter, area_a, area_b = _track_overlaps(a, b)
    if inter.size == 0:
        return 1.0 if area_a.size == area_b.size == 0 else 0.0
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    rows, cols = linear_sum_assignment(-iou)
    return float(iou[rows, cols].sum() / max(inter.shape))


def pooled_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of intersections over sum of unions of Hungarian-matched tracks (pixel-weighted,
    so a track of a few pixels weighs what it covers)."""
    from scipy.optimize import linear_sum_assignment

    inter, area_a, area_b = _track_overlaps(a, b)
    if inter.size == 0:
        return 1.0 if area_a.size == area_b.size == 0 else 0.0
    union = area_a[:, None] + area_b[None, :] - inter
    rows, cols = linear_sum_assignment(-np.divide(inter, np.maximum(union, 1)))
    matched_inter = inter[rows, cols].sum()
    total_union = area_a.sum() + area_b.sum() - matched_inter
    return float(matched_inter / max(total_union, 1))


def build_from_env():
    """The predictor `mask_pngs` would build from this process's env (defaults < env), for
    VideoCutLER on GPU 0 when `WSOVVIS_GPUS` is set: (predictor, device, build seconds)."""
    import definitions
    from wsovvis_dagster.predictors.backends import backend
    from wsovvis_dagster.predictors.factory import build_predictor

    res = definitions.loaded_predictor()  # build_resources() gives a launch-time partial
    device = "cuda:0" if res.gpus and backend(res.backend).uses_gpu else "cpu"
    t0 = time.perf_counter()
    return build_predictor(res.settings(device)), device, time.perf_counter() - t0


def loop_videos(data: Path, output: Path, refs, predictor, *,
                workers: int | None = None) -> tuple[list[dict], float]:
    """The asset's loop (`masks.segment.segment_videos`) over `refs`: one record per video (its
    own timings and when it finished) and the loop's wall seconds. A bad video raises."""
    from wsovvis_dagster.masks.segment import segment_videos

    videos = []
    start = time.perf_counter()
    for out in segment_videos(Path(data), Path(output), refs, predictor, workers=workers):
        if out.error is not None:
            raise out.error
        r = out.result
        videos.append({"key": out.ref.partition_key, "frames": r.frames, "seconds": r.seconds,
                       "predict_seconds": r.predict_seconds, "decode_seconds": r.decode_seconds,
                       "write_seconds": r.write_seconds, "peak_gpu_gib": r.peak_gpu_gib,
                       "end": time.time()})
    return videos, time.perf_counter() - start


def code_commit(checkout: Path) -> str:
    """The short commit a checkout holds ('+changes' when its tracked files differ from it;
    '?' when it is no git checkout)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True,
                              text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def strip_code_args(argv: list[str]) -> list[str]:
    """`argv` without the side-by-side flags (--code, --repeat, --json, --note, --out) and
    their values: what each checkout's run is given."""
    passed = list(argv)
    for flag in ("--code", "--repeat", "--json", "--note", "--out"):
        while flag in passed:
            i = passed.index(flag)
            del passed[i:i + 2]
    return passed


def run_with_codes(module: str, argv: list[str], codes: list[tuple[str, Path]], repeat: int,
                   result_file: str) -> list[tuple[str, int, dict]]:
    """`python -m <module> <argv> --out TMP` run from each checkout, its code first on the
    path, checkouts alternating within each of `repeat` rounds: (label, round, the `results`
    of its `result_file`) per run."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="wsovvis-codes-") as tmp:
        for round_ in range(repeat):
            for label, code in codes:
                out = Path(tmp) / f"{label}-{round_}"
                env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}"
                       f"{os.environ.get('PYTHONPATH', '')}"}
                subprocess.run([sys.executable, "-m", module, *argv, "--out", str(out)],
                               cwd=code, env=env, check=True)
                runs.append((label, round_,
                             json.loads((out / result_file).read_text())["results"]))
    return runs


def report_codes(rows: list[dict], columns: tuple, json_path: Path | None, *, benchmark: str,
                 title: str, measures: str, command: list[str], codes: list[tuple[str, Path]],
                 repeat: int, note: str | None, conditions: str | None = None) -> None:
    """Print `rows` (one per checkout and round) side by side; with `json_path`, save them
    with each checkout's commit."""
    print(" | ".join(columns))
    for r in rows:
        print(" | ".join(str(r.get(k)) for k in columns))
    if json_path:
        write_result(json_path, benchmark=benchmark, title=title, measures=measures,
                     ctx=context(command, sizes={"repeat": repeat, "codes": {
                         label: code_commit(code) for label, code in codes}}, note=note,
                                 conditions=conditions),
                     results={"rows": rows})


# How to read every GPU result that the machine cannot record itself (its GPU, torch and date
# the result file's context records)
GPU_CONDITIONS = ("**random weights** (the real ones cannot be downloaded here); 640x360 JPEG "
                  "frames played forward and back to make longer videos")


def write_gpu_result(path: Path, *, benchmark: str, title: str, measures: str, results: dict,
                     conditions: str = GPU_CONDITIONS) -> None:
    """The result file of a GPU benchmark: the envelope every benchmark writes, with this
    run's command, GPU, versions and date, and `conditions` in words."""
    write_result(path, benchmark=benchmark, title=title, measures=measures,
                 ctx=context(sys.argv[1:], conditions=conditions), results=results)
