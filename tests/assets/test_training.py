"""`trained_model` through Dagster: a 2-process gloo DDP run tracked by Sacred, and a failing
rank failing the asset with that rank's traceback."""

import json
import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, materialize

from wsovvis_dagster.tubes import load_tube_json


def _materialise_trained_model(instance, resources, *, raise_on_error=True, **config):
    from definitions import defs

    return materialize(
        list(defs.assets), selection=["trained_model"], instance=instance, resources=resources,
        run_config={"ops": {"trained_model": {"config": config}}},
        raise_on_error=raise_on_error,
    )


@pytest.mark.slow
def test_trained_model_ddp_run_is_tracked_by_sacred(synthetic_root, instance, resources_for,
                                                    run_graph, tmp_path):
    resources = resources_for(synthetic_root)
    run_graph(resources)
    result = _materialise_trained_model(instance, resources, nproc=2, device="cpu", epochs=12)
    assert result.success
    meta = {k: getattr(v, "value", v) for k, v in
            result.asset_materializations_for_node("trained_model")[0].metadata.items()}

    # Sacred wrote one run (rank 0 only), with the asset's config in it
    runs = tmp_path / "runs"
    run_dirs = [p for p in runs.iterdir() if p.name != "_sources"]
    assert [p.name for p in run_dirs] == [meta["sacred_run_id"]]
    run_dir = run_dirs[0]
    assert Path(meta["sacred_run_dir"]) == run_dir.resolve()
    for name in ("config.json", "metrics.json", "run.json", "cout.txt"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 12 and config["seed"] == 0 and config["device"] == "cpu"
    assert config["data_root"] == str(synthetic_root.resolve())
    assert config["runs_dir"] == str(runs.resolve())
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    cout = (run_dir / "cout.txt").read_text()
    assert "[rank 0]" in cout and "[rank 1]" not in cout  # rank 0's output only

    # the loss goes down, and the metadata is what Sacred recorded
    metrics = json.loads((run_dir / "metrics.json").read_text())
    loss = metrics["train.loss"]["values"]
    assert metrics["train.loss"]["steps"] == list(range(1, 13))
    assert loss[-1] < 0.7 * loss[0] and min(loss[-3:]) < min(loss[:3])
    assert meta["final_loss"] == pytest.approx(loss[-1])
    assert meta["loss_per_epoch"] == pytest.approx(loss)
    for key in ("AP", "AP50", "APb", "APn"):
        assert meta[f"val_{key}"] == pytest.approx(metrics[f"val.model.{key}"]["values"][-1],
                                                   abs=1e-4)
        assert meta[f"random_{key}"] == pytest.approx(
            metrics[f"val.random.{key}"]["values"][-1], abs=1e-4)
        assert meta[f"oracle_{key}"] == pytest.approx(
            metrics[f"val.oracle.{key}"]["values"][-1], abs=1e-4)
    assert Path(meta["checkpoint"]).is_file() and Path(meta["results_json"]).is_file()
    assert meta["nproc"] == 2 and meta["device"] == "cpu" and meta["wall_time_s"] > 0
    # CPU processes: the run is not tagged as GPU work
    assert instance.get_run_by_id(result.run_id).tags.get("gpu") != "true"
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
    assert "rank 1 failed first" in message and "Traceback (most recent call last)" in message
    assert "FrameError" in message and str(broken) in message
