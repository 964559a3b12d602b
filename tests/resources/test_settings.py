"""One precedence for resource settings (docs/settings.md): built-in default < env var <
launch-time config, key by key; one env var rule; defects of issue 16 kept fixed."""

import json
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path

import pytest
from dagster import AssetKey, ConfigurableResource, Definitions, asset, materialize

from resources import DatasetPaths, PredictorResource, SacredObserverResource
from resources.settings import SettingsError, env_var_name
from wsovvis_dagster.predictors.settings import PredictorSettings

REPO_ENV_VARS = {  # documented names that must keep working
    ("backend", PredictorResource): "WSOVVIS_PREDICTOR",
    ("weights", PredictorResource): "WSOVVIS_VIDEOCUTLER_WEIGHTS",
    ("gpus", PredictorResource): "WSOVVIS_GPUS",
    ("hold_seconds", PredictorResource): "WSOVVIS_HOLD_SECONDS",
    ("allow_random_weights", PredictorResource): "WSOVVIS_ALLOW_RANDOM_WEIGHTS",
    ("data_root", DatasetPaths): "WSOVVIS_DATA_ROOT",
    ("output_root", DatasetPaths): "WSOVVIS_OUTPUT_ROOT",
    ("runs_dir", SacredObserverResource): "WSOVVIS_RUNS_DIR",
}
# a valid non-default value per pattern-constrained field (others: derived from the type)
_PATTERN_VALUES = {"precision": "bf16", "deform_attn": "pytorch", "backend": "cpu-slow",
                   "gpus": "0,1"}


def _other_value(name, info):
    if name in _PATTERN_VALUES:
        return _PATTERN_VALUES[name]
    kind = info.annotation
    optional = [a for a in typing.get_args(kind) if a is not type(None)]
    if len(optional) == 1:  # `float | None`: None means "by backend"
        kind = optional[0]
    if kind is bool:
        return not info.default
    if kind in (int, float):
        return (info.default or 0) + 3
    return f"/set/by/env/{name}"


def test_dagster_replaces_a_constructed_resource_but_merges_a_partial_one():
    """Why definitions.py uses configure_at_launch: pins Dagster 1.13's behaviour."""

    class Thing(ConfigurableResource):
        backend: str = "cpu"
        flag: bool = False

    seen = []

    @asset
    def probe(thing: Thing):
        seen.append((thing.backend, thing.flag))

    launch = {"resources": {"thing": {"config": {"flag": True}}}}
    for resource in (Thing(backend="gpu"), Thing.configure_at_launch(backend="gpu")):
        job = Definitions(assets=[probe], resources={"thing": resource}
                          ).resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(run_config=launch).success
    assert seen == [("cpu", True), ("gpu", True)]  # constructed: replaced; partial: merged


def test_every_field_gets_its_env_var_by_one_rule():
    from definitions import build_resources

    for (name, cls), var in REPO_ENV_VARS.items():
        assert env_var_name(cls, name) == var
    for cls, key in ((PredictorResource, "predictor"), (DatasetPaths, "paths"),
                     (SacredObserverResource, "sacred")):
        for name, info in cls.model_fields.items():
            assert env_var_name(cls, name) in (f"WSOVVIS_{name.upper()}",
                                               *cls.__dict__.get("ENV_ALIASES", {}).values())
            value = _other_value(name, info)
            env = {env_var_name(cls, name): str(value).lower() if isinstance(value, bool)
                   else str(value)}
            assert build_resources(env)[key].data[name] == value, (name, env)


def test_bad_env_value_fails_at_load_naming_the_variable():
    from definitions import build_resources

    with pytest.raises(SettingsError, match=r"WSOVVIS_PRECISION='fp8'.*pattern"):
        build_resources({"WSOVVIS_PRECISION": "fp8"})
    with pytest.raises(SettingsError, match="WSOVVIS_CHUNK_SIZE='many'"):
        build_resources({"WSOVVIS_CHUNK_SIZE": "many"})
    with pytest.raises(SettingsError, match=r"WSOVVIS_PREDICTOR='videocuttler'.*pattern"):
        build_resources({"WSOVVIS_PREDICTOR": "videocuttler"})
    with pytest.raises(SettingsError, match=r"WSOVVIS_GPUS='0;1'.*pattern"):
        build_resources({"WSOVVIS_GPUS": "0;1"})
    for fine in ("0,1, 2", "auto", "3"):
        build_resources({"WSOVVIS_GPUS": fine})


def test_predictor_settings_are_the_resource_fields_by_name():
    """One schema: every library setting is a resource field with the library's default
    (the memory cap's is derived from the runs per GPU: the library's is for one run)."""
    for f in fields(PredictorSettings):
        if f.name == "device":
            continue
        assert getattr(PredictorResource().settings(), f.name) == f.default, f.name
    changed = PredictorResource(confidence=0.3, chunk_size=5, precision="fp16", max_tracks=2)
    settings = changed.settings("cuda:1")
    assert (settings.confidence, settings.chunk_size, settings.precision, settings.max_tracks,
            settings.device) == (0.3, 5, "fp16", 2, "cuda:1")


