"""`RayRunLauncher`: runs placed on a Ray cluster, each GPU run asking Ray for its GPU share.

dagster-ray's launcher submits every run as a Ray Job (`dagster api execute_run` with the code
location's absolute interpreter and working directory: install the project at the same path
on every node). What this subclass adds:

- **GPU share from the run's tags**: a run tagged `gpu=true` (every mask_pngs run: the code
  location and the run coordinator tag them) asks for `1 / runs_per_gpu` GPU (config, or
  env WSOVVIS_RUNS_PER_GPU); any other run (video_partitions, tube_json) asks for none and runs
  on the head. Ray picks a node with a free share and sets the run's `CUDA_VISIBLE_DEVICES`.
- **The run's settings travel with it**: every `WSOVVIS_*` variable of the launching process
  (the daemon, where the code location's settings come from) is set in the job, then
  `WSOVVIS_GPUS=0` (the one device Ray gave the run) or `""` for CPU runs, and
  `WSOVVIS_WORKER_IDLE_SECONDS=0` (the predictor worker is per host and device; under Ray each
  run builds its model, docs/scaling.md), and the fence's background check
  (`wsovvis_instance.fencing`).
- **Clear failures**: a GPU run on a cluster with no GPU is failed at launch saying so (Ray
  would keep it PENDING forever); a Ray job that failed (code not importable on the node, a
  missing interpreter) fails the run with the end of the job's log and what to check.

Run monitoring asks the Ray job's status (dagster-ray); a dead node's jobs fail within
`poll_interval_seconds`. What keeps an orphaned run process from publishing or recording
success after that is `wsovvis_instance.fencing`.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Mapping

from dagster import DagsterRun, Field, IntSource
from dagster_ray import RayRunLauncher
from dagster_ray.configs import USER_DEFINED_RAY_KEY

from wsovvis_dagster.gpu.leases import CLUSTER_ENV, NODE_ENV
from wsovvis_dagster.gpu.run_tags import has_gpu_tags
from wsovvis_instance.dagster_private import (
    CheckRunHealthResult,
    ExecuteRunArgs,
    LaunchRunContext,
    WorkerStatus,
)
from wsovvis_instance.fencing import WATCH_ENV

FORWARD_PREFIX = "WSOVVIS_"
RUNS_PER_GPU_ENV = "WSOVVIS_RUNS_PER_GPU"
# job log lines that mean the node cannot run the code location
IMPORT_TROUBLE = ("ModuleNotFoundError", "ImportError", "No such file or directory",
                  "DagsterImportError", "CodePointer")


class RayClusterError(RuntimeError):
    """The Ray cluster cannot run this run (no GPU anywhere, unreachable)."""


def gpu_share(runs_per_gpu: int) -> float:
    if runs_per_gpu < 1:
        raise ValueError(f"runs_per_gpu must be >= 1, got {runs_per_gpu} ({RUNS_PER_GPU_ENV})")
    return 1.0 / runs_per_gpu


def job_env(tags: Mapping[str, str], env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The run's environment on its Ray node: the launcher's WSOVVIS_* settings, then the
    device and worker settings that Ray placement decides."""
    out = {k: v for k, v in env.items() if k.startswith(FORWARD_PREFIX)}
    out.pop(NODE_ENV, None)  # the node's own name, set where it runs
    out[CLUSTER_ENV] = "ray"  # GPU leases keyed by node + physical device (gpu_slots)
    out["WSOVVIS_GPUS"] = "0" if has_gpu_tags(tags) else ""
    out["WSOVVIS_WORKER_IDLE_SECONDS"] = "0"
    out[WATCH_ENV] = out.get(WATCH_ENV) or "2"  # an orphaned run kills itself within ~2 s
    return out


def check_gpu_capacity(nodes: list[Mapping], share: float, where: str) -> float:
    """Total GPUs of the alive `nodes` (Ray node states: `resources_total`); raises
    `RayClusterError` when none offers the run's `share`."""
    per_node = [float((n.get("resources_total") or {}).get("GPU", 0)) for n in nodes]
    if not any(g >= share for g in per_node):
        raise RayClusterError(
            f"the Ray cluster at {where} has no node with a free GPU share of {share:g} "
            f"({len(nodes)} alive node(s), GPUs per node {per_node or 'none'}): GPU runs would "
            "wait PENDING forever. Start GPU nodes with `ray start --address=<head> "
            "--num-gpus=<N>` (docs/scaling.md), or run mask_pngs on the one-host instance")
    return sum(per_node)


def gpu_tag_limit(instance) -> int | None:
    """The instance's run-tag limit on gpu=true runs, if any."""
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits or []
    return next((int(x["limit"]) for x in limits
                 if all(x.get(k) == v for k, v in (("key", "gpu"), ("value", "true")))), None)


