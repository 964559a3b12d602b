"""Rehearse the multi-host deployment on one machine: PostgreSQL + a Ray head + N fake-GPU nodes.

Starts a throw-away PostgreSQL, a Ray head (no GPUs) and `--nodes` worker nodes with
`--gpus-per-node` fake GPUs each (own ports, custom resource `nodeK: 1`), renders a
DAGSTER_HOME whose run launcher places runs on that cluster (GPU limit = its GPU slots), prints
what to run next, and waits. Ctrl-C (or SIGTERM) stops everything by pid (never `ray stop`).

    python -m scripts.ray_cluster --nodes 2 --gpus-per-node 2
    # in another shell, with the printed DAGSTER_HOME:
    WSOVVIS_PREDICTOR=cpu-slow WSOVVIS_HOLD_SECONDS=2 dagster-daemon run -w workspace.yaml
    dagster asset materialize --select video_partitions && python -m scripts.backfill

On real hosts (a Ray cluster started with `ray start`, a PostgreSQL server), only the instance:

    python -m scripts.ray_cluster instance --home $DAGSTER_HOME --ray http://head:8265 \
        --postgres postgresql+psycopg2://dagster:PW@db:5432/dagster

Needs the `deploy` and `ray` extras (bash scripts/setup.sh dev,deploy,ray) and PostgreSQL's
server binaries (Debian: apt-get install postgresql). docs/scaling.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from wsovvis_ops.instance import render_instance
from wsovvis_ops.ray_cluster import cluster_gpu_slots, local_ray_deployment, ray_instance_yaml

REPO = Path(__file__).resolve().parents[1]


def instance(argv: list[str]) -> int:
    """Render DAGSTER_HOME/dagster.yaml for an existing Ray cluster and PostgreSQL server."""
    parser = argparse.ArgumentParser(prog="ray_cluster.py instance")
    parser.add_argument("--home", type=Path, required=True, help="the DAGSTER_HOME to write")
    parser.add_argument("--ray", required=True, help="the head's dashboard, http://head:8265")
    parser.add_argument("--postgres", required=True, help="postgresql+psycopg2://... URL")
    parser.add_argument("--runs-per-gpu", type=int, default=1)
    parser.add_argument("--gpu-slots", type=int,
                        help="GPU run limit (default: the cluster's GPUs x runs per GPU now)")
    args = parser.parse_args(argv)
    slots = args.gpu_slots or cluster_gpu_slots(args.ray, args.runs_per_gpu)
    if slots < 1:
        raise SystemExit(f"the Ray cluster at {args.ray} has no GPU: start GPU nodes with "
                         "`ray start --address=<head>:6379 --num-gpus=<N>` or pass --gpu-slots")
    path = render_instance(args.home, gpu_limit=slots, extra_yaml=ray_instance_yaml(
        args.ray, args.postgres, runs_per_gpu=args.runs_per_gpu))
    print(f"wrote {path}: runs on the Ray cluster at {args.ray}, {slots} GPU run(s) at once")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["instance"]:
        return instance(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes (fake GPU hosts)")
    parser.add_argument("--gpus-per-node", type=int, default=2)
    parser.add_argument("--runs-per-gpu", type=int, default=1)
    parser.add_argument("--root", type=Path, default=REPO / ".ray_rehearsal",
                        help="folder for the DAGSTER_HOME and the nodes' logs")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with local_ray_deployment(args.root, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                              runs_per_gpu=args.runs_per_gpu) as site:
        print(f"Ray head {site.cluster.address}, dashboard {site.cluster.dashboard_url}; "
              f"{args.nodes} node(s) x {args.gpus_per_node} fake GPU(s) = {site.gpu_slots} GPU "
              f"slot(s)\nPostgreSQL {site.postgres_url}\n\n"
              f"export DAGSTER_HOME={site.home}\n"
              "then start the daemon and queue a backfill (see this script's --help); "
              "Ctrl-C here stops the cluster and the database.", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        print("stopping (by pid)...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
