"""Which processes a run has, whether any still lives, and who holds the GPUs.

A run records the pid of every process that executes it: the process that started it
(`RUN_START`: the CLI for `dagster asset materialize`, the run worker for queued runs) and each
step process (`STEP_WORKER_STARTED`). A run is *dead* when none of them is alive on this
machine (a pid reused by a newer process does not count). A run started through a code server
on another host (`.dagster/grpc_info` names it) is not judged here: that host's code server or
the run launcher (Kubernetes: the Job's status) speaks for it.

Used by the run launcher's health check (so the daemon's run monitoring fails dead runs) and
by `wsovvis gpus` (status, `--free-stale`).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from wsovvis_dagster.gpu.leases import leased_indices, process_alive, slot_holders
from wsovvis_instance.dagster_private import GRPC_INFO_TAG

PID_EVENTS = {DagsterEventType.RUN_START, DagsterEventType.STEP_WORKER_STARTED}
GPU_POOL = "gpu"


@dataclass(frozen=True)
class RunLiveness:
    state: str  # "alive" | "dead" | "unknown"
    reason: str
    pids: dict[int, float] = field(default_factory=dict)  # pid -> first event time
    alive: tuple[int, ...] = ()


def _local_host(host: str | None) -> bool:
    return not host or host in {"localhost", "127.0.0.1", "::1", socket.gethostname(),
                                socket.getfqdn()}


def run_pids(instance: DagsterInstance, run_id: str) -> dict[int, float]:
    """pid -> time of the first event that process wrote, for the run's executing processes."""
    pids: dict[int, float] = {}
    for record in instance.get_records_for_run(run_id, of_type=PID_EVENTS).records:
        entry = record.event_log_entry
        pid = entry.dagster_event.pid if entry.dagster_event else None
        if pid:
            pids[pid] = min(pids.get(pid, entry.timestamp), entry.timestamp)
    return pids


def run_liveness(instance: DagsterInstance, run: DagsterRun) -> RunLiveness:
    host = socket.gethostname()
    grpc = run.tags.get(GRPC_INFO_TAG)
    if grpc:
        try:
            grpc_host = json.loads(grpc).get("host")
        except (ValueError, AttributeError):
            grpc_host = None
        if not _local_host(grpc_host):
            return RunLiveness("unknown", f"run worker on {grpc_host}, not judged on {host}")
    pids = run_pids(instance, run.run_id)
    if not pids:
        return RunLiveness("unknown", "no process recorded yet")
    alive = tuple(p for p, t in sorted(pids.items()) if process_alive(p, started_by=t))
    listed = ", ".join(str(p) for p in sorted(pids))
    if alive:
        return RunLiveness("alive", f"alive on {host}: pid {', '.join(map(str, alive))}",
                           pids, alive)
    return RunLiveness(
        "dead", f"no process of run {run.run_id} is alive on {host} (pids {listed}): "
        "killed, OOM-killed or crashed", pids)


def gpu_report(instance: DagsterInstance, *, slot_dir: Path, pool: str = GPU_POOL) -> dict:
    """The pool's slots and who claims them, each GPU lease, and which runs are stale.

    Stale: a claimed slot whose run has finished, or whose run is STARTED with no live process.
    """
    info = instance.event_log_storage.get_concurrency_info(pool)
    runs: dict[str, DagsterRun | None] = {}
    claimed = []
    for slot in info.claimed_slots:
        run = runs.setdefault(slot.run_id, instance.get_run_by_id(slot.run_id))
        status = run.status.value if run else "MISSING"
        live = run_liveness(instance, run) if run and not run.is_finished else None
        stale = run is None or run.is_finished or (live is not None and live.state == "dead")
        claimed.append({"run_id": slot.run_id, "step": slot.step_key, "status": status,
                        "liveness": live.state if live else "finished", "stale": stale})
    started = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    dead_runs = []
    for run in started:
        live = run_liveness(instance, run)
        if live.state == "dead":
            dead_runs.append({"run_id": run.run_id, "reason": live.reason})
    default_limit = instance.get_concurrency_config().pool_config.default_pool_limit
    leases = []
    gpus = ",".join(map(str, leased_indices(slot_dir)))  # the devices runs have leased
    for index, holder in (slot_holders(gpus, slot_dir) if gpus else {}).items():
        leases.append({"device": f"cuda:{index}", "free": holder is None, **(holder or {})})
    return {
        # a pool's slots are created at its first claim; until then the default limit applies
        "pool": pool, "slot_count": info.slot_count,
        "limit": info.slot_count or default_limit,
        "active": info.active_slot_count,
        "pending": info.pending_step_count, "claimed": claimed, "dead_started_runs": dead_runs,
        "leases": leases, "slot_dir": str(slot_dir),
    }


def free_stale(instance: DagsterInstance, *, pool: str = GPU_POOL) -> list[str]:
    """Fail STARTED runs with no live process, and free the slots of finished runs.

    What run monitoring does by itself with the daemon running (within about
    poll_interval_seconds + free_slots_after_run_end_seconds); this does it now. Returns what
    was done, one line per action.
    """
    done = []
    if not getattr(instance.run_launcher, "check_run_pids", True):
        done.append("not failing STARTED runs: this instance runs on several hosts "
                    "(run_launcher check_run_pids: false), so pids cannot tell dead runs here")
    started = (instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
               if not done else [])
    for run in started:
        live = run_liveness(instance, run)
        if live.state == "dead":
            instance.report_run_failed(run, f"marked failed by `wsovvis gpus --free-stale`: "
                                            f"{live.reason}")
            done.append(f"failed run {run.run_id}: {live.reason}")
    holders: dict[str, int] = {}
    for slot in instance.event_log_storage.get_concurrency_info(pool).claimed_slots:
        holders[slot.run_id] = holders.get(slot.run_id, 0) + 1
    for run_id, count in sorted(holders.items()):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            status = run.status.value if run else "missing"
            done.append(f"freed {count} `{pool}` slot(s) of {status} run {run_id}")
    return done
