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
from wsovvis_dagster.gpu.leases import process_alive
from wsovvis_dagster.gpu.worker import (
    PredictorWorkerError,
    connect_worker,
    list_workers,
    stop_workers,
    worker_dir,
)
from wsovvis_dagster.masks.segment import segment_videos
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.predictors.factory import build_predictor
from wsovvis_dagster.predictors.settings import PredictorSettings
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


# -- other local users (run as root: `nobody` plays the other user) ---------------------------
NOBODY = 65534


def _as_nobody(act) -> str:
    """`act()` in a forked child running as uid/gid nobody; what it returned (a str)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, act, report, never return into pytest
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = act()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = f"{type(exc).__name__}: {exc}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return out


def _connect_and_read(path) -> str:
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    return repr(s.recv(10))


@pytest.mark.root
@pytest.mark.timeout(180)  # a stalled worker would hang the run: fail instead of waiting
def test_another_user_cannot_reach_the_worker_and_bad_peers_neither_crash_nor_stall_it(
        real_jpegs, tmp_path, state_root):
    import socket
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    from wsovvis_dagster.gpu.worker_socket import socket_path

    data = tmp_path / "data"
    refs = _videos(data, real_jpegs, 2)
    worker = connect_worker(PredictorSettings(), worker_dir(state_root, "cpu"), idle_seconds=60)
    path = socket_path(worker.state_dir)
    assert path.parent.stat().st_mode & 0o777 == 0o700
    # another user: cannot even reach the socket
    assert _as_nobody(lambda: _connect_and_read(path)).startswith("PermissionError")
    # peers that can reach it (the owner's other processes) and misbehave:
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(str(path))  # says nothing and stays open during the run
    garbage = socket.socket(socket.AF_UNIX)
    garbage.connect(str(path))
    garbage.sendall(b"\x00\x00\x00\x05hello not a handshake")
    garbage.close()
    with pytest.raises(AuthenticationError):
        Client(str(path), family="AF_UNIX", authkey=b"wrong key")
    outcomes = list(worker.segment_videos(data, tmp_path / "out", refs))
    assert [o.error for o in outcomes] == [None, None]
    again = connect_worker(PredictorSettings(), worker_dir(state_root, "cpu"), idle_seconds=60)
    assert again.reused and again.pid == worker.pid  # it survived them all
    silent.close()


@pytest.mark.root
def test_a_socket_folder_held_by_another_user_is_refused_with_a_clear_error(
        tmp_path, monkeypatch, state_root):
    import tempfile

    from wsovvis_dagster.gpu.worker_socket import SocketDirError, socket_path

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    (tmp_path / "tmp").mkdir()
    deep = state_root / ("x" * 90)  # too long for AF_UNIX: the socket goes under TMPDIR
    path = socket_path(worker_dir(deep, "cpu"))
    assert path.is_relative_to(tmp_path / "tmp")
    path.parent.mkdir()
    os.chown(path.parent, NOBODY, NOBODY)  # another user took the name first
    with pytest.raises(SocketDirError, match=f"owned by uid {NOBODY}, not by you"):
        connect_worker(PredictorSettings(), worker_dir(deep, "cpu"), idle_seconds=60)


@pytest.mark.root
def test_the_worker_refuses_peers_of_another_uid():
    """Defence in depth: even on a socket others can reach, only the owner's uid is served."""
    import logging
    import shutil
    import socket
    import tempfile
    import threading

    from wsovvis_dagster.gpu import worker_socket

    folder = Path(tempfile.mkdtemp(prefix="wsovvis-peer-test-"))  # pytest's tmp is 0700
    folder.chmod(0o755)
    path = folder / "open.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    path.chmod(0o777)
    listener.listen(4)
    served = []
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    worker_socket.log.addHandler(handler)
    try:
        threading.Thread(target=worker_socket.accept_forever,
                         args=(listener, b"k", served.append), daemon=True).start()
        # closed at once, before any handshake byte
        assert _as_nobody(lambda: _connect_and_read(path)) == "b''"
        assert any(f"from uid {NOBODY}" in m for m in records)
        assert served == []
    finally:
        worker_socket.log.removeHandler(handler)
        listener.close()
        shutil.rmtree(folder)
