"""GPU run coordination with a real `dagster-daemon` (queue, backfills, retries, monitoring).

The predictor is the `cpu-slow` test backend: the cpu predictor's output, returned after a fixed
hold per video, on fake GPU indices (it never touches CUDA), so runs occupy their "GPU" for a
known time and their PNGs equal the plain cpu backend's byte for byte.
"""

import filecmp
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import PARENT_RUN_ID_TAG

from benchmarks.orchestration import (
    max_overlap,
    render_instance,
    run_spans,
    start_daemon,
    stop_daemon,
    wait_for,
)
from scripts.backfill import launch_backfill
from wsovvis_dagster.gpu_slots import slot_holders
from wsovvis_dagster.paths import VideoRef, masks_dir
from wsovvis_dagster.pipeline import segment_video
from wsovvis_dagster.predictors.cpu import CpuVideoPredictor

REPO = Path(__file__).resolve().parents[1]
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


def _env(subprocess_env, data: Path, out: Path, hold: float) -> dict:
    return {**subprocess_env, "WSOVVIS_DATA_ROOT": str(data), "WSOVVIS_OUTPUT_ROOT": str(out),
            "WSOVVIS_PREDICTOR": "cpu-slow", "WSOVVIS_HOLD_SECONDS": str(hold),
            "WSOVVIS_GPUS": GPUS}


def _dataset(root: Path, videos: int) -> list[str]:
    from wsovvis_dagster.synthetic import generate_dataset

    generate_dataset(root, seed=3, num_frames=4, videos_per_split={"train": videos})
    return [f"train__train{i:04d}" for i in range(videos)]


@pytest.mark.slow
def test_cli_runs_outside_the_queue_are_capped_by_the_pool(dagster_home, subprocess_env, tmp_path):
    """`dagster asset materialize` runs in the CLI process (no queue, no run tags): only the
    pool limits it. With a limit of 1, two concurrent CLI runs never overlap their GPU step."""
    render_instance(dagster_home, gpu_limit=1)
    keys = _dataset(tmp_path / "data", 2)
    env = _env(subprocess_env, tmp_path / "data", tmp_path / "out", hold=2)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("videos", keys)
        procs = [
            subprocess.Popen(["dagster", "asset", "materialize", "--select", "mask_pngs",
                              "--partition", key], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for key in keys
        ]
        logs = [p.communicate(timeout=240)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), logs
        spans = run_spans(instance, [r.run_id for r in instance.get_runs()])
        assert len(spans) == 2 and all(s.status == "SUCCESS" for s in spans)
        assert max_overlap((s.step_start, s.step_end) for s in spans) == 1
        assert any("Step blocked by limit for pool gpu" in log for log in logs)
        # two GPU leases, never held at the same time, each released
        leases = sorted(lease for s in spans for lease in s.leases)
        assert len(leases) == 2 and leases[0][2] <= leases[1][1]


def _kill_a_run_mid_video(instance, slot_dir: Path, hold: float, daemon_pid: int) -> dict:
    """SIGKILL the run worker and step process of a run that is past its first video."""

    def victim():
        for index, holder in slot_holders(GPUS, slot_dir).items():
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
            killed = _kill_a_run_mid_video(instance, slot_dir, hold, daemon.pid)
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
        ref_root = tmp_path / "reference"
        for key in killed_keys:
            ref = VideoRef.from_partition_key(key)
            segment_video(data, ref_root, ref, CpuVideoPredictor(max_tracks=10))
            cmp = filecmp.dircmp(masks_dir(out, ref), masks_dir(ref_root, ref))
            assert not cmp.left_only and not cmp.right_only
            _, mismatch, errors = filecmp.cmpfiles(
                masks_dir(out, ref), masks_dir(ref_root, ref), cmp.common_files, shallow=False)
            assert not mismatch and not errors, (key, mismatch)

        # tube_json ran after the last video, over all of them
        tubes = instance.get_latest_materialization_event(TUBES)
        last_mask = max(
            instance.fetch_materializations(MASKS, limit=len(keys) * 2).records,
            key=lambda r: r.timestamp)
        assert tubes is not None and tubes.timestamp > last_mask.timestamp
        tube_file = json.loads((out / "train" / "tubes_train.json").read_text())
        assert len(tube_file["videos"]) == videos
