"""`video_partitions` registers one dynamic partition per video; `video_frames` versions them.

`video_frames` is an observable source asset (the JPEG folders, which Dagster does not write):
each observation records, per video, a data version = hash of its frame files' names, sizes and
mtimes. `mask_pngs[v]` depends on `video_frames[v]`, so when a video's frames change and are
observed again, only that partition of `mask_pngs` shows stale (new dependency data version).
Observations are written when partitions are registered (here and by the `new_video_folders`
sensor) and on demand ("Observe sources" in the UI); only changed videos get a new event.
"""

from collections.abc import Iterable
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    DagsterEventType,
    DagsterInstance,
    DataVersionsByPartition,
    MaterializeResult,
    MetadataValue,
    asset,
    observable_source_asset,
)

from assets.partitions import videos_partitions
from resources import DatasetPaths
from wsovvis_dagster.video.frames import current_frame_versions, scan_videos
from wsovvis_instance.dagster_private import DATA_VERSION_TAG  # the tag observations use
from wsovvis_ops.backfill import prestart_mask_workers

VIDEO_FRAMES = AssetKey("video_frames")


def recorded_frame_versions(instance: DagsterInstance) -> dict[str, str]:
    """Partition key -> data version of the latest `video_frames` observation (one query)."""
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        VIDEO_FRAMES, DagsterEventType.ASSET_OBSERVATION, [DATA_VERSION_TAG]
    )
    return {key: t[DATA_VERSION_TAG] for key, t in tags.items() if DATA_VERSION_TAG in t}


def changed_frame_versions(
    instance: DagsterInstance, data_root: Path, keys: Iterable[str]
) -> dict[str, str]:
    """The `current_frame_versions` of `keys` that differ from (or lack) a recorded one."""
    recorded = recorded_frame_versions(instance)
    return {
        k: v for k, v in current_frame_versions(data_root, keys).items() if recorded.get(k) != v
    }


def frame_observations(versions: dict[str, str]) -> list[AssetObservation]:
    """`video_frames` observation events carrying `versions` as per-partition data versions."""
    return [
        AssetObservation(asset_key=VIDEO_FRAMES, partition=key, tags={DATA_VERSION_TAG: version})
        for key, version in versions.items()
    ]


@observable_source_asset(
    partitions_def=videos_partitions,
    group_name="videos",
    description="The JPEG frames of each video on disk (not written by Dagster). Data version "
    "per video = hash of frame names, sizes and mtimes; observing records the changed ones.",
)
def video_frames(context, paths: DatasetPaths) -> DataVersionsByPartition:
    keys = context.instance.get_dynamic_partitions(videos_partitions.name)
    changed = changed_frame_versions(context.instance, paths.data, keys)
    context.log.info(f"{len(changed)} of {len(keys)} videos have new frame versions")
    return DataVersionsByPartition(changed)


@asset(
    group_name="videos",
    kinds={"python"},
    owners=["team:wsovvis"],
    code_version="1",
)
def video_partitions(context: AssetExecutionContext, paths: DatasetPaths) -> MaterializeResult:
    """Scan `<data_root>/{train,val}/JPEGImages/<video_id>/` and register one `videos` partition
    per video folder. Nothing is removed: videos that disappeared are reported as missing. With
    a backend that keeps its model in a predictor worker (videocutler), the workers of the slots
    that the mask runs of the videos without masks would take start building, in the
    background."""
    report = scan_videos(paths.data)
    keys = [v.ref.partition_key for v in report.videos]
    registered = context.instance.get_dynamic_partitions(videos_partitions.name)
    known = set(registered)
    new = [k for k in keys if k not in known]
    if new:
        context.instance.add_dynamic_partitions(videos_partitions.name, new)
    # version the frames of new and changed videos before any mask is computed from them
    changed = changed_frame_versions(context.instance, paths.data, [*registered, *new])
    for event in frame_observations(changed):
        context.log_event(event)
    missing = sorted(known - set(keys))
    for where, reason in report.rejected.items():
        context.log.warning(f"not registered: {where}: {reason}")
    for key in missing:
        context.log.warning(f"registered video {key} is no longer on disk")
    # the predictor workers (GPU models) that these videos' mask runs will use start building
    # now, not waited for: a backfill queued after this finds them built (docs/gpu.md)
    workers = prestart_mask_workers(context.instance, keys, paths.outputs).summary(
        "the mask runs of the videos without masks")
    context.log.info(workers)
    stats = report.frame_stats()
    return MaterializeResult(
        metadata={
            "data_root": MetadataValue.path(str(paths.data)),
            "videos": len(keys),
            "videos_per_split": MetadataValue.json(report.counts_per_split()),
            "new_partitions": len(new),
            "new_frame_versions": len(changed),
            "frames_min": stats["min"],
            "frames_median": float(stats["median"]),
            "frames_max": stats["max"],
            "missing_videos": MetadataValue.json(missing),
            "rejected_folders": MetadataValue.json(report.rejected),
            "predictor_workers": workers,
        }
    )
