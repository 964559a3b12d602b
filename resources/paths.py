"""Where the dataset is read from and where outputs go."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field


class DatasetPaths(ConfigurableResource):
    """Roots of the LV-VIS style dataset and of everything the graph writes."""

    data_root: str = Field(
        description="LV-VIS layout: <data_root>/<split>/JPEGImages/<video_id>/*.jpg "
        "(env WSOVVIS_DATA_ROOT)"
    )
    output_root: str = Field(
        description="Masks and tube JSON go to <output_root>/<split>/... (env WSOVVIS_OUTPUT_ROOT)"
    )

    @property
    def data(self) -> Path:
        return Path(self.data_root).resolve()

    @property
    def outputs(self) -> Path:
        return Path(self.output_root).resolve()
