"""What every CPU benchmark's `--json PATH` writes: its figures plus what is needed to read them.

A result file is `{"benchmark", "title", "measures", "context", "results"}`:
- `measures`: which path the figures come from (a Dagster run / the CLI, i.e. the product path,
  or a library call, i.e. a ceiling the product path approaches);
- `context`: the command line, the machine (cores, CPU model, load), Python and library versions,
  the date and the sizes the run used;
- `results`: the figures, as the script printed them.

`benchmarks/render_docs.py` turns every file under `benchmarks/results/` into
`docs/benchmarks.md`, so the doc cannot drift from the measurements.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

from wsovvis_dagster.atomic import atomic_file

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    mod = sys.modules.get(module)
    return getattr(mod, "__version__", None) if mod is not None else None


def _command(argv: list[str]) -> str:
    """`python <script relative to the repo> args...`: what to type to reproduce the run
    (`--note`, recorded on its own, left out)."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--note":
            del argv[i : i + 2]
            break
        if arg.startswith("--note="):
            del argv[i]
            break
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = script.name
    return shlex.join(["python", shown, *argv])


def add_json_args(parser: argparse.ArgumentParser) -> None:
    """`--json PATH` (default: print only) and `--note TEXT` (how to read this run)."""
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write the figures and their context to PATH (atomically)")
    parser.add_argument("--note", metavar="TEXT",
                        help="recorded in the JSON context, e.g. 'machine shared with other jobs'")


def context(argv: list[str], sizes: dict, note: str | None = None) -> dict:
    """The conditions of this run: command, machine, versions, date and the sizes it used.

    `note` says how to read the figures (e.g. that the machine was shared with other jobs).
    """
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    versions = {"python": platform.python_version()}
    for module in ("numpy", "cv2", "pycocotools", "torch"):
        if (v := _version(module)) is not None:
            versions[module] = v
    ctx = {
        "command": _command(argv),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": _cpu_model(),
            "system": f"{platform.system()} {platform.release()}",
            "load_avg": load,
            "nice": os.nice(0),
        },
        "versions": versions,
        "sizes": sizes,
    }
    if note:
        ctx["note"] = note
    return ctx


def write_result(path: Path, *, benchmark: str, title: str, measures: str, ctx: dict,
                 results: dict) -> None:
    """Write one result file atomically (a reader never sees half a file)."""
    doc = {"benchmark": benchmark, "title": title, "measures": measures, "context": ctx,
           "results": results}
    with atomic_file(Path(path)) as fh:
        fh.write(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
