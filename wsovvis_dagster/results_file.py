"""The one writer of a measurement's result file (`benchmarks/results/<name>.json`).

Every benchmark and `wsovvis quality --json` write the same envelope:
`{"benchmark", "title", "measures", "context", "results"}`:
- `measures`: which path the figures come from (a Dagster run / the CLI, i.e. the product path,
  or a library call, i.e. a ceiling the product path approaches);
- `context`: how to reproduce and read them: the command, the date, the machine, library
  versions, the sizes the run used and, where a run could not record its machine itself (the
  GPU calls), `conditions` in words;
- `results`: the figures, as the command printed them.

`benchmarks/render_docs.py` renders README.md and docs/ from these files, so no figure is
typed by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

from wsovvis_dagster.atomic import atomic_file

VERSIONED = ("numpy", "cv2", "pycocotools", "torch", "dagster")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> str | None:
    """The first CUDA device's name, when torch is already loaded and sees one."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # a broken driver must not lose the figures
        return None
    return None


def run_context(command: str, *, sizes: dict | None = None, note: str | None = None,
                conditions: str | None = None) -> dict:
    """The conditions of this run: command, date, machine (cores, CPU, GPU, load), the versions
    of the libraries loaded, the sizes it used, and how to read it (`note`, `conditions`)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    machine = {"cores": os.cpu_count(), "cpu": _cpu_model(),
               "system": f"{platform.system()} {platform.release()}", "load_avg": load,
               "nice": os.nice(0)}
    if (gpu := _gpu()) is not None:
        machine["gpu"] = gpu
    versions = {"python": platform.python_version()}
    for module in VERSIONED:
        mod = sys.modules.get(module)
        if mod is not None and getattr(mod, "__version__", None):
            versions[module] = str(mod.__version__)
    ctx = {"command": command,
           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine, "versions": versions}
    if sizes is not None:
        ctx["sizes"] = sizes
    if conditions:
        ctx["conditions"] = conditions
    if note:
        ctx["note"] = note
    return ctx


def write_results_file(path: str | Path, *, benchmark: str, title: str, measures: str,
                       context: dict, results: object) -> None:
    """Write one result file atomically (a reader never sees half a file)."""
    doc = {"benchmark": benchmark, "title": title, "measures": measures, "context": context,
           "results": results}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as fh:
        fh.write(json.dumps(doc, indent=1, default=str) + "\n")
