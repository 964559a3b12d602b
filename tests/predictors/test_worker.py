"""The predictor worker: one long-lived model process per lease slot serving every run.

Real processes and sockets with the embedded CPU predictor: PNGs identical to the in-process
loop, reuse across runs (Dagster runs included), a settings change replacing the worker, typed
errors crossing the socket, a worker killed mid-run, a worker that cannot start, idle exit.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from dagster_runs import metadata, run
from video_files import FRAMES_PER_VIDEO, corruptions, make_video, tree_bytes
from wsovvis_dagster.errors import FrameError
from wsovvis_dagster.gpu_slots import process_alive
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.pipeline import segment_videos
from wsovvis_dagster.predictors.factory import build_predictor
from wsovvis_dagster.predictors.settings import PredictorSettings
from wsovvis_dagster.predictors.worker import (
    PredictorWorkerError,
    connect_worker,
    list_workers,
    stop_workers,
    worker_dir,
)
from wsovvis_instance.cli import main as cli


@pytest.fixture
def state_root(tmp_path):
    root = tmp_path / "slots"
    yield root
    stop_workers(root)  # no worker outlives its test


def _videos(data: Path, jpegs: list[bytes], count: int) -> list[VideoRef]:
    for i in range(count):
        make_video(data, "val", f"v{i}", jpegs[:FRAMES_PER_VIDEO])
    return [VideoRef("val", f"v{i}") for i in range(count)]


def _wait_dead(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_alive(pid)


def test_worker_writes_what_the_run_would_and_serves_the_next_run(real_jpegs, tmp_path,
                                                                   state_root):
    data = tmp_path / "data"
    refs = _videos(data, real_jpegs, 3)
    settings = PredictorSettings()
    worker = connect_worker(settings, worker_dir(state_root, "cpu"), idle_seconds=60)
    assert not worker.reused
    outcomes = list(worker.segment_videos(data, tmp_path / "w", refs))
    assert [o.ref for o in outcomes] == refs and all(o.error is None for o in outcomes)
    assert outcomes[0].result.tracks >= 1 and outcomes[0].result.preview_jpeg
    list(segment_videos(data, tmp_path / "local", refs, build_predictor(settings)))
    assert tree_bytes(tmp_path / "w" / "val") == tree_bytes(tmp_path / "local" / "val")

    again = connect_worker(settings, worker_dir(state_root, "cpu"), idle_seconds=60)
    assert again.reused and again.pid == worker.pid  # the model was not built again
    assert [w["pid"] for w in list_workers(state_root)] == [worker.pid]


def test_other_settings_replace_the_worker(tmp_path, state_root):
    first = connect_worker(PredictorSettings(max_tracks=10), worker_dir(state_root, "cpu"),
                           idle_seconds=60)
    second = connect_worker(PredictorSettings(max_tracks=3), worker_dir(state_root, "cpu"),
                            idle_seconds=60)
    assert not second.reused and second.pid != first.pid
    assert _wait_dead(first.pid)  # one model per slot


def test_a_broken_frame_fails_only_its_video_through_the_worker(real_jpegs, tmp_path,
                                                                state_root):
    data = tmp_path / "data"
    refs = _videos(data, real_jpegs, 2)
    bad = data / "val" / "JPEGImages" / "v0" / "00001.jpg"
    bad.write_bytes(corruptions(real_jpegs[1])["truncated"])
    worker = connect_worker(PredictorSettings(), worker_dir(state_root, "cpu"), idle_seconds=60)
    first, second = worker.segment_videos(data, tmp_path / "out", refs)
    assert isinstance(first.error, FrameError) and str(bad) in str(first.error)
    assert second.error is None and second.result.frames == FRAMES_PER_VIDEO
    assert not (tmp_path / "out" / "val" / "masks" / "v0").exists()


def test_a_worker_killed_mid_run_names_its_log_and_the_next_run_starts_a_new_one(
        real_jpegs, tmp_path, state_root):
    data = tmp_path / "data"
    refs = _videos(data, real_jpegs, 3)
    settings = PredictorSettings(backend="cpu-slow", hold_seconds=1.0)
    worker = connect_worker(settings, worker_dir(state_root, "cpu"), idle_seconds=60)
    outcomes = worker.segment_videos(data, tmp_path / "out", refs)
    first = next(outcomes)
    assert first.error is None
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(PredictorWorkerError) as err:
        list(outcomes)
    assert str(worker.log_path) in str(err.value) and "videos" in str(err.value)
    assert first.result.folder.is_dir()  # what it finished stays written
    fresh = connect_worker(settings, worker_dir(state_root, "cpu"), idle_seconds=60)
    assert not fresh.reused and fresh.pid != worker.pid


def test_a_worker_that_cannot_build_its_model_fails_the_run_with_its_log(tmp_path, state_root):
    settings = PredictorSettings(backend="videocutler", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(PredictorWorkerError) as err:
        connect_worker(settings, worker_dir(state_root, "cuda:0"), idle_seconds=60)
    text = str(err.value)
    assert "exited with code" in text and "missing.pth" in text and "worker.log" in text


def test_an_idle_worker_exits_and_frees_its_device(state_root):
    worker = connect_worker(PredictorSettings(), worker_dir(state_root, "cpu"), idle_seconds=0.5)
    assert _wait_dead(worker.pid)
    assert list_workers(state_root) == []


def test_mask_runs_share_one_worker(real_jpegs, tmp_path, instance, resources_for, state_root,
                                    capsys):
    """Two Dagster runs: the first starts the worker, the second reuses it (same pid), and
    both record which process made their masks."""
    data = tmp_path / "data"
    _videos(data, real_jpegs, 2)
    resources = resources_for(data, worker_idle_seconds=60, slot_dir=str(state_root))
    assert run(instance, resources, "video_partitions").success
    first = run(instance, resources, "mask_pngs", partition="val__v0")
    second = run(instance, resources, "mask_pngs", partition="val__v1")
    assert first.success and second.success
    a = metadata(first, "mask_pngs")["predictor_worker"]
    b = metadata(second, "mask_pngs")["predictor_worker"]
    assert not a["reused"] and b["reused"] and a["pid"] == b["pid"]
    # `wsovvis gpus` shows the worker and stops it on request
    assert cli(["gpus", "--slot-dir", str(state_root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [w["pid"] for w in report["workers"]] == [a["pid"]]
    assert cli(["gpus", "--slot-dir", str(state_root), "--stop-workers"]) == 0
    assert f"stopped predictor worker pid {a['pid']}" in capsys.readouterr().out
    assert _wait_dead(a["pid"]) and list_workers(state_root) == []
    # in-process (worker_idle_seconds 0, the CPU default): same masks, no worker recorded
    masks = tmp_path / "outputs" / "val" / "masks" / "v0"
    by_worker = tree_bytes(masks)
    local = run(instance, resources_for(data), "mask_pngs", partition="val__v0")
    assert "predictor_worker" not in metadata(local, "mask_pngs")
    assert tree_bytes(masks) == by_worker
