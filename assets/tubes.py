"""`tube_json`: one YouTube-VIS style tube JSON per split, from the mask PNGs, and its checks.

Beside each `tubes_<split>.json` the asset writes `tubes_<split>.parquet` (one row per tube)
and `results_<split>.json` (YouTube-VIS results). Checks: the JSON's format, and class-agnostic
AP / recall against `<data_root>/annotations/<split>_instances.json` where that exists.
"""

from collections import defaultdict

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from assets.partitions import videos_partitions
from resources import DatasetPaths
from wsovvis_dagster.errors import MissingMasksError, UnsafeNameError
from wsovvis_dagster.evaluation.ytvis_ap import evaluate_split_tubes
from wsovvis_dagster.paths import VideoRef, gt_json_path, tube_json_path
from wsovvis_dagster.ytvis.linking import DEFAULT_IOU_THRESHOLD, DEFAULT_MAX_GAP, LinkParams
from wsovvis_dagster.ytvis.split import (
    SplitTubesResult,
    build_split_tubes,
    check_split_format,
    splits_with_tubes,
)
from wsovvis_instance.dagster_private import AssetPartitionStatus


class TubeConfig(Config):
    allow_partial: bool = Field(
        default=False,
        description="Write tubes for the videos that have masks; leave the rest out (listed in "
        "the log and in `<split>_left_out` metadata)",
    )
    link_fragments: bool = Field(
        default=False,
        description="Relink ids into tracks by mask IoU (Hungarian, frame to frame): for "
        "predictors whose ids are not consistent across frames. Tubes keep the original ids "
        "in `source_ids`",
    )
    link_iou_threshold: float = Field(
        default=DEFAULT_IOU_THRESHOLD, gt=0, le=1,
        description="Minimum mask IoU to continue a track (see wsovvis_dagster.ytvis.linking)",
    )
    link_max_gap: int = Field(
        default=DEFAULT_MAX_GAP, ge=0, description="Frames a track may be missing and go on"
    )
    workers: int = Field(
        default=0, ge=0,
        description="Processes converting mask folders (one video per task, order kept); "
        "0: one per CPU core, at most 8 and at most one per video",
    )


def _split_metadata(split: str, result: SplitTubesResult) -> dict:
    outputs = result.outputs
    counts = outputs.counts
    table = (
        f"{counts['tubes']} tubes in {counts['videos']} videos; {counts['short_tubes']} short "
        f"(< 3 frames), {counts['tiny_tubes']} tiny (mean area < 256 px); median length "
        f"{counts['median_length']:g} frames.\n\nTop tubes by score:\n\n{outputs.top_rows}"
    )
    metadata = {
        f"{split}_path": MetadataValue.path(str(result.path)),
        f"{split}_videos": result.videos,
        f"{split}_tubes": result.tubes,
        f"{split}_frames": result.frames,
        f"{split}_bytes": result.path.stat().st_size,
        f"{split}_index": MetadataValue.path(str(outputs.index_path)),
        f"{split}_tube_table": MetadataValue.md(table),
        f"{split}_short_tubes": counts["short_tubes"],
        f"{split}_tiny_tubes": counts["tiny_tubes"],
        f"{split}_results": MetadataValue.path(str(outputs.results_path)),
    }
    if result.missing_frames:
        metadata[f"{split}_videos_without_frames"] = MetadataValue.json(
            list(result.missing_frames)
        )
    metadata[f"{split}_left_out"] = MetadataValue.json(result.left_out)
    metadata[f"{split}_broken_videos"] = MetadataValue.json(result.broken)
    metadata[f"{split}_mask_sources"] = MetadataValue.json(result.mask_sources)
    return metadata


