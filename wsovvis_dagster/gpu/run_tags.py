"""The run tags that mark GPU work, in one place for the code location and the instance.

`definitions.py` puts them on the runs it creates (mask_pngs_job, the sensor, scripts/backfill.py)
and the instance's run coordinator (`wsovvis_instance.coordinator`) adds them to every other run
that selects a GPU asset (UI backfills, launchpad runs), so the queue's `gpu=true` limit sees all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from wsovvis_dagster.errors import WsovvisError

GPU_RUN_TAGS = {"gpu": "true"}  # counted by the run queue's tag limit (dagster.yaml)
GPU_TAGS_FILE_ENV = "WSOVVIS_GPU_RUN_TAGS_FILE"
# a batch of mask_pngs runs queued together (wsovvis_ops.backfill.queue_mask_runs): its id, how
# many runs it has, and whether tube_json follows once they have all finished
BATCH_TAG = "wsovvis/batch"
BATCH_RUNS_TAG = "wsovvis/batch_runs"
TUBES_AFTER_TAG = "wsovvis/tubes_after"


def has_gpu_tags(tags: Mapping[str, str]) -> bool:
    """Whether `tags` (a run's, or an asset's) mark GPU work: they hold every `GPU_RUN_TAGS`."""
    return all(tags.get(k) == v for k, v in GPU_RUN_TAGS.items())


def load_gpu_run_tags(path: str = "") -> dict[str, str]:
    """Tags for every GPU run: `GPU_RUN_TAGS` plus a deployment's YAML file of extra tags
    (e.g. deploy/k8s/gpu_run_tags.yaml: `dagster-k8s/config` asking for one GPU per run pod).
    Mapping values become JSON strings, as Dagster stores run tags."""
    tags = dict(GPU_RUN_TAGS)
    if path:
        try:
            extra = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise WsovvisError(
                f"cannot read the GPU run tags file {path} ({exc}); fix it or unset "
                f"{GPU_TAGS_FILE_ENV}"
            ) from exc
        if not isinstance(extra, dict):
            raise WsovvisError(f"GPU run tags file {path}: expected a mapping of tag -> value")
        tags.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return tags
