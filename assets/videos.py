"""`video_partitions`: find videos on disk and register one dynamic partition per video."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.partitions import videos_partitions
from resources import DatasetPaths
from wsovvis_dagster.frames import scan_videos

@asset(
    group_name="videos",
    kinds={"python"},
    owners=["team:wsovvis"],
    code_version="1",
)
def video_partitions(context: AssetExecutionContext, paths: DatasetPaths) -> MaterializeResult:
    """Scan `<data_root>/{train,val}/JPEGImages/<video_id>/` and register one `videos` partition
    per video folder. Nothing is removed: videos that disappeared are reported as missing."""
    report = scan_videos(paths.data)
    keys = [v.ref.partition_key for v in report.videos]
    registered = context.instance.get_dynamic_partitions(videos_partitions.name)
    known = set(registered)
    new = [k for k in keys if k not in known]
    if new:
        context.instance.add_dynamic_partitions(videos_partitions.name, new)
    missing = sorted(known - set(keys))
    for where, reason in report.rejected.items():
        context.log.warning(f"not registered: {where}: {reason}")
    for key in missing:
        context.log.warning(f"registered video {key} is no longer on disk")
    stats = report.frame_stats()
    return MaterializeResult(
        metadata={
            "data_root": MetadataValue.path(str(paths.data)),
            "videos": len(keys),
            "videos_per_split": MetadataValue.json(report.counts_per_split()),
            "new_partitions": len(new),
            "frames_min": stats["min"],
            "frames_median": float(stats["median"]),
            "frames_max": stats["max"],
            "missing_videos": MetadataValue.json(missing),
            "rejected_folders": MetadataValue.json(report.rejected),
        }
    )
