"""Orchestration benchmark: a real daemon backfilling mask_pngs, and dynamic-partition scale.

1. Backfill: N synthetic videos, the `cpu-slow` test backend holding each video `--hold`
   seconds on a fake GPU list, `WSOVVIS_GPU_LIMIT` GPU runs at a time. Reports the backfill's
   wall time against the sum of per-video predictor time (ratio 1/limit would be perfect
   packing; the excess is run start-up, queueing and daemon ticks).
2. Registration: time to register 5,000 `videos` partitions in one bulk call and in
   sensor-sized batches, and to read them back (`--postgres`: on a throw-away PostgreSQL
   cluster as well, benchmarks/pg_cluster.py).
3. Dead runs (`--dead-runs N`): `kill -9` of a `dagster asset materialize` process mid-video,
   with the daemon on the instance template's run monitoring: seconds until the run is marked
   failed and its `gpu` pool slot is free.

    python -m benchmarks.orchestration --videos 24 --hold 2 --partitions 5000
    python -m benchmarks.orchestration --skip-backfill --partitions 5000 --postgres --dead-runs 3
    python -m benchmarks.orchestration --skip-backfill --dead-runs 3 --hold 3 \
        --json benchmarks/results/orchestration_dead_runs.json

Not a test. Its helpers (`start_daemon`, `run_spans`, `launch_backfill`, ...) live in
`wsovvis_ops/`, shared with scripts/ and tests/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from benchmarks.results_io import add_json_args, context, write_result
from wsovvis_instance.dagster_private import BulkActionStatus
from wsovvis_ops.backfill import launch_backfill
from wsovvis_ops.instance import render_instance, start_daemon, stop_daemon, wait_for
from wsovvis_ops.runs import max_overlap, run_spans

REPO = Path(__file__).resolve().parents[1]


# -- benchmark ---------------------------------------------------------------------------------
def bench_backfill(videos: int, hold: float, frames: int, gpu_limit: int, workdir: Path) -> dict:
    from wsovvis_dagster.video.synthetic import generate_dataset

    home, data, out = workdir / "home", workdir / "data", workdir / "outputs"
    render_instance(home, gpu_limit=gpu_limit)
    generate_dataset(data, seed=0, num_frames=frames, videos_per_split={"train": videos})
    gpus = ",".join(str(i) for i in range(gpu_limit))
    env = {**os.environ, "DAGSTER_HOME": str(home), "WSOVVIS_DATA_ROOT": str(data),
           "WSOVVIS_OUTPUT_ROOT": str(out), "WSOVVIS_PREDICTOR": "cpu-slow",
           "WSOVVIS_HOLD_SECONDS": str(hold), "WSOVVIS_GPUS": gpus,
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with DagsterInstance.from_config(str(home)) as instance:
        keys = [f"train__train{i:04d}" for i in range(videos)]
        instance.add_dynamic_partitions("videos", keys)
        daemon = start_daemon(env, workdir / "daemon.log")
        started = time.time()
        try:
            backfill_id = launch_backfill(instance, keys, assets=["mask_pngs"])
            wait_for(lambda: instance.get_backfill(backfill_id).status
                     in (BulkActionStatus.COMPLETED_SUCCESS, BulkActionStatus.COMPLETED_FAILED,
                         BulkActionStatus.FAILED),
                     timeout=3600, poll=1, what="the backfill")
        finally:
            stop_daemon(daemon)
        runs = instance.get_runs()
        spans = run_spans(instance, [r.run_id for r in runs])
        seconds = []
        for key in keys:
            record = instance.fetch_materializations(
                _partition_filter(key), limit=1).records
            seconds.append(record[0].asset_materialization.metadata["seconds"].value)
        first = min(s.start for s in spans if s.start)
        last = max(s.end for s in spans if s.end)
        return {
            "videos": videos, "runs": len(runs), "gpu_limit": gpu_limit, "hold_s": hold,
            "backfill_wall_s": round(last - started, 1),
            "runs_wall_s": round(last - first, 1),
            "sum_predictor_s": round(sum(seconds), 1),
            "ratio": round((last - started) / sum(seconds), 3),
            "ideal_ratio": round(1 / gpu_limit, 3),
            "max_concurrent_runs": max_overlap((s.start, s.end) for s in spans),
            "mean_run_s": round(sum(s.end - s.start for s in spans) / len(spans), 1),
            "mean_run_startup_s": round(
                sum(s.step_start - s.start for s in spans if s.step_start) / len(spans), 1),
        }


def _partition_filter(key: str):
    from dagster import AssetRecordsFilter

    return AssetRecordsFilter(asset_key=AssetKey("mask_pngs"), asset_partitions=[key])


def bench_dead_runs(count: int, hold: float, workdir: Path) -> dict:
    """Kill `count` CLI runs (the CLI process only) mid-video; time to failed + slot freed."""
    from dagster import DagsterRunStatus

    from wsovvis_dagster.gpu.leases import slot_holders
    from wsovvis_dagster.video.synthetic import generate_dataset

    home, data, out = workdir / "home", workdir / "data", workdir / "outputs"
    render_instance(home, extra_yaml="run_retries: {enabled: false}")
    generate_dataset(data, seed=0, num_frames=4, videos_per_split={"train": count})
    env = {**os.environ, "DAGSTER_HOME": str(home), "WSOVVIS_DATA_ROOT": str(data),
           "WSOVVIS_OUTPUT_ROOT": str(out), "WSOVVIS_PREDICTOR": "cpu-slow",
           "WSOVVIS_HOLD_SECONDS": str(hold), "WSOVVIS_GPUS": "0",
           "DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME": "definitions",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    seconds = []
    with DagsterInstance.from_config(str(home)) as instance:
        keys = [f"train__train{i:04d}" for i in range(count)]
        instance.add_dynamic_partitions("videos", keys)
        daemon = start_daemon(env, workdir / "daemon.log")
        try:
            for key in keys:
                cli = subprocess.Popen(
                    ["dagster", "asset", "materialize", "--select", "mask_pngs", "--partition",
                     key], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT)
                holder = wait_for(lambda: slot_holders("0", home / "gpu_slots")[0],
                                  timeout=300, poll=0.1, what="the GPU lease")
                cli.kill()
                cli.wait()
                killed = time.time()

                def done(run_id=holder["run_id"]):
                    run = instance.get_run_by_id(run_id)
                    slots = instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
                    return run.status == DagsterRunStatus.FAILURE and not slots

                wait_for(done, timeout=300, poll=0.2, what="failed + freed")
                seconds.append(round(time.time() - killed, 1))
        finally:
            stop_daemon(daemon)
    return {"dead_runs": count, "hold_s": hold, "kill_to_failed_and_freed_s": seconds,
            "max_s": max(seconds)}


def bench_registration(count: int, batch: int, workdir: Path, *, storage_yaml: str = "",
                       label_prefix: str = "") -> dict:
    keys = [f"train__video{i:06d}" for i in range(count)]
    results = {"partitions": count}
    for label, size in (("bulk", count), (f"batches_of_{batch}", batch)):
        home = workdir / f"reg_{label_prefix}{label}"
        render_instance(home, extra_yaml=storage_yaml)
        with DagsterInstance.from_config(str(home)) as instance:
            t0 = time.perf_counter()
            name = f"videos_{label}"  # one partition set per mode (a shared database too)
            for i in range(0, count, size):
                instance.add_dynamic_partitions(name, keys[i:i + size])
            results[f"register_{label}_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            got = instance.get_dynamic_partitions(name)
            results[f"read_back_{label}_s"] = round(time.perf_counter() - t0, 3)
            assert got == keys
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=24, help="videos in the backfill")
    p.add_argument("--hold", type=float, default=2.0, help="seconds held per video (cpu-slow)")
    p.add_argument("--frames", type=int, default=4, help="frames per synthetic video")
    p.add_argument("--gpu-limit", type=int, default=4, help="GPU runs at once (= fake GPUs)")
    p.add_argument("--partitions", type=int, default=5000, help="partitions to register")
    p.add_argument("--batch", type=int, default=100, help="sensor-sized registration batch")
    p.add_argument("--skip-backfill", action="store_true")
    p.add_argument("--postgres", action="store_true",
                   help="also register partitions in a throw-away PostgreSQL cluster")
    p.add_argument("--dead-runs", type=int, default=0, help="CLI runs to kill (0: none)")
    add_json_args(p)
    args = p.parse_args(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="wsovvis-bench-") as tmp:
        workdir = Path(tmp)
        reg = results["registration_sqlite"] = bench_registration(args.partitions, args.batch,
                                                                  workdir)
        print("registration (sqlite):", reg)
        if args.postgres:
            from wsovvis_ops.pg_cluster import bin_dir, postgres_cluster

            with postgres_cluster(bin_dir()) as url:
                pg = bench_registration(
                    args.partitions, args.batch, workdir / "pg", label_prefix="pg_",
                    storage_yaml=f"storage: {{postgres: {{postgres_url: '{url}'}}}}")
            results["registration_postgres"] = pg
            print("registration (postgres):", pg)
        if args.dead_runs:
            dead = results["dead_runs"] = bench_dead_runs(args.dead_runs, args.hold,
                                                          workdir / "dead")
            print("dead runs:", dead)
        if not args.skip_backfill:
            bf = bench_backfill(args.videos, args.hold, args.frames, args.gpu_limit,
                                workdir / "backfill")
            results["backfill"] = bf
            print("backfill:", bf)
    if args.json:
        write_result(
            args.json, benchmark="orchestration",
            title="Orchestration: a daemon backfill's packing, partition registration, and how "
                  "fast a killed run is failed and its GPU slot freed",
            measures="product path: a real `dagster-daemon` on an instance rendered from the "
                     "template (asset backfill of `mask_pngs`; `dagster asset materialize` "
                     "killed with SIGKILL); registration: the instance's partition API",
            ctx=context(sys.argv[1:] if argv is None else argv,
                        {k: v for k, v in vars(args).items() if k not in ("json", "note")},
                        args.note, conditions="fake GPU list, the `cpu-slow` test backend "
                        "holding each video a fixed time"),
            results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