class WsovvisRayRunLauncher(RayRunLauncher):
    """Config: dagster-ray's `ray:` block (address = the dashboard URL, e.g.
    http://head:8265; `num_gpus` there is ignored: the gpu tag decides) plus `runs_per_gpu`."""

    _runs_per_gpu: int | None = None
    _capacity: tuple[float, float] | None = None  # (checked at, total GPUs)

    @classmethod
    def config_type(cls):
        return {**RayRunLauncher.config_type(),
                "runs_per_gpu": Field(IntSource, is_required=False,
                                      description="runs sharing one GPU (default env "
                                      f"{RUNS_PER_GPU_ENV}, else 1)")}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        launcher = cls(inst_data=inst_data, **config_value["ray"])
        launcher._runs_per_gpu = config_value.get("runs_per_gpu")
        return launcher

    @property
    def runs_per_gpu(self) -> int:
        if self._runs_per_gpu is not None:
            return int(self._runs_per_gpu)
        return int(os.environ.get(RUNS_PER_GPU_ENV) or 1)

    def cluster_gpus(self, share: float, max_age_s: float = 10.0) -> float:
        """Total GPUs of the cluster's alive nodes (cached `max_age_s`); raises when none."""
        if self._capacity and time.monotonic() - self._capacity[0] < max_age_s:
            return self._capacity[1]
        from ray.util.state import list_nodes

        nodes = [{"resources_total": n.resources_total} for n in list_nodes(
            address=self.address, filters=[("state", "=", "ALIVE")],
            raise_on_missing_output=False)]
        total = check_gpu_capacity(nodes, share, self.address)
        self._capacity = (time.monotonic(), total)
        return total

    def run_env(self, tags: Mapping[str, str], runtime_env: Mapping | None = None
                ) -> dict[str, str]:
        """The WSOVVIS_* env a run with `tags` gets on its node (`job_env`, then the runtime
        env's own env_vars); `PredictorResource.prestart_workers` resolves a run's settings
        from it (the predictor worker is off here)."""
        runtime_env = self.runtime_env if runtime_env is None else runtime_env
        return {**job_env(tags), **(runtime_env or {}).get("env_vars", {})}

    def ray_config_tag(self, run: DagsterRun) -> dict:
        """The `dagster-ray/config` this run is submitted with: its GPU share, its env, and
        whatever the run's own tag already asks (the run's tag wins)."""
        own = json.loads(run.tags.get(USER_DEFINED_RAY_KEY, "{}") or "{}")
        config: dict = {"num_gpus": gpu_share(self.runs_per_gpu) if has_gpu_tags(run.tags)
                        else None}
        runtime_env = dict(own.get("runtime_env") or self.runtime_env or {})
        runtime_env["env_vars"] = self.run_env(run.tags, runtime_env)
        config["runtime_env"] = runtime_env
        return {**config, **{k: v for k, v in own.items() if k != "runtime_env"}}

    def launch_run(self, context: LaunchRunContext) -> None:
        """`dagster api execute_run` with the code location's absolute interpreter, from its
        absolute working directory, the run's JSON quoted for the shell (dagster-ray's own
        quoting breaks on instance config that holds a quote, and a relative working
        directory, `.` from workspace.yaml, would mean Ray's job folder on the node)."""
        run = context.dagster_run
        origin = run.job_code_origin
        repo = origin.repository_origin
        pointer = repo.code_pointer
        workdir = os.path.abspath(getattr(pointer, "working_directory", None) or os.getcwd())
        if hasattr(pointer, "working_directory"):
            pointer = pointer._replace(working_directory=workdir)
        origin = origin._replace(repository_origin=repo._replace(code_pointer=pointer,
                                                                 entry_point=None))
        args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id,
                              instance_ref=self._instance.get_ref(),
                              set_exit_code_on_failure=True).get_command_args()
        entrypoint = f"cd {shlex.quote(workdir)} && " + " ".join(shlex.quote(a) for a in args)
        self._launch_ray_job(f"dagster-run-{run.run_id}", entrypoint, run)

    @property
    def supports_resume_run(self) -> bool:
        return False  # a run on a lost node is failed and retried (run_retries), not resumed

    def _launch_ray_job(self, submission_id: str, entrypoint: str, run: DagsterRun):
        config = self.ray_config_tag(run)
        share = config.get("num_gpus")
        if share:
            try:
                total = self.cluster_gpus(share)
            except RayClusterError as exc:
                self._instance.report_run_failed(run, str(exc))
                return
            limit = gpu_tag_limit(self._instance)
            slots = total * self.runs_per_gpu
            if limit is not None and limit > slots:
                self._instance.report_engine_event(
                    f"the gpu=true run-tag limit ({limit}) exceeds the Ray cluster's GPU slots "
                    f"({slots:g}): surplus runs wait PENDING inside Ray instead of QUEUED in "
                    "Dagster. Re-render the instance with gpu_limit = GPUs x runs_per_gpu "
                    "(docs/scaling.md)", run)
        self._instance.report_engine_event(
            f"Ray job {submission_id}: asks for {share or 0:g} GPU "
            f"({'GPU run' if share else 'CPU run: placed on any node, the head included'})",
            run)
        run = run.with_tags({**run.tags, USER_DEFINED_RAY_KEY: json.dumps(config)})
        super()._launch_ray_job(submission_id, entrypoint, run)

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """dagster-ray's verdict from the Ray job's status; a failed job's message (which
        quotes the whole entrypoint) cut to its last lines, plus what to check when the code
        could not start on the node."""
        result = super().check_run_worker_health(run)
        if result.status != WorkerStatus.FAILED:
            return result
        try:  # dagster-ray leaves the job's own message out for a STARTED run
            detail = self.client.get_job_info(f"dagster-run-{run.run_id}").message or ""
        except Exception:  # the job's record went with its node
            detail = ""
        text = f"{result.msg}: {detail}" if detail and detail not in (result.msg or "") else (
            result.msg or "")
        hint = ""
        if any(word in text for word in IMPORT_TROUBLE):
            hint = ("The run could not start its code on the Ray node: install the project "
                    "(`pip install -e .[deploy,ray]`, same virtualenv path) at the same absolute "
                    "path on every node, or share it over NFS (docs/scaling.md). ")
        tail = text if len(text) <= 3000 else "..." + text[-3000:]
        return CheckRunHealthResult(WorkerStatus.FAILED, f"{hint}{tail}")
