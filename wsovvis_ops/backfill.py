"""Queue mask_pngs (then tube_json) runs from Python, tagged like every GPU run the code
location creates.

`queue_mask_runs` (what `scripts/backfill.py` runs) puts the runs straight on the run queue, so
the first starts as soon as the queue daemon sees it (polled every second). The batch's
`tube_json` run is queued by the last mask run to end (`queue_batch_tubes`, from a hook on
`mask_pngs_job`), failed ones included, so it waits for no daemon loop; when two runs end at the
same moment neither sees the other finished, and the `tube_json_after_masks` sensor queues it on
its 5 s loop instead. `launch_backfill` queues an asset backfill, as the UI's "Materialize all
partitions" does: the backfill daemon then submits its runs on its fixed 30 s loop, before the
first mask run and again before `tube_json`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster import AssetKey, DagsterInstance, RunsFilter

from wsovvis_dagster.errors import UnsafeNameError
from wsovvis_dagster.gpu.prestart import WorkerPrestart
from wsovvis_dagster.gpu.run_plan import gpu_slots, plan_runs
from wsovvis_dagster.gpu.run_tags import BATCH_RUNS_TAG, BATCH_TAG, TUBES_AFTER_TAG
from wsovvis_dagster.masks.import_loop import find_imported_masks
from wsovvis_dagster.paths import VideoRef
from wsovvis_instance.dagster_private import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    InProcessCodeLocationOrigin,
    InProcessWorkspaceLoadTarget,
    JobSubsetSelector,
    LoadableTargetOrigin,
    PartitionBackfill,
    WorkspaceProcessContext,
)

REPO = Path(__file__).resolve().parents[1]
LOCATION = "definitions"  # the code location's name in workspace.yaml (its module's name)
MASK_JOB, TUBE_JOB = "mask_pngs_job", "tube_json_job"
MASK_PNGS, TUBE_JSON = AssetKey("mask_pngs"), AssetKey("tube_json")
MASKS_ONLY, TUBES_ONLY = frozenset({MASK_PNGS}), frozenset({TUBE_JSON})
QUEUED_BY_TAG = "wsovvis/queued_by"  # on a tube_json run: the mask run that queued it


@dataclass(frozen=True)
class QueuedBatch:
    """The runs one `queue_mask_runs` call put on the queue."""

    batch_id: str
    run_ids: tuple[str, ...]
    ranges: tuple[tuple[str, str], ...]  # (first, last) video key of each run
    tubes: bool  # tube_json follows the batch (queue_batch_tubes)
    workers: WorkerPrestart = WorkerPrestart()  # the slots' predictor workers, started ahead


@contextlib.contextmanager
def _workspace(instance: DagsterInstance) -> Iterator:
    """The code location loaded in this process under workspace.yaml's name, so the queued runs
    carry the origin the daemon knows (no code server process to start)."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="definitions", working_directory=str(REPO)),
        location_name=LOCATION,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context.create_request_context()


# The queue caps these runs at the `gpu` pool's limit (the coordinator's `gpu` tag limit is
# the same WSOVVIS_GPU_LIMIT), so a pool claim of theirs never contends for a last slot, and
# their step can run in the run worker instead of a process that imports the code location
# again (definitions.steps_mode keeps that for mask runs started outside the queue: on SQLite
# two simultaneous claims of the last slot can both succeed). GPU leases hold either way.
IN_RUN_WORKER = {"execution": {"config": {"in_process": {}}}}


