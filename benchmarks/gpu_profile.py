"""Issue 14: profiler evidence of what bounds `masks.segment.segment_videos` on one GPU.

    # on the GPU machine, after benchmarks/gpu_device_setup.sh (env as gpu_dagster.py sets it)
    python3 -m benchmarks.gpu_profile --frames .gpu/frames --out $OUT
    # dry run anywhere: the embedded CPU predictor on tiny synthetic videos
    python -m benchmarks.gpu_profile --backend cpu --size 120x160 --videos 4 --length 24 \
        --out /tmp/gp

One process; the predictor is built as the `mask_pngs` resource builds it
(`definitions.loaded_predictor()`: defaults < env, as `build_resources()` resolves them
without launch config; `build_predictor(res.settings("cuda:0"))`).
Sections (each skippable with --skip):

- loop (always): `segment_videos` over video 0 untimed (warm), then over the last
  videos-3 videos untimed by any tool: the loop's own fps and per-video decode / predict / write
  seconds;
- profiler: `torch.profiler` (CPU + CUDA) around videos 1-2: GPU busy fraction (union of kernel
  and memcpy intervals / wall), kernel time, top ops by self CPU / self CUDA time, and host-sync
  calls (cudaStreamSynchronize, cudaMemcpy*, ...) on the loop's thread;
- pyspy: `py-spy record --threads` on this process while the loop runs the last videos again,
  once plain (CPU samples per thread: main / prefetch / decode / writer / png) and once with
  `--gil` (samples holding the GIL, per thread: the contention evidence); top leaf frames of
  the main thread;
- model: forward passes alone on one device-resident chunk (CUDA events, median of 5): eager
  fp32 / bf16, torch.compile of the backbone (default, then max-autotune-no-cudagraphs), CUDA
  graphs of the backbone, channels-last; each with its agreement with eager fp32 (max abs
  difference of the backbone features); then `predict_clip` (host I/O included) and
  `predict` of one whole video; last, CUDA graphs of the whole forward (backbone + head).
  Attempts stop once --model-budget-s is spent.

Writes `gpu_profile.json` (and `gpu_profile_trace.json.gz` when under 10 MB) to --out.

`--code LABEL=DIR` (repeatable) runs the same command with another checkout's code as well as
this one, rounds alternating (`--repeat`), and prints the steady loops side by side (`--json`:
one result with every run's loop), e.g. the loop before and after a change on one GPU:

    python3 -m benchmarks.gpu_profile --frames .gpu/frames --skip profiler,pyspy,model \
        --videos 8 --code before=/tmp/before --repeat 2 --json $OUT/gpu_loop_codes.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.gpu_common import (
    GPU_CONDITIONS,
    build_from_env,
    cuda_median,
    loop_videos,
    report_codes,
    run_with_codes,
    strip_code_args,
    write_gpu_result,
)
from benchmarks.gpu_dagster import REPO, GpuSampler, make_videos, source_frames
from benchmarks.results_io import add_json_args, code_checkouts

SECTIONS = ("profiler", "pyspy", "model")
RUNTIME_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy", "cudaMemcpyAsync", "cudaMemcpy2DAsync", "cudaHostAlloc",
              "cudaLaunchKernel")
SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::to",
            "aten::copy_", "aten::pin_memory")
TRACE_LIMIT = 10 * 1024 * 1024


def _r(x, n=3):
    return None if x is None else round(float(x), n)


# -- the loop ----------------------------------------------------------------------------------
def run_loop(data: Path, output: Path, refs, pred) -> dict:
    """`segment_videos` over `refs`; wall fps and per-video means of its own timings."""
    shutil.rmtree(output, ignore_errors=True)
    rows, wall = loop_videos(data, output, refs, pred)
    frames = sum(v["frames"] for v in rows)
    n = max(len(rows), 1)

    def mean(field: str) -> float:
        return _r(sum(v[field] for v in rows) / n)

    return {"videos": len(rows), "frames": frames, "wall_s": _r(wall),
            "fps": _r(frames / wall, 1) if wall else None,
            "mean_video_s": mean("seconds"), "mean_decode_s": mean("decode_seconds"),
            "mean_predict_s": mean("predict_seconds"), "mean_write_s": mean("write_seconds"),
            "predict_share_of_wall": _r(sum(v["predict_seconds"] for v in rows) / wall)
            if wall else None}


class ThreadNames:
    """Names of this process's threads by ident and native id, sampled while a block runs
    (the loop's pools exist only inside `segment_videos`)."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self._stop = threading.Event()

    def _snap(self) -> None:
        for t in threading.enumerate():
            self.names[t.ident] = t.name
            if t.native_id is not None:
                self.names[t.native_id] = t.name

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._snap()

    @contextlib.contextmanager
    def watch(self):
        th = threading.Thread(target=self._run, name="thread-names", daemon=True)
        th.start()
        try:
            yield self
        finally:
            self._stop.set()
            th.join(timeout=2)
            self._stop.clear()


def group(name: str) -> str:
    """'decode_3' -> 'decode', 'MainThread' -> 'main'."""
    if name == "MainThread":
        return "main"
    return re.sub(r"_\d+$", "", name)


# -- torch.profiler ------------------------------------------------------------------------------
def profile_loop(data, output, refs, pred, cuda: bool, workdir: Path, out_dir: Path) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        loop = run_loop(data, output, refs, pred)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    res: dict = {"loop_under_profiler": loop, "wall_s": _r(wall), "activities": [
        a.name for a in acts]}
    avgs = prof.key_averages()

    def dev_self(e):
        return getattr(e, "self_device_time_total", None) or getattr(
            e, "self_cuda_time_total", 0) or 0

    def top(key, n=15):
        rows = sorted(avgs, key=key, reverse=True)[:n]
        return [{"op": e.key[:60], "calls": e.count, "self_cpu_ms": _r(e.self_cpu_time_total / 1e3),
                 "self_cuda_ms": _r(dev_self(e) / 1e3)} for e in rows if key(e) > 0]

    res["top_self_cpu"] = top(lambda e: e.self_cpu_time_total)
    res["top_self_cuda"] = top(dev_self) if cuda else "CPU backend: no CUDA activity"
    trace = workdir / "trace.json"
    prof.export_chrome_trace(str(trace))
    res.update(trace_stats(trace, wall, threading.main_thread().native_id))
    gz = out_dir / "gpu_profile_trace.json.gz"
    with open(trace, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    size = gz.stat().st_size
    if size > TRACE_LIMIT:
        gz.unlink()
        res["trace"] = f"not kept: {size / 2**20:.1f} MiB gzipped (limit 10 MB)"
    else:
        res["trace"] = f"{gz.name} ({size / 2**20:.1f} MiB)"
    trace.unlink()
    return res


def _union(intervals) -> float:
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def kernels_by_launch(events: list[dict], top: int = 12) -> list[dict]:
    """The kernels of a chrome trace grouped by name and launch grid, most device time first,
    each with its share of all kernel time: a kernel on a grid of a few blocks leaves most of
    the GPU idle however long it runs (upstream's attention-mask resize ran on 1-4 blocks)."""
    groups: dict = collections.defaultdict(lambda: [0, 0.0])
    total = 0.0
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "kernel" and "dur" in e:
            grid = e.get("args", {}).get("grid")
            group = groups[(e.get("name", "")[:120], str(grid) if grid is not None else "?")]
            group[0] += 1
            group[1] += e["dur"]
            total += e["dur"]
    rows = sorted(groups.items(), key=lambda kv: -kv[1][1])[:top]
    return [{"kernel": name, "grid": grid, "calls": calls, "ms": _r(us / 1e3, 1),
             "share_of_kernel_time": _r(us / total) if total else None}
            for (name, grid), (calls, us) in rows]


def trace_stats(trace: Path, wall_s: float, main_tid: int | None) -> dict:
    """GPU busy fraction, host-sync time and the costliest kernel launches from a chrome
    trace (µs)."""
    events = json.loads(trace.read_text()).get("traceEvents", [])
    kern, busy = [], []
    main = str(main_tid)
    main_ops = []  # the loop thread's torch ops: how much of the wall it spends inside them
    syncs_main: dict = collections.defaultdict(float)
    syncs_all: dict = collections.defaultdict(float)
    ops_main: dict = collections.defaultdict(float)
    cpu_tids = collections.Counter()
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        cat, name, ts, dur = e.get("cat", ""), e.get("name", ""), e["ts"], e["dur"]
        if cat == "kernel":
            kern.append((ts, ts + dur))
            busy.append((ts, ts + dur))
        elif cat in ("gpu_memcpy", "gpu_memset"):
            busy.append((ts, ts + dur))
        elif cat == "cuda_runtime" or cat == "cuda_driver":
            base = name.split("_ptsz")[0]
            if base in RUNTIME_CALLS:
                syncs_all[base] += dur
                if str(e.get("tid")) == main:
                    syncs_main[base] += dur
        elif cat == "cpu_op":
            cpu_tids[str(e.get("tid"))] += dur
            if str(e.get("tid")) == main:
                main_ops.append((ts, ts + dur))
                if name in SYNC_OPS:
                    ops_main[name] += dur
    wall_us = wall_s * 1e6
    out = {"kernels": len(kern), "kernel_time_s": _r(sum(b - a for a, b in kern) / 1e6),
           "gpu_busy_fraction_kernels": _r(_union(kern) / wall_us) if kern else None,
           "gpu_busy_fraction_kernels_memcpy": _r(_union(busy) / wall_us) if busy else None,
           # syncs (cudaStreamSynchronize / cudaMemcpy behind .cpu()) and launches, in ms
           "cuda_runtime_ms_main_thread": {k: _r(v / 1e3, 1) for k, v in syncs_main.items()},
           "cuda_runtime_ms_all_threads": {k: _r(v / 1e3, 1) for k, v in syncs_all.items()},
           "sync_ops_ms_main_thread": {k: _r(v / 1e3, 1) for k, v in ops_main.items()},
           "main_thread_in_torch_ops_fraction": _r(_union(main_ops) / wall_us) if main_ops
           else None,
           "main_tid_in_trace": main in cpu_tids,
           "kernels_by_launch": kernels_by_launch(events)}
    if main not in cpu_tids:
        out["note"] = "the loop thread's id was not found in the trace: main-thread figures empty"
    return out


# -- py-spy --------------------------------------------------------------------------------------
def pyspy_command() -> list[str] | None:
    """py-spy on PATH, else beside this interpreter or in its scripts folder (pip's wheel
    installs only the executable, no Python module)."""
    import sysconfig

    for exe in (shutil.which("py-spy"), Path(sys.executable).parent / "py-spy",
                Path(sysconfig.get_paths()["scripts"]) / "py-spy"):
        if exe and Path(exe).is_file() and os.access(exe, os.X_OK):
            return [str(exe)]
    return None


def pyspy_window(cmd, data, output, refs, pred, workdir: Path, gil: bool, rate: int) -> dict:
    """py-spy on this process while the loop runs `refs`; samples per thread."""
    raw = workdir / f"pyspy{'-gil' if gil else ''}.txt"
    argv = cmd + ["record", "-p", str(os.getpid()), "-f", "raw", "-o", str(raw), "-r", str(rate),
                  "--threads", "--nonblocking", "-d", "120"] + (["--gil"] if gil else [])
    log = open(workdir / f"{raw.stem}.log", "w+")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(1.5)  # let it attach before the window opens
    if proc.poll() is not None:
        log.seek(0)
        msg = log.read()[-500:]
        log.close()
        return {"error": f"py-spy exited {proc.returncode}: {msg}"}
    names = ThreadNames()
    with names.watch():
        loop = run_loop(data, output, refs, pred)
    proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.seek(0)
    tail = log.read()[-300:]
    log.close()
    if not raw.exists() or raw.stat().st_size == 0:
        return {"error": f"py-spy wrote no samples (rc {proc.returncode}): {tail}", "loop": loop}
    res = parse_collapsed(raw.read_text(), names.names)
    res.update({"loop_under_pyspy": loop, "rate_hz": rate, "gil": gil})
    if loop["wall_s"]:
        # samples / (rate x wall): the mean number of busy (or GIL-holding) cores per thread group
        res["busy_cores"] = {k: _r(v / (rate * loop["wall_s"]), 2)
                             for k, v in res.pop("samples_by_group").items()}
        # with --gil: the fraction of the window in which some Python thread held the GIL
        res["sampled_fraction_of_window"] = _r(res["samples"] / (rate * loop["wall_s"]), 2)
    return res


_THREAD = re.compile(r"thread \((0x[0-9a-fA-F]+|\d+)\)(?::\s*\"?([^\";]*)\"?)?")


def parse_collapsed(text: str, names: dict[int, str]) -> dict:
    """py-spy's raw (collapsed) stacks: 'frame;frame;... count' per line, a 'thread (id)'
    frame first with --threads. Shares of samples per thread group; main thread leaf frames."""
    groups: collections.Counter = collections.Counter()
    leaves: collections.Counter = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        name = None
        for f in frames[:3]:
            m = _THREAD.search(f)
            if m:
                ident = int(m.group(1), 0)
                name = names.get(ident) or (m.group(2) or "").strip() or f"tid {m.group(1)}"
                break
        g = group(name) if name else "unknown"
        groups[g] += n
        total += n
        if g == "main":
            leaf = frames[-1]
            leaves[re.sub(r"\s+", " ", leaf)[:90]] += n
    return {"samples": total,
            "share_by_thread": {k: _r(v / total) for k, v in groups.most_common()} if total
            else {},
            "samples_by_group": dict(groups),
            "main_top_leaves": [{"frame": k, "share_of_main": _r(v / max(groups["main"], 1))}
                                for k, v in leaves.most_common(10)]}


# -- model-only ceilings ---------------------------------------------------------------------
class AttemptTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """SIGALRM in the main thread: interrupts a long compile between Python bytecodes."""
    def handler(signum, frame):
        raise AttemptTimeout(f"over {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def cuda_fps(fn, frames: int, warm: int = 2, reps: int = 5) -> dict:
    sec = cuda_median(fn, warm, reps)
    return {"s_per_chunk": _r(sec, 4), "fps": _r(frames / sec, 1)}


def wall_median(fn, frames: int, warm: int = 1, reps: int = 3) -> dict:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()  # returns host arrays: synchronised
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    return {"s": _r(sec, 4), "fps": _r(frames / sec, 1)}


def _feature_diff(out, ref) -> dict:
    diff = max(float((out[k].float() - ref[k].float()).abs().max()) for k in ref)
    scale = max(float(ref[k].float().abs().max()) for k in ref)
    return {"max_abs_diff": _r(diff, 5), "max_abs_ref": _r(scale, 3)}


def model_section(pred, chunk, video, budget_s: float) -> dict:
    """Model-only fps on one device-resident chunk, variants of the backbone, then the
    predictor's own calls. Each attempt guarded; stops when the budget is spent."""
    import torch

    t_start = time.monotonic()
    out: dict = {"chunk_frames": len(chunk), "budget_s": budget_s, "attempts": {}}
    backbone, head = pred.model.backbone, pred.model.sem_seg_head
    bf16 = torch.autocast("cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        x, _ = pred._preprocess_fast(chunk)
    x = x.clone()  # a normal tensor (not an inference tensor) for compile and graphs
    with torch.no_grad():
        ref = {k: v.clone() for k, v in backbone(x).items()}

    def attempt(name: str, setup, min_left: float = 5.0, cap: float = 150.0):
        left = budget_s - (time.monotonic() - t_start)
        if left < min_left:
            out["attempts"][name] = {"skipped": f"budget: {left:.0f} s left, needs ~{min_left:.0f}"}
            return
        row: dict = {}
        t0 = time.monotonic()
        try:
            with time_limit(min(left, cap)), torch.no_grad():
                fwd_backbone, ctx = setup()  # -> callable x -> features, autocast context
                with ctx:
                    feats = fwd_backbone(x)
                    torch.cuda.synchronize()
                    row["setup_s"] = _r(time.monotonic() - t0, 1)
                    row.update(_feature_diff(feats, ref))
                    row.update(cuda_fps(lambda: head(fwd_backbone(x)), len(chunk)))
        except Exception as exc:  # noqa: BLE001 - record and go on
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            row["after_s"] = _r(time.monotonic() - t0, 1)
        out["attempts"][name] = row
        print(f"model {name}: {row}", flush=True)

    nullctx = contextlib.nullcontext
    attempt("eager_fp32", lambda: (backbone, nullctx()))
    attempt("eager_bf16", lambda: (backbone, bf16))

    def graphed(ctx_factory):
        def setup():
            static_x = x.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s), ctx_factory():
                for _ in range(3):
                    backbone(static_x)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g), ctx_factory():
                static_out = backbone(static_x)

            def run(inp):
                static_x.copy_(inp)
                g.replay()
                return static_out
            return run, ctx_factory()
        return setup

    attempt("cudagraph_backbone_fp32", graphed(nullctx), min_left=10)
    attempt("cudagraph_backbone_bf16",
            graphed(lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)),
            min_left=10)
    compiled = {}

    def compile_setup(mode, ctx):
        def setup():
            torch._dynamo.reset()
            key = mode or "default"
            compiled[key] = torch.compile(backbone, mode=mode) if mode else torch.compile(
                backbone)
            return compiled[key], ctx
        return setup

    attempt("compile_default_fp32", compile_setup(None, nullctx()), min_left=40)
    attempt("compile_default_bf16", compile_setup(None, torch.autocast(
        "cuda", dtype=torch.bfloat16)), min_left=40)

    def channels_last(ctx):
        def setup():
            backbone.to(memory_format=torch.channels_last)

            def run(inp):
                return backbone(inp.contiguous(memory_format=torch.channels_last))
            return run, ctx
        return setup

    attempt("channels_last_fp32", channels_last(nullctx()))
    attempt("channels_last_bf16", channels_last(torch.autocast("cuda", dtype=torch.bfloat16)))
    backbone.to(memory_format=torch.contiguous_format)
    attempt("compile_max_autotune_no_cudagraphs_fp32",
            compile_setup("max-autotune-no-cudagraphs", nullctx()), min_left=90)
    torch._dynamo.reset()
    # the predictor's own calls (eager, as the loop runs them): host I/O and stitching included
    try:
        out["predict_clip_with_host_io"] = wall_median(lambda: pred.predict_clip(chunk),
                                                       len(chunk), reps=5)
        out["predict_one_video"] = {"frames": len(video), **wall_median(
            lambda: pred.predict(video), len(video))}
    except Exception as exc:  # noqa: BLE001
        out["predict_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    full_graphs(out, backbone, head, x, budget_s - (time.monotonic() - t_start))
    out["section_s"] = _r(time.monotonic() - t_start, 1)
    return out


def _tensors(d: dict) -> dict:
    return {k: v for k, v in d.items() if hasattr(v, "float")}


def full_graphs(out: dict, backbone, head, x, left: float) -> None:
    """Last: the whole forward (backbone + head) as one CUDA graph. The head may hold host
    syncs that capture refuses; run after every other figure so a failure spoils none."""
    import torch

    t_start = time.monotonic()
    with torch.no_grad():
        ref = {k: v.clone() for k, v in _tensors(head(backbone(x))).items()}
    for name, factory in (("cudagraph_full_fp32", contextlib.nullcontext),
                          ("cudagraph_full_bf16", lambda: torch.autocast(
                              "cuda", dtype=torch.bfloat16, cache_enabled=False))):
        rest = left - (time.monotonic() - t_start)
        if rest < 10:
            out["attempts"][name] = {"skipped": f"budget: {rest:.0f} s left, needs ~10"}
            continue
        t0 = time.monotonic()
        try:
            with time_limit(min(rest, 60)), torch.no_grad():
                static_x = x.clone()
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s), factory():
                    for _ in range(3):
                        head(backbone(static_x))
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g), factory():
                    static_out = _tensors(head(backbone(static_x)))
                g.replay()
                torch.cuda.synchronize()
                row = {"setup_s": _r(time.monotonic() - t0, 1),
                       "agreement_on": "head outputs", **_feature_diff(static_out, ref),
                       **cuda_fps(g.replay, len(x))}
            del g, static_out
        except Exception as exc:  # noqa: BLE001 - record and go on
            row = {"error": f"{type(exc).__name__}: {str(exc)[:300]}",
                   "after_s": _r(time.monotonic() - t0, 1)}
        out["attempts"][name] = row
        print(f"model {name}: {row}", flush=True)


