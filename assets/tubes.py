"""`tube_json`: one YouTube-VIS style tube JSON per split, from the mask PNGs."""

from collections import defaultdict

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.partitions import videos_partitions
from resources import DatasetPaths
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.pipeline import build_split_tubes

class TubeConfig(Config):
    allow_partial: bool = Field(
        default=False, description="Write tubes for the videos that have masks; skip the rest"
    )

@asset(
    deps=["mask_pngs"],
    group_name="tubes",
    kinds={"json"},
    owners=["team:wsovvis"],
    code_version="1",
)
def tube_json(
    context: AssetExecutionContext, config: TubeConfig, paths: DatasetPaths
) -> MaterializeResult:
    """`<output_root>/<split>/tubes_<split>.json` per split: videos + one RLE tube per track."""
    by_split: dict[str, list[VideoRef]] = defaultdict(list)
    for key in context.instance.get_dynamic_partitions(videos_partitions.name):
        ref = VideoRef.from_partition_key(key)
        by_split[ref.split].append(ref)
    if not by_split:
        raise ValueError("no video partitions registered: materialise video_partitions first")
    metadata = {}
    for split, refs in sorted(by_split.items()):
        def progress(i: int, n: int, ref: VideoRef, split: str = split) -> None:
            if i % 50 == 0 or i == n - 1:
                context.log.info(f"{split}: video {i + 1}/{n} ({ref.video_id})")

        result = build_split_tubes(
            paths.data, paths.outputs, split, refs,
            allow_partial=config.allow_partial, progress=progress,
        )
        metadata[f"{split}_path"] = MetadataValue.path(str(result.path))
        metadata[f"{split}_videos"] = result.videos
        metadata[f"{split}_tubes"] = result.tubes
        metadata[f"{split}_frames"] = result.frames
        metadata[f"{split}_bytes"] = result.bytes
        if result.missing_frames:
            metadata[f"{split}_videos_without_frames"] = MetadataValue.json(
                list(result.missing_frames)
            )
    return MaterializeResult(metadata=metadata)
