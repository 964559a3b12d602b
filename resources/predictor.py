"""The video predictor resource: one model per run, on the device the run was given.

Thin: the fields are the settings (docs/settings.md); a run's GPU lease and model are a
`wsovvis_dagster.gpu.session.PredictorSession`, opened when the step first uses it (so after the
step has its `gpu` pool slot) and closed at teardown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from resources.settings import (
    SettingsError,
    configured_value,
    env_var_name,
    launch_keys,
    resolved,
    setting_sources,
)
from wsovvis_dagster.gpu.leases import (
    SLOTS_FOLDER,
    LeaseRequest,
    cluster_node,
    resolve_slot_dir,
)
from wsovvis_dagster.gpu.prestart import WorkerPrestart, prestart_workers
from wsovvis_dagster.gpu.run_tags import GPU_RUN_TAGS
from wsovvis_dagster.gpu.session import (
    PredictorSession,
    connect_slot_worker,
)
from wsovvis_dagster.gpu.worker import WorkerClient
from wsovvis_dagster.predictors.backends import BACKENDS, backend, by_backend, output_changes
from wsovvis_dagster.predictors.factory import output_fingerprint
from wsovvis_dagster.predictors.settings import (
    GPU_MEMORY_BUDGET_GIB,
    SETTINGS_FIELDS,
    PredictorSettings,
    default_gpu_memory_gib,
)
from wsovvis_instance.fencing import WATCH_ENV, RunFence

_D = PredictorSettings()  # the built-in defaults of every library setting, defined once


class PredictorResource(ConfigurableResource):
    """Builds the configured backend once per run (at the step's first use of `session`), not
    per video, or,
    with a predictor worker (`worker_idle_seconds` > 0, the default for backends whose record
    says so, `wsovvis_dagster.predictors.backends`), connects to the long-lived process that
    holds the model for this run's GPU slot and starts it if none runs
    (`wsovvis_dagster.gpu.worker`): the model is then built once per slot, not once per run.

    With `gpus` set, the run first leases one free device (`wsovvis_dagster.gpu.leases`: an
    exclusive flock under `<DAGSTER_HOME>/gpu_slots`) and builds the model there; the lease is
    released at teardown, or by the kernel if the process dies (`wsovvis_dagster.gpu.session`).
    Setup checks the settings but leases nothing: a run that only keeps or imports masks never
    leases a GPU or builds a model, and a run whose steps execute in its own process (Dagster's
    `in_process` executor config), where resources are set up before the step claims its
    `gpu` pool slot, holds no GPU while it waits for the pool.

    Every field is also an env var, `WSOVVIS_<FIELD>` (aliases below), applied in
    `definitions.build_resources`; see docs/settings.md.
    """

    RESOURCE_KEY: ClassVar[str] = "predictor"
    ENV_ALIASES: ClassVar[dict[str, str]] = {
        "backend": "WSOVVIS_PREDICTOR", "weights": "WSOVVIS_VIDEOCUTLER_WEIGHTS"}
    # fields of the run, not of the model: which GPU it leases and where its model lives. The
    # other fields are PredictorSettings' by name, but `device`, which the lease gives
    # (tests/resources/test_settings.py checks both lists and docs/settings.md's table)
    RUN_FIELDS: ClassVar[tuple[str, ...]] = (
        "gpus", "slot_dir", "runs_per_gpu", "worker_idle_seconds", "lease_timeout_s")

    backend: str = Field(default=_D.backend, description="; ".join(
                         f"{b.name}: {b.description}" for b in BACKENDS.values())
                         + " (env WSOVVIS_PREDICTOR)",
                         pattern=f"^({'|'.join(re.escape(b) for b in BACKENDS)})$")
    gpus: str = Field(
        default="", pattern=r"^\s*(auto|\d+(\s*,\s*\d+)*)?\s*$",
        description="GPU indices this machine offers runs, e.g. '0,1,2,3' (env WSOVVIS_GPUS). "
        "Empty: CPU. Each run leases one free index for its whole duration.",
    )
    slot_dir: str = Field(
        default="", description="Lease files folder, local disk (default: "
        f"<DAGSTER_HOME>/{SLOTS_FOLDER})"
    )
    runs_per_gpu: int = Field(
        default=1, ge=1,
        description="Runs that may share one GPU at once (env WSOVVIS_RUNS_PER_GPU); each holds "
        "its own lease slot and predictor worker, and an equal share of the GPU memory budget. "
        "Set the `gpu` pool limit (WSOVVIS_GPU_LIMIT, default 4) >= GPUs x this",
    )
    cudnn_benchmark: bool = Field(
        default=_D.cudnn_benchmark, description="VideoCutLER on CUDA: cuDNN autotuning (env "
        "WSOVVIS_CUDNN_BENCHMARK=1 turns it on; off by default: it re-tunes on every new clip "
        "length and gave no steady speed, docs/gpu.md)",
    )
    gpu_memory_gib: float | None = Field(
        default=None, ge=0,
        description="VideoCutLER on CUDA: cap on this run's PyTorch allocator in GiB (env "
        "WSOVVIS_GPU_MEMORY_GIB; 0 = none). Default: "
        f"{GPU_MEMORY_BUDGET_GIB:g} / runs_per_gpu, so the runs of one GPU stay within "
        f"{GPU_MEMORY_BUDGET_GIB:g} GiB together. With autotuning on, it bounds cuDNN's "
        "workspace (44-55 GiB uncapped on an H200)",
    )
    warmup: bool = Field(
        default=_D.warmup, description="VideoCutLER on CUDA: run one chunk when the model is "
        "built, so CUDA's lazy kernel loading (and autotuning, if on) happens before the first "
        "video (env WSOVVIS_WARMUP)",
    )
    worker_idle_seconds: float | None = Field(
        default=None, ge=0,
        description="Predictor worker: keep the model in a long-lived process per GPU slot that "
        "serves every run and exits after this many seconds without one (env "
        "WSOVVIS_WORKER_IDLE_SECONDS). 0: build the model inside each run. Default: "
        f"{by_backend(lambda b: b.worker_idle_seconds)}",
    )
    lease_timeout_s: float = Field(
        default=3600.0, description="How long a run waits for a free GPU before failing"
    )
    max_tracks: int = _D.max_tracks
    vnext_root: str = _D.vnext_root
    cutler_root: str = _D.cutler_root
    config_file: str = _D.config_file
    weights: str = Field(default=_D.weights, description="local path to "
                         "videocutler_m2f_rn50.pth (env WSOVVIS_VIDEOCUTLER_WEIGHTS)")
    confidence: float = _D.confidence
    chunk_size: int = _D.chunk_size
    chunk_overlap: int = _D.chunk_overlap
    allow_random_weights: bool = Field(
        default=_D.allow_random_weights,
        description="TESTING ONLY: build VideoCutLER with random weights"
    )
    fast_path: bool = Field(
        default=_D.fast_path,
        description="VideoCutLER: resize/normalise and compose masks on the GPU (False: "
        "upstream VideoPredictor's steps exactly; fp32 output is identical)",
    )
    precision: str = Field(
        default=_D.precision, pattern="^(fp32|tf32|bf16|fp16)$",
        description="VideoCutLER fast path: tf32 (fp32 tensors, TF32 matmuls; the default), "
        "fp32, or bf16/fp16 autocast (agreement with fp32 in docs/gpu.md)",
    )
    deform_attn: str = Field(
        default=_D.deform_attn, pattern="^(auto|cuda|pytorch)$",
        description="MultiScaleDeformableAttention: the CUDA op, the PyTorch path, or auto",
    )
    hold_seconds: float = Field(
        default=_D.hold_seconds,
        description="TESTING ONLY (backend cpu-slow): seconds held per video"
    )

    _session: PredictorSession | None = PrivateAttr(default=None)
    _open_session: Callable[[], PredictorSession] | None = PrivateAttr(default=None)
    _fence: RunFence | None = PrivateAttr(default=None)
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    def check_launch_settings(self, launched: set[str], env=os.environ) -> None:
        """Refuse launch-time values that change the masks: mask_pngs' code version is stamped
        from the settings the code location loaded (defaults < env), so such masks would be
        recorded as if made with those and never show stale. Set the env var instead."""
        settings = self.settings()
        before = replace(settings, **{k: configured_value(type(self), env, k)
                                      for k in launched if k in SETTINGS_FIELDS})
        changed = sorted(set(output_changes(before, settings)) & launched)
        if not changed:
            return
        fixes = ", ".join(f"{env_var_name(type(self), k)}={getattr(settings, k)}"
                          for k in changed)
        raise SettingsError(
            "launch-time predictor config changes the masks ("
            + ", ".join(f"{k}: {getattr(before, k)!r} -> {getattr(settings, k)!r}"
                        for k in changed)
            + f"), but mask_pngs' code version was stamped from backend={before.backend!r} "
            "and the other settings the code location loaded; the masks would be recorded "
            f"under the wrong version. Set {fixes} in the code location's environment "
            "(definitions.py reads it) and reload, or leave these keys out of the run config."
        )

    @property
    def sources(self) -> dict[str, str]:
        """Which layer set each setting in this run (launch / env VAR / code / default)."""
        return dict(self._sources)

    def effective_settings(self) -> dict[str, dict]:
        """Every field's value in this run and the layer that set it (run metadata)."""
        return {k: {"value": getattr(self, k), "source": self._sources.get(k, "?")}
                for k in type(self).model_fields}

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if context.run is not None and context.run.is_finished:
            # `execute_job` (hence `dagster job execute`) re-initialises every resource after
            # the run, to load outputs, with the finished run: no model, no GPU lease there
            if context.log:
                context.log.debug("run already finished: predictor not built")
            return
        launched = launch_keys(context, self.RESOURCE_KEY)
        self._sources = setting_sources(self, os.environ, launched)
        self.check_launch_settings(launched)
        if context.log and launched:
            context.log.warning(  # loud: these differ from what the code location loaded
                "predictor settings set at launch: " + ", ".join(
                    f"{k}={getattr(self, k)!r}" for k in sorted(launched)))
        run_id = context.run.run_id if context.run else "local"
        if context.instance is not None and context.run is not None:
            # a run Dagster has failed publishes nothing more (wsovvis_instance.fencing)
            self._fence = RunFence(context.instance, run_id)
            if float(os.environ.get(WATCH_ENV) or 0) > 0:
                self._fence.watch(float(os.environ[WATCH_ENV]))
        request = self.lease_request(context.instance.root_directory if context.instance
                                     else None)
        log = context.log.info if context.log else None

        def open_session() -> PredictorSession:
            return PredictorSession.open(
                self.settings(), request, run_id=run_id, idle_seconds=self.worker_idle(),
                before_publish=self._fence, log=log,
                backend_source=self._sources.get("backend", "?"))

        self._open_session = open_session

    def lease_request(self, home: str | Path | None = None, env=os.environ) -> LeaseRequest:
        """What this run may lease: the lease folder defaults to <home>/gpu_slots (home: the
        instance's root, DAGSTER_HOME); leases are keyed by node in a cluster run (`env`)."""
        return LeaseRequest(self.gpus, resolve_slot_dir(self.slot_dir, home),
                            self.runs_per_gpu, self.lease_timeout_s, cluster_node(env))

    def prestart_workers(self, instance, runs: int) -> WorkerPrestart:
        """Start the predictor workers that the next `runs` mask runs `instance` launches will
        connect to, without waiting for their models (`gpu.prestart.prestart_workers`), with the
        settings those runs resolve: this resource's (the code location's, no launch-time
        config), in the env the instance's run launcher gives a run when it rewrites it
        (`run_env`: the Ray launcher's turns the worker off)."""
        try:
            run_env = getattr(instance.run_launcher, "run_env", None)
            env = run_env(GPU_RUN_TAGS) if run_env else os.environ
            run = resolved(type(self), env) if run_env else self
            return prestart_workers(run.settings(),
                                    run.lease_request(instance.root_directory, env), runs,
                                    idle_seconds=run.worker_idle())
        except Exception as exc:  # noqa: BLE001 - never fails the backfill: the runs start them
            return WorkerPrestart(error=f"{type(exc).__name__}: {exc}")

    def connect_worker(self, slot_dir: str | Path, device: str, slot: int = 0,
                       env: dict | None = None) -> WorkerClient:
        """The predictor worker of (`device`, `slot`) under `slot_dir` for these settings,
        started if none runs (what a run does at setup; benchmarks pre-start workers so)."""
        return connect_slot_worker(self.settings(device), slot_dir, slot,
                                   idle_seconds=self.worker_idle(), env=env)

    def worker_idle(self) -> float:
        """Seconds a predictor worker outlives its last run; 0 = no worker."""
        if self.worker_idle_seconds is not None:
            return self.worker_idle_seconds
        return backend(self.backend).worker_idle_seconds

    @property
    def session(self) -> PredictorSession:
        """This run's GPU lease and model (`segment_videos`, `model_identity`, `placement`,
        ...): leased and built at the first use, open until teardown."""
        if self._session is None:
            if self._open_session is None:
                raise RuntimeError("PredictorResource used outside a run (setup_for_execution)")
            self._session = self._open_session()  # releases what it took if it fails
        return self._session

    def check_fence(self) -> None:
        """Raise `RunFencedError` if Dagster has failed or cancelled this run meanwhile."""
        if self._fence is not None:
            self._fence()

    def settings(self, device: str = "cpu") -> PredictorSettings:
        """The library settings this resource stands for, on `device` (copied by name)."""
        values = {k: getattr(self, k) for k in SETTINGS_FIELDS if k != "device"}
        if values["gpu_memory_gib"] is None:
            values["gpu_memory_gib"] = default_gpu_memory_gib(self.runs_per_gpu)
        return PredictorSettings(device=device, **values)

    def output_fingerprint(self) -> str:
        """Short hash of the settings that change the masks (`factory.output_fingerprint`).

        Becomes part of `mask_pngs`' code version, so changing backend, weights or thresholds
        marks every video stale. The weights file counts by path, size and mtime.
        """
        return output_fingerprint(self.settings())

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._fence is not None:
            self._fence.stop()
            self._fence = None
        self._open_session = None
        if self._session is not None:
            self._session.close()  # the worker stays up for the next run (idle timeout)
            self._session = None
