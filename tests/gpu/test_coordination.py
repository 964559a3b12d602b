"""GPU run coordination with a real `dagster-daemon` (queue, backfills, retries, monitoring).

The predictor is the `cpu-slow` test backend: the cpu predictor's output, returned after a fixed
hold per video, on fake GPU indices (it never touches CUDA), so runs occupy their "GPU" for a
known time and their PNGs equal the plain cpu backend's byte for byte.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from mask_maps import assert_identical_to_reference
from wsovvis_dagster.gpu.leases import slot_holders
from wsovvis_instance.dagster_private import PARENT_RUN_ID_TAG, BulkActionStatus
from wsovvis_ops.backfill import launch_backfill
from wsovvis_ops.instance import render_instance, start_daemon, stop_daemon, wait_for
from wsovvis_ops.pg_cluster import free_port
from wsovvis_ops.runs import max_overlap, run_spans

REPO = Path(__file__).resolve().parents[2]
MASKS, TUBES = AssetKey("mask_pngs"), AssetKey("tube_json")
GPUS = "0,1,2,3"


def test_template_sets_both_limits_from_one_value(tmp_path):
    template = (REPO / "dagster_home" / "dagster.yaml").read_text()
    settings = [line for line in template.splitlines() if not line.lstrip().startswith("#")]
    assert sum("@GPU_LIMIT@" in line for line in settings) == 2  # pool + run tag limit
    home = tmp_path / "home"
    render_instance(home, gpu_limit=3)
    with DagsterInstance.from_config(str(home)) as instance:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 3
        assert config.pool_config.pool_granularity is None  # = op: steps claim slots
        assert config.run_queue_config.tag_concurrency_limits == [
            {"key": "gpu", "value": "true", "limit": 3}]
        assert instance.run_coordinator.dequeue_use_threads
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.run_monitoring_enabled


def test_coordinator_tags_runs_that_select_a_gpu_asset(instance, monkeypatch):
    """Runs as the UI submits them (no tags): a mask_pngs run gets the GPU run tags, including
    a deployment's tags file; a tube_json run gets none; a tag the run has is kept."""
    import sys

    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.run_coordinator import SubmitRunContext
    from dagster._core.test_utils import create_run_for_test
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    from wsovvis_instance.coordinator import GpuRunCoordinator

    assert isinstance(instance.run_coordinator, GpuRunCoordinator)  # from the template
    monkeypatch.setenv("WSOVVIS_GPU_RUN_TAGS_FILE", str(REPO / "deploy/k8s/gpu_run_tags.yaml"))
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="definitions",
                             working_directory=str(REPO)), location_name="definitions")
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget([origin])) as process:
        workspace = process.create_request_context()
        job = workspace.get_code_location("definitions").get_repository(
            "__repository__").get_full_job("__ASSET_JOB")

        def submit(selection, tags=None):
            run = create_run_for_test(instance, job_name="__ASSET_JOB", tags=tags or {},
                                      asset_selection=selection,
                                      remote_job_origin=job.get_remote_origin(),
                                      status=DagsterRunStatus.NOT_STARTED)
            instance.run_coordinator.submit_run(SubmitRunContext(run, workspace))
            return instance.get_run_by_id(run.run_id)

        masks, tubes = submit({MASKS}), submit({TUBES})
        kept = submit({MASKS, TUBES}, tags={"dagster-k8s/config": "{}"})
    assert masks.status == tubes.status == DagsterRunStatus.QUEUED
    assert masks.tags["gpu"] == "true"
    assert json.loads(masks.tags["dagster-k8s/config"])["container_config"]["resources"][
        "limits"]["nvidia.com/gpu"] == 1
    assert "gpu" not in tubes.tags and "dagster-k8s/config" not in tubes.tags
    assert kept.tags["gpu"] == "true" and kept.tags["dagster-k8s/config"] == "{}"
    events = instance.get_records_for_run(masks.run_id, of_type=DagsterEventType.ENGINE_EVENT)
    assert any("GPU run tags added" in (r.event_log_entry.dagster_event.message or "")
               for r in events.records)


