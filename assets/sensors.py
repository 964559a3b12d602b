"""`new_video_folders`: notice new (and changed) video folders, register and version them.

Each tick scans `<data_root>/<split>/JPEGImages/`, registers up to `batch_size` new folders as
`videos` partitions (`SensorResult.dynamic_partitions_requests`; the rest follow on later
ticks), records a `video_frames` observation for every new or changed video (so only those
`mask_pngs` partitions turn stale), starts the predictor workers the videos without masks will
use (as `video_partitions` does; not waited for), and, with `request_runs`, asks for
`mask_pngs` runs of at most `max_partitions_per_run` contiguous videos, tagged `gpu=true` for
the run queue. Stopped by default: start it in the UI (Automation) or with
`dagster sensor start new_video_folders`.

A folder is registered exactly once: the next tick finds its key registered. Run keys hash the
videos and their frame versions, so a video is re-requested only after its frames change.
"""

import hashlib
import json

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    HookContext,
    HookDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    failure_hook,
    sensor,
    success_hook,
)

from assets.partitions import videos_partitions
from assets.videos import changed_frame_versions, frame_observations
from resources import DatasetPaths
from wsovvis_dagster.gpu.run_plan import contiguous_chunks
from wsovvis_dagster.gpu.run_tags import (  # noqa: F401 (load_gpu_run_tags: re-export)
    BATCH_TAG,
    GPU_RUN_TAGS,
    load_gpu_run_tags,
)
from wsovvis_dagster.video.frames import MISSING_FRAMES, scan_videos
from wsovvis_instance.dagster_private import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from wsovvis_ops.backfill import batch_tubes_due, prestart_mask_workers, queue_batch_tubes

MASK_PNGS = AssetKey("mask_pngs")
TUBE_JSON = AssetKey("tube_json")


def mask_run_requests(
    chunks: list[list[str]], versions: dict[str, str], run_tags: dict[str, str]
) -> list[RunRequest]:
    """One `mask_pngs` run per chunk; the run key changes only if a video's frames change."""
    requests = []
    for chunk in chunks:
        ident = "|".join(f"{k}={versions.get(k, '')}" for k in chunk)
        requests.append(
            RunRequest(
                run_key=hashlib.sha1(ident.encode()).hexdigest()[:20],
                asset_selection=[MASK_PNGS],
                tags={
                    **run_tags,
                    ASSET_PARTITION_RANGE_START_TAG: chunk[0],
                    ASSET_PARTITION_RANGE_END_TAG: chunk[-1],
                },
            )
        )
    return requests


def build_new_video_folders_sensor(
    *,
    request_runs: bool = False,
    batch_size: int = 100,
    max_partitions_per_run: int = 4,
    minimum_interval_seconds: int = 60,
    run_tags: dict[str, str] | None = None,
) -> SensorDefinition:
    """The sensor, configured once in definitions.py (env WSOVVIS_SENSOR_REQUEST_RUNS);
    `run_tags` (default `GPU_RUN_TAGS`) go on every run it requests."""
    run_tags = run_tags or GPU_RUN_TAGS

    @sensor(
        name="new_video_folders",
        description="Registers new video folders as `videos` partitions (small batches per "
        "tick), versions their frames" + (", requests mask_pngs runs" if request_runs else ""),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.STOPPED,
        target=[MASK_PNGS],
    )
    def new_video_folders(context: SensorEvaluationContext, paths: DatasetPaths):
        report = scan_videos(paths.data)
        registered = context.instance.get_dynamic_partitions(videos_partitions.name)
        known = set(registered)
        waiting = [v.ref.partition_key for v in report.videos if v.ref.partition_key not in known]
        new = waiting[:batch_size]
        order = [*registered, *new]  # the videos partitions once this tick's are added
        changed = changed_frame_versions(context.instance, paths.data, order)
        if not new and not changed:
            return SkipReason(f"no new or changed videos among {len(registered)} registered")
        context.log.info(
            f"{len(new)} new videos ({len(waiting) - len(new)} left for later ticks), "
            f"{len(set(changed) - set(new))} with changed frames"
        )
        # the predictor workers of the videos without masks start building, not waited for, as
        # when video_partitions registers them: a backfill (or the runs below) finds them built
        workers = prestart_mask_workers(context.instance, order, paths.outputs, order=order)
        context.log.info(workers.summary("the mask runs of the videos without masks"))
        runs = []
        if request_runs:
            runnable = {k for k, v in changed.items() if v != MISSING_FRAMES}
            chunks = contiguous_chunks(order, runnable, max_partitions_per_run)
            runs = mask_run_requests(chunks, changed, run_tags)
        return SensorResult(
            dynamic_partitions_requests=[videos_partitions.build_add_request(new)] if new else [],
            asset_events=frame_observations(changed),
            run_requests=runs,
        )

    return new_video_folders


def build_tube_json_after_masks_sensor(job, *, minimum_interval_seconds: int = 1
                                       ) -> SensorDefinition:
    """`tube_json_after_masks`: requests `tube_json` for a batch queued by `scripts/backfill.py`
    whose mask runs have all finished and whose tube_json no mask run has queued (the last mask
    run to end queues it itself, `tube_json_hooks`; two runs ending at once leave it to this
    sensor). Running by default, on the sensor daemon's 5 s loop; its runs are of `job`
    (definitions.tube_json_job), as the hooks'. The cursor keeps the batches already served."""

    @sensor(
        name="tube_json_after_masks",
        description="Requests tube_json when every mask_pngs run of a scripts/backfill.py batch "
        "has finished (failed runs included)",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        job=job,
    )
    def tube_json_after_masks(context: SensorEvaluationContext):
        served = set(json.loads(context.cursor or "[]"))
        tags = context.instance.get_run_tags(tag_keys=[BATCH_TAG])
        batches = sorted({v for _, values in tags for v in values} - served)
        requests = []
        settled = set()
        for batch in batches:
            done, due = batch_tubes_due(context.instance, batch)
            if done:
                settled.add(batch)
            if due:
                requests.append(RunRequest(run_key=f"tube_json-{batch}",
                                           asset_selection=[TUBE_JSON], tags={BATCH_TAG: batch}))
        cursor = json.dumps(sorted(served | settled))
        if not requests:
            context.update_cursor(cursor)
            return SkipReason(f"{len(batches) - len(settled)} batches with mask runs to finish")
        return SensorResult(run_requests=requests, cursor=cursor)

    return tube_json_after_masks


def tube_json_hooks() -> set[HookDefinition]:
    """Hooks for `mask_pngs_job`: when a run of a `scripts/backfill.py` batch ends (succeeded or
    failed) and every other run of its batch has ended, it queues the batch's `tube_json` run
    (`wsovvis_ops.backfill.queue_batch_tubes`), so tube_json waits for no daemon loop. A failure
    here is logged and left to the `tube_json_after_masks` sensor; it never fails the run."""

    def queue_tubes(context: HookContext) -> None:
        try:
            run_id = queue_batch_tubes(context.instance, context.run_id)
        except Exception as exc:  # noqa: BLE001 (the sensor is the fallback)
            context.log.warning(f"could not queue tube_json ({exc!r}); the "
                                "tube_json_after_masks sensor will queue it")
            return
        if run_id:
            context.log.info(f"last mask run of its batch: queued tube_json run {run_id}")

    return {success_hook(name="queue_tube_json_on_success")(queue_tubes),
            failure_hook(name="queue_tube_json_on_failure")(queue_tubes)}
