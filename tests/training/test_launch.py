"""Launching Sacred scripts: one schema for the reference trainer's keys, which keys reach the
script and from which layer, rank 0 alone observed, metrics as metadata."""

from pathlib import Path

import pytest
import yaml

from assets.training import TRAINING_KEYS, TrainingConfig, launch_values
from resources import DatasetPaths
from wsovvis_dagster.training.launch import (
    REFERENCE_ENTRYPOINT,
    LaunchError,
    parse_entrypoint,
    sacred_command,
)
from wsovvis_dagster.training.rank_entry import rank_argv
from wsovvis_dagster.training.sacred_report import curve_markdown, last_values
from wsovvis_dagster.training.schema import DEFAULT_CONFIG, TrainingJob

REPO = Path(__file__).resolve().parents[2]


def test_training_keys_are_defined_once():
    """Sacred defaults, the shipped YAML and the asset's Config agree with training/schema.py."""
    from wsovvis_dagster.training.experiment import build_experiment

    shipped = yaml.safe_load((REPO / "configs" / "wsovvis_sacred.yaml").read_text())
    assert shipped == DEFAULT_CONFIG  # same keys, same defaults
    sacred_defaults = build_experiment().run("print_config").config
    assert {k: sacred_defaults[k] for k in DEFAULT_CONFIG} == DEFAULT_CONFIG
    for key in TRAINING_KEYS:
        assert TrainingConfig.model_fields[key].default == DEFAULT_CONFIG[key], key
        assert key in TrainingJob.__dataclass_fields__


def test_only_keys_set_at_launch_override_the_config_file(tmp_path):
    paths = DatasetPaths(data_root=str(tmp_path / "d"), output_root=str(tmp_path / "o"))
    passed = launch_values(TrainingConfig(epochs=40, lr=0.5), paths, "cpu", {"epochs"})
    assert passed["epochs"] == {"value": 40, "source": "launch"}  # set, though == default
    assert "lr" not in passed and "seed" not in passed  # not named at launch: the file's
    assert passed["tube_json_val"]["value"] == str(tmp_path / "o" / "val" / "tubes_val.json")
    assert passed["output_root"]["value"] == str(tmp_path / "o")  # reference trainer keys
    assert passed["device"]["value"] == "cpu"
    other = launch_values(TrainingConfig(entrypoint="train_wsovvis.py", data_root_key="root",
                                         tube_json_val_key=""), paths, "cpu", set())
    assert set(other) == {"root", "tube_json_train"}  # mapped names; '' = not passed


def test_entrypoints_and_command():
    assert parse_entrypoint(REFERENCE_ENTRYPOINT) == ["-m", "wsovvis_dagster.training"]
    assert parse_entrypoint("examples/train_wsovvis.py") == ["examples/train_wsovvis.py"]
    with pytest.raises(LaunchError, match="script path"):
        parse_entrypoint("-m a b")
    command = sacred_command(["t.py"], nproc=2, config_file="c.yaml", updates=["a=1"],
                             runs_dir="/r", run_id="x1")
    assert command[command.index("t.py"):] == [
        "t.py", "-F", "/r", "--id", "x1", "--beat-interval", "2.0", "with", "c.yaml", "a=1"]


def test_only_rank_zero_is_observed():
    args = ["-F", "/runs", "--id", "x1", "with", "c.yaml", "epochs=3"]
    assert rank_argv(args, 0) == args
    assert rank_argv(args, 1) == ["with", "c.yaml", "epochs=3", "--unobserved"]
    assert rank_argv(["--file_storage=/r", "--id=x", "with", "a=1"], 3) == [
        "with", "a=1", "--unobserved"]


def test_metrics_become_last_values_and_a_small_loss_table():
    metrics = {"train.loss": {"steps": list(range(1, 101)), "values": [1 / s for s in
                                                                       range(1, 101)]},
               "val.AP": {"steps": [100], "values": [0.4]}}
    assert last_values(metrics) == {"train.loss": 0.01, "val.AP": 0.4}
    table = curve_markdown(metrics, rows=10)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "step" not in line]
    assert len(rows) == 10 and rows[0].startswith("| 1 |") and rows[-1].startswith("| 100 |")
    assert "val.AP" not in table and "`train.loss`: █" in table


def test_training_gpus_come_from_the_mask_predictors_leases(tmp_path):
    """A training job and mask runs lease from the same lock files: never the same GPU."""
    from wsovvis_dagster.gpu.leases import GpuSlotError, acquire_gpu_slot, lease_gpus
    from wsovvis_dagster.training.launch import visible_devices

    mask_run = acquire_gpu_slot("0,1,2", run_id="masks", slot_dir=tmp_path, timeout_s=0)
    assert mask_run.index == 0
    leases = lease_gpus("0,1,2", 2, run_id="train", slot_dir=tmp_path, timeout_s=0)
    assert [lease.index for lease in leases] == [1, 2]
    with pytest.raises(GpuSlotError, match="no free GPU"):
        acquire_gpu_slot("0,1,2", run_id="masks2", slot_dir=tmp_path, timeout_s=0)
    leases[1].release()  # GPU 2 free again; a 2-GPU job gets it, then finds no second one
    with pytest.raises(GpuSlotError):
        lease_gpus("0,1,2", 2, run_id="train2", slot_dir=tmp_path, timeout_s=0)
    # all or nothing: the failed job gave GPU 2 back
    assert acquire_gpu_slot("0,1,2", run_id="masks3", slot_dir=tmp_path, timeout_s=0).index == 2
    assert visible_devices([1, 2]) == "1,2"
    assert visible_devices([0, 1], parent="4,6,7") == "4,6"  # this process's own numbering


def test_a_failing_rank_reports_its_traceback(tmp_path, monkeypatch):
    import json

    from wsovvis_dagster.training import rank_entry

    script = tmp_path / "boom.py"
    script.write_text("import sys\nassert sys.argv[1:] == ['with', 'a=1', '--unobserved']\n"
                      "raise ValueError('tube json broken')\n")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(rank_entry.ERRORS_DIR_ENV, str(tmp_path / "errors"))
    monkeypatch.setattr("sys.argv", ["x"])
    with pytest.raises(ValueError, match="tube json broken"):
        rank_entry.main([str(script), "-F", "/runs", "with", "a=1"])
    report = json.loads((tmp_path / "errors" / "rank1.json").read_text())
    assert report["rank"] == 1 and report["exit_code"] == 1
    assert "ValueError: tube json broken" in report["traceback"]