def _docs_rows(key: str) -> dict[str, list[str]]:
    """docs/settings.md's resource table: field -> its row's cells, for resource `key`."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        prefix = f"`resources.{key}.config."
        if len(cells) == 5 and cells[1].startswith(prefix):
            rows[cells[1][len(prefix):-1]] = cells
    return rows


def test_resource_settings_dataclass_and_docs_table_list_the_same_fields():
    """The three lists of predictor settings agree: the resource's fields are PredictorSettings'
    (but `device`, which the lease decides) plus its RUN_FIELDS (lease and worker), the docs
    table has one row per field, and its stale column is the backends' output settings."""
    from wsovvis_dagster.predictors.backends import BACKENDS, OUTPUT_SETTINGS

    library = {f.name for f in fields(PredictorSettings)} - {"device"}
    resource = set(PredictorResource.model_fields)
    assert resource == library | set(PredictorResource.RUN_FIELDS), resource ^ (
        library | set(PredictorResource.RUN_FIELDS))
    assert not library & set(PredictorResource.RUN_FIELDS)
    rows = _docs_rows("predictor")
    assert set(rows) == resource, set(rows) ^ resource
    for name, cells in rows.items():
        assert cells[0] == f"`{env_var_name(PredictorResource, name)}`", name
        assert cells[4] == ("yes" if name in OUTPUT_SETTINGS else "no"), name
        default = PredictorResource.model_fields[name].default
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert f"`{default:g}`" in cells[2], (name, cells[2])  # e.g. `0.6`, `3600`
        elif isinstance(default, bool):
            assert f"`{str(default).lower()}`" in cells[2], (name, cells[2])
        elif isinstance(default, str) and default:
            assert f"`{default}`" in cells[2], (name, cells[2])
    # defaults that differ by backend (None in the resource) name each backend's value
    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    per_run = next(line for line in doc.splitlines()
                   if line.startswith("| `WSOVVIS_VIDEOS_PER_RUN` |"))
    for record in BACKENDS.values():
        assert f"`{record.worker_idle_seconds:g}`" in rows["worker_idle_seconds"][2]
        assert f"`{record.videos_per_run}`" in per_run


def test_gpu_memory_cap_shares_one_budget_among_a_gpus_runs():
    """Unset, each run's allocator cap is the GPU budget divided by the runs sharing the GPU,
    so cuDNN's autotuning never takes the whole card; a set value (0 = none) wins."""
    budget = PredictorResource(runs_per_gpu=1).settings("cuda:0").gpu_memory_gib
    assert 0 < budget <= 20
    assert PredictorResource(runs_per_gpu=2).settings("cuda:0").gpu_memory_gib == budget / 2
    assert PredictorResource().settings("cuda:0").gpu_memory_gib == budget  # 1 run a GPU
    assert PredictorResource(runs_per_gpu=2, gpu_memory_gib=0).settings().gpu_memory_gib == 0
    from definitions import loaded_predictor

    assert loaded_predictor({"WSOVVIS_RUNS_PER_GPU": "3"}).settings().gpu_memory_gib == budget / 3


def _masks_once(instance, env, monkeypatch, *, run_config=None, raise_on_error=True):
    """mask_pngs of one video with the resources definitions.py builds from `env`."""
    from definitions import build_resources, defs

    for var, value in env.items():
        monkeypatch.setenv(var, value)
    resources = build_resources()

    assets = list(defs.assets)
    assert materialize(assets, selection=["video_partitions"], instance=instance,
                       resources=resources).success
    key = instance.get_dynamic_partitions("videos")[0]
    result = materialize(assets, selection=["mask_pngs"], instance=instance, resources=resources,
                         partition_key=key, run_config=run_config,
                         raise_on_error=raise_on_error)
    return result, key


def test_launch_config_changes_one_key_and_keeps_the_env_values(instance, synthetic_root,
                                                                 tmp_path, monkeypatch):
    env = {"WSOVVIS_PREDICTOR": "cpu-slow", "WSOVVIS_HOLD_SECONDS": "0.01",
           "WSOVVIS_DATA_ROOT": str(synthetic_root), "WSOVVIS_OUTPUT_ROOT": str(tmp_path / "o")}
    launch = {"resources": {"predictor": {"config": {"lease_timeout_s": 7.0}},
                            "paths": {"config": {"output_root": str(tmp_path / "launch")}}}}
    result, key = _masks_once(instance, env, monkeypatch, run_config=launch)
    meta = result.asset_materializations_for_node("mask_pngs")[0].metadata
    assert meta["predictor"].value == "cpu-colour-motion+hold0.01s"  # env backend kept
    settings = meta["predictor_settings"].value
    assert settings["backend"] == {"value": "cpu-slow", "source": "env WSOVVIS_PREDICTOR"}
    assert settings["hold_seconds"] == {"value": 0.01, "source": "env WSOVVIS_HOLD_SECONDS"}
    assert settings["lease_timeout_s"] == {"value": 7.0, "source": "launch"}
    assert settings["max_tracks"] == {"value": 10, "source": "default"}
    # paths: output_root from launch, data_root still from env
    split, video = key.split("__")
    assert (tmp_path / "launch" / split / "masks" / video).is_dir()
    assert not (tmp_path / "o").exists()


