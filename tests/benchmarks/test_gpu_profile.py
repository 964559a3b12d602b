"""benchmarks/gpu_profile.py's dry run: the embedded CPU predictor through the same sections
the GPU run takes (loop, torch.profiler, py-spy when installed), CUDA-only parts skipped
with their reason."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_cpu_dry_run_writes_every_section(tmp_path):
    pytest.importorskip("torch")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_profile", "--backend", "cpu",
         "--size", "96x128", "--videos", "4", "--length", "12", "--skip", "model",
         "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    envelope = json.loads((tmp_path / "gpu_profile.json").read_text())
    assert envelope["benchmark"] == "gpu_profile"
    assert envelope["context"]["command"].startswith("python -m benchmarks.gpu_profile --backend")
    result = envelope["results"]
    assert {"loop", "warm", "profiler", "pyspy", "model", "device"} <= set(result)
    assert result["device"] == "cpu"
    # the steady loop is the last videos - 3 videos, each fully segmented
    assert result["loop"]["videos"] == 1 and result["loop"]["frames"] == 12
    assert result["loop"]["fps"] > 0
    prof = result["profiler"]
    assert "error" not in prof, prof
    assert prof["loop_under_profiler"]["frames"] == 24  # the two profiled videos
    assert prof["activities"] == ["CPU"] and prof["kernels"] == 0
    assert result["model"] == {"skipped": "--skip model"}
    spy = result["pyspy"]
    # py-spy is optional: missing, refused by ptrace (error recorded), or per-thread shares
    assert "skipped" in spy or "error" in spy or spy["share_by_thread"].get("main", 0) > 0, spy


def test_code_mode_runs_each_checkout_and_writes_the_loops_side_by_side(tmp_path):
    """`--code LABEL=DIR`: one run per checkout and round (here this checkout twice, under two
    labels), each its own process, rows with the fps ratio to the first checkout."""
    pytest.importorskip("torch")
    out = tmp_path / "codes.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_profile", "--backend", "cpu",
         "--size", "96x128", "--videos", "4", "--length", "6",
         "--skip", "profiler,pyspy,model", "--code", f"first={REPO}", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    envelope = json.loads(out.read_text())
    assert envelope["benchmark"] == "gpu_loop_codes"
    rows = envelope["results"]["rows"]
    assert [(r["code"], r["round"]) for r in rows] == [("first", 0), ("this", 0)]
    assert all(r["frames"] == 6 and r["fps"] > 0 for r in rows)
    assert rows[0]["fps_vs_first"] == 1.0
    assert rows[1]["fps_vs_first"] == round(rows[1]["fps"] / rows[0]["fps"], 3)
    assert set(envelope["context"]["sizes"]["codes"]) == {"first", "this"}
    assert "fps_vs_first" in proc.stdout  # the side-by-side table


def test_kernels_of_a_saved_trace_are_ranked_by_device_time_per_launch_grid(tmp_path):
    """`--kernels-of`: the same kernel on a 1-block grid and on a full grid are two rows, most
    device time first, with shares of all kernel time; CPU ops are not kernels."""
    def kernel(name, grid, dur):
        return {"ph": "X", "cat": "kernel", "name": name, "dur": dur, "args": {"grid": grid}}

    events = [kernel("upsample", [1, 1, 1], 300), kernel("upsample", [1, 1, 1], 300),
              kernel("upsample", [240, 1, 1], 50), kernel("gemm", [30, 4, 1], 350),
              {"ph": "X", "cat": "cpu_op", "name": "aten::add", "dur": 999}]
    trace = tmp_path / "gpu_profile_trace.json.gz"
    with gzip.open(trace, "wt") as fh:
        json.dump({"traceEvents": events}, fh)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_profile", "--kernels-of",
                           str(trace)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert [(r["kernel"], r["grid"], r["calls"]) for r in rows] == [
        ("upsample", "[1, 1, 1]", 2), ("gemm", "[30, 4, 1]", 1), ("upsample", "[240, 1, 1]", 1)]
    assert rows[0]["ms"] == 0.6 and rows[0]["share_of_kernel_time"] == 0.6
    assert sum(r["share_of_kernel_time"] for r in rows) == pytest.approx(1.0)
