"""One run's GPU runtime: lease a GPU slot, give the run its predictor (in the slot's worker, or
built in the run), and give it all back when the run ends.

`PredictorSession` is what a `mask_pngs` run holds between its resource's setup and teardown;
`trained_model` leases its devices with the same `LeaseRequest` (gpu.leases), so the two
never share a device. The run's log lines come from here (`log`): tests/gpu/test_coordination.py and
`wsovvis_ops.runs` parse "gpu lease acquired: <device> (...)" and "gpu lease released: <device>",
so keep their wording.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from wsovvis_dagster.gpu.leases import GpuLease, LeaseRequest, node_name
from wsovvis_dagster.gpu.worker import WorkerClient, connect_worker, worker_dir
from wsovvis_dagster.masks.segment import VideoOutcome, segment_videos
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.predictors import VideoPredictor
from wsovvis_dagster.predictors.factory import build_predictor
from wsovvis_dagster.predictors.settings import PredictorSettings


def connect_slot_worker(settings: PredictorSettings, slot_dir: str | Path, slot: int = 0, *,
                        idle_seconds: float, env: dict | None = None) -> WorkerClient:
    """The predictor worker of (`settings.device`, `slot`) under `slot_dir` for these settings,
    started if none runs (what a run does at setup; benchmarks pre-start workers so)."""
    return connect_worker(settings, worker_dir(slot_dir, settings.device, slot),
                          idle_seconds=idle_seconds, env=env)


def worker_path_on(idle_seconds: float, request: LeaseRequest) -> bool:
    """Whether a run keeps its model in its slot's predictor worker (else it builds it itself):
    a worker idle time (0 under the Ray launcher, and by default for the CPU backends) and a
    lease folder to hold the workers' state. The runs and `gpu.prestart` both ask this."""
    return idle_seconds > 0 and bool(request.slot_dir)


def _ignore(message: str) -> None:
    return None


@dataclass
class PredictorSession:
    """A run's GPU lease (None on CPU) and the model serving it: the slot's predictor
    `worker`, or a `predictor` built in this process. `open` makes one, `close` ends it."""

    lease: GpuLease | None
    worker: WorkerClient | None = None
    predictor: VideoPredictor | None = None
    # called before each video's masks are published (a fence: a failed run writes nothing)
    before_publish: Callable[[], None] | None = None
    log: Callable[[str], None] = _ignore

    @classmethod
    def open(cls, settings: PredictorSettings, request: LeaseRequest, *, run_id: str,
             idle_seconds: float, before_publish: Callable[[], None] | None = None,
             log: Callable[[str], None] | None = None, backend_source: str = "?"
             ) -> PredictorSession:
        """Lease a device for `run_id`, then connect the slot's worker (`idle_seconds` > 0 and
        a lease folder) or build the predictor here. On any failure the lease is released."""
        log = log or _ignore
        session = cls(request.acquire(run_id), before_publish=before_publish, log=log)
        device = session.device
        try:
            if session.lease:
                log(f"gpu lease acquired: {device} ({session.lease.path})")
            log(f"building predictor backend={settings.backend} on {device} "
                f"(backend from {backend_source})")
            settings = replace(settings, device=device)
            if worker_path_on(idle_seconds, request):
                session.worker = connect_slot_worker(
                    settings, request.slot_dir, session.lease.slot if session.lease else 0,
                    idle_seconds=idle_seconds)
                info, worker = session.worker.info, session.worker
                log(f"predictor worker pid {info['pid']} on {device}: "
                    + (f"reused (model built {time.time() - info['started_at']:.0f} s ago, "
                       f"{info['served']} requests served)" if worker.reused
                       else f"started, model built in {info['built_s']} s")
                    + f"; exits after {idle_seconds:g} s without a run (log {worker.log_path})")
            else:
                session.predictor = build_predictor(settings)
        except BaseException:
            session.close()
            raise
        return session

    @property
    def device(self) -> str:
        """'cuda:N' leased for this run, or 'cpu'."""
        return self.lease.device if self.lease else "cpu"

    def segment_videos(self, data_root: Path, output_root: Path, refs: Iterable[VideoRef], *,
                       skip_bad_frames: bool = False) -> Iterator[VideoOutcome]:
        """`masks.segment.segment_videos` with this run's model: in the worker, or here."""
        if self.worker is not None:
            return self.worker.segment_videos(data_root, output_root, refs,
                                              skip_bad_frames=skip_bad_frames)
        if self.predictor is None:
            raise RuntimeError("this predictor session is closed")
        return segment_videos(data_root, output_root, list(refs), self.predictor,
                              skip_bad_frames=skip_bad_frames,
                              before_publish=self.before_publish)

    @property
    def model_identity(self) -> tuple[str, str]:
        """(name, version) of the model serving this run."""
        if self.worker is not None:
            return self.worker.info["name"], self.worker.info["version"]
        if self.predictor is None:
            raise RuntimeError("this predictor session is closed")
        return self.predictor.name, self.predictor.version

    @property
    def placement(self) -> dict[str, str]:
        """Where this run's videos ran: node (host, or the cluster node's name) and the
        physical device id on it (metadata: `node`, `physical_gpu`)."""
        out = {"node": node_name()}
        if self.lease is not None and self.lease.physical:
            out["physical_gpu"] = self.lease.physical
        return out

    @property
    def worker_info(self) -> dict | None:
        """The worker serving this run (pid, reused, build seconds and where they went:
        `load_times` imports / build / weights / warmup, ...), or None."""
        if self.worker is None:
            return None
        info = self.worker.info
        phases = info.get("load_times") or {}
        return {"pid": info["pid"], "reused": self.worker.reused, "built_s": info["built_s"],
                **({"load_times": {k: round(v, 2) for k, v in phases.items()}} if phases else {}),
                "started_at": info["started_at"], "log": str(self.worker.log_path)}

    def close(self) -> None:
        """Drop the model (the worker stays up for the next run, until its idle timeout) and
        release the lease. Idempotent."""
        self.predictor = None
        self.worker = None
        if self.lease is not None:
            device = self.lease.device
            self.lease.release()
            self.lease = None
            self.log(f"gpu lease released: {device}")

    def __enter__(self) -> PredictorSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