def queue_mask_runs(
    instance: DagsterInstance,
    keys: Sequence[str],
    *,
    tubes: bool = True,
    tags: dict | None = None,
    run_config: dict | None = None,
) -> QueuedBatch:
    """Put one `mask_pngs_job` run per key range of `keys` on the run queue.

    Ranges follow the instance's key order; each holds at most WSOVVIS_VIDEOS_PER_RUN videos
    and fewer when the batch is small, so every GPU slot (GPUs x runs per GPU) gets a run
    (`run_plan.plan_runs`). Runs carry definitions.GPU_RUN_TAGS (the queue's `gpu` limit) and
    the batch's tags, from which the batch's last mask run queues `tube_json` when `tubes`
    (`queue_batch_tubes`). `run_config` goes to every mask run (e.g. `overwrite_imported`);
    unless it says otherwise, they execute their step in the run worker (`IN_RUN_WORKER`).
    First it starts the predictor workers of the slots the runs will take, not waiting for
    their models (`gpu.prestart`; the result's `workers`): a failure there is reported, never
    raised.
    """
    from definitions import GPU_RUN_TAGS

    ranges, predictor = _plan(instance, keys)
    workers = predictor.prestart_workers(instance, len(ranges))  # not waiting for the models
    batch_id = uuid.uuid4().hex[:12]
    batch_tags = {BATCH_TAG: batch_id, BATCH_RUNS_TAG: str(len(ranges)),
                  TUBES_AFTER_TAG: "1" if tubes else "0"}
    run_ids = []
    with _workspace(instance) as workspace:
        submit = _run_submitter(instance, workspace, MASK_JOB, MASKS_ONLY,
                                {**IN_RUN_WORKER, **(run_config or {})})
        for chunk in ranges:
            run_ids.append(submit({**GPU_RUN_TAGS, **(tags or {}), **batch_tags,
                                   ASSET_PARTITION_RANGE_START_TAG: chunk[0],
                                   ASSET_PARTITION_RANGE_END_TAG: chunk[-1]}))
    return QueuedBatch(batch_id, tuple(run_ids), tuple((c[0], c[-1]) for c in ranges), tubes,
                       workers)


def _plan(instance: DagsterInstance, keys: Sequence[str], order: Sequence[str] | None = None):
    """(the key ranges of the mask runs of `keys`, the code location's predictor resource);
    `order`: the `videos` partition keys, when the caller registers some only after this."""
    from definitions import loaded_predictor, videos_per_run

    predictor = loaded_predictor()
    order = list(order) if order is not None else instance.get_dynamic_partitions("videos")
    unknown = sorted(set(keys) - set(order))
    if unknown:
        raise ValueError(f"{len(unknown)} keys are not registered videos partitions (e.g. "
                         f"{unknown[0]!r}): materialise video_partitions first")
    return plan_runs(order, list(keys), videos_per_run(),
                     gpu_slots(predictor.gpus, predictor.runs_per_gpu)), predictor


def videos_without_masks(instance: DagsterInstance, keys: Sequence[str],
                         output_root: Path) -> list[str]:
    """`keys` with no masks: `mask_pngs` never materialised, and none imported under
    `output_root` (`wsovvis import-masks`; mask runs keep those). A key naming no video is
    kept: the mask run reports it."""
    done = instance.get_materialized_partitions(MASK_PNGS)
    refs = []
    for key in keys:
        with contextlib.suppress(UnsafeNameError):
            refs.append(VideoRef.from_partition_key(key))
    imported = {r.partition_key for r in find_imported_masks(output_root, refs)}
    return [k for k in keys if k not in done and k not in imported]


def prestart_mask_workers(instance: DagsterInstance, keys: Sequence[str],
                          output_root: Path, order: Sequence[str] | None = None
                          ) -> WorkerPrestart:
    """Start the predictor workers that the mask runs of those of `keys` without masks
    (`videos_without_masks`) would take, as `queue_mask_runs` plans them, without waiting for
    their models and without queueing anything: `video_partitions` and the `new_video_folders`
    sensor call it as they register videos, so a backfill queued later finds its models built.
    `order`: the `videos` partition keys once registered (the sensor's new keys are registered
    only after its tick returns). Never raises (a registration never fails for this): an error
    is in the result."""
    try:
        missing = videos_without_masks(instance, keys, output_root)
        if not missing:
            return WorkerPrestart(skipped="every registered video has masks")
        ranges, predictor = _plan(instance, missing, order)
    except Exception as exc:  # noqa: BLE001
        return WorkerPrestart(error=f"{type(exc).__name__}: {exc}")
    return predictor.prestart_workers(instance, len(ranges))


