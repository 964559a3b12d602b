"""One record per backend (`predictors.backends`): what reads it follows it, and every setting
is declared as changing masks or not."""

from dataclasses import replace

import numpy as np
import pytest

from wsovvis_dagster.predictors.backends import (
    BACKENDS,
    OUTPUT_SETTINGS,
    RUNTIME_SETTINGS,
    backend,
    output_changes,
)
from wsovvis_dagster.predictors.factory import build_predictor, output_fingerprint
from wsovvis_dagster.predictors.settings import SETTINGS_FIELDS, PredictorSettings

# a valid other value per setting, to see whether changing it moves the fingerprint
_OTHER = {"backend": None, "device": "cuda:3", "max_tracks": 3, "vnext_root": "/elsewhere/VNext",
          "cutler_root": "/elsewhere/CutLER", "config_file": "other.yaml",
          "weights": "/elsewhere/w.pth", "confidence": 0.3, "chunk_size": 16,
          "chunk_overlap": 2, "allow_random_weights": True, "fast_path": False,
          "precision": "bf16", "deform_attn": "pytorch", "cudnn_benchmark": True,
          "gpu_memory_gib": 4.0, "warmup": False, "hold_seconds": 2.0}


def test_every_setting_changes_masks_or_only_runtime_never_both():
    assert set(_OTHER) == set(SETTINGS_FIELDS)  # a new setting needs a value here too
    assert OUTPUT_SETTINGS | RUNTIME_SETTINGS == set(SETTINGS_FIELDS)
    assert not OUTPUT_SETTINGS & RUNTIME_SETTINGS


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_backends_code_version_moves_with_its_output_settings_only(name):
    record = backend(name)
    base = PredictorSettings(backend=name)
    for key in SETTINGS_FIELDS:
        if key == "backend":
            continue
        changed = replace(base, **{key: _OTHER[key]})
        moves = output_fingerprint(changed) != output_fingerprint(base)
        assert moves == (key in record.output_settings), (name, key)
        assert output_changes(base, changed) == ([key] if moves else [])
    assert output_fingerprint(base).startswith(f"{record.masks_as}-")


def test_cpu_slow_writes_cpus_masks_held():
    frames = np.random.default_rng(0).integers(0, 255, (3, 24, 32, 3), dtype=np.uint8)
    cpu = build_predictor(PredictorSettings(backend="cpu"))
    slow = build_predictor(PredictorSettings(backend="cpu-slow", hold_seconds=0.01))
    assert slow.version == cpu.version and slow.name == f"{cpu.name}+hold0.01s"
    assert np.array_equal(slow.predict(frames).id_maps, cpu.predict(frames).id_maps)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="choose one of.*'cpu', 'videocutler', 'cpu-slow'"):
        build_predictor(PredictorSettings(backend="videocuttler"))


def test_the_resource_and_definitions_read_the_records(monkeypatch):
    from definitions import loaded_predictor, videos_per_run
    from resources import PredictorResource

    for name, record in BACKENDS.items():
        resource = PredictorResource(backend=name)
        assert resource.worker_idle() == record.worker_idle_seconds
        assert (resource.worker_idle() > 0) == record.uses_worker
        assert videos_per_run({"WSOVVIS_PREDICTOR": name}) == record.videos_per_run
        assert loaded_predictor({"WSOVVIS_PREDICTOR": name}).backend == name
        assert f"{name}: {record.description}" in PredictorResource.model_fields[
            "backend"].description
