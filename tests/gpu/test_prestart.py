"""Predictor workers started when a batch is queued (`gpu.prestart`, called by
`queue_mask_runs`), before its runs: started in the slots the runs will lease, returned from
without waiting for the model, reused by the runs (a run connecting while the worker still
builds waits for it), never for a backend built in the run, never failing the backfill.

The cpu backend is made to use a worker (WSOVVIS_WORKER_IDLE_SECONDS, as videocutler does by
default) on a fake GPU list (the cpu predictor ignores its device). A "gate" holds each worker
at interpreter start until the test opens it: a model build exactly as long as the test needs,
so nothing here depends on timing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from wsovvis_dagster.gpu.leases import LeaseRequest, acquire_gpu_slot, process_alive
from wsovvis_dagster.gpu.prestart import lease_slots, prestart_workers
from wsovvis_dagster.gpu.worker import LOG_NAME, connect_worker, list_workers, stop_workers
from wsovvis_dagster.predictors.settings import PredictorSettings
from wsovvis_instance.cli import main as cli
from wsovvis_ops.backfill import queue_mask_runs
from wsovvis_ops.instance import start_daemon, stop_daemon, wait_for

REPO = Path(__file__).resolve().parents[2]
WORKER_ENV = {"WSOVVIS_WORKER_IDLE_SECONDS": "600"}  # the cpu backend keeps a worker
GATE_CODE = '''import os, time
if b"wsovvis_dagster.gpu.worker" in open("/proc/self/cmdline", "rb").read():
    deadline = time.monotonic() + 600  # never hang a forgotten worker for good
    while not os.path.exists({gate!r}) and time.monotonic() < deadline:
        time.sleep(0.05)
'''


class Gate:
    """A sitecustomize on PYTHONPATH that holds predictor worker processes until `open()`."""

    def __init__(self, folder: Path):
        self.folder, self.file = folder, folder / "open"
        folder.mkdir()
        (folder / "sitecustomize.py").write_text(GATE_CODE.format(gate=str(self.file)))

    def env(self, env: dict) -> dict:
        return {**env, "PYTHONPATH": f"{self.folder}:{env.get('PYTHONPATH', '')}"}

    def open(self) -> None:
        self.file.touch()


@pytest.fixture
def gate(tmp_path):
    return Gate(tmp_path / "gate")


@pytest.fixture
def slots(dagster_home):
    """The instance's lease folder; every worker started under it is stopped after the test."""
    root = dagster_home / "gpu_slots"
    yield root
    stop_workers(root)


def _keys(instance, count: int) -> list[str]:
    keys = [f"train__v{i:03d}" for i in range(count)]
    instance.add_dynamic_partitions("videos", keys)
    return keys


def test_slots_follow_the_lease_order():
    assert lease_slots("", 2) == [(None, 0)]  # CPU runs: one worker
    assert lease_slots("0,1", 2) == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_queueing_starts_the_slot_workers_without_waiting_and_a_run_waits_for_them(
        instance, slots, gate, monkeypatch, capsys):
    for k, v in gate.env({**WORKER_ENV, "WSOVVIS_GPUS": "0,1",
                          "WSOVVIS_RUNS_PER_GPU": "2"}).items():
        monkeypatch.setenv(k, v)
    keys = _keys(instance, 6)  # 4 slots, 4 videos per run on cpu: 3 runs of 2
    batch = queue_mask_runs(instance, keys)
    assert len(batch.run_ids) == 3 and not batch.workers.error
    started = batch.workers.workers
    assert [(w.device, w.slot, w.state) for w in started] == [
        ("cuda:0", 0, "started"), ("cuda:1", 0, "started"), ("cuda:0", 1, "started")]
    assert "starting 3 predictor worker(s)" in batch.workers.summary()
    # queueing returned while every model is still building (the gate holds them)
    building = list_workers(slots)
    assert sorted(w["pid"] for w in building) == sorted(w.pid for w in started)
    assert not any(w["ready"] for w in building)
    assert cli(["gpus"]) == 0  # `wsovvis gpus` lists them as building
    assert capsys.readouterr().out.count("building its model") == 3
    # a second batch finds them and starts none
    again = queue_mask_runs(instance, keys[:1])
    assert [(w.state, w.pid) for w in again.workers.workers] == [("running", started[0].pid)]

    # a run of the batch connecting now waits for its slot's worker, then reuses it
    from definitions import loaded_predictor

    settings = loaded_predictor().settings("cuda:1")
    got = {}
    thread = threading.Thread(target=lambda: got.update(client=connect_worker(
        settings, slots / "predictor_workers" / "cuda1", idle_seconds=600)))
    thread.start()
    gate.open()
    thread.join(timeout=120)
    assert got["client"].reused and got["client"].pid == started[1].pid
    log = (slots / "predictor_workers" / "cuda1" / LOG_NAME).read_text()
    assert log.count("--- starting predictor worker") == 1  # never a second one


