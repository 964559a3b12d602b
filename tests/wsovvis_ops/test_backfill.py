"""scripts/backfill.py's runs: sized from the work, straight on the run queue, and tube_json
queued by the batch's last mask run to end (or, when runs end together, by the
`tube_json_after_masks` sensor), once every mask run has finished."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from wsovvis_dagster.gpu.run_plan import gpu_slots, plan_runs, run_size
from wsovvis_dagster.gpu.run_tags import BATCH_RUNS_TAG, BATCH_TAG
from wsovvis_instance.dagster_private import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from wsovvis_ops.backfill import (
    QUEUED_BY_TAG,
    batch_tubes_due,
    queue_batch_tubes,
    queue_mask_runs,
)
from wsovvis_ops.instance import start_daemon, stop_daemon, wait_for

REPO = Path(__file__).resolve().parents[2]
MASKS, TUBES = AssetKey("mask_pngs"), AssetKey("tube_json")


def test_runs_are_sized_so_every_gpu_slot_gets_work():
    assert gpu_slots("", 2) == 1 and gpu_slots("0", 2) == 2 and gpu_slots("0, 1,2", 1) == 3
    # 16 videos, 48 per run, 2 slots: two runs of 8, not one of 16 and an idle slot
    assert run_size(16, 48, 2) == 8
    assert run_size(200, 48, 2) == 48  # enough work: the per-run limit holds
    assert run_size(3, 48, 4) == 1  # fewer videos than slots: one video per run
    order = [f"k{i}" for i in range(10)]
    runs = plan_runs(order, order[:7], videos_per_run=48, slots=2)
    assert runs == [order[:4], order[4:7]]
    # a scattered selection keeps key ranges contiguous
    assert plan_runs(order, ["k0", "k1", "k5"], 48, 1) == [["k0", "k1"], ["k5"]]
    with pytest.raises(ValueError, match="slots"):
        run_size(4, 4, 0)


def test_queued_runs_follow_the_plan_and_carry_the_batch(instance, monkeypatch):
    monkeypatch.setenv("WSOVVIS_GPUS", "0,1")
    monkeypatch.setenv("WSOVVIS_RUNS_PER_GPU", "2")
    keys = [f"train__v{i:03d}" for i in range(10)]
    instance.add_dynamic_partitions("videos", keys)
    batch = queue_mask_runs(instance, keys)  # no daemon: the runs stay QUEUED
    runs = [instance.get_run_by_id(r) for r in batch.run_ids]
    # 4 slots, 4 videos per run on the cpu backend: 10 videos -> runs of 3, 3, 3, 1
    ranges = [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
              for r in runs]
    assert ranges == [(keys[0], keys[2]), (keys[3], keys[5]), (keys[6], keys[8]),
                      (keys[9], keys[9])] == list(batch.ranges)
    assert all(r.status == DagsterRunStatus.QUEUED for r in runs)
    assert all(r.tags["gpu"] == "true" and r.tags[BATCH_TAG] == batch.batch_id
               and r.tags[BATCH_RUNS_TAG] == "4" and r.asset_selection == {MASKS} for r in runs)
    with pytest.raises(ValueError, match="video_partitions"):
        queue_mask_runs(instance, ["train__nope"])


def test_the_last_mask_run_to_end_queues_tube_json_once(instance, monkeypatch):
    """`queue_batch_tubes` (mask_pngs_job's hooks call it as a run ends): nothing while another
    run of the batch is unfinished, one tube_json run from the last one, none after that; the
    sensor's view (`batch_tubes_due` without an ending run) then sees the batch served."""
    monkeypatch.setenv("WSOVVIS_VIDEOS_PER_RUN", "1")
    keys = ["train__a", "train__b"]
    instance.add_dynamic_partitions("videos", keys)
    batch = queue_mask_runs(instance, keys)  # no daemon: the runs stay QUEUED
    first, second = batch.run_ids
    assert batch_tubes_due(instance, batch.batch_id) == (False, False)
    assert queue_batch_tubes(instance, first) is None  # `second` has not run yet
    instance.report_run_failed(instance.get_run_by_id(second))  # failed runs count as ended
    assert batch_tubes_due(instance, batch.batch_id) == (False, False)  # `first` still runs
    tube_id = queue_batch_tubes(instance, first)
    assert tube_id is not None
    tube = instance.get_run_by_id(tube_id)
    assert tube.asset_selection == {TUBES} and tube.status == DagsterRunStatus.QUEUED
    assert tube.tags[BATCH_TAG] == batch.batch_id and tube.tags[QUEUED_BY_TAG] == first
    plan = instance.get_execution_plan_snapshot(tube.execution_plan_snapshot_id)
    assert set(plan.step_keys_to_execute) == {  # its checks run with it, as in a sensor's run
        "tube_json", "tube_json_tube_json_format", "tube_json_tube_json_quality"}
    assert queue_batch_tubes(instance, first) is None  # queued once
    instance.report_run_failed(instance.get_run_by_id(first))
    assert batch_tubes_due(instance, batch.batch_id) == (True, False)  # the sensor skips it
    no_tubes = queue_mask_runs(instance, keys[:1], tubes=False)
    instance.report_run_failed(instance.get_run_by_id(no_tubes.run_ids[0]))
    assert batch_tubes_due(instance, no_tubes.batch_id) == (True, False)
    assert queue_batch_tubes(instance, no_tubes.run_ids[0]) is None

    # runs that ended together (no hook saw the batch done): the sensor requests tube_json once
    together = queue_mask_runs(instance, keys)
    for run_id in together.run_ids:
        instance.report_run_failed(instance.get_run_by_id(run_id))
    from dagster import build_sensor_context

    from definitions import defs

    sensor = defs.resolve_sensor_def("tube_json_after_masks")
    result = sensor(build_sensor_context(instance=instance))
    assert [(r.run_key, r.tags[BATCH_TAG], r.asset_selection) for r in result.run_requests] == [
        (f"tube_json-{together.batch_id}", together.batch_id, [TUBES])]
    again = sensor(build_sensor_context(instance=instance, cursor=result.cursor))
    assert not getattr(again, "run_requests", None)  # every batch served


def _break_a_frame(data: Path, video: str) -> None:
    frame = sorted((data / "train" / "JPEGImages" / video).glob("*.jpg"))[1]
    frame.write_bytes(b"not a jpeg")


def test_tube_json_follows_the_batch_on_a_real_daemon_even_after_a_failed_run(
        dagster_home, subprocess_env, tmp_path):
    """scripts/backfill.py queues one run per video here; one video has a broken frame, so its
    run fails. tube_json is still queued, once, when the last mask run ends: by that run's
    hook, or by the sensor when runs end together; no asset backfill is involved (the
    backfill daemon's 30 s loop is not on the path)."""
    from wsovvis_dagster.video.synthetic import generate_dataset

    data, out = tmp_path / "data", tmp_path / "out"
    generate_dataset(data, seed=3, num_frames=4, videos_per_split={"train": 3})
    keys = [f"train__train{i:04d}" for i in range(3)]
    _break_a_frame(data, "train0001")
    env = {**subprocess_env, "WSOVVIS_DATA_ROOT": str(data), "WSOVVIS_OUTPUT_ROOT": str(out),
           "WSOVVIS_VIDEOS_PER_RUN": "1"}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("videos", keys)
        daemon = start_daemon(env, tmp_path / "daemon.log")
        try:
            script = subprocess.run([sys.executable, "-m", "scripts.backfill"], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=120)
            assert script.returncode == 0, script.stderr
            assert "queued 3 mask_pngs runs" in script.stdout
            tubes = wait_for(lambda: [r for r in instance.get_run_records()
                                      if r.dagster_run.asset_selection == {TUBES}
                                      and r.dagster_run.is_finished],
                             timeout=300, poll=0.5, what="the tube_json run")
        finally:
            stop_daemon(daemon)
        records = instance.get_run_records()
        masks = [r for r in records if r.dagster_run.asset_selection == {MASKS}]
        assert sorted(r.dagster_run.status.value for r in masks) == ["FAILURE", "SUCCESS",
                                                                      "SUCCESS"]
        assert len(tubes) == 1 and not instance.get_backfills()
        tube = tubes[0].dagster_run
        assert tube.tags[BATCH_TAG] == masks[0].dagster_run.tags[BATCH_TAG]
        created = tubes[0].create_timestamp.timestamp()
        if QUEUED_BY_TAG in tube.tags:  # the last run's hook, in its last moments
            [last] = [r for r in masks if r.dagster_run.run_id == tube.tags[QUEUED_BY_TAG]]
            assert all(r.end_time <= created for r in masks if r is not last)
            assert created <= last.end_time == max(r.end_time for r in masks)
        else:  # two runs ended together: the sensor's next tick
            assert tube.tags["dagster/sensor_name"] == "tube_json_after_masks"
            assert created >= max(r.end_time for r in masks)
        logs = [e for r in masks for e in instance.all_logs(r.dagster_run.run_id)]
        for r in masks:  # queued runs execute their step in the run worker: no step process
            messages = [e.user_message or "" for e in instance.all_logs(r.dagster_run.run_id)]
            assert any(m.startswith("Executing steps in process") for m in messages)
            assert not any("multiprocess executor" in m for m in messages)
        assert not [e.user_message for e in logs  # the hooks never fail
                    if "could not queue tube_json" in (e.user_message or "") or (
                        e.dagster_event and e.dagster_event.event_type_value == "HOOK_ERRORED")]
