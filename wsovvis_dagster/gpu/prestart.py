"""Start a batch's predictor workers before its runs, so the first backfill does not pay the
model build (13-19 s for VideoCutLER on an H200, docs/gpu.md) inside its wall.

`scripts/backfill.py` (`wsovvis_ops.backfill.queue_mask_runs`) calls `prestart_workers` (through
`PredictorResource.prestart_workers`) as it queues a batch, once its runs are planned and before
they go on the queue: the workers of the lease slots that the batch's runs will take (min(runs,
GPUs x runs per GPU), in the order the runs' leases take slots), with the settings those runs
resolve, so each run finds its slot's worker built (or still building: it waits for that one,
never starts a second; `worker.start_worker`). A slot's worker with these settings is kept; one
with other settings is replaced when no run holds the slot (else the run that needs it replaces
it, as before). It returns at once, without waiting for any model. Nothing here can fail the
backfill: an error is reported in the result, and the runs then start their own workers as they
would have.

`video_partitions` calls it too (`wsovvis_ops.backfill.prestart_mask_workers`), for the
registered videos without masks: registering usually comes some time before the backfill, so
the models are built by then. A worker nobody uses exits after its idle time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from wsovvis_dagster.gpu.leases import LeaseRequest, parse_gpus, slot_free, slot_order
from wsovvis_dagster.gpu.session import worker_path_on
from wsovvis_dagster.gpu.worker import start_worker, worker_dir
from wsovvis_dagster.predictors.settings import PredictorSettings


@dataclass(frozen=True)
class SlotWorker:
    """One lease slot's worker as `prestart_workers` left it (`worker.start_worker`'s state)."""

    device: str  # 'cuda:N', or 'cpu' when the runs lease no GPU
    slot: int
    state: str  # started | replaced | running | other settings | busy
    pid: int | None

    @property
    def name(self) -> str:
        return self.device if self.slot == 0 else f"{self.device}.slot{self.slot}"


@dataclass(frozen=True)
class WorkerPrestart:
    """What `prestart_workers` did: the slots' workers, or why it started none."""

    workers: tuple[SlotWorker, ...] = ()
    skipped: str = ""  # why no worker is pre-started (the runs build their model themselves)
    error: str = ""  # the pre-start failed: each run starts its slot's worker as it would have

    def summary(self, whose: str = "the batch's slots") -> str:
        """One line for the person who queued the batch (or registered the videos: `whose`
        names the slots' runs)."""
        if self.error:
            return (f"could not pre-start the predictor workers ({self.error}); each run "
                    "starts its own")
        if not self.workers:
            return f"no predictor worker to pre-start: {self.skipped}"
        started = [w.name for w in self.workers if w.state in ("started", "replaced")]
        others = ", ".join(f"{w.name}: {w.state}" + (f" (pid {w.pid})" if w.pid else "")
                           for w in self.workers if w.state not in ("started", "replaced"))
        if not started:
            return f"predictor workers of {whose}: {others}"
        return (f"starting {len(started)} predictor worker(s) in the background for "
                f"{whose} ({', '.join(started)}); the runs use them, waiting for any "
                "still building its model" + (f"; {others}" if others else ""))


def lease_slots(gpus: str, runs_per_gpu: int) -> list[tuple[int | None, int]]:
    """(device index, slot) in the order runs lease them (`leases.slot_order`); [(None, 0)]
    when they lease no GPU (`gpus` ''): their one worker, on the CPU."""
    indices = parse_gpus(gpus)
    return slot_order(indices, runs_per_gpu) if indices else [(None, 0)]


def prestart_workers(settings: PredictorSettings, request: LeaseRequest, runs: int, *,
                     idle_seconds: float, env: dict | None = None) -> WorkerPrestart:
    """Start, detached, the workers of the first min(`runs`, slots) lease slots for
    `settings` (a run's, before its device is set) unless they run already; returns without
    waiting for them to build. `request` and `idle_seconds` are the runs' (`worker_path_on`
    decides, as in a run); `env`: the workers' environment (default: this process's)."""
    if not worker_path_on(idle_seconds, request):
        return WorkerPrestart(skipped="the runs build their model themselves "
                                      "(worker idle seconds 0)")
    if request.node:
        return WorkerPrestart(skipped="runs placed on a cluster node build their model there")
    workers: list[SlotWorker] = []
    try:
        for index, slot in lease_slots(request.gpus, request.runs_per_gpu)[:max(0, runs)]:
            device = "cpu" if index is None else f"cuda:{index}"
            # a worker of other settings is replaced now when no run holds its slot (it then
            # serves none); on CPU no lease tells, so the run that needs it replaces it
            idle = (None if index is None else
                    lambda i=index, s=slot: slot_free(request.slot_dir, i, s))
            state, pid = start_worker(replace(settings, device=device),
                                      worker_dir(request.slot_dir, device, slot),
                                      idle_seconds=idle_seconds, env=env, replace_if=idle)
            workers.append(SlotWorker(device, slot, state, pid))
    except Exception as exc:  # noqa: BLE001 - never fails the backfill: the runs start them
        return WorkerPrestart(tuple(workers), error=f"{type(exc).__name__}: {exc}")
    return WorkerPrestart(tuple(workers))