# -- main ----------------------------------------------------------------------------------------
def build(backend: str):
    os.environ["WSOVVIS_PREDICTOR"] = backend
    if backend == "videocutler":
        os.environ.setdefault("WSOVVIS_GPUS", "0")
        if not os.environ.get("WSOVVIS_VIDEOCUTLER_WEIGHTS"):
            os.environ["WSOVVIS_ALLOW_RANDOM_WEIGHTS"] = "1"
    return build_from_env()


def summary_lines(r: dict) -> list[str]:
    lines = [f"build {r['build_s']} s on {r['device']}; steady loop {r['loop'].get('fps')} fps "
             f"(predict share {r['loop'].get('predict_share_of_wall')}, per video: decode "
             f"{r['loop'].get('mean_decode_s')} predict {r['loop'].get('mean_predict_s')} "
             f"write {r['loop'].get('mean_write_s')} s)"]
    p = r.get("profiler", {})
    if "wall_s" in p:
        lines.append(f"profiler: gpu busy {p.get('gpu_busy_fraction_kernels')} (kernels) / "
                     f"{p.get('gpu_busy_fraction_kernels_memcpy')} (+memcpy) of "
                     f"{p['wall_s']} s; kernel time {p.get('kernel_time_s')} s; main thread in "
                     f"torch ops {p.get('main_thread_in_torch_ops_fraction')}, cuda runtime "
                     f"{p.get('cuda_runtime_ms_main_thread')} ms")
        lines.append("  top self cpu: " + ", ".join(f"{o['op']} {o['self_cpu_ms']}"
                                                     for o in p["top_self_cpu"][:6]))
        if isinstance(p.get("top_self_cuda"), list):
            lines.append("  top self cuda: " + ", ".join(f"{o['op']} {o['self_cuda_ms']}"
                                                          for o in p["top_self_cuda"][:6]))
    elif p:
        lines.append(f"profiler: {p}")
    for key in ("pyspy", "pyspy_gil"):
        s = r.get(key)
        if isinstance(s, dict) and "share_by_thread" in s:
            lines.append(f"{key}: shares {s['share_by_thread']} busy cores {s.get('busy_cores')}"
                         f" (sampled {s.get('sampled_fraction_of_window')} of the window)")
            lines.append("  main leaves: " + ", ".join(f"{x['frame'][:50]} {x['share_of_main']}"
                                                       for x in s["main_top_leaves"][:4]))
        elif s is not None:
            lines.append(f"{key}: {s}")
    m = r.get("model", {})
    if "attempts" in m:
        lines.append("model fps: " + ", ".join(
            f"{k} {v.get('fps', v.get('error', v.get('skipped')))}"
            for k, v in m["attempts"].items()))
        lines.append(f"predict_clip {m.get('predict_clip_with_host_io')} predict(video) "
                     f"{m.get('predict_one_video')}; eager fp32 bounds the loop at "
                     f"{m.get('loop_bound_fps_eager_fp32')} fps "
                     f"({m.get('frames_computed_per_video')} frames computed per video)")
    elif m:
        lines.append(f"model: {m}")
    return lines


