"""How a benchmark run from the command line writes its result file.

`--json PATH` / `--note TEXT` for the CPU benchmarks, and the reproducible command of this run
(`python -m benchmarks.<name> args...`); the envelope and the writing itself are the library's
(`wsovvis_dagster.results_file`, which `wsovvis quality --json` uses too), so every result file
under `benchmarks/results/` has the same shape and `benchmarks/render_docs.py` reads them all
alike.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from wsovvis_dagster.results_file import run_context, write_results_file

REPO = Path(__file__).resolve().parents[1]


def _command(argv: list[str]) -> str:
    """`python -m benchmarks.<name> args...`: what to type from the repository root to
    reproduce the run (`--note`, recorded on its own, left out)."""
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
        module = ".".join(script.relative_to(REPO).with_suffix("").parts)
        shown = ["python", "-m", module]
    except ValueError:
        shown = ["python", script.name]
    return shlex.join([*shown, *argv])


def add_json_args(parser: argparse.ArgumentParser) -> None:
    """`--json PATH` (default: print only) and `--note TEXT` (how to read this run)."""
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write the figures and their context to PATH (atomically)")
    parser.add_argument("--note", metavar="TEXT",
                        help="recorded in the JSON context, e.g. 'machine shared with other jobs'")


def code_checkouts(specs: list[str], this: Path) -> list[tuple[str, Path]]:
    """`--code LABEL=DIR` values as (label, checkout) pairs, this checkout last as "this"."""
    return [(label, Path(d).resolve()) for label, _, d in (c.partition("=") for c in specs)] \
        + [("this", this)]


def context(argv: list[str], sizes: dict | None = None, note: str | None = None,
            conditions: str | None = None) -> dict:
    """The conditions of this run (`run_context`) with its reproducible command."""
    return run_context(_command(argv), sizes=sizes, note=note, conditions=conditions)


def write_result(path: Path, *, benchmark: str, title: str, measures: str, ctx: dict,
                 results: object) -> None:
    """Write one result file atomically (a reader never sees half a file)."""
    write_results_file(path, benchmark=benchmark, title=title, measures=measures, context=ctx,
                       results=results)
    print(f"wrote {path}")
