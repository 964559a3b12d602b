"""The wsovvis code location: every asset, check, job and resource, assembled once.

Loaded by `dagster dev` / webserver / daemon through workspace.yaml, and by
`dagster asset materialize` through DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME=definitions
(set by the environment that scripts/setup.sh prepares). Settings come from env vars here,
and only here.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import (
    AssetSelection,
    Definitions,
    define_asset_job,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from assets import masks, sensors, third_party, training, tubes, videos
from resources import DatasetPaths, PredictorResource, SacredObserverResource

REPO = Path(__file__).resolve().parent
_MODULES = [third_party, videos, masks, tubes, training]


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def build_resources() -> dict:
    """Resources from env vars (defaults: the embedded CPU demo under the repo)."""
    return {
        "paths": DatasetPaths(
            data_root=_env("WSOVVIS_DATA_ROOT", str(REPO / "data" / "demo")),
            output_root=_env("WSOVVIS_OUTPUT_ROOT", str(REPO / "outputs")),
        ),
        "predictor": PredictorResource(
            backend=_env("WSOVVIS_PREDICTOR", "cpu"),
            gpus=_env("WSOVVIS_GPUS", ""),
            weights=_env("WSOVVIS_VIDEOCUTLER_WEIGHTS", ""),
            runs_per_gpu=int(_env("WSOVVIS_RUNS_PER_GPU", "1")),
            # TESTING ONLY: VideoCutLER with random weights (logged loudly); never changes backend
            allow_random_weights=_env("WSOVVIS_ALLOW_RANDOM_WEIGHTS", "0") == "1",
            precision=_env("WSOVVIS_PRECISION", "fp32"),
            cudnn_benchmark=_env("WSOVVIS_CUDNN_BENCHMARK", "1") != "0",
            gpu_memory_gib=float(_env("WSOVVIS_GPU_MEMORY_GIB", "0")),
            # test backend cpu-slow only: seconds held per video (tests, benchmarks)
            hold_seconds=float(_env("WSOVVIS_HOLD_SECONDS", "0")),
        ),
        "sacred": SacredObserverResource(runs_dir=_env("WSOVVIS_RUNS_DIR", str(REPO / "runs"))),
    }


# Run tags mark GPU work for the run coordinator; backfills from the UI use the implicit job,
# so the `gpu` pool on mask_pngs (op-level) is what caps them (see README).
# gpu=true (+ e.g. a per-run GPU request on Kubernetes: deploy/k8s/gpu_run_tags.yaml)
GPU_RUN_TAGS = sensors.load_gpu_run_tags(_env("WSOVVIS_GPU_RUN_TAGS_FILE", ""))
mask_pngs_job = define_asset_job(
    "mask_pngs_job", selection=AssetSelection.assets("mask_pngs"), tags=GPU_RUN_TAGS
)

_resources = build_resources()
defs = Definitions(
    # mask_pngs' code version carries the predictor settings: changing them shows it stale
    assets=masks.with_videos_per_run(
        masks.stamp_predictor_version(load_assets_from_modules(_MODULES), _resources["predictor"]),
        int(_env("WSOVVIS_VIDEOS_PER_RUN", str(masks.default_videos_per_run(
            _resources["predictor"].backend)))),
    ),
    asset_checks=load_asset_checks_from_modules(_MODULES),
    jobs=[mask_pngs_job],
    sensors=[
        sensors.build_new_video_folders_sensor(
            request_runs=_env("WSOVVIS_SENSOR_REQUEST_RUNS", "0") == "1", run_tags=GPU_RUN_TAGS
        )
    ],
    resources=_resources,
)
