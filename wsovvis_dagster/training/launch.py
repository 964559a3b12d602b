"""Launching any Sacred script under `torchrun` in a subprocess, and reading back its run.

`sacred_command` builds
`python -m torch.distributed.run --standalone --nproc_per_node=N --tee=3 -m
wsovvis_dagster.training.rank_entry (SCRIPT | -m MODULE) -F <runs_dir> --id <id> with
[CONFIG] key=value ...` (rank_entry keeps the observer on rank 0 only). `launch_sacred` runs it,
hands rank 0's and torchrun's output lines to a callback as they come (`--tee` prefixes each
rank's lines with `[default<rank>]:`), streams new values of Sacred's `metrics.json` to another,
and returns the run's record. A failed job raises `TrainingFailedError` with the traceback of
the rank that failed first.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsovvis_dagster.errors import WsovvisError
from wsovvis_dagster.gpu.leases import physical_gpu_id, proc_stat
from wsovvis_dagster.training.errors import TrainingFailedError
from wsovvis_dagster.training.rank_entry import ERRORS_DIR_ENV

LOG_TAIL_LINES = 80
REFERENCE_ENTRYPOINT = "-m wsovvis_dagster.training"
_RANK_PREFIX = re.compile(r"^\[default(\d+)\]:(.*)$")


class LaunchError(WsovvisError, ValueError):
    """A launch request that cannot be met (e.g. more GPU processes than GPUs)."""


@dataclass(frozen=True)
class LaunchPlan:
    """How many processes, on which kind of device."""

    nproc: int
    device: str  # "cuda" | "cpu"

    @property
    def uses_gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def backend(self) -> str:
        return "nccl" if self.uses_gpu else "gloo"


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


DEFAULT_CPU_PROCESSES = 2


def plan_launch(nproc: int, device: str = "auto", *, gpus: int | None = None) -> LaunchPlan:
    """One process per GPU when GPUs are used (`auto` uses them when present), else CPU
    processes. `nproc` 0 means every GPU, or `DEFAULT_CPU_PROCESSES` (at most one per core)
    on CPU."""
    gpus = cuda_device_count() if gpus is None else gpus
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device not in ("cuda", "cpu"):
        raise LaunchError(f"device {device!r}: use auto, cuda or cpu")
    if device == "cpu":
        return LaunchPlan(nproc or min(DEFAULT_CPU_PROCESSES, os.cpu_count() or 1), "cpu")
    if gpus == 0:
        raise LaunchError("device cuda was asked for, but this machine has no CUDA device: "
                          "use device: auto or cpu")
    if nproc > gpus:
        raise LaunchError(f"nproc {nproc} exceeds the {gpus} GPUs here: one process per GPU")
    return LaunchPlan(nproc or gpus, "cuda")


def parse_entrypoint(entrypoint: str) -> list[str]:
    """'-m pkg.module' -> ['-m', 'pkg.module']; 'path/train.py' -> ['path/train.py']."""
    parts = shlex.split(entrypoint or REFERENCE_ENTRYPOINT)
    if (len(parts) == 2 and parts[0] == "-m") or (len(parts) == 1 and not parts[0].startswith("-")):
        return parts
    raise LaunchError(f"entrypoint {entrypoint!r}: give a script path (train_wsovvis.py) or "
                      "'-m package.module'")


def sacred_updates(values: Mapping[str, Any]) -> list[str]:
    """`key=value` Sacred updates; values as Python literals, which Sacred parses back."""
    return [f"{key}={value!r}" for key, value in values.items()]


def sacred_command(entry: list[str], *, nproc: int, config_file: str | Path | None = None,
                   updates: list[str] = (), runs_dir: str | Path | None = None,
                   run_id: str | None = None, beat_interval_s: float = 2.0,
                   python: str = sys.executable) -> list[str]:
    """The torchrun command line for one Sacred run of `entry` (later updates win)."""
    # no runs_dir: the script's own observer, which then names the run `run_id` too
    options = (["-F", str(runs_dir)] if runs_dir else []) + (["--id", run_id] if run_id else [])
    with_args = ([str(config_file)] if config_file else []) + list(updates)
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "--tee=3", "-m", "wsovvis_dagster.training.rank_entry", *entry, *options,
            "--beat-interval", str(beat_interval_s), *(["with", *with_args] if with_args else [])]


def last_traceback(lines: list[str]) -> str:
    """The last Python traceback in `lines` (to the end), or ''."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call")]
    return "\n".join(lines[starts[-1]:]) if starts else ""


def failure_message(returncode: int, errors_dir: Path, tail: list[str],
                    rank_lines: Mapping[int, list[str]] | None = None) -> str:
    """The first failing rank's traceback (from `errors_dir`, else from that rank's output),
    else the log's tail."""
    reports = []
    for path in sorted(Path(errors_dir).glob("rank*.json")):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    if reports:
        first = min(reports, key=lambda r: r["time"])
        others = sorted(r["rank"] for r in reports if r is not first)
        also = f"; ranks {others} failed after it" if others else ""
        trace = first.get("traceback") or last_traceback(
            list((rank_lines or {}).get(first["rank"], []))) or "\n".join(tail)
        return (f"training failed (torchrun exit code {returncode}): rank {first['rank']} "
                f"failed first{also}. Its traceback:\n{trace}")
    return (f"training failed (torchrun exit code {returncode}) before any rank reported an "
            "error; last lines of its output:\n" + "\n".join(tail[-LOG_TAIL_LINES:]))


