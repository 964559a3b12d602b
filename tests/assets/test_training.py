"""`trained_model` through Dagster: a researcher's Sacred script (examples/train_wsovvis.py) and
the reference trainer, each as a 2-process gloo DDP run tracked by Sacred; a failing rank fails
the asset with that rank's traceback."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, materialize

from wsovvis_dagster.ytvis.tubes import load_tube_json

REPO = Path(__file__).resolve().parents[2]


def _materialise_trained_model(instance, resources, *, raise_on_error=True, **config):
    from definitions import defs

    return materialize(
        list(defs.assets), selection=["trained_model"], instance=instance, resources=resources,
        run_config={"ops": {"trained_model": {"config": config}}},
        raise_on_error=raise_on_error,
    )


def _metadata(result) -> dict:
    return {k: getattr(v, "value", v) for k, v in
            result.asset_materializations_for_node("trained_model")[0].metadata.items()}


def _only_run_dir(runs: Path) -> Path:
    run_dirs = [p for p in runs.iterdir() if p.name != "_sources"]
    assert len(run_dirs) == 1, run_dirs  # rank 0 alone observed
    return run_dirs[0]


def test_example_script_launched_with_torchrun_and_tracked_by_sacred(
        synthetic_root, instance, resources_for, run_graph, tmp_path):
    resources = resources_for(synthetic_root)
    run_graph(resources)
    config_file = tmp_path / "example.yaml"
    config_file.write_text(yaml.safe_dump({"epochs": 3, "lr": 0.5, "batch_size": 16}))
    result = _materialise_trained_model(
        instance, resources, entrypoint="examples/train_wsovvis.py",
        config_file=str(config_file), config_updates=["lr=0.2"], nproc=2, device="cpu")
    meta = _metadata(result)

    run_dir = _only_run_dir(tmp_path / "runs")
    assert run_dir.name == meta["sacred_run_id"] and Path(meta["sacred_run_dir"]) == run_dir
    assert meta["sacred_status"] == "COMPLETED"
    config = json.loads((run_dir / "config.json").read_text())
    # script default < config_file < launch: epochs from the file, lr from the launch
    assert (config["epochs"], config["lr"], config["batch_size"]) == (3, 0.2, 16)
    assert config["data_root"] == str(synthetic_root.resolve())
    assert config["tube_json_train"] == str(tmp_path / "outputs" / "train" / "tubes_train.json")
    assert meta["config_sources"]["lr"] == "launch (config_updates)"
    assert meta["config_sources"]["epochs"] == "config file / script default"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train.loss"]["steps"] == [1, 2, 3]  # 3 epochs, as the file said
    assert meta["train.loss"] == pytest.approx(metrics["train.loss"]["values"][-1])
    assert meta["val.loss"] == pytest.approx(metrics["val.loss"]["values"][-1])
    assert "| 3 |" in meta["loss_curve"] and "train.loss" in meta["loss_curve"]
    assert meta["sacred_result"]["epochs"] == 3

    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("metric train.loss step 3:" in m for m in logs)  # streamed from metrics.json
    assert any(m.startswith("[default0]:") and "epoch 3/3" in m for m in logs)
    assert not any(m.startswith("[default1]:") for m in logs)  # rank 0's output only
    run = instance.get_run_by_id(result.run_id)
    assert run.tags.get("gpu") != "true"  # CPU processes lease no GPU


@pytest.mark.slow
def test_reference_trainer_honours_its_config_file(synthetic_root, instance, resources_for,
                                                   run_graph, tmp_path):
    """Issue 16: a config_file's epochs must not be overwritten by the asset's defaults."""
    resources = resources_for(synthetic_root)
    run_graph(resources)
    config_file = tmp_path / "ref.yaml"
    base = yaml.safe_load((REPO / "configs" / "wsovvis_sacred.yaml").read_text())
    config_file.write_text(yaml.safe_dump(base | {"epochs": 12, "lr": 0.01}))
    result = _materialise_trained_model(instance, resources, config_file=str(config_file),
                                        nproc=2, device="cpu", lr=3e-3)
    meta = _metadata(result)
    run_dir = _only_run_dir(tmp_path / "runs")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 12 and config["lr"] == 3e-3 and config["device"] == "cpu"
    assert config["runs_dir"] == base["runs_dir"]  # -F attached the observer, not this key
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    cout = (run_dir / "cout.txt").read_text()
    assert "[rank 0]" in cout and "[rank 1]" not in cout

    metrics = json.loads((run_dir / "metrics.json").read_text())
    loss = metrics["train.loss"]["values"]
    assert metrics["train.loss"]["steps"] == list(range(1, 13))
    assert loss[-1] < 0.7 * loss[0] and min(loss[-3:]) < min(loss[:3])
    assert meta["train.loss"] == pytest.approx(loss[-1])
    for who in ("model", "random", "oracle"):
        for key in ("AP", "AP50", "APb", "APn"):
            name = f"val.{who}.{key}"
            assert meta[name] == pytest.approx(metrics[name]["values"][-1])
    assert Path(meta["checkpoint"]).is_file() and Path(meta["results_json"]).is_file()
    assert meta["nproc"] == 2 and meta["device"] == "cpu"
    assert instance.get_latest_materialization_event(AssetKey("trained_model")) is not None


@pytest.mark.slow
def test_failing_rank_fails_the_asset_with_its_traceback(synthetic_root, instance,
                                                         resources_for, run_graph, tmp_path):
    data_root = tmp_path / "data"
    shutil.copytree(synthetic_root, data_root)
    resources = resources_for(data_root)
    run_graph(resources)
    # rank r extracts features of videos r, r + 2, ...: break a frame that rank 1 reads
    tubes = load_tube_json(tmp_path / "outputs" / "train" / "tubes_train.json")
    broken = data_root / "train" / "JPEGImages" / tubes["videos"][1]["file_names"][0]
    broken.write_bytes(b"not a jpeg")
    result = _materialise_trained_model(instance, resources, raise_on_error=False, nproc=2,
                                        device="cpu", epochs=2)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.event_specific_data.error
    cause = error.cause or error
    assert cause.cls_name == "TrainingFailedError"
    message = cause.message
    # Sacred prints "Traceback (most recent calls WITHOUT Sacred internals):"
    assert "rank 1 failed first" in message and "Traceback (most recent call" in message
    assert "FrameError" in message and str(broken) in message
