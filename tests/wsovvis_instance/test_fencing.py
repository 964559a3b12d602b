"""Fences and placement rules of the multi-host deployment, without a cluster (cheap).

The end-to-end behaviour on a real Ray cluster is tests/wsovvis_instance/test_multihost.py
(marker `multihost`).
"""

from __future__ import annotations

import json

import pytest
from dagster import DagsterEvent, DagsterEventType, DagsterRunStatus

from wsovvis_dagster.atomic import atomic_dir
from wsovvis_dagster.gpu.leases import acquire_gpu_slot, slot_holders
from wsovvis_instance.fencing import RunFence, RunFencedError


def _run(instance, status=DagsterRunStatus.STARTED):
    from dagster._core.test_utils import create_run_for_test

    return create_run_for_test(instance, job_name="j", status=status)


def test_fence_stops_publishing_once_dagster_failed_the_run(instance, tmp_path):
    run = _run(instance)
    fence = RunFence(instance, run.run_id)
    target = tmp_path / "masks" / "v1"
    with atomic_dir(target, before_swap=fence) as tmp:  # STARTED: published
        (tmp / "a.png").write_bytes(b"first")
    instance.report_run_failed(run, "node lost")
    with pytest.raises(RunFencedError, match="FAILURE"):
        with atomic_dir(target, before_swap=fence) as tmp:
            (tmp / "a.png").write_bytes(b"second")
    # the published folder is the first writer's, and no temp folder is left behind
    assert (target / "a.png").read_bytes() == b"first"
    assert not [p for p in target.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_cluster_leases_are_keyed_by_node_and_physical_gpu(tmp_path, monkeypatch):
    """Under Ray every run sees its GPU as index 0; the lease is the node's physical device."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    a = acquire_gpu_slot("0", run_id="a", slot_dir=tmp_path, node="nodeA", timeout_s=0)
    b = acquire_gpu_slot("0", run_id="b", slot_dir=tmp_path, node="nodeB", timeout_s=0)
    assert (a.path, b.path) == (tmp_path / "nodeA" / "gpu1.lock", tmp_path / "nodeB" / "gpu1.lock")
    assert (a.device, a.physical, a.node) == ("cuda:0", "1", "nodeA")
    # an orphan still holding (nodeA, GPU 1) blocks a retry placed on that same device
    with pytest.raises(Exception, match="no free GPU"):
        acquire_gpu_slot("0", run_id="retry", slot_dir=tmp_path, node="nodeA", timeout_s=0)
    assert slot_holders("1", tmp_path / "nodeA")[1]["run_id"] == "a"
    a.release()
    b.release()
    assert acquire_gpu_slot("0", run_id="retry", slot_dir=tmp_path, node="nodeA",
                            timeout_s=0).path == a.path


class _Run:
    def __init__(self, tags):
        self.tags = tags


def test_gpu_runs_ask_ray_for_their_share_and_cpu_runs_for_none(monkeypatch):
    pytest.importorskip("dagster_ray")  # the `ray` extra
    from wsovvis_instance.ray_launcher import WsovvisRayRunLauncher

    monkeypatch.setenv("WSOVVIS_PREDICTOR", "cpu-slow")
    monkeypatch.setenv("WSOVVIS_GPUS", "0,1,2,3")  # the daemon host's list: not the run's
    launcher = WsovvisRayRunLauncher(address="http://127.0.0.1:1")
    gpu = launcher.ray_config_tag(_Run({"gpu": "true"}))
    cpu = launcher.ray_config_tag(_Run({}))
    assert gpu["num_gpus"] == 1.0 and cpu["num_gpus"] is None
    env = gpu["runtime_env"]["env_vars"]
    assert env["WSOVVIS_GPUS"] == "0" and env["WSOVVIS_PREDICTOR"] == "cpu-slow"
    assert env["WSOVVIS_WORKER_IDLE_SECONDS"] == "0" and env["WSOVVIS_CLUSTER"] == "ray"
    assert cpu["runtime_env"]["env_vars"]["WSOVVIS_GPUS"] == ""
    launcher._runs_per_gpu = 2
    assert launcher.ray_config_tag(_Run({"gpu": "true"}))["num_gpus"] == 0.5
    # a run's own dagster-ray/config wins
    own = {"gpu": "true", "dagster-ray/config": json.dumps({"num_gpus": 2})}
    assert launcher.ray_config_tag(_Run(own))["num_gpus"] == 2


def test_gpu_run_on_a_cluster_without_gpus_is_refused_clearly():
    pytest.importorskip("dagster_ray")
    from wsovvis_instance.ray_launcher import RayClusterError, check_gpu_capacity

    head = {"resources_total": {"CPU": 4.0}}
    with pytest.raises(RayClusterError, match="no node with a free GPU share.*ray start"):
        check_gpu_capacity([head], 1.0, "http://head:8265")
    assert check_gpu_capacity([head, {"resources_total": {"GPU": 2.0}}], 0.5, "x") == 2.0


@pytest.mark.postgres
def test_run_storage_never_moves_a_failed_run_to_success(tmp_path):
    """An orphan's RUN_SUCCESS after Dagster failed the run leaves it FAILURE."""
    pytest.importorskip("dagster_postgres")
    from dagster import DagsterInstance

    from wsovvis_ops.instance import render_instance
    from wsovvis_ops.pg_cluster import bin_dir, postgres_cluster

    with postgres_cluster(bin_dir()) as url:
        pg = f"{{postgres_url: '{url}'}}"
        render_instance(tmp_path, extra_yaml=(
            f"run_storage: {{module: wsovvis_instance.fenced_storage, "
            f"class: FencedPostgresRunStorage, config: {pg}}}\n"
            f"event_log_storage: {{module: dagster_postgres.event_log, "
            f"class: PostgresEventLogStorage, config: {pg}}}\n"))
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            failed, fine = _run(instance), _run(instance)
            instance.report_run_failed(failed, "node lost")
            for run in (failed, fine):
                instance.report_dagster_event(DagsterEvent(
                    DagsterEventType.RUN_SUCCESS.value, job_name="j"), run_id=run.run_id)
            assert instance.get_run_by_id(failed.run_id).status == DagsterRunStatus.FAILURE
            assert instance.get_run_by_id(fine.run_id).status == DagsterRunStatus.SUCCESS


def test_a_run_whose_code_cannot_start_on_its_node_fails_saying_what_to_install(instance):
    """Run monitoring's health check on a Ray job that failed importing the code location:
    the run's failure names the cause (the end of the job's log) and the fix."""
    pytest.importorskip("dagster_ray")
    from ray.job_submission import JobStatus

    from wsovvis_instance.dagster_private import WorkerStatus
    from wsovvis_instance.ray_launcher import WsovvisRayRunLauncher

    log = "Traceback ...\n" * 500 + "ModuleNotFoundError: No module named 'definitions'\n"

    class JobsApi:  # the Ray job API's answers for a job whose entrypoint failed
        def get_job_status(self, submission_id):
            return JobStatus.FAILED

        def get_job_info(self, submission_id):
            return type("Info", (), {"message": f"Job entrypoint command failed: {log}"})()

    launcher = WsovvisRayRunLauncher(address="http://127.0.0.1:1")
    launcher.register_instance(instance)
    launcher.__dict__["client"] = JobsApi()  # dagster-ray's cached client
    result = launcher.check_run_worker_health(_run(instance))
    assert result.status == WorkerStatus.FAILED
    assert "install the project" in result.msg and "same absolute path" in result.msg
    assert result.msg.endswith("No module named 'definitions'\n") and len(result.msg) < 4000
