"""scripts/backfill.py's runs: sized from the work, straight on the run queue, and tube_json
requested by the `tube_json_after_masks` sensor once every mask run has finished."""

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
from wsovvis_ops.backfill import queue_mask_runs
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


def _break_a_frame(data: Path, video: str) -> None:
    frame = sorted((data / "train" / "JPEGImages" / video).glob("*.jpg"))[1]
    frame.write_bytes(b"not a jpeg")


def test_tube_json_follows_the_batch_on_a_real_daemon_even_after_a_failed_run(
        dagster_home, subprocess_env, tmp_path):
    """scripts/backfill.py queues one run per video here; one video has a broken frame, so its
    run fails. The sensor still requests tube_json, once, after the last mask run ended; no
    asset backfill is involved (the backfill daemon's 30 s loop is not on the path)."""
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
        assert tube.tags["dagster/sensor_name"] == "tube_json_after_masks"
        assert tube.tags[BATCH_TAG] == masks[0].dagster_run.tags[BATCH_TAG]
        last_mask_end = max(r.end_time for r in masks)
        assert tubes[0].create_timestamp.timestamp() >= last_mask_end