def test_registering_videos_starts_the_workers_of_the_videos_without_masks(
        instance, slots, gate, monkeypatch, tmp_path, resources_for):
    """`video_partitions` starts the slots' workers for the videos that have no masks, without
    waiting for them; a backfill queued next finds them; once every video has masks, a new
    registration starts none."""
    from dagster import AssetMaterialization, materialize

    from definitions import defs
    from wsovvis_dagster.video.synthetic import generate_dataset

    for k, v in gate.env({**WORKER_ENV, "WSOVVIS_GPUS": "0,1"}).items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "data"
    generate_dataset(data, seed=3, num_frames=2, videos_per_split={"train": 3})

    def register():
        result = materialize(list(defs.assets), selection=["video_partitions"],
                             instance=instance, resources=resources_for(data))
        return result.asset_materializations_for_node("video_partitions")[0].metadata

    md = register()  # 3 videos, 4 per run on cpu, 2 slots: 2 runs, so 2 workers
    assert md["predictor_workers"].value.startswith(
        "starting 2 predictor worker(s) in the background for the mask runs of the videos "
        "without masks (cuda:0, cuda:1)")
    building = list_workers(slots)
    assert len(building) == 2 and not any(w["ready"] for w in building)  # not waited for
    batch = queue_mask_runs(instance, instance.get_dynamic_partitions("videos"))
    assert sorted((w.state, w.pid) for w in batch.workers.workers) == sorted(
        ("running", w["pid"]) for w in building)
    gate.open()
    stop_workers(slots)

    for key in instance.get_dynamic_partitions("videos"):  # as if every mask run had ended
        instance.report_runless_asset_event(AssetMaterialization("mask_pngs", partition=key))
    md = register()
    assert md["predictor_workers"].value == (
        "no predictor worker to pre-start: every registered video has masks")
    assert list_workers(slots) == []


def test_the_sensor_registering_videos_starts_their_workers(instance, slots, gate, monkeypatch,
                                                           tmp_path):
    """`new_video_folders` starts the workers of the videos it registers, as `video_partitions`
    does, though they join the `videos` partitions only once its tick returns."""
    from dagster import build_sensor_context

    from assets.sensors import build_new_video_folders_sensor
    from resources import DatasetPaths
    from wsovvis_dagster.video.synthetic import generate_dataset

    for k, v in gate.env({**WORKER_ENV, "WSOVVIS_GPUS": "0,1"}).items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "data"
    generate_dataset(data, seed=3, num_frames=2, videos_per_split={"train": 3})
    sensor = build_new_video_folders_sensor(batch_size=2)
    paths = DatasetPaths(data_root=str(data), output_root=str(tmp_path / "outputs"))
    result = sensor(build_sensor_context(instance=instance, resources={"paths": paths}))
    (request,) = result.dynamic_partitions_requests
    assert len(request.partition_keys) == 2 and instance.get_dynamic_partitions("videos") == []
    building = list_workers(slots)  # 2 videos, 4 per run on cpu, 2 slots: 2 runs, 2 workers
    assert sorted(w["device"] for w in building) == ["cuda:0", "cuda:1"]
    assert not any(w["ready"] for w in building)  # not waited for
    gate.open()


