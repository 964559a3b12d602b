"""Launching the trainer as a `torchrun` job in a subprocess, and reading back what it did.

`launch_training` writes the run's full config as YAML, starts
`python -m torch.distributed.run --standalone --nproc_per_node=N -m wsovvis_dagster.training
with <config>`, hands every output line to a callback as it comes (torchrun's `--tee` prefixes
each with `[default<rank>]:`), and returns rank 0's `summary.json`. A failed job raises
`TrainingFailedError` with the traceback of the rank that failed first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from wsovvis_dagster.atomic import atomic_file
from wsovvis_dagster.errors import WsovvisError
from wsovvis_dagster.training.errors import TrainingFailedError

LOG_TAIL_LINES = 80


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


def write_launch_config(base: Path, overrides: dict, dest: Path) -> Path:
    """`base` YAML updated with `overrides`, written atomically to `dest`."""
    config = yaml.safe_load(Path(base).read_text()) or {}
    config.update(overrides)
    with atomic_file(dest) as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return Path(dest)


def torchrun_command(config_path: Path, nproc: int, *, python: str = sys.executable) -> list[str]:
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "--tee=3", "-m", "wsovvis_dagster.training", "with", str(config_path)]


def failure_message(returncode: int, work_dir: Path, tail: list[str]) -> str:
    """The first failing rank's traceback (from `<work_dir>/errors/`), else the log's tail."""
    reports = []
    for path in sorted(Path(work_dir, "errors").glob("rank*.json")):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    if reports:
        first = min(reports, key=lambda r: r["time"])
        others = sorted(r["rank"] for r in reports if r is not first)
        also = f"; ranks {others} failed after it" if others else ""
        return (f"training failed (torchrun exit code {returncode}): rank {first['rank']} "
                f"failed first{also}. Its traceback:\n{first['traceback']}")
    return (f"training failed (torchrun exit code {returncode}) before any rank reported an "
            "error; last lines of its output:\n" + "\n".join(tail[-LOG_TAIL_LINES:]))


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux `/proc`). torchrun starts each rank in a session
    of its own, so signalling torchrun's process group does not reach the ranks."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
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


def launch_training(
    config_path: Path, *, nproc: int, work_dir: Path,
    on_line: Callable[[str], None] = lambda line: None,
    env: dict[str, str] | None = None, cwd: Path | None = None,
) -> dict:
    """Run the torchrun job for `config_path` (whose `work_dir` is `work_dir`) to completion.

    Returns rank 0's summary (see `fit.fit_and_evaluate`, plus `sacred` and `command`).
    Raises `TrainingFailedError` naming the failing rank. If the caller is interrupted, the
    job's process group is terminated.
    """
    work_dir = Path(work_dir)
    summary_path = work_dir / "summary.json"
    shutil.rmtree(work_dir / "errors", ignore_errors=True)
    summary_path.unlink(missing_ok=True)
    command = torchrun_command(config_path, nproc)
    proc_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=proc_env, cwd=cwd, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            on_line(line)
        returncode = proc.wait()
    finally:
        _stop(proc)
    if returncode != 0:
        raise TrainingFailedError(failure_message(returncode, work_dir, list(tail)))
    if not summary_path.is_file():
        raise TrainingFailedError(
            f"torchrun exited 0 but rank 0 wrote no {summary_path}; last lines:\n"
            + "\n".join(tail))
    summary = json.loads(summary_path.read_text())
    summary["command"] = command
    return summary
