"""The Sacred observer used by training: where `FileStorageObserver` writes its runs."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field


class SacredObserverResource(ConfigurableResource):
    """Sacred `FileStorageObserver` settings; only rank 0 of a training job attaches it.

    Each training run appears as `<runs_dir>/<id>/` with config.json, metrics.json, run.json,
    info.json and cout.txt (env WSOVVIS_RUNS_DIR).
    """

    runs_dir: str = Field(default="runs", description="FileStorageObserver directory")

    @property
    def path(self) -> Path:
        return Path(self.runs_dir).resolve()

    def run_dir(self, run_id: str | int) -> Path:
        """The folder of one Sacred run."""
        return self.path / str(run_id)
