"""GPU slot leases: distinct devices for concurrent holders, freed on release or process death."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wsovvis_dagster.gpu.leases import GpuSlotError, acquire_gpu_slot, parse_gpus, slot_holders

REPO = Path(__file__).resolve().parents[2]


def test_parse_gpus(monkeypatch):
    assert parse_gpus("") == ()
    assert parse_gpus(" ") == ()
    assert parse_gpus("0,1, 3") == (0, 1, 3)
    monkeypatch.setattr("wsovvis_dagster.gpu.leases.count_cuda_devices", lambda: 8)
    assert parse_gpus("auto") == tuple(range(8))
    for bad in ("cuda:0", "0,,1", "-1", "0,0"):
        with pytest.raises(GpuSlotError):
            parse_gpus(bad)


def test_cpu_means_no_lease(tmp_path):
    assert acquire_gpu_slot("", run_id="r", slot_dir=tmp_path) is None
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("count", [1, 4, 8])
def test_concurrent_holders_get_distinct_devices(tmp_path, count):
    gpus = ",".join(str(i) for i in range(count))
    leases = [acquire_gpu_slot(gpus, run_id=f"r{i}", slot_dir=tmp_path) for i in range(count)]
    assert sorted(lease.index for lease in leases) == list(range(count))
    assert {lease.device for lease in leases} == {f"cuda:{i}" for i in range(count)}
    holders = slot_holders(gpus, tmp_path)
    assert {h["run_id"] for h in holders.values()} == {f"r{i}" for i in range(count)}
    with pytest.raises(GpuSlotError, match="no free GPU"):
        acquire_gpu_slot(gpus, run_id="extra", slot_dir=tmp_path, timeout_s=0.3, poll_s=0.05)
    leases[-1].release()
    leases[-1].release()  # idempotent
    again = acquire_gpu_slot(gpus, run_id="next", slot_dir=tmp_path, timeout_s=1)
    assert again.index == leases[-1].index
    for lease in [*leases, again]:
        lease.release()
    assert all(h is None for h in slot_holders(gpus, tmp_path).values())


def test_waits_for_a_device_to_free(tmp_path):
    first = acquire_gpu_slot("5", run_id="a", slot_dir=tmp_path)
    proc = _hold_in_subprocess(tmp_path, "5", hold_s=0.0, wait_s=10)
    time.sleep(0.5)
    assert proc.poll() is None  # still waiting: the only device is held
    first.release()
    out = json.loads(proc.communicate(timeout=20)[0])
    assert out["index"] == 5


def _hold_in_subprocess(slot_dir: Path, gpus: str, *, hold_s: float, wait_s: float = 30):
    code = textwrap.dedent(f"""
        import json, sys, time
        from wsovvis_dagster.gpu.leases import acquire_gpu_slot
        lease = acquire_gpu_slot({gpus!r}, run_id="sub", slot_dir={str(slot_dir)!r},
                                 timeout_s={wait_s}, poll_s=0.02)
        t0 = time.time()
        time.sleep({hold_s})
        t1 = time.time()
        lease.release()
        print(json.dumps({{"index": lease.index, "start": t0, "end": t1}}), flush=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)


def test_many_processes_never_share_a_device(tmp_path):
    procs = [_hold_in_subprocess(tmp_path, "0,1,2,3", hold_s=0.4) for _ in range(10)]
    spans = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert {s["index"] for s in spans} == {0, 1, 2, 3}
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            if a["index"] == b["index"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)


def test_sigkilled_holder_frees_its_device(tmp_path):
    """No cleanup code runs on SIGKILL: the kernel drops the flock, the device is free."""
    proc = _hold_in_subprocess(tmp_path, "0,1", hold_s=60)
    deadline = time.time() + 20
    while slot_holders("0,1", tmp_path)[0] is None:
        assert time.time() < deadline, "subprocess never took the lease"
        time.sleep(0.05)
    held = acquire_gpu_slot("0,1", run_id="me", slot_dir=tmp_path)
    assert held.index == 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert slot_holders("0,1", tmp_path)[0] is None  # stale text in the file does not count
    recovered = acquire_gpu_slot("0,1", run_id="me2", slot_dir=tmp_path, timeout_s=1)
    assert recovered.index == 0
    held.release()
    recovered.release()


def test_resource_records_device_and_releases(instance, synthetic_root, resources_for):
    """A mask_pngs run leases a device, records it as metadata, and gives it back."""
    from dagster import AssetKey, materialize

    from definitions import defs

    slot_dir = instance.root_directory + "/gpu_slots"
    resources = resources_for(synthetic_root, backend="cpu", gpus="2,3")
    assets = list(defs.assets)
    materialize(assets, selection=["video_partitions"], instance=instance, resources=resources)
    key = instance.get_dynamic_partitions("videos")[0]
    result = materialize(assets, selection=["mask_pngs"], partition_key=key, instance=instance,
                         resources=resources)
    assert result.success
    mat = instance.get_latest_materialization_event(AssetKey("mask_pngs"))
    assert mat.asset_materialization.metadata["device"].value == "cuda:2"
    assert slot_holders("2,3", slot_dir) == {2: None, 3: None}


def test_process_alive_sees_exits_zombies_and_reused_pids():
    """What the dead-run health check relies on (wsovvis_instance.liveness)."""
    from wsovvis_dagster.gpu.leases import process_alive

    before = time.time() - 5
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        assert process_alive(proc.pid, started_by=time.time())
        # a process that started after the event naming its pid is another process
        assert not process_alive(proc.pid, started_by=before)
        os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.2)
        assert not process_alive(proc.pid)  # a zombie until reaped: dead all the same
    finally:
        proc.kill()
        proc.wait()
    assert not process_alive(proc.pid)
