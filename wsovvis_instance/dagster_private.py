"""The only door to Dagster's private (`dagster._...`) names, for code and tests alike.

Dagster 1.13 exports no public equivalent for these; each is a stable value or class we need:
tags Dagster itself writes on runs and observations (so we read/write the same strings),
backfill records (no public way to queue an asset backfill from a script), an in-process
workspace and job selector (to queue runs from a script as `dagster job launch` does), the
run-launcher health types and launch context a `RunLauncher` subclass uses, the partial-resource
type that `configure_at_launch()` returns, a partition's materialisation status (failed or not),
the runs table (the fenced run storage's guarded UPDATE), and what the default executor of
definitions.py needs to pick a mode per run (config processing, the multiprocess
requirements). Anything with a public name (`DagsterRunStatus`, `RunsFilter`,
`QueuedRunCoordinator`, `Field`, ...) is imported from `dagster` directly instead. A Dagster
upgrade that moves one of these breaks this module alone.
"""

from dagster._config import process_config  # an executor's config with its defaults filled
from dagster._config.pythonic_config.resource import PartialResource
from dagster._core.definitions.data_version import DATA_VERSION_TAG  # the tag observations use
from dagster._core.definitions.executor_definition import (  # what the multiprocess mode needs
    multiple_process_executor_requirements,
)
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.partition_status_cache import AssetPartitionStatus
from dagster._core.storage.runs.schema import RunsTable  # fenced run storage's guarded UPDATE
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    GRPC_INFO_TAG,
    PARENT_RUN_ID_TAG,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._grpc.types import ExecuteRunArgs  # what a run launcher's job executes
from dagster._serdes import ConfigurableClassData

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "DATA_VERSION_TAG",
    "AssetPartitionStatus",
    "ExecuteRunArgs",
    "GRPC_INFO_TAG",
    "PARENT_RUN_ID_TAG",
    "BulkActionStatus",
    "CheckRunHealthResult",
    "ConfigurableClassData",
    "InProcessCodeLocationOrigin",
    "InProcessWorkspaceLoadTarget",
    "InstanceRef",
    "JobSubsetSelector",
    "LaunchRunContext",
    "LoadableTargetOrigin",
    "PartialResource",
    "PartitionBackfill",
    "RunsTable",
    "WorkerStatus",
    "WorkspaceProcessContext",
    "multiple_process_executor_requirements",
    "process_config",
]