def _env(subprocess_env, data: Path, out: Path, hold: float) -> dict:
    return {**subprocess_env, "WSOVVIS_DATA_ROOT": str(data), "WSOVVIS_OUTPUT_ROOT": str(out),
            "WSOVVIS_PREDICTOR": "cpu-slow", "WSOVVIS_HOLD_SECONDS": str(hold),
            "WSOVVIS_GPUS": GPUS}


def _dataset(root: Path, videos: int) -> list[str]:
    from wsovvis_dagster.video.synthetic import generate_dataset

    generate_dataset(root, seed=3, num_frames=4, videos_per_split={"train": videos})
    return [f"train__train{i:04d}" for i in range(videos)]


@pytest.mark.slow
def test_cli_runs_outside_the_queue_are_capped_by_the_pool(dagster_home, subprocess_env, tmp_path):
    """`dagster asset materialize` runs in the CLI process (no queue, no run tags): only the
    pool limits it. With a limit of 1, a CLI run started while another holds the slot waits
    for it: their GPU steps never overlap. (The second starts once the first's step runs:
    two claims of the last slot at the same instant can both succeed on SQLite, which reads,
    then writes the slot: docs/gpu.md.)"""
    render_instance(dagster_home, gpu_limit=1)
    keys = _dataset(tmp_path / "data", 2)
    # the first run holds the slot 8 s, well past the second CLI process's start (2-4 s)
    env = _env(subprocess_env, tmp_path / "data", tmp_path / "out", hold=8)

    def materialize(key: str) -> subprocess.Popen:
        return subprocess.Popen(["dagster", "asset", "materialize", "--select", "mask_pngs",
                                 "--partition", key], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("videos", keys)
        procs = [materialize(keys[0])]
        try:
            wait_for(lambda: [s for s in run_spans(instance, [r.run_id for r in
                                                              instance.get_runs()])
                              if s.step_start is not None],
                     timeout=120, poll=0.2, what="the first CLI run's GPU step")
            procs.append(materialize(keys[1]))
            logs = [p.communicate(timeout=240)[0] for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert all(p.returncode == 0 for p in procs), logs
        spans = run_spans(instance, [r.run_id for r in instance.get_runs()])
        assert len(spans) == 2 and all(s.status == "SUCCESS" for s in spans)
        assert max_overlap((s.step_start, s.step_end) for s in spans) == 1
        assert any("Step blocked by limit for pool gpu" in log for log in logs)
        # two GPU leases, never held at the same time, each released
        leases = sorted(lease for s in spans for lease in s.leases)
        assert len(leases) == 2 and leases[0][2] <= leases[1][1]


def _kill_a_run_mid_video(instance, slot_dir: Path, hold: float, daemon_pid: int, *,
                          gpus: str = GPUS, all_held: bool = False) -> dict:
    """SIGKILL the run worker and step process of a run that is past its first video; with
    `all_held`, only once every GPU of `gpus` is held (so the runs' overlap reaches that count
    whatever the machine's load: a run starting late would otherwise start after the victim
    ended)."""

    def victim():
        holders = slot_holders(gpus, slot_dir)
        if all_held and not all(h and h.get("pid") for h in holders.values()):
            return None
        for index, holder in holders.items():
            if holder and holder.get("pid") and time.time() - holder["since"] > 1.5 * hold:
                return {**holder, "index": index}
        return None

    holder = wait_for(victim, timeout=120, poll=0.2, what="a run holding a GPU")
    step_pid = holder["pid"]
    worker_pid = int(Path(f"/proc/{step_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert worker_pid not in (os.getpid(), daemon_pid, 1)
    assert instance.get_run_by_id(holder["run_id"]).status == DagsterRunStatus.STARTED
    os.kill(worker_pid, signal.SIGKILL)  # no cleanup anywhere: the harshest way a run dies
    os.kill(step_pid, signal.SIGKILL)
    holder["killed_at"] = time.time()
    return holder


@pytest.mark.slow
def test_backfill_runs_four_gpu_runs_at_a_time_and_survives_a_killed_run(
    dagster_home, subprocess_env, tmp_path
):
    hold, videos = 2.5, 20  # 20 videos -> 5 runs of 4 (BackfillPolicy.multi_run(4)), limit 4
    # same template, faster clean-up of killed runs' pool slots than production's 20 s + 30 s
    render_instance(dagster_home, gpu_limit=4, extra_yaml=(
        "run_monitoring: {poll_interval_seconds: 2, free_slots_after_run_end_seconds: 2}"))
    data, out = tmp_path / "data", tmp_path / "out"
    keys = _dataset(data, videos)
    env = _env(subprocess_env, data, out, hold)
    slot_dir = dagster_home / "gpu_slots"

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("videos", keys)
        backfill_id = launch_backfill(instance, keys, assets=["mask_pngs", "tube_json"])
        daemon = start_daemon(env, tmp_path / "daemon.log")
        try:
            killed = _kill_a_run_mid_video(instance, slot_dir, hold, daemon.pid, all_held=True)
            killed_run = instance.get_run_by_id(killed["run_id"])
            killed_keys = keys[keys.index(killed_run.tags["dagster/asset_partition_range_start"]):
                               keys.index(killed_run.tags["dagster/asset_partition_range_end"]) + 1]
            # the GPU comes back at once (the kernel dropped the flock); nothing was materialised
            wait_for(lambda: (slot_holders(GPUS, slot_dir)[killed["index"]] or {}).get("run_id")
                     != killed["run_id"], timeout=5, poll=0.1, what="the killed run's GPU")
            assert not set(killed_keys) & instance.get_materialized_partitions(MASKS)
            # the backfill requests tube_json once every video is done (retry included)
            wait_for(lambda: [r for r in instance.get_runs()
                              if r.asset_selection == {TUBES} and r.is_finished],
                     timeout=240, poll=1, what="the tube_json run")
        finally:
            stop_daemon(daemon)
        assert instance.get_backfill(backfill_id).status in (
            BulkActionStatus.REQUESTED, BulkActionStatus.COMPLETED_SUCCESS)  # done on next tick

        runs = instance.get_runs()
        mask_runs = [r for r in runs if MASKS in (r.asset_selection or set())]
        spans = run_spans(instance, [r.run_id for r in mask_runs])
        by_id = {s.run_id: s for s in spans}

        # every GPU run was tagged; never more than 4 started at once, and 4 did run together
        assert all(r.tags.get("gpu") == "true" for r in mask_runs)
        intervals = [(s.start, s.end) for s in spans]
        assert len(intervals) == 6 and all(a and b for a, b in intervals)  # 5 + 1 retry
        assert max_overlap(intervals) == 4, intervals
        assert max_overlap((s.step_start, s.step_end or s.end) for s in spans if s.step_start) <= 4

        # one device per run, and no two runs held the same device at the same time
        leases = [(s.run_id, *lease) for s in spans for lease in s.leases]
        assert all(len(s.leases) == 1 for s in spans)
        end = {s.run_id: s.end for s in spans}
        for i, (run_a, dev_a, a0, a1) in enumerate(leases):
            for run_b, dev_b, b0, b1 in leases[i + 1:]:
                if dev_a == dev_b:
                    a1, b1 = a1 or end[run_a], b1 or end[run_b]  # killed: no release line
                    assert a1 <= b0 or b1 <= a0, (run_a, run_b, dev_a)
        assert by_id[killed["run_id"]].leases[0][0] == f"cuda:{killed['index']}"

        # the killed run failed without materialising; its retry (same tags) redid its videos
        assert by_id[killed["run_id"]].status == "FAILURE"
        assert not instance.get_records_for_run(
            killed["run_id"], of_type=DagsterEventType.ASSET_MATERIALIZATION).records
        [retry] = [r for r in mask_runs if r.tags.get(PARENT_RUN_ID_TAG) == killed["run_id"]]
        assert retry.status == DagsterRunStatus.SUCCESS and retry.tags["gpu"] == "true"
        assert retry.tags["dagster/backfill"] == backfill_id
        assert instance.get_materialized_partitions(MASKS) == set(keys)

        # the pool slot the dead run still claimed was given back by run monitoring
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert info.slot_count == 4 and not info.claimed_slots

        # identical output: the retried videos equal a direct, uninterrupted computation
        assert_identical_to_reference(data, out, tmp_path / "reference", killed_keys)

        # tube_json ran after the last video, over all of them
        tubes = instance.get_latest_materialization_event(TUBES)
        last_mask = max(
            instance.fetch_materializations(MASKS, limit=len(keys) * 2).records,
            key=lambda r: r.timestamp)
        assert tubes is not None and tubes.timestamp > last_mask.timestamp
        tube_file = json.loads((out / "train" / "tubes_train.json").read_text())
        assert len(tube_file["videos"]) == videos


# -- dead runs: a killed `dagster asset materialize` gives its slot back ------------------------
def _wait_lease(slot_dir: Path, run_count: int, hold: float) -> dict[str, dict]:
    """run id -> lease holder, once `run_count` runs each hold a GPU past half a video."""
    def held():
        holders = {h["run_id"]: h for h in slot_holders(GPUS, slot_dir).values() if h}
        ready = [h for h in holders.values() if time.time() - h["since"] > hold / 2]
        return holders if len(ready) >= run_count else None

    return wait_for(held, timeout=120, poll=0.2, what=f"{run_count} runs holding a GPU")


def _cli_materialize(env: dict, key: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        ["dagster", "asset", "materialize", "--select", "mask_pngs", "--partition", key],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _gpus_json(env: dict, *args: str) -> dict:
    out = subprocess.run(["wsovvis", "gpus", "--json", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_killed_cli_runs_fail_and_give_their_gpu_slot_back(dagster_home, subprocess_env, tmp_path):
    """kill -9 of `dagster asset materialize` (no daemon, no queue: the run lives in the CLI).

    1. No daemon: the killed run shows as stale in `wsovvis gpus`; `--free-stale` fails it and
       gives its pool slot back at once.
    2. The instance template's run monitoring with a real daemon: a CLI run killed with
       `kill -9 <cli pid>` only (its step process finishes the video, then exits) is marked
       failed and its slot freed within 60 s, without anyone running a command.
    3. Re-running both videos writes PNGs byte-identical to an uninterrupted computation.
    """
    hold = 3.0
    # the production template (poll 10 s, free slots 10 s after the end); no automatic retry
    # here, so the rerun below is the only one (retries: the backfill tests)
    render_instance(dagster_home, gpu_limit=4, extra_yaml="run_retries: {enabled: false}")
    data, out = tmp_path / "data", tmp_path / "out"
    keys = _dataset(data, 2)
    env = _env(subprocess_env, data, out, hold)
    slot_dir = dagster_home / "gpu_slots"
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("videos", keys)

        # 1. the CLI and its step process killed together (a closed terminal, the OOM killer)
        proc = _cli_materialize(env, keys[0], start_new_session=True)
        [(run_a, _)] = _wait_lease(slot_dir, 1, hold).items()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for(lambda: not any(slot_holders(GPUS, slot_dir).values()), timeout=10,
                 what="the lease (flock) to drop with its holder")
        report = _gpus_json(env)
        assert [(s["run_id"], s["stale"]) for s in report["claimed"]] == [(run_a, True)]
        assert [r["run_id"] for r in report["dead_started_runs"]] == [run_a]
        assert instance.get_run_by_id(run_a).status == DagsterRunStatus.STARTED
        report = _gpus_json(env, "--free-stale")
        assert any(run_a in line and "failed run" in line for line in report["actions"])
        assert any(run_a in line and "freed 1" in line for line in report["actions"])
        assert report["claimed"] == [] and report["dead_started_runs"] == []
        assert instance.get_run_by_id(run_a).status == DagsterRunStatus.FAILURE

        # 2. only the CLI process killed, with the daemon running
        daemon = start_daemon(env, tmp_path / "daemon.log")
        try:
            proc = _cli_materialize(env, keys[1])
            [(run_b, holder)] = _wait_lease(slot_dir, 1, hold).items()
            assert holder["pid"] != proc.pid  # the step runs in a child of the CLI
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            killed_at = time.time()

            def failed_and_freed():
                run = instance.get_run_by_id(run_b)
                claimed = instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
                return run.status == DagsterRunStatus.FAILURE and not claimed

            wait_for(failed_and_freed, timeout=90, poll=0.5, what="run failed + slot freed")
            elapsed = time.time() - killed_at
        finally:
            stop_daemon(daemon)
        assert elapsed <= 60, elapsed
        failure = instance.get_records_for_run(
            run_b, of_type=DagsterEventType.RUN_FAILURE).records[0].event_log_entry
        assert "no process of run" in failure.dagster_event.message  # our health check said so
        assert not any(slot_holders(GPUS, slot_dir).values())

        # 3. rerun both videos: identical PNGs
        reruns = [_cli_materialize(env, key) for key in keys]
        logs = [p.communicate(timeout=240)[0] for p in reruns]
        assert all(p.returncode == 0 for p in reruns), logs
    assert_identical_to_reference(data, out, tmp_path / "reference", keys)


# -- UI backfills carry no tag: the run coordinator adds it ------------------------------------
LAUNCH_BACKFILL = """
mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""


def _graphql(port: int, query: str, variables: dict) -> dict:
    import urllib.request

    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.load(response)
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


def _services(env: dict, action: str, *names: str) -> str:
    out = subprocess.run(["bash", "scripts/services.sh", action, *names], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 or action == "status", out.stdout + out.stderr
    return out.stdout + out.stderr


def _untagged_ui_backfill(home: Path, env: dict, tmp_path: Path, *, kill: bool,
                          storage_yaml: str = "", extra_partitions: int = 0) -> None:
    """A backfill launched through the webserver's GraphQL exactly as the UI sends it (no run
    tags), webserver + daemon started and stopped by scripts/services.sh. With `kill`, a run
    is SIGKILLed mid-video: it fails, its GPU lease and pool slot come back, its retry redoes
    its videos byte-identically."""
    limit, hold, videos = 2, 1.5, 12  # 12 videos -> 3 runs of 4 (multi_run(4)): one must queue
    render_instance(home, gpu_limit=limit, extra_yaml=storage_yaml + (
        "\nrun_monitoring: {poll_interval_seconds: 2, free_slots_after_run_end_seconds: 2}"))
    data, out = tmp_path / "data", tmp_path / "out"
    keys = _dataset(data, videos)
    port = free_port()
    env = {**_env(env, data, out, hold), "WSOVVIS_GPUS": "0,1", "WSOVVIS_UI_PORT": str(port),
           "WSOVVIS_SERVICES_DIR": str(tmp_path / "services")}
    slot_dir = home / "gpu_slots"
    mask_runs = lambda: [r for r in instance.get_runs() if MASKS in (r.asset_selection or ())]  # noqa: E731

    with DagsterInstance.from_config(str(home)) as instance:  # creates the storage schema
        instance.add_dynamic_partitions("videos", keys)
        if extra_partitions:  # a large dataset's partitions, registered and read back
            many = [f"train__bulk{i:06d}" for i in range(extra_partitions)]
            instance.add_dynamic_partitions("videos", many)
            assert instance.get_dynamic_partitions("videos") == keys + many
            assert instance.has_dynamic_partition("videos", many[-1])
        # the webserver first: the daemon's backfill loop then takes the backfill on its first
        # iteration instead of up to 30 s later
        _services(env, "start", "webserver")
        try:
            result = _graphql(port, LAUNCH_BACKFILL, {"p": {  # what the UI sends: no tags
                "partitionNames": keys, "assetSelection": [{"path": ["mask_pngs"]}]}})
            backfill = result["launchPartitionBackfill"]
            assert backfill["__typename"] == "LaunchBackfillSuccess", backfill
            _services(env, "start", "daemon")
            samples, killed = [], None
            deadline = time.monotonic() + 300
            while True:
                runs = mask_runs()
                active = sum(r.status in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)
                             for r in runs)
                samples.append((active, sum(r.status == DagsterRunStatus.QUEUED for r in runs)))
                if kill and killed is None:
                    holders = [h for h in slot_holders("0,1", slot_dir).values()
                               if h and time.time() - h["since"] > 1.5 * hold]
                    if holders:
                        killed = _kill_a_run_mid_video(instance, slot_dir, hold, 0)
                retried = not kill or killed and any(
                    r.tags.get(PARENT_RUN_ID_TAG) == killed["run_id"] for r in runs)
                if retried and len(runs) >= 3 and all(r.is_finished for r in runs):
                    break
                assert time.monotonic() < deadline, (samples[-5:], [r.status for r in runs])
                time.sleep(0.25)
            wait_for(lambda: not instance.event_log_storage.get_concurrency_info("gpu")
                     .claimed_slots, timeout=30, what="pool slots of the killed run")
        finally:
            stopped = _services(env, "stop")
        assert "SIGKILL" not in stopped, stopped  # both stopped on SIGTERM
        assert "stopped" in _services(env, "status")

        runs = mask_runs()
        # the coordinator tagged every run of the untagged backfill
        assert runs and all(r.tags.get("gpu") == "true" for r in runs)
        assert all(r.tags.get("dagster/backfill") == backfill["backfillId"] for r in runs)
        # never more than `limit` STARTING/STARTED, the limit reached, the surplus QUEUED
        assert max(a for a, _ in samples) == limit, samples
        assert any(a == limit and q >= 1 for a, q in samples), samples
        spans = run_spans(instance, [r.run_id for r in runs])
        assert max_overlap((s.start, s.end) for s in spans) == limit
        assert not any(slot_holders("0,1", slot_dir).values())
        if not kill:
            assert len(runs) == 3 and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
            assert instance.get_materialized_partitions(MASKS) >= set(keys)
            assert_identical_to_reference(data, out, tmp_path / "reference", keys)
            return
        # the killed run failed, its lease came back, its retry redid its videos identically
        by_id = {r.run_id: r for r in runs}
        assert by_id[killed["run_id"]].status == DagsterRunStatus.FAILURE
        [retry] = [r for r in runs if r.tags.get(PARENT_RUN_ID_TAG) == killed["run_id"]]
        assert retry.status == DagsterRunStatus.SUCCESS and retry.tags["gpu"] == "true"
        assert len(runs) == 4 and instance.get_materialized_partitions(MASKS) >= set(keys)
        first, last = (retry.tags["dagster/asset_partition_range_start"],
                       retry.tags["dagster/asset_partition_range_end"])
        redone = keys[keys.index(first):keys.index(last) + 1]
    assert_identical_to_reference(data, out, tmp_path / "reference", redone)


@pytest.mark.slow
def test_untagged_graphql_backfill_stays_under_the_gpu_limit(dagster_home, subprocess_env,
                                                              tmp_path):
    # killed runs and retries on SQLite: test_backfill_runs_four_gpu_runs_at_a_time_and_...
    _untagged_ui_backfill(dagster_home, subprocess_env, tmp_path, kill=False)


@pytest.mark.slow
@pytest.mark.postgres
def test_untagged_graphql_backfill_on_postgres(dagster_home, subprocess_env, tmp_path):
    """The same on a real PostgreSQL server (run, event and schedule storage), plus 5,000
    dynamic partitions registered and read back."""
    from wsovvis_ops.pg_cluster import bin_dir, postgres_cluster

    with postgres_cluster(bin_dir()) as url:
        _untagged_ui_backfill(dagster_home, subprocess_env, tmp_path, kill=True,
                              storage_yaml=f"storage: {{postgres: {{postgres_url: '{url}'}}}}",
                              extra_partitions=5000)


def test_services_status_sees_a_killed_daemon_at_once_and_start_replaces_it(
        dagster_home, subprocess_env, tmp_path):
    """A SIGKILLed dagster-daemon leaves its code server in its group for ~45 s: `status`
    reports it dead at once, and `start` stops the leftovers and starts a new daemon."""
    env = {**subprocess_env, "WSOVVIS_SERVICES_DIR": str(tmp_path / "services")}
    pid_file = tmp_path / "services" / "daemon.pid"
    try:
        _services(env, "start", "daemon")
        pid = int(pid_file.read_text())
        wait_for(lambda: len(_group(pid)) > 1, timeout=120, what="the daemon's code server")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), timeout=10, what="the killed daemon")
        assert len(_group(pid)) >= 1  # its children live on
        assert "daemon: dead" in _services(env, "status", "daemon")
        out = _services(env, "start", "daemon")
        assert "had died" in out and "started daemon" in out
        new = int(pid_file.read_text())
        assert new != pid and _alive(new) and not _group(pid)
        assert "daemon: running" in _services(env, "status", "daemon")
    finally:
        _services(env, "stop", "daemon")


def _group(pgid: int) -> list[int]:
    """Live processes of process group `pgid`."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat="], capture_output=True,
                         text=True).stdout.split("\n")
    return [int(p) for p, g, st in (line.split() for line in out if line.strip())
            if int(g) == pgid and not st.startswith("Z")]


def _alive(pid: int) -> bool:
    """`pid` runs (a zombie does not count)."""
    out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return bool(out.stdout.strip()) and not out.stdout.strip().startswith("Z")