def compare_loops(command: list[str], codes: list[tuple[str, Path]], repeat: int,
                  json_path: Path | None, note: str | None) -> list[dict]:
    """The steady loop of each checkout's run (`gpu_common.run_with_codes`), side by side, with
    its fps as a ratio of the first checkout's mean."""
    runs = run_with_codes("benchmarks.gpu_profile", strip_code_args(command), codes, repeat,
                          "gpu_profile.json")
    rows = [{"code": label, "round": round_, "build_s": res.get("build_s"), **res["loop"]}
            for label, round_, res in runs]
    first = [r["fps"] for r in rows if r["code"] == codes[0][0]]
    base = sum(first) / len(first)
    for r in rows:
        r["fps_vs_" + codes[0][0]] = round(r["fps"] / base, 3)
    columns = ("code", "round", "fps", f"fps_vs_{codes[0][0]}", "mean_predict_s",
               "mean_decode_s", "mean_write_s", "predict_share_of_wall", "frames")
    report_codes(rows, columns, json_path, benchmark="gpu_loop_codes",
                 title="The mask loop on one GPU with two codes, side by side",
                 measures="library: `segment_videos` in one fresh process per run (model built "
                          "first), the steady loop after a warm-up video; rounds alternating "
                          "between the codes",
                 command=command, codes=codes, repeat=repeat, note=note,
                 conditions=f"{GPU_CONDITIONS}; chunk 64 / overlap 8, confidence 0.6")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="videocutler", choices=["videocutler", "cpu"],
                    help="videocutler (GPU, random weights unless WSOVVIS_VIDEOCUTLER_WEIGHTS) "
                    "or the embedded cpu predictor (dry run)")
    ap.add_argument("--frames", type=Path, help="folder of JPEGs (default: synthetic frames)")
    ap.add_argument("--size", default="360x640", help="HxW of synthetic frames (no --frames)")
    ap.add_argument("--videos", type=int, default=6,
                    help="videos made: 1 warm-up, 2 profiled, the rest (>= 1) for the steady "
                    "loop and the py-spy windows")
    ap.add_argument("--length", type=int, default=200, help="frames per video")
    ap.add_argument("--skip", default="", help=f"comma list of: {', '.join(SECTIONS)}")
    ap.add_argument("--model-budget-s", type=float, default=180.0,
                    help="wall budget of the model section; later attempts are skipped")
    ap.add_argument("--pyspy-rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for gpu_profile.json (default: a temp folder)")
    ap.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                    help="also run with this checkout's code; loops printed side by side")
    ap.add_argument("--repeat", type=int, default=1, help="rounds, with --code")
    ap.add_argument("--kernels-of", type=Path, metavar="TRACE",
                    help="print the kernels of a saved chrome trace (e.g. "
                    "gpu_profile_trace.json.gz) ranked by device time per launch grid, as "
                    "JSON, and exit")
    add_json_args(ap)
    args = ap.parse_args(argv)
    if args.kernels_of:
        opener = gzip.open if args.kernels_of.suffix == ".gz" else open
        with opener(args.kernels_of, "rt") as fh:
            events = json.load(fh).get("traceEvents", [])
        print(json.dumps(kernels_by_launch(events), indent=1))
        return 0
    if args.code:
        command = list(sys.argv[1:] if argv is None else argv)
        compare_loops(command, code_checkouts(args.code, REPO), args.repeat, args.json,
                      args.note)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(SECTIONS):
        ap.error(f"unknown --skip {sorted(skip - set(SECTIONS))}")
    if args.videos < 4:
        ap.error("--videos must be >= 4 (warm-up, 2 profiled, 1 steady)")
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="wsovvis-gpu-profile-out-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="wsovvis-gpu-profile-"))
    height, width = (int(v) for v in args.size.split("x"))
    files = source_frames(args.frames, workdir, height, width)
    data = workdir / "data"
    refs = make_videos(data, files, args.videos, args.length, "prof")
    pred, device, build_s = build(args.backend)
    cuda = device.startswith("cuda")
    result: dict = {"backend": args.backend, "device": device, "build_s": _r(build_s, 1),
                    "videos": args.videos, "length": args.length, "skip": sorted(skip),
                    "frames_source": str(args.frames or "synthetic")}
    if cuda:
        import torch
        result["torch"] = torch.__version__
        result["gpu"] = torch.cuda.get_device_name(0)

    def save():
        write_gpu_result(
            out_dir / "gpu_profile.json", benchmark="gpu_profile", results=result,
            title="Where the asset's loop spends its time on one GPU (profilers) and model-only "
                  "attempts (compile, CUDA graphs, channels-last, bf16)",
            measures="library: `segment_videos` in one process, under torch.profiler and py-spy "
                     "(plain and --gil); model alone on one device-resident chunk",
            conditions=f"{GPU_CONDITIONS}; chunk 64 / overlap 8, confidence 0.6")

    warm, profiled, steady = refs[:1], refs[1:3], refs[3:]
    with GpuSampler() as sampler:
        result["warm"] = run_loop(data, workdir / "out-warm", warm, pred)
        result["loop"] = run_loop(data, workdir / "out-steady", steady, pred)
        print(f"steady loop: {result['loop']}", flush=True)
        save()
        if "profiler" in skip:
            result["profiler"] = {"skipped": "--skip profiler"}
        else:
            try:
                result["profiler"] = profile_loop(data, workdir / "out-prof", profiled, pred,
                                                  cuda, workdir, out_dir)
            except Exception as exc:  # noqa: BLE001 - the other sections still run
                result["profiler"] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
        save()
        if "pyspy" in skip:
            result["pyspy"] = {"skipped": "--skip pyspy"}
        elif (cmd := pyspy_command()) is None:
            result["pyspy"] = {"skipped": "py-spy missing"}
        else:
            for key, gil in (("pyspy", False), ("pyspy_gil", True)):
                try:
                    result[key] = pyspy_window(cmd, data, workdir / f"out-{key}", steady, pred,
                                               workdir, gil, args.pyspy_rate)
                except Exception as exc:  # noqa: BLE001
                    result[key] = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
                save()
        if "model" in skip:
            result["model"] = {"skipped": "--skip model"}
        elif not cuda:
            result["model"] = {"skipped": "CUDA-only: the cpu backend has no torch model on a "
                               "GPU (CUDA events, graphs, compile for CUDA)"}
        else:
            from wsovvis_dagster.predictors.chunking import chunk_spans
            from wsovvis_dagster.video.frames import read_video

            video = read_video(data, refs[-1]).images
            chunk = video[:pred.settings.chunk_size]
            result["model"] = model_section(pred, chunk, video, args.model_budget_s)
            # what the eager model alone allows the loop: a video computes its overlaps twice
            spans = chunk_spans(len(video), pred.settings.chunk_size,
                                pred.settings.chunk_overlap)
            computed = sum(b - a for a, b in spans)
            eager = result["model"]["attempts"].get("eager_fp32", {}).get("fps")
            result["model"]["frames_computed_per_video"] = computed
            result["model"]["loop_bound_fps_eager_fp32"] = _r(
                eager * len(video) / computed, 1) if eager else None
        result["peak_smi_gib"] = sampler.peak_gib()
    save()
    for line in summary_lines(result):
        print(line)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
