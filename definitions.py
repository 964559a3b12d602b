"""The wsovvis code location: every asset, check, job and resource, assembled once.

Loaded by `dagster dev` / webserver / daemon through workspace.yaml, and by
`dagster asset materialize` through DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME=definitions
(set by the environment that scripts/setup.sh prepares). Settings come from env vars here,
and only here (one rule, resources/settings.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dagster import (
    AssetSelection,
    Definitions,
    Field,
    JobDefinition,
    define_asset_job,
    executor,
    load_asset_checks_from_modules,
    load_assets_from_modules,
    multi_or_in_process_executor,
)

from assets import masks, sensors, third_party, training, tubes, videos
from resources import DatasetPaths, PredictorResource, SacredObserverResource
from resources.settings import SettingsError, configured, resolved
from wsovvis_dagster.predictors.backends import backend
from wsovvis_instance.dagster_private import multiple_process_executor_requirements, process_config

REPO = Path(__file__).resolve().parent
_MODULES = [third_party, videos, masks, tubes, training]


PATH_DEFAULTS = {"data_root": str(REPO / "data" / "demo"), "output_root": str(REPO / "outputs")}
SACRED_DEFAULTS = {"runs_dir": str(REPO / "runs")}


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def build_resources(env: Mapping[str, str] = os.environ) -> dict:
    """Resources with built-in defaults < env vars < launch-time config, key by key.

    Each field's env var is `WSOVVIS_<FIELD>` (or its alias, e.g. WSOVVIS_PREDICTOR for
    `predictor.backend`); see docs/settings.md. Launch-time resource config overrides only the
    keys it names (`configure_at_launch`).
    """
    return {
        "paths": configured(DatasetPaths, env, PATH_DEFAULTS),
        "predictor": configured(PredictorResource, env),
        "sacred": configured(SacredObserverResource, env, SACRED_DEFAULTS),
    }


def loaded_predictor(env: Mapping[str, str] = os.environ) -> PredictorResource:
    """The predictor settings this code location loaded (no launch config): its code version."""
    return resolved(PredictorResource, env)


def videos_per_run(env: Mapping[str, str] = os.environ) -> int:
    """mask_pngs videos per backfill run: WSOVVIS_VIDEOS_PER_RUN, else by backend (each GPU
    run pays a few seconds of start-up, so it takes more videos)."""
    value = env.get("WSOVVIS_VIDEOS_PER_RUN", "")
    if value == "":
        return backend(loaded_predictor(env).backend).videos_per_run
    if not value.isdigit() or int(value) < 1:
        raise SettingsError(f"WSOVVIS_VIDEOS_PER_RUN must be a positive integer, got {value!r}")
    return int(value)


# Run tags mark GPU work for the run coordinator; backfills from the UI use the implicit job,
# so the `gpu` pool on mask_pngs (op-level) is what caps them (see README).
# gpu=true (+ e.g. a per-run GPU request on Kubernetes: deploy/k8s/gpu_run_tags.yaml)
GPU_RUN_TAGS = sensors.load_gpu_run_tags(_env("WSOVVIS_GPU_RUN_TAGS_FILE", ""))
# the batch's last mask run queues its tube_json (scripts/backfill.py; assets/sensors.py)
mask_pngs_job = define_asset_job(
    "mask_pngs_job", selection=AssetSelection.assets("mask_pngs"), tags=GPU_RUN_TAGS,
    hooks=sensors.tube_json_hooks(),
)
# the tube_json run a scripts/backfill.py batch ends with (its hook or sensor queues this job)
tube_json_job = define_asset_job("tube_json_job", selection=AssetSelection.assets("tube_json"))


def steps_mode(job: JobDefinition) -> str:
    """How the default executor runs `job`'s steps when the run's config does not say:
    "multiprocess" (a process per step) if a step claims a concurrency pool, else "in_process"
    (in the run worker). A step process imports this code location again, 2-3 s per step on the
    H200 host (3 in a tube_json run: the asset and its 2 checks); but on SQLite two runs that
    claim the `gpu` pool in-process at the same instant could both get its last slot
    (docs/gpu.md), which a process per step did not show."""
    return "multiprocess" if any(n.definition.pool for n in job.graph.nodes) else "in_process"


@executor(
    name="multi_or_in_process_executor",  # Dagster's default, with its config
    config_schema=Field(multi_or_in_process_executor.config_schema.config_type,
                        is_required=False),
    requirements=lambda config: (multiple_process_executor_requirements()
                                 if "multiprocess" in (config or {}) else []),
)
def steps_executor(init_context):
    """Dagster's default executor; without `execution: config:` in the run, `steps_mode`."""
    config = init_context.executor_config
    if not config:
        chosen = process_config(multi_or_in_process_executor.config_schema.config_type,
                                {steps_mode(init_context.job.get_definition()): {}})
        config = chosen.value
    return multi_or_in_process_executor.executor_creation_fn(
        init_context._replace(executor_config=config))

_resources = build_resources()
defs = Definitions(
    # mask_pngs' code version carries the predictor settings: changing them shows it stale
    assets=masks.with_videos_per_run(
        masks.stamp_predictor_version(load_assets_from_modules(_MODULES), loaded_predictor()),
        videos_per_run(),
    ),
    asset_checks=load_asset_checks_from_modules(_MODULES),
    jobs=[mask_pngs_job, tube_json_job],
    sensors=[
        sensors.build_new_video_folders_sensor(
            request_runs=_env("WSOVVIS_SENSOR_REQUEST_RUNS", "0") == "1", run_tags=GPU_RUN_TAGS
        ),
        sensors.build_tube_json_after_masks_sensor(tube_json_job),
    ],
    resources=_resources,
    executor=steps_executor,
)
