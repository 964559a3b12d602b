"""A run's GPU session: lease, predictor, release (on close and on a failed build), and the one
reading of lease file names that `wsovvis gpus` uses."""

import pytest

from wsovvis_dagster.gpu.leases import (
    LeaseRequest,
    leased_indices,
    lock_name,
    parse_lock_name,
    resolve_slot_dir,
    slot_holders,
)
from wsovvis_dagster.gpu.session import PredictorSession
from wsovvis_dagster.predictors.settings import PredictorSettings


def test_lease_file_names_read_back():
    for index, slot in ((0, 0), (3, 0), (12, 1), (1, 7)):
        assert parse_lock_name(lock_name(index, slot)) == (index, slot)
    for other in ("gpu-GPU-8f1c.slot0.lock", "gpu.lock", "gpu1.lock.tmp", "xgpu1.lock"):
        assert parse_lock_name(other) is None


def test_leased_indices_are_the_devices_with_a_slot_0_lease_file(tmp_path):
    for name in (lock_name(3), lock_name(0), lock_name(0, 1), lock_name(5, 2),
                 "gpu-GPU-8f1c.slot0.lock", "notes.txt"):
        (tmp_path / name).touch()
    assert leased_indices(tmp_path) == (0, 3)


def test_one_slot_folder_default(tmp_path):
    assert resolve_slot_dir("", tmp_path) == tmp_path / "gpu_slots"
    assert resolve_slot_dir(str(tmp_path / "mine"), tmp_path) == tmp_path / "mine"
    assert resolve_slot_dir("", None) is None


def test_session_serves_a_predictor_on_its_leased_device_and_releases_on_close(tmp_path):
    lines = []
    request = LeaseRequest("4,5", tmp_path)
    with PredictorSession.open(PredictorSettings(backend="cpu-slow"), request, run_id="r1",
                               idle_seconds=0, log=lines.append) as session:
        assert session.device == "cuda:4"
        assert session.predictor.device == "cuda:4"  # built for the leased device
        assert session.model_identity[0] == "cpu-colour-motion+hold0s"
        assert slot_holders("4,5", tmp_path)[4]["run_id"] == "r1"
        assert session.worker_info is None
    assert slot_holders("4,5", tmp_path) == {4: None, 5: None}
    assert lines[0].startswith("gpu lease acquired: cuda:4 (")
    assert lines[-1] == "gpu lease released: cuda:4"
    with pytest.raises(RuntimeError, match="closed"):
        session.model_identity  # noqa: B018


def test_a_failed_build_gives_the_lease_back(tmp_path):
    settings = PredictorSettings(backend="videocutler", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(Exception, match="missing.pth"):
        PredictorSession.open(settings, LeaseRequest("0", tmp_path / "slots"), run_id="r",
                              idle_seconds=0)
    assert slot_holders("0", tmp_path / "slots") == {0: None}
