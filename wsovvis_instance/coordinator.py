"""`GpuRunCoordinator`: queue every run that touches a GPU asset under the `gpu=true` limit.

Asset tags never become run tags in Dagster, so a backfill launched from the asset graph (the
implicit asset job) carries no `gpu` tag and the queue's tag limit cannot see it. This
coordinator adds the GPU run tags (`wsovvis_dagster.gpu.run_tags`: gpu=true, plus the deployment's
tags file, e.g. the `dagster-k8s/config` GPU request) to each run whose asset selection holds an
asset tagged `gpu: "true"`, before queueing it. Tags the run already has are kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetKey,
    DagsterRun,
    DagsterRunStatus,
    Field,
    QueuedRunCoordinator,
    StringSource,
    SubmitRunContext,
)

from wsovvis_dagster.gpu.run_tags import (
    GPU_TAGS_FILE_ENV,
    has_gpu_tags,
    load_gpu_run_tags,
)
from wsovvis_instance.dagster_private import ConfigurableClassData


class GpuRunCoordinator(QueuedRunCoordinator):
    """`QueuedRunCoordinator` + GPU run tags for runs that select a GPU asset.

    Config: everything `QueuedRunCoordinator` takes, plus `gpu_run_tags_file` (YAML of extra
    tags; default: env WSOVVIS_GPU_RUN_TAGS_FILE, as the code location reads it).
    """

    _gpu_run_tags_file: str | None = None

    @classmethod
    def config_type(cls):
        return {
            **QueuedRunCoordinator.config_type(),
            "gpu_run_tags_file": Field(
                StringSource, is_required=False,
                description="YAML of extra tags for GPU runs (deploy/k8s/gpu_run_tags.yaml)",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        rest = {k: v for k, v in config_value.items() if k != "gpu_run_tags_file"}
        coordinator = super().from_config_value(inst_data, rest)
        coordinator._gpu_run_tags_file = config_value.get("gpu_run_tags_file")
        return coordinator

    def gpu_run_tags(self) -> dict[str, str]:
        """Read at each submission, so editing the tags file needs no restart."""
        return load_gpu_run_tags(
            self._gpu_run_tags_file or os.environ.get(GPU_TAGS_FILE_ENV, "")
        )

    def gpu_assets(self, run: DagsterRun, context: SubmitRunContext) -> list[AssetKey]:
        keys = sorted(run.asset_selection or (), key=lambda k: k.to_user_string())
        if not keys:
            return []
        graph = context.workspace.asset_graph
        return [k for k in keys if graph.has(k) and has_gpu_tags(graph.get(k).tags)]

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status == DagsterRunStatus.NOT_STARTED:
            gpu_assets = self.gpu_assets(run, context)
            missing = {k: v for k, v in (self.gpu_run_tags() if gpu_assets else {}).items()
                       if k not in run.tags}
            if missing:
                self._instance.add_run_tags(run.run_id, missing)
                self._instance.report_engine_event(
                    f"GPU run tags added by the run coordinator ({', '.join(sorted(missing))}): "
                    f"the run selects GPU asset(s) "
                    f"{', '.join(k.to_user_string() for k in gpu_assets)}",
                    run,
                )
                run = self._instance.get_run_by_id(run.run_id) or run
                context = SubmitRunContext(run, context.workspace)
        return super().submit_run(context)
