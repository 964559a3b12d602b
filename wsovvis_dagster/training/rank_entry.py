"""One rank of a torchrun job of any Sacred script or module.

    python -m torch.distributed.run --nproc_per_node=N -m wsovvis_dagster.training.rank_entry \
        (SCRIPT.py | -m MODULE) [-F RUNS_DIR] [--id ID] [with CONFIG.yaml key=value ...]

Rank 0 runs the script with every argument. The other ranks drop `-F`/`--id` and add
`--unobserved`, so a job of N processes makes one Sacred run (also when the script attaches its
own observer). A rank that exits with an error writes `rank<k>.json` (time, exit code and the
traceback when one reaches here) into `$WSOVVIS_RANK_ERRORS_DIR`, so the launcher can name the
rank that failed first.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
import traceback
from pathlib import Path

ERRORS_DIR_ENV = "WSOVVIS_RANK_ERRORS_DIR"
_OBSERVER_OPTIONS = ("-F", "--file_storage", "-i", "--id")  # each takes a value


def rank_argv(args: list[str], rank: int) -> list[str]:
    """The Sacred arguments rank `rank` runs with (rank 0: all of them)."""
    if rank == 0:
        return list(args)
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in _OBSERVER_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in _OBSERVER_OPTIONS if o.startswith("--"))):
            out.append(arg)
    return [*out, "--unobserved"]


def _report(rank: int, exit_code: int, trace: str) -> None:
    folder = os.environ.get(ERRORS_DIR_ENV)
    if not folder:
        return
    from wsovvis_dagster.atomic import write_json_atomic

    write_json_atomic(Path(folder) / f"rank{rank}.json", {
        "rank": rank, "time": time.time(), "exit_code": exit_code, "traceback": trace})


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    rank = int(os.environ.get("RANK", "0"))
    module = argv[:1] == ["-m"]
    target, rest = (argv[1], argv[2:]) if module else (argv[0], argv[1:])
    sys.argv = [target, *rank_argv(rest, rank)]
    try:
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, str(Path(target).resolve().parent))  # as `python script.py`
            runpy.run_path(target, run_name="__main__")
    except SystemExit as exc:  # Sacred prints the traceback itself, then exits 1
        if exc.code not in (None, 0):
            _report(rank, exc.code if isinstance(exc.code, int) else 1, "")
        raise
    except BaseException:
        _report(rank, 1, traceback.format_exc())
        raise


if __name__ == "__main__":
    main()