def test_a_failed_prestart_does_not_fail_the_registration(instance, monkeypatch, tmp_path,
                                                          resources_for):
    from dagster import materialize

    from definitions import defs
    from wsovvis_dagster.video.synthetic import generate_dataset

    blocker = tmp_path / "not_a_folder"  # the lease folder cannot be made
    blocker.write_text("")
    for k, v in {**WORKER_ENV, "WSOVVIS_GPUS": "0", "WSOVVIS_SLOT_DIR": str(blocker)}.items():
        monkeypatch.setenv(k, v)
    generate_dataset(tmp_path / "data", seed=3, num_frames=2, videos_per_split={"val": 1})
    result = materialize(list(defs.assets), selection=["video_partitions"], instance=instance,
                         resources=resources_for(tmp_path / "data"))
    assert result.success and instance.get_dynamic_partitions("videos") == ["val__val0000"]
    said = result.asset_materializations_for_node("video_partitions")[0].metadata
    assert "could not pre-start the predictor workers" in said["predictor_workers"].value
    assert str(blocker) in said["predictor_workers"].value


def test_an_idle_worker_of_other_settings_is_replaced_and_one_serving_a_run_is_not(
        instance, slots, monkeypatch):
    from definitions import loaded_predictor

    for k, v in {**WORKER_ENV, "WSOVVIS_GPUS": "0"}.items():
        monkeypatch.setenv(k, v)
    keys = _keys(instance, 1)
    folder = slots / "predictor_workers" / "cuda0"
    old = connect_worker(PredictorSettings(device="cuda:0", max_tracks=3), folder,
                         idle_seconds=600)
    lease = acquire_gpu_slot("0", run_id="another-run", slot_dir=slots)  # it serves a run
    try:
        (kept,) = queue_mask_runs(instance, keys).workers.workers
    finally:
        lease.release()
    assert (kept.state, kept.pid) == ("other settings", old.pid) and process_alive(old.pid)
    (fresh,) = queue_mask_runs(instance, keys).workers.workers  # its slot is free now
    assert fresh.state == "replaced" and fresh.pid != old.pid and not process_alive(old.pid)
    client = connect_worker(loaded_predictor().settings("cuda:0"), folder, idle_seconds=600)
    assert client.reused and client.pid == fresh.pid


def test_no_worker_for_a_backend_built_in_the_run(instance, slots, monkeypatch):
    monkeypatch.setenv("WSOVVIS_GPUS", "0")  # the default cpu backend: 0 s worker idle
    batch = queue_mask_runs(instance, _keys(instance, 2))
    assert batch.run_ids and batch.workers.workers == () and batch.workers.skipped
    assert not (slots / "predictor_workers").exists()