def _run_submitter(instance: DagsterInstance, workspace, job_name: str,
                   assets: frozenset[AssetKey], run_config: dict | None):
    """A function putting one run of asset job `job_name` (which selects `assets`, with their
    checks) on the queue per call, as the sensor daemon creates a run: job and execution plan
    resolved once, tags per run."""
    location = workspace.get_code_location(LOCATION)
    (repo,) = location.get_repositories().values()
    job = location.get_job(JobSubsetSelector(location_name=LOCATION, repository_name=repo.name,
                                             job_name=job_name, op_selection=None))
    plan = location.get_execution_plan(job, run_config or {}, step_keys_to_execute=None,
                                       known_state=None, instance=instance).execution_plan_snapshot

    def submit(tags: dict) -> str:
        run = instance.create_run(
            job_name=job_name, run_id=None, run_config=run_config or {}, status=None, tags=tags,
            root_run_id=None, parent_run_id=None,
            step_keys_to_execute=plan.step_keys_to_execute, execution_plan_snapshot=plan,
            job_snapshot=job.job_snapshot, parent_job_snapshot=job.parent_job_snapshot,
            asset_selection=assets, asset_check_selection=None,
            resolved_op_selection=job.resolved_op_selection, op_selection=None,
            remote_job_origin=job.get_remote_origin(), job_code_origin=job.get_python_origin(),
            asset_graph=repo.asset_graph,
        )
        instance.submit_run(run.run_id, workspace)
        return run.run_id

    return submit


def batch_tubes_due(instance: DagsterInstance, batch: str,
                    ending: str | None = None) -> tuple[bool, bool]:
    """(settled, due) of one batch's `tube_json`: settled once every mask run of the batch has
    finished (failed ones count: tube_json is made from the videos that have masks) or its
    tube_json run exists; due when settled, asked for, and not queued yet. `ending`: the id of a
    mask run of the batch in its last moments (its hook), counted as finished."""
    runs = instance.get_runs(RunsFilter(tags={BATCH_TAG: batch}))
    if any(TUBE_JSON in (r.asset_selection or ()) for r in runs):
        return True, False  # queued already (by a mask run, or by the sensor)
    masks = [r for r in runs if MASK_PNGS in (r.asset_selection or ())]
    if not masks or masks[0].tags.get(TUBES_AFTER_TAG) != "1":
        return bool(masks), False
    if len(masks) < int(masks[0].tags.get(BATCH_RUNS_TAG, "1")):
        return False, False  # the batch is still being queued
    if any(not r.is_finished and r.run_id != ending for r in masks):
        return False, False
    return True, True


def queue_batch_tubes(instance: DagsterInstance, run_id: str) -> str | None:
    """Queue the `tube_json` run of mask run `run_id`'s batch if `run_id` is the last of the
    batch to end (called at its end, by `mask_pngs_job`'s hooks); the new run's id, else None.

    The run that ends last sees every other finished, so tube_json is queued once, at once; two
    runs ending together each see the other still running, and the `tube_json_after_masks`
    sensor queues it instead (it skips a batch whose tube_json run exists).
    """
    run = instance.get_run_by_id(run_id)
    batch = run.tags.get(BATCH_TAG) if run is not None else None
    if not batch or not batch_tubes_due(instance, batch, ending=run_id)[1]:
        return None
    with _workspace(instance) as workspace:
        submit = _run_submitter(instance, workspace, TUBE_JOB, TUBES_ONLY, None)
        return submit({BATCH_TAG: batch, QUEUED_BY_TAG: run_id})


def launch_backfill(
    instance: DagsterInstance,
    keys: Sequence[str],
    *,
    assets: Sequence[str] = ("mask_pngs", "tube_json"),
    tags: dict | None = None,
    title: str | None = None,
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
            description=None, run_config=None,
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
