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

from assets import masks, third_party, training, tubes, videos
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
        ),
        "sacred": SacredObserverResource(runs_dir=_env("WSOVVIS_RUNS_DIR", str(REPO / "runs"))),
    }


# Run tags mark GPU work for the run coordinator; backfills from the UI use the implicit job,
# so the `gpu` pool on mask_pngs (op-level) is what caps them (see README).
mask_pngs_job = define_asset_job(
    "mask_pngs_job", selection=AssetSelection.assets("mask_pngs"), tags={"gpu": "true"}
)

defs = Definitions(
    assets=load_assets_from_modules(_MODULES),
    asset_checks=load_asset_checks_from_modules(_MODULES),
    jobs=[mask_pngs_job],
    resources=build_resources(),
)
