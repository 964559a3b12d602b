"""`mask_pngs`: run the predictor on each video partition and write its mask PNGs."""

import base64

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.partitions import videos_partitions
from resources import DatasetPaths, PredictorResource
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.pipeline import segment_video

class MaskConfig(Config):
    skip_bad_frames: bool = Field(
        default=False,
        description="Skip unreadable frames (recorded in metadata) instead of failing the video",
    )

@asset(
    partitions_def=videos_partitions,
    deps=["video_partitions", "deform_attn_ops"],
    # several videos per run so the model loads once, while the pool caps GPU runs
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=4),
    pool="gpu",
    group_name="masks",
    kinds={"pytorch", "png"},
    owners=["team:wsovvis"],
    tags={"gpu": "true"},
    code_version="1",
)
def mask_pngs(
    context: AssetExecutionContext,
    config: MaskConfig,
    paths: DatasetPaths,
    predictor: PredictorResource,
) -> MaterializeResult:
    """Class-agnostic instance masks per video: `<output_root>/<split>/masks/<video_id>/
    mask_<frame>.png`, one integer id per track (0 = background), written atomically."""
    keys = context.partition_keys
    model = predictor.predictor
    for i, key in enumerate(keys, start=1):
        ref = VideoRef.from_partition_key(key)
        context.log.info(f"video {i}/{len(keys)}: {key}")
        result = segment_video(
            paths.data, paths.outputs, ref, model, skip_bad_frames=config.skip_bad_frames
        )
        context.log.info(
            f"video {i}/{len(keys)}: {key}: {result.frames} frames, {result.tracks} tracks, "
            f"{result.frames_per_second:.1f} frames/s"
        )
        preview = base64.b64encode(result.preview_png).decode("ascii")
        context.add_asset_metadata(
            {
                "path": MetadataValue.path(str(result.folder)),
                "frames": result.frames,
                "tracks": result.tracks,
                "mean_mask_area": round(result.mean_area, 1),
                "seconds": round(result.seconds, 3),
                "frames_per_second": round(result.frames_per_second, 2),
                "skipped_frames": MetadataValue.json(list(result.skipped_frames)),
                "predictor": model.name,
                "predictor_version": model.version,
                "device": predictor.device,
                "preview": MetadataValue.md(f"![{key}](data:image/png;base64,{preview})"),
            },
            partition_key=key,
        )
    return MaterializeResult()
