"""A DAGSTER_HOME from the project template, and a `dagster-daemon` to run on it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def render_instance(home: Path, *, gpu_limit: int = 4, extra_yaml: str = "") -> Path:
    """Write `<home>/dagster.yaml` from the project template, plus `extra_yaml` overrides."""
    import yaml

    home.mkdir(parents=True, exist_ok=True)
    template = (REPO / "dagster_home" / "dagster.yaml").read_text()
    config = yaml.safe_load(template.replace("@GPU_LIMIT@", str(gpu_limit)))
    for key, value in (yaml.safe_load(extra_yaml) or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_daemon(env: dict, log_path: Path) -> subprocess.Popen:
    """`dagster-daemon run -w workspace.yaml` from the repo root, in its own process group."""
    return subprocess.Popen(
        ["dagster-daemon", "run", "-w", "workspace.yaml"], cwd=REPO, env=env,
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_daemon(proc: subprocess.Popen) -> None:
    """SIGTERM the daemon's process group (daemon, code server, run workers), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_for(predicate, *, timeout: float, poll: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