def test_a_failed_prestart_does_not_fail_the_backfill(instance, subprocess_env, tmp_path):
    blocker = tmp_path / "not_a_folder"  # the lease folder cannot be made
    blocker.write_text("")
    env = {**subprocess_env, **WORKER_ENV, "WSOVVIS_GPUS": "0", "WSOVVIS_SLOT_DIR": str(blocker)}
    _keys(instance, 2)
    script = subprocess.run([sys.executable, "-m", "scripts.backfill", "--no-tubes"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr
    lines = script.stdout.splitlines()
    assert [line for line in lines if "could not pre-start the predictor workers" in line
            and str(blocker) in line and "each run starts its own" in line]
    assert any(line.startswith("queued 1 mask_pngs runs") for line in lines)
    assert [r.status for r in instance.get_runs()] == [DagsterRunStatus.QUEUED]
    # and in the library: the error comes back with what was started before it
    request = LeaseRequest("0", slot_dir=blocker)
    result = prestart_workers(PredictorSettings(), request, 1, idle_seconds=600)
    assert result.error and result.workers == ()


def test_a_daemon_run_of_the_batch_reuses_the_worker_started_by_the_backfill_script(
        dagster_home, subprocess_env, slots, gate, tmp_path):
    """`python -m scripts.backfill` returns while the worker still builds; the daemon's mask
    run leases its slot, waits for that worker and records it as reused."""
    from wsovvis_dagster.video.synthetic import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, seed=3, num_frames=4, videos_per_split={"train": 2})
    env = {**subprocess_env, **WORKER_ENV, "WSOVVIS_GPUS": "0", "WSOVVIS_DATA_ROOT": str(data),
           "WSOVVIS_OUTPUT_ROOT": str(tmp_path / "out")}
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("videos", [f"train__train{i:04d}" for i in range(2)])
        daemon = start_daemon(env, tmp_path / "daemon.log")
        try:
            script = subprocess.run([sys.executable, "-m", "scripts.backfill", "--no-tubes"],
                                    cwd=REPO, env=gate.env(env), capture_output=True, text=True,
                                    timeout=120)
            assert script.returncode == 0, script.stderr
            assert "starting 1 predictor worker(s) in the background for the batch's " \
                   "slots (cuda:0)" in script.stdout
            (worker,) = list_workers(slots)
            assert not worker["ready"]  # the script did not wait for the model
            (run_id,) = [r.run_id for r in instance.get_runs()]
            # the run has its lease: it now connects while the worker still builds
            wait_for(lambda: any("gpu lease acquired" in (e.user_message or "")
                                 for e in instance.all_logs(run_id)),
                     timeout=240, what="the mask run's lease")
            gate.open()
            wait_for(lambda: instance.get_run_by_id(run_id).is_finished, timeout=240,
                     what="the mask run")
        finally:
            stop_daemon(daemon)
        assert instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
        records = instance.fetch_materializations(AssetKey("mask_pngs"), limit=10).records
        used = [r.asset_materialization.metadata["predictor_worker"].value for r in records]
        assert len(used) == 2
        assert all(u["reused"] and u["pid"] == worker["pid"] for u in used)
    log = (slots / "predictor_workers" / "cuda0" / LOG_NAME).read_text()
    assert log.count("--- starting predictor worker") == 1


def test_no_worker_for_runs_whose_launcher_turns_it_off(dagster_home, slots, monkeypatch):
    """The Ray launcher gives each run WSOVVIS_WORKER_IDLE_SECONDS=0 (its `run_env`, checked in
    tests/wsovvis_instance/test_fencing.py): the runs' settings are resolved from that env, so
    nothing starts on this host; with the same env here and no such launcher, a worker would."""
    from types import SimpleNamespace

    from definitions import loaded_predictor

    monkeypatch.setenv("WSOVVIS_GPUS", "0")
    monkeypatch.setenv("WSOVVIS_WORKER_IDLE_SECONDS", "600")

    class RayLike:  # the shape of WsovvisRayRunLauncher.run_env
        def run_env(self, tags):
            return {"WSOVVIS_GPUS": "0", "WSOVVIS_WORKER_IDLE_SECONDS": "0",
                    "WSOVVIS_CLUSTER": "ray"}

    ray = SimpleNamespace(run_launcher=RayLike(), root_directory=str(dagster_home))
    result = loaded_predictor().prestart_workers(ray, 2)
    assert result.workers == () and "worker idle seconds 0" in result.skipped
    assert list_workers(slots) == []
    local = SimpleNamespace(run_launcher=object(), root_directory=str(dagster_home))
    assert [w.state for w in loaded_predictor().prestart_workers(local, 1).workers] == ["started"]