def test_launch_change_that_alters_masks_fails_naming_the_env_var(instance, synthetic_root,
                                                                  tmp_path, monkeypatch):
    """Issue 16: random weights at launch must not silently run the CPU backend, and must not
    record masks under the code version of other settings."""
    env = {"WSOVVIS_PREDICTOR": "videocutler", "WSOVVIS_GPUS": "",
           "WSOVVIS_DATA_ROOT": str(synthetic_root), "WSOVVIS_OUTPUT_ROOT": str(tmp_path / "o")}
    launch = {"resources": {"predictor": {"config": {"allow_random_weights": True}}}}
    result, _ = _masks_once(instance, env, monkeypatch, run_config=launch,
                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_failure)
    message = str(failure.event_specific_data.error.to_string())
    assert "allow_random_weights: False -> True" in message
    assert "WSOVVIS_ALLOW_RANDOM_WEIGHTS=True" in message and "'videocutler'" in message
    assert not (tmp_path / "o").exists()  # nothing predicted, on any backend


def test_random_weights_flag_reaches_runs_without_run_config(instance, synthetic_root, tmp_path,
                                                            monkeypatch):
    """Daemon backfills (scripts/backfill.py) pass no run config: the env var must reach them."""
    env = {"WSOVVIS_ALLOW_RANDOM_WEIGHTS": "1", "WSOVVIS_DATA_ROOT": str(synthetic_root),
           "WSOVVIS_OUTPUT_ROOT": str(tmp_path / "o")}
    result, _ = _masks_once(instance, env, monkeypatch)
    settings = result.asset_materializations_for_node("mask_pngs")[0].metadata[
        "predictor_settings"].value
    assert settings["allow_random_weights"] == {
        "value": True, "source": "env WSOVVIS_ALLOW_RANDOM_WEIGHTS"}


def test_cli_launch_config_keeps_env_backend(instance, subprocess_env, synthetic_root, tmp_path):
    """The reported command: `dagster asset materialize --config-json` with resource config."""
    from definitions import defs

    env = dict(subprocess_env, WSOVVIS_PREDICTOR="cpu-slow", WSOVVIS_HOLD_SECONDS="0.02",
               WSOVVIS_DATA_ROOT=str(synthetic_root), WSOVVIS_OUTPUT_ROOT=str(tmp_path / "o"),
               PYTHONWARNINGS="ignore")
    resources = {"paths": DatasetPaths(data_root=str(synthetic_root),
                                       output_root=str(tmp_path / "o")),
                 "predictor": PredictorResource(), "sacred": SacredObserverResource()}
    assert materialize(list(defs.assets), selection=["video_partitions"], instance=instance,
                       resources=resources).success
    key = instance.get_dynamic_partitions("videos")[0]
    launch = {"resources": {"predictor": {"config": {"lease_timeout_s": 9.0}}}}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "--select", "mask_pngs",
         "--partition", key, "--config-json", json.dumps(launch)],
        env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "building predictor backend=cpu-slow" in done.stderr
    event = instance.get_latest_materialization_event(AssetKey("mask_pngs"))
    meta = event.asset_materialization.metadata
    assert meta["predictor"].value == "cpu-colour-motion+hold0.02s"
    assert meta["predictor_settings"].value["lease_timeout_s"]["source"] == "launch"


def test_docs_table_lists_every_setting():
    from assets.training import TrainingConfig

    doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    for cls, key in ((PredictorResource, "predictor"), (DatasetPaths, "paths"),
                     (SacredObserverResource, "sacred")):
        for name in cls.model_fields:
            assert f"| `{env_var_name(cls, name)}` | `resources.{key}.config.{name}` |" in doc
    for name in TrainingConfig.model_fields:
        assert f"`{name}`" in doc, name


def test_mask_changing_defaults_move_the_code_version_and_speed_settings_do_not():
    """mask_pngs' code version is fenced by the settings that change masks: the tf32 default
    gives other masks than fp32 (so another version), while the memory cap, runs per GPU and
    autotuning only change speed and memory (same version)."""
    from definitions import loaded_predictor

    gpu = {"WSOVVIS_PREDICTOR": "videocutler", "WSOVVIS_GPUS": "0"}
    default = loaded_predictor(gpu)
    assert default.precision == "tf32"
    assert loaded_predictor({**gpu, "WSOVVIS_PRECISION": "fp32"}).output_fingerprint() \
        != default.output_fingerprint()
    for speed_only in ({"WSOVVIS_GPU_MEMORY_GIB": "0"}, {"WSOVVIS_RUNS_PER_GPU": "2"},
                       {"WSOVVIS_CUDNN_BENCHMARK": "1"}):
        assert loaded_predictor({**gpu, **speed_only}).output_fingerprint() \
            == default.output_fingerprint(), speed_only
