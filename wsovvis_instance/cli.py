"""`wsovvis`: the library's commands plus `gpus`, which needs the Dagster instance.

    wsovvis gpus                # pool slots (who claims them), GPU leases, stale runs
    wsovvis gpus --free-stale   # fail dead STARTED runs, give back their pool slots now
    wsovvis gpus --stop-workers # stop the predictor workers (frees the GPU memory they hold)
    wsovvis gpus --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from wsovvis_dagster.cli import main as library_main
from wsovvis_dagster.gpu.leases import SLOTS_FOLDER, resolve_slot_dir


def _gpus(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from wsovvis_dagster.gpu.worker import list_workers, stop_workers
    from wsovvis_instance.liveness import free_stale, gpu_report

    if not os.environ.get("DAGSTER_HOME"):
        print("error: DAGSTER_HOME is not set (source .venv/bin/activate)", file=sys.stderr)
        return 2
    with DagsterInstance.get() as instance:
        slot_dir = resolve_slot_dir(args.slot_dir or "", instance.root_directory)
        actions = free_stale(instance, pool=args.pool) if args.free_stale else []
        report = gpu_report(instance, slot_dir=slot_dir, pool=args.pool)
    if args.stop_workers:
        actions += [f"stopped predictor worker pid {p}" for p in stop_workers(slot_dir)]
    report["workers"] = list_workers(slot_dir)
    if args.json:
        print(json.dumps({**report, "actions": actions}, indent=2))
        return 0
    for line in actions:
        print(line)
    print(f"pool `{report['pool']}`: {report['active']} of {report['limit']} slots claimed, "
          f"{report['pending']} steps waiting")
    for slot in report["claimed"]:
        flag = "  STALE" if slot["stale"] else ""
        print(f"  slot: run {slot['run_id']} step {slot['step']} ({slot['status']}, "
              f"{slot['liveness']}){flag}")
    print(f"GPU leases in {report['slot_dir']}:")
    for lease in report["leases"] or [{"device": "(none: no GPU run has leased a device)"}]:
        who = "free" if lease.get("free") else (
            f"run {lease.get('run_id')} pid {lease.get('pid')} on {lease.get('host')}")
        print(f"  {lease['device']}: {who}" if "free" in lease else f"  {lease['device']}")
    print("predictor workers (the model kept between runs):")
    for w in report["workers"] or [{"pid": None}]:
        print("  (none running)" if not w["pid"] else
              f"  {w['device']}: pid {w['pid']}, building its model, log {w['log']}"
              if not w["ready"] else
              f"  {w['device']}: pid {w['pid']}, {w['name']} {w['version']}, model built in "
              f"{w['built_s']} s, log {w['log']}")
    for run in report["dead_started_runs"]:
        print(f"STALE run {run['run_id']}: {run['reason']}")
    stale = report["dead_started_runs"] or any(s["stale"] for s in report["claimed"])
    if stale and not args.free_stale:
        print("free them now with `wsovvis gpus --free-stale` (the daemon's run monitoring "
              "does it within about a minute)")
    return 0


def add_gpus_command(sub) -> None:
    gpus = sub.add_parser(
        "gpus", help="GPU pool slots and leases: which run holds what, stale ones",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gpus.add_argument("--free-stale", action="store_true",
                      help="mark STARTED runs with no live process failed and free the pool "
                           "slots of finished runs")
    gpus.add_argument("--stop-workers", action="store_true",
                      help="stop the predictor workers now (they exit by themselves after "
                           "WSOVVIS_WORKER_IDLE_SECONDS without a run)")
    gpus.add_argument("--pool", default="gpu", help="concurrency pool (default: gpu)")
    gpus.add_argument("--slot-dir", help=f"lease folder (default: $DAGSTER_HOME/{SLOTS_FOLDER})")
    gpus.add_argument("--json", action="store_true", help="machine-readable report")
    gpus.set_defaults(func=_gpus)


def main(argv: list[str] | None = None) -> int:
    return library_main(argv, extra_commands=[add_gpus_command])


if __name__ == "__main__":
    sys.exit(main())
