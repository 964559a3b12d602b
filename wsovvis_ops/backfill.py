"""Queue an asset backfill from Python, tagged like every GPU run the code location creates."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from dagster import AssetKey, DagsterInstance

from wsovvis_instance.dagster_private import PartitionBackfill


def launch_backfill(
    instance: DagsterInstance,
    keys: Sequence[str],
    *,
    assets: Sequence[str] = ("mask_pngs", "tube_json"),
    tags: dict | None = None,
    title: str | None = None,
    run_config: dict | None = None,
) -> str:
    """Queue an asset backfill of `keys` (mask_pngs partitions, plus what descends from them).

    Runs carry definitions.GPU_RUN_TAGS (gpu=true, + deployment tags), so the run-queue limit
    sees them; the daemon's backfill loop submits one run per <= WSOVVIS_VIDEOS_PER_RUN videos
    (mask_pngs' BackfillPolicy). Returns the backfill id.
    """
    from definitions import GPU_RUN_TAGS, defs

    backfill_id = uuid.uuid4().hex[:8]
    instance.add_backfill(
        PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id, asset_graph=defs.resolve_asset_graph(),
            partition_names=list(keys), asset_selection=[AssetKey(a) for a in assets],
            backfill_timestamp=time.time(), tags={**GPU_RUN_TAGS, **(tags or {})},
            dynamic_partitions_store=instance, all_partitions=False, title=title,
            description=None, run_config=run_config,
        )
    )
    return backfill_id


def configured_paths():
    """The code location's `DatasetPaths` (data and output roots: defaults < env vars)."""
    import os

    from definitions import PATH_DEFAULTS
    from resources import DatasetPaths
    from resources.settings import resolved

    return resolved(DatasetPaths, os.environ, PATH_DEFAULTS)
