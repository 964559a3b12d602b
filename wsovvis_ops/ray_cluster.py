"""A local Ray cluster with fake GPUs: one head (no GPUs) plus N "hosts", stopped by pid.

Each node is a `ray start --block` process in its own session, with its own ports (picked
free at start, so several clusters can share a machine) and `--num-gpus` fake devices: Ray
schedules and sets `CUDA_VISIBLE_DEVICES` per job as on real GPU hosts, and the `cpu-slow`
test backend never touches CUDA. A node's processes see `WSOVVIS_NODE_NAME=<name>`, the name
under which runs lease their GPU and record where each video ran (on real hosts: the hostname).

Stopping never uses `ray stop` (it kills every Ray process of the machine by name, other
people's clusters included): the node's process tree is read from /proc and signalled by pid.
Shared by tests/wsovvis_instance/test_multihost.py, scripts/ray_cluster.py and
benchmarks/multihost.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from wsovvis_dagster.gpu.leases import NODE_ENV, proc_stat
from wsovvis_dagster.training.launch import process_tree
from wsovvis_ops.pg_cluster import free_port

RAY = str(Path(sys.executable).with_name("ray"))


def _name(pid: int) -> str:
    stat = proc_stat(pid)
    return stat[0] if stat else ""


@dataclass
class RayNode:
    name: str
    gpus: int
    proc: subprocess.Popen
    log: Path
    stopped: bool = False

    def raylet_pid(self) -> int | None:
        return next((p for p in process_tree(self.proc.pid) if _name(p) == "raylet"), None)

    def kill_raylet(self) -> int:
        """SIGKILL this node's raylet (a host's Ray agent dying): its jobs' supervisors go with
        it; the Ray head marks the node dead. Returns the raylet's pid."""
        pid = self.raylet_pid()
        if pid is None:
            raise RuntimeError(f"node {self.name}: no raylet process found")
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the node's `ray start --block` (it stops its Ray processes), then SIGKILL
        whatever of its process tree is left, by pid."""
        if self.stopped:
            return
        self.stopped = True
        tree = process_tree(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        for pid in reversed(tree):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)


WORKER_PORTS = 40  # the span of each node's worker port range
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port")  # the head's own


def worker_port_range(taken: set[int]) -> tuple[int, int]:
    """(min, max) worker ports of a node: a small range from a free port (a few workers per
    node) that holds none of the node's other ports, `taken` (Ray refuses to start a node
    whose ranges overlap: a metrics port drawn inside the worker range failed CI runs)."""
    lo = free_port()
    while lo + WORKER_PORTS > 65535 or any(lo <= p <= lo + WORKER_PORTS for p in taken):
        lo = free_port()
    return lo, lo + WORKER_PORTS


@dataclass
class LocalRayCluster:
    root: Path
    address: str  # GCS address, for `ray start --address`
    dashboard_url: str  # jobs API: the run launcher's `address`
    head: RayNode
    nodes: dict[str, RayNode] = field(default_factory=dict)
    cpus_per_node: int = 1
    temp_dir: Path | None = None  # Ray's session files (short path: unix sockets)

    def _start(self, name: str, args: list[str], gpus: int) -> RayNode:
        log = self.root / f"{name}.log"
        ports = {flag: free_port() for flag in (
            "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")}
        lo, hi = worker_port_range({*ports.values(), *(
            int(a.split("=", 1)[1]) for a in args if a.split("=", 1)[0] in PORT_FLAGS)})
        cmd = [RAY, "start", "--block", *args, f"--num-gpus={gpus}",
               f"--num-cpus={self.cpus_per_node}", "--object-store-memory=80000000",
               "--disable-usage-stats", f"--min-worker-port={lo}", f"--max-worker-port={hi}",
               "--include-log-monitor=false",
               *[f"{k}={v}" for k, v in ports.items()]]
        env = {**os.environ, NODE_ENV: name, "RAY_USAGE_STATS_ENABLED": "0"}
        proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.root)
        return RayNode(name, gpus, proc, log)

    def add_node(self, name: str, gpus: int, *, timeout: float = 120.0) -> RayNode:
        """Start a worker node `name` with `gpus` fake GPUs (custom resource `name: 1`) and
        wait until the head lists it alive."""
        node = self._start(name, [f"--address={self.address}",
                                  f"--resources={json.dumps({name: 1})}"], gpus)
        self.nodes[name] = node
        self.wait_alive({name}, timeout=timeout, proc=node)
        return node

    def alive_nodes(self) -> list[dict]:
        """The head's view: one dict per ALIVE node (name, resources_total, node_id)."""
        from ray.util.state import list_nodes

        return [{"name": next((k for k in (n.resources_total or {})
                               if k in self.nodes), "head"),
                 "node_id": n.node_id, "resources_total": n.resources_total or {}}
                for n in list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")],
                                    raise_on_missing_output=False)]

    def wait_alive(self, names: set[str], *, timeout: float, proc: RayNode | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                alive = {n["name"] for n in self.alive_nodes()}
            except Exception:  # the dashboard is still starting
                alive = set()
            if names <= alive:
                return
            if proc is not None and proc.proc.poll() is not None:
                raise RuntimeError(f"ray node {proc.name} exited: {proc.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ray nodes {sorted(names - alive)} not alive after "
                                   f"{timeout:.0f} s (logs in {self.root})")
            time.sleep(0.5)

    def gpu_slots(self, runs_per_gpu: int = 1) -> int:
        """GPUs the cluster offers runs (alive nodes), times the runs that share one."""
        return cluster_gpu_slots(self.dashboard_url, runs_per_gpu)

    def stop(self) -> None:
        """Stop every node by pid, workers first, then the head; remove the temp folder."""
        for node in [*self.nodes.values(), self.head]:
            node.stop()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def cluster_gpu_slots(dashboard_url: str, runs_per_gpu: int = 1) -> int:
    """GPUs of the alive nodes of the Ray cluster at `dashboard_url`, times `runs_per_gpu`."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=dashboard_url, filters=[("state", "=", "ALIVE")],
                       raise_on_missing_output=False)
    return int(sum((n.resources_total or {}).get("GPU", 0) for n in nodes) * runs_per_gpu)


def start_local_cluster(root: Path | None = None, *, nodes: int = 2, gpus_per_node: int = 2,
                        cpus_per_node: int = 1, timeout: float = 180.0) -> LocalRayCluster:
    """Head (0 GPUs, 1 CPU for CPU runs) + `nodes` worker nodes `node1..N` with
    `gpus_per_node` fake GPUs each. Stop it with `.stop()` (by pid), also on failure."""
    root = Path(root or tempfile.mkdtemp(prefix="wsovvis-ray-"))
    root.mkdir(parents=True, exist_ok=True)
    # short path: Ray's unix sockets live under the temp dir (108-byte limit)
    temp_dir = Path(tempfile.mkdtemp(prefix="wr-", dir="/tmp"))
    port, dash = free_port(), free_port()
    address, dashboard_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
    placeholder = subprocess.Popen(["true"])
    placeholder.wait()
    cluster = LocalRayCluster(root, address, dashboard_url,
                              RayNode("head", 0, placeholder, root / "head.log"),
                              cpus_per_node=cpus_per_node, temp_dir=temp_dir)
    try:
        cluster.head = cluster._start("head", [
            "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}"], 0)
        cluster.wait_alive({"head"}, timeout=timeout, proc=cluster.head)
        for i in range(1, nodes + 1):
            cluster.add_node(f"node{i}", gpus_per_node, timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def ray_instance_yaml(dashboard_url: str, postgres_url: str, *, runs_per_gpu: int = 1,
                      monitor_seconds: int = 10) -> str:
    """dagster.yaml overrides (for `wsovvis_ops.instance.render_instance`) of an instance whose
    runs the Ray cluster at `dashboard_url` places: one PostgreSQL database for every process
    (run storage fenced: no FAILURE -> SUCCESS), the Ray launcher. Render it with
    `gpu_limit` = the cluster's GPU slots, so surplus GPU runs wait QUEUED in Dagster."""
    import yaml

    def pg():
        return {"postgres_url": postgres_url}

    config = {
        "run_storage": {"module": "wsovvis_instance.fenced_storage",
                        "class": "FencedPostgresRunStorage", "config": pg()},
        "event_log_storage": {"module": "dagster_postgres.event_log",
                              "class": "PostgresEventLogStorage", "config": pg()},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage",
                             "class": "PostgresScheduleStorage", "config": pg()},
        "run_launcher": {"module": "wsovvis_instance.ray_launcher",
                         "class": "WsovvisRayRunLauncher",
                         "config": {"ray": {"address": dashboard_url},
                                    "runs_per_gpu": runs_per_gpu}},
        "run_monitoring": {"enabled": True, "poll_interval_seconds": monitor_seconds,
                           "free_slots_after_run_end_seconds": monitor_seconds},
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class RayDeployment:
    """A rehearsal deployment on this machine: Ray cluster, PostgreSQL, a DAGSTER_HOME."""

    cluster: LocalRayCluster
    postgres_url: str
    home: Path
    gpu_slots: int


@contextmanager
def local_ray_deployment(root: Path, *, nodes: int = 2, gpus_per_node: int = 2,
                         runs_per_gpu: int = 1, monitor_seconds: int = 10
                         ) -> Iterator[RayDeployment]:
    """PostgreSQL + a Ray head and `nodes` fake-GPU nodes + `<root>/dagster_home` rendered for
    them (GPU limit = the cluster's GPU slots). Everything is stopped by pid on exit."""
    from wsovvis_ops.instance import render_instance
    from wsovvis_ops.pg_cluster import bin_dir, postgres_cluster

    pg_bin = bin_dir()
    if pg_bin is None:
        raise RuntimeError("needs PostgreSQL's server binaries (apt-get install postgresql)")
    with postgres_cluster(pg_bin) as url:
        cluster = start_local_cluster(root / "ray", nodes=nodes, gpus_per_node=gpus_per_node)
        try:
            slots = cluster.gpu_slots(runs_per_gpu)
            home = root / "dagster_home"
            render_instance(home, gpu_limit=slots, extra_yaml=ray_instance_yaml(
                cluster.dashboard_url, url, runs_per_gpu=runs_per_gpu,
                monitor_seconds=monitor_seconds))
            yield RayDeployment(cluster, url, home, slots)
        finally:
            cluster.stop()


def run_holding_a_gpu(slot_root: Path, nodes, gpus: str, *, min_age_s: float):
    """(node, lease holder) of a run that has held a GPU lease for `min_age_s` on one of
    `nodes` (leases under `<slot_root>/<node>/`, wsovvis_dagster.gpu.leases), else None."""
    from wsovvis_dagster.gpu.leases import slot_holders

    for node in nodes:
        for holder in slot_holders(gpus, Path(slot_root) / node).values():
            if holder and time.time() - holder["since"] > min_age_s:
                return node, holder
    return None