@dataclass
class SacredRun:
    """What one Sacred run left in its FileStorageObserver folder."""

    run_id: str
    run_dir: Path
    status: str = ""
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    result: Any = None
    metrics: dict[str, dict] = field(default_factory=dict)  # name -> {steps, values}
    command: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    """`path` parsed, or None while it is missing or half written (Sacred writes in place)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_sacred_run(run_dir: Path, run_id: str) -> SacredRun:
    run = _read_json(run_dir / "run.json") or {}
    return SacredRun(
        run_id=run_id, run_dir=run_dir, status=run.get("status", ""),
        config=_read_json(run_dir / "config.json") or {},
        info=_read_json(run_dir / "info.json") or {}, result=run.get("result"),
        metrics=_read_json(run_dir / "metrics.json") or {},
    )


class _MetricStream:
    """Calls `on_metric(name, step, value)` once for each value Sacred adds to metrics.json."""

    def __init__(self, path: Path, on_metric: Callable[[str, int, float], None]) -> None:
        self.path, self.on_metric, self.seen = path, on_metric, {}

    def poll(self) -> None:
        metrics = _read_json(self.path) or {}
        for name, series in metrics.items():
            done = self.seen.get(name, 0)
            for step, value in list(zip(series["steps"], series["values"], strict=False))[done:]:
                self.on_metric(name, step, value)
            self.seen[name] = max(done, len(series["values"]))


def launch_sacred(
    command: list[str], *, run_dir: Path, errors_dir: Path,
    on_line: Callable[[str], None] = lambda line: None,
    on_metric: Callable[[str, int, float], None] = lambda name, step, value: None,
    env: Mapping[str, str] | None = None, cwd: Path | None = None, poll_s: float = 1.0,
) -> SacredRun:
    """Run the torchrun job `command` to completion; its Sacred run lives in `run_dir`.

    Streams rank 0's and torchrun's output lines to `on_line` and new metric values to
    `on_metric`. Raises `TrainingFailedError` naming the rank that failed first. If the caller
    is interrupted, the job and its ranks are stopped.
    """
    errors_dir = Path(errors_dir)
    errors_dir.mkdir(parents=True, exist_ok=True)
    for old in errors_dir.glob("rank*.json"):
        old.unlink()
    proc_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1",
                ERRORS_DIR_ENV: str(errors_dir)}
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    rank_lines: dict[int, deque[str]] = {}
    stream = _MetricStream(Path(run_dir) / "metrics.json", on_metric)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=proc_env, cwd=cwd, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # a thread, so that metrics are polled while no line comes
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        next_poll = time.monotonic() + poll_s
        while True:
            try:
                line = lines.get(timeout=poll_s)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                tail.append(line)
                match = _RANK_PREFIX.match(line)
                if match:
                    rank = int(match.group(1))
                    rank_lines.setdefault(rank, deque(maxlen=400)).append(match.group(2))
                if not match or match.group(1) == "0":
                    on_line(line)
            if time.monotonic() >= next_poll:
                stream.poll()
                next_poll = time.monotonic() + poll_s
        returncode = proc.wait()
    finally:
        _stop(proc)
    stream.poll()
    if returncode != 0:
        raise TrainingFailedError(failure_message(
            returncode, errors_dir, list(tail), {r: list(v) for r, v in rank_lines.items()}))
    run = read_sacred_run(Path(run_dir), Path(run_dir).name)
    run.command = command
    if not run.status:
        raise TrainingFailedError(
            f"torchrun exited 0 but Sacred wrote no run in {run_dir} (does the script run "
            "`ex.run_commandline()` / `@ex.automain`?); last lines:\n" + "\n".join(tail))
    return run


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux `/proc`). torchrun starts each rank in a session
    of its own, so signalling torchrun's process group does not reach the ranks."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = proc_stat(int(entry.name))
        if stat is None:  # gone, or read mid-exit
            continue
        children.setdefault(int(stat[1][1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and its descendants, ranks first (the processes this module started)."""
    for p in reversed(process_tree(pid)):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            continue


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Stop a torchrun job that this module started: SIGTERM (torchrun stops its ranks), then
    SIGKILL to torchrun and every rank if it is still running after `grace_s`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.wait()


def visible_devices(indices: list[int], parent: str | None = None) -> str:
    """CUDA_VISIBLE_DEVICES for the job: `indices` as this process numbers them, mapped
    through this process's own CUDA_VISIBLE_DEVICES (`parent`) when it has one."""
    env = {"CUDA_VISIBLE_DEVICES": parent or ""}
    return ",".join(physical_gpu_id(i, env) for i in indices)
