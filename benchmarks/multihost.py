"""Scale-out benchmark: videos per hour on 1, 2, 3 simulated Ray nodes, and each engine's fixed
cost per run.

For each node count N: a local Ray cluster (wsovvis_ops.ray_cluster: head + N nodes with
`--gpus-per-node` fake GPUs) with PostgreSQL and a real dagster-daemon whose launcher is
`WsovvisRayRunLauncher`, then a backfill of `--videos-per-node` x N synthetic videos on the
`cpu-slow` test backend (a fixed `--hold` per video), WSOVVIS_VIDEOS_PER_RUN videos per run.
Videos per hour = videos / (backfill launched -> last video materialised); ratio to linear =
vph(N) / (N x vph(1)). Fixed cost per run = the launcher's part: run STARTING (dequeued) ->
its step's STEP_START, against the one-host template (SQLite, local launcher) on the same
videos. Everything started is stopped by pid.

    python -m benchmarks.multihost --nodes 1 2 3 --json benchmarks/results/multihost.json
    python -m benchmarks.multihost --lost-node --json benchmarks/results/multihost_lost_node.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance

from benchmarks.results_io import add_json_args, context, write_result
from wsovvis_ops.backfill import launch_backfill
from wsovvis_ops.instance import render_instance, start_daemon, stop_daemon, wait_for
from wsovvis_ops.ray_cluster import local_ray_deployment, run_holding_a_gpu

REPO = Path(__file__).resolve().parents[1]

MASKS = AssetKey("mask_pngs")


def fixed_costs(instance, run_ids) -> list[float]:
    """Per run: seconds from RUN_STARTING (the daemon hands it to the launcher) to STEP_START."""
    costs = []
    for run_id in run_ids:
        times = {}
        for kind in (DagsterEventType.RUN_STARTING, DagsterEventType.STEP_START):
            records = instance.get_records_for_run(run_id, of_type=kind, limit=1).records
            if records:
                times[kind] = records[0].event_log_entry.timestamp
        if len(times) == 2:
            costs.append(times[DagsterEventType.STEP_START] - times[DagsterEventType.RUN_STARTING])
    return costs


def backfill(home: Path, env: dict, keys: list[str], log: Path) -> dict:
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("videos", keys)
        daemon = start_daemon(env, log)
        try:
            time.sleep(5)  # the daemon's code server up before the clock starts
            started = time.time()
            launch_backfill(instance, keys, assets=["mask_pngs"])
            wait_for(lambda: set(keys) <= instance.get_materialized_partitions(MASKS),
                     timeout=3600, poll=0.5, what="the backfill")
            wall = time.time() - started
        finally:
            stop_daemon(daemon)
        runs = [r.run_id for r in instance.get_runs()]
        costs = fixed_costs(instance, runs)
        nodes = {r.asset_materialization.metadata["node"].value
                 for r in instance.fetch_materializations(MASKS, limit=10000).records}
    return {"videos": len(keys), "runs": len(runs), "wall_s": round(wall, 1),
            "videos_per_hour": round(len(keys) / wall * 3600),
            "fixed_cost_per_run_s": round(statistics.mean(costs), 2) if costs else None,
            "nodes_used": sorted(nodes)}


def lost_node(work: Path, base_env: dict, keys: list[str], hold: float) -> dict:
    """2 nodes x 1 GPU, 2 runs; the raylet of a run's node SIGKILLed inside its first video:
    seconds until the run is FAILURE, its orphan gone, its pool slot free, its retry done."""
    from wsovvis_dagster.gpu.leases import process_alive
    from wsovvis_instance.dagster_private import PARENT_RUN_ID_TAG

    root = work / "lost_node"
    with local_ray_deployment(root, nodes=2, gpus_per_node=1) as site:
        env = {**base_env, "DAGSTER_HOME": str(site.home), "WSOVVIS_OUTPUT_ROOT": str(root / "o")}
        with DagsterInstance.from_config(str(site.home)) as instance:
            instance.add_dynamic_partitions("videos", keys)
            daemon = start_daemon(env, root / "daemon.log")
            try:
                launch_backfill(instance, keys, assets=["mask_pngs"])
                node, holder = wait_for(lambda: run_holding_a_gpu(
                    site.home / "gpu_slots", ["node1", "node2"], "0", min_age_s=0.25 * hold),
                    timeout=300, poll=0.2, what="a run holding a GPU")
                site.cluster.nodes[node].kill_raylet()
                t0, run_id, marks = time.time(), holder["run_id"], {}
                while len(marks) < 4 and time.time() - t0 < 600:
                    run = instance.get_run_by_id(run_id)
                    checks = {
                        "run_failed_s": run.status.value == "FAILURE",
                        "orphan_gone_s": not process_alive(holder["pid"]),
                        "pool_slot_free_s": run.status.value == "FAILURE" and not any(
                            s.run_id == run_id for s in instance.event_log_storage
                            .get_concurrency_info("gpu").claimed_slots),
                        "retry_done_s": any(r.tags.get(PARENT_RUN_ID_TAG) == run_id
                                            and r.status.value == "SUCCESS"
                                            for r in instance.get_runs()),
                    }
                    for k, ok in checks.items():
                        if ok and k not in marks:
                            marks[k] = round(time.time() - t0, 1)
                    time.sleep(0.5)
            finally:
                stop_daemon(daemon)
    return {"killed_node": node, **marks, "status": run.status.value}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--gpus-per-node", type=int, default=1)
    p.add_argument("--videos-per-node", type=int, default=8)
    p.add_argument("--videos-per-run", type=int, default=4)
    p.add_argument("--hold", type=float, default=3.0)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--lost-node", action="store_true",
                   help="only: seconds from a node's raylet SIGKILL to its run failed, orphan "
                   "gone, slot free, retry done")
    add_json_args(p)
    args = p.parse_args(argv)
    from wsovvis_dagster.video.synthetic import generate_dataset

    work = Path(tempfile.mkdtemp(prefix="wsovvis-bench-multihost-"))
    most = max(args.nodes) * args.videos_per_node
    data = work / "data"
    generate_dataset(data, seed=0, num_frames=args.frames, videos_per_split={"train": most})
    base_env = {**os.environ, "WSOVVIS_DATA_ROOT": str(data), "WSOVVIS_PREDICTOR": "cpu-slow",
                "WSOVVIS_HOLD_SECONDS": str(args.hold),
                "WSOVVIS_VIDEOS_PER_RUN": str(args.videos_per_run),
                "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    measures = ("Dagster backfills through the daemon and the Ray run launcher (product path), "
                "simulated nodes on one machine")

    def save(benchmark: str, title: str, results: dict) -> None:
        print(results, flush=True)
        if args.json:
            write_result(args.json, benchmark=benchmark, title=title, measures=measures,
                         ctx=context(sys.argv[1:] if argv is None else argv,
                                     vars(args) | {"json": str(args.json)}, args.note),
                         results=results)

    if args.lost_node:
        save("multihost_lost_node", "A lost Ray node: its run failed, orphan gone, retry done",
             lost_node(work, base_env, [f"train__train{i:04d}" for i in range(
                 2 * args.videos_per_run)], args.hold))
        return 0
    rows = []
    for n in args.nodes:
        keys = [f"train__train{i:04d}" for i in range(n * args.videos_per_node)]
        root = work / f"ray{n}"
        with local_ray_deployment(root, nodes=n, gpus_per_node=args.gpus_per_node) as site:
            env = {**base_env, "DAGSTER_HOME": str(site.home),
                   "WSOVVIS_OUTPUT_ROOT": str(root / "out")}
            row = {"engine": "ray", "nodes": n, "gpu_slots": site.gpu_slots,
                   **backfill(site.home, env, keys, root / "daemon.log")}
        rows.append(row)
        print(row, flush=True)
    # the one-host template on the 1-node case's videos and slots
    home = work / "local"
    render_instance(home / "dagster_home", gpu_limit=args.gpus_per_node)
    gpus = ",".join(str(i) for i in range(args.gpus_per_node))
    env = {**base_env, "DAGSTER_HOME": str(home / "dagster_home"), "WSOVVIS_GPUS": gpus,
           "WSOVVIS_OUTPUT_ROOT": str(home / "out")}
    local = {"engine": "local", "nodes": 1, "gpu_slots": args.gpus_per_node,
             **backfill(home / "dagster_home", env,
                        [f"train__train{i:04d}" for i in range(args.videos_per_node)],
                        home / "daemon.log")}
    print(local, flush=True)
    one = next((r["videos_per_hour"] for r in rows if r["nodes"] == 1), None)
    for r in rows:
        r["ratio_to_linear"] = round(r["videos_per_hour"] / (r["nodes"] * one), 2) if one else None
    hold_per_run = args.hold * args.videos_per_run
    ray_cost = statistics.mean(r["fixed_cost_per_run_s"] for r in rows)
    results = {
        "rows": rows, "local_launcher": local,
        "hold_per_run_s": hold_per_run,
        # overhead share of a run = fixed cost / (fixed cost + its GPU work)
        "ray_overhead_share": round(ray_cost / (ray_cost + hold_per_run), 2),
        "videos_per_run_for_10pct_overhead_at_0.11s_per_video": round(ray_cost * 9 / 0.11),
    }
    save("multihost", "Scale-out on a local Ray cluster (fake GPUs, cpu-slow backend)", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