@asset(
    deps=["mask_pngs"],
    group_name="tubes",
    kinds={"json", "parquet"},
    owners=["team:wsovvis"],
    # 3: file names, length and size from the frames; masks checked against them
    code_version="3",
)
def tube_json(
    context: AssetExecutionContext, config: TubeConfig, paths: DatasetPaths
) -> MaterializeResult:
    """`<output_root>/<split>/tubes_<split>.json` per split: videos + one RLE tube per track."""
    by_split: dict[str, list[VideoRef]] = defaultdict(list)
    invalid: dict[str, str] = {}
    for key in context.instance.get_dynamic_partitions(videos_partitions.name):
        try:
            ref = VideoRef.from_partition_key(key)
        except UnsafeNameError as exc:  # registered by hand or by an older version
            invalid[key] = (
                f"{exc}. No video folder can have this key: delete the partition (UI: "
                "mask_pngs -> Partitions -> select it -> Delete partition; Python: "
                f"DagsterInstance.get().delete_dynamic_partition('videos', {key!r}))")
            context.log.warning(f"left out: registered partition {invalid[key]}")
            continue
        by_split[ref.split].append(ref)
    if not by_split:
        raise MissingMasksError(
            "no video partitions registered in this Dagster instance: materialise "
            "video_partitions first (is DAGSTER_HOME the instance you used before?)"
            + "".join(f"; {why}" for why in invalid.values())
        )
    linking = (
        LinkParams(config.link_iou_threshold, config.link_max_gap)
        if config.link_fragments else None
    )
    failed = _failed_mask_partitions(context.instance, [r.partition_key for refs in
                                                        by_split.values() for r in refs])
    metadata = {"linked": config.link_fragments,
                "invalid_partition_keys": MetadataValue.json(invalid)}
    for split, refs in sorted(by_split.items()):
        def progress(i: int, n: int, ref: VideoRef, split: str = split) -> None:
            if i % 50 == 0 or i == n - 1:
                context.log.info(f"{split}: video {i + 1}/{n} ({ref.video_id})")

        result = build_split_tubes(
            paths.data, paths.outputs, split, refs,
            allow_partial=config.allow_partial, linking=linking, workers=config.workers,
            progress=progress, failed=failed,
        )
        for key, why in list(result.broken.items())[:100]:
            context.log.error(f"{split}: {key} left out of {result.path.name}: {why}")
        for key, why in list(result.left_out.items())[:100]:  # all of them in the metadata
            context.log.warning(f"{split}: left out of {result.path.name}: {key}: {why}")
        if result.left_out:
            context.log.warning(
                f"{split}: {len(result.left_out)} of {len(refs)} videos left out "
                f"(allow_partial={config.allow_partial}); see metadata {split}_left_out"
            )
        metadata.update(_split_metadata(split, result))
    return MaterializeResult(metadata=metadata)


def _failed_mask_partitions(instance, keys: list[str]) -> set[str]:
    """The keys whose latest mask_pngs run failed (Dagster's partition status)."""
    status = instance.get_status_by_partition(
        AssetKey("mask_pngs"), keys, videos_partitions) or {}
    return {k for k, s in status.items() if s == AssetPartitionStatus.FAILED}


@asset_check(asset=tube_json, description="Every split's tube JSON follows the tube format")
def tube_json_format(paths: DatasetPaths) -> AssetCheckResult:
    """RLE sizes match their video, one segmentation per frame, no empty or duplicate tubes."""
    problems = {s: check_split_format(tube_json_path(paths.outputs, s))
                for s in splits_with_tubes(paths.outputs)}
    bad = {s: p for s, p in problems.items() if p}
    return AssetCheckResult(
        passed=bool(problems) and not bad,
        metadata={
            "splits": MetadataValue.json(sorted(problems)),
            "problems": sum(len(p) for p in bad.values()),
            "first_problems": MetadataValue.json({s: p[:10] for s, p in bad.items()}),
        },
        description=None if problems else "no tubes_<split>.json found",
    )


class QualityCheckConfig(Config):
    min_ap: float = Field(
        default=0.05, ge=0, le=1,
        description="Class-agnostic AP (IoU .50:.95) a split must reach against its GT",
    )
    severity: str = Field(
        default="WARN", pattern="^(WARN|ERROR)$",
        description="WARN (default) or ERROR (ERROR fails the run's check)",
    )


@asset_check(
    asset=tube_json,
    description="Class-agnostic AP and recall vs <data_root>/annotations/<split>_instances.json",
)
def tube_json_quality(config: QualityCheckConfig, paths: DatasetPaths) -> AssetCheckResult:
    """Scores each split that has ground truth; splits without it are listed, not failed."""
    metadata, below = {}, []
    without_gt = []
    for split in splits_with_tubes(paths.outputs):
        gt_path = gt_json_path(paths.data, split)
        if not gt_path.is_file():
            without_gt.append(split)
            continue
        metrics = evaluate_split_tubes(tube_json_path(paths.outputs, split), gt_path)
        for key in ("AP", "AP50", "AR100", "recall@0.5", "recall@0.75"):
            metadata[f"{split}_{key}"] = MetadataValue.float(metrics[key])
        if metrics["AP"] < config.min_ap:
            below.append(split)
    metadata["min_ap"] = MetadataValue.float(config.min_ap)
    metadata["splits_without_gt"] = MetadataValue.json(without_gt)
    metadata["splits_below_min_ap"] = MetadataValue.json(below)
    return AssetCheckResult(
        passed=not below, severity=AssetCheckSeverity[config.severity], metadata=metadata
    )
