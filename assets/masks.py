"""`mask_pngs`: run the predictor on each video partition and write its mask PNGs.

Staleness: `mask_pngs[v]` depends on `video_frames[v]` (frame data version per video), and its
code version is `<CODE_VERSION>+<predictor fingerprint>` (`stamp_predictor_version`, applied in
definitions.py), so new frames mark one video stale and new predictor settings mark all.
"""

import base64
import itertools
from collections.abc import Iterable
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.partitions import videos_partitions
from resources import DatasetPaths, PredictorResource
from wsovvis_dagster.masks.import_loop import (
    find_imported_masks,
    import_videos,
    kept_imported_videos,
)
from wsovvis_dagster.masks.import_masks import IMPORT_VERSION, ImportedVideo
from wsovvis_dagster.masks.png_io import read_mask_source
from wsovvis_dagster.masks.preview import PREVIEW_MIME
from wsovvis_dagster.masks.segment import VideoMasksResult
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.predictors.backends import backend
from wsovvis_dagster.predictors.settings import PredictorSettings

CODE_VERSION = "1"  # bump when this asset's code changes what it writes
MASK_SOURCE_TAG = "wsovvis/mask_source"  # "predictor" or "import"
# videos per backfill run (env WSOVVIS_VIDEOS_PER_RUN): a backend's default, from its record;
# definitions.py sets the loaded backend's (`with_videos_per_run`), this is the default one's
DEFAULT_VIDEOS_PER_RUN = backend(PredictorSettings().backend).videos_per_run


class MaskConfig(Config):
    skip_bad_frames: bool = Field(
        default=False,
        description="Skip unreadable frames (recorded in metadata) instead of failing the video",
    )
    import_root: str = Field(
        default="",
        description="Bring your own masks: import <import_root>/<video_id>/<frame>.png (per-frame "
        "instance-id PNGs from another model, checked against the frames) instead of running "
        "the predictor; see docs/tubes.md",
    )
    import_scores: str = Field(
        default="",
        description='With import_root: JSON {"<video_id>": {"<track id>": score}} (default 1.0)',
    )
    overwrite_imported: bool = Field(
        default=False,
        description="Replace imported masks (wsovvis import-masks / import_root: their folder "
        "holds source.json) with predictor output. Off: those videos keep the masks you "
        "brought, whatever the run (backfill, UI, new predictor version), and are recorded as "
        "imported",
    )


@asset(
    partitions_def=videos_partitions,
    deps=["video_partitions", "deform_attn_ops", "video_frames"],
    # several videos per run so the model loads once, while the pool caps GPU runs
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=DEFAULT_VIDEOS_PER_RUN),
    # the `gpu` pool (instance limit WSOVVIS_GPU_LIMIT) caps concurrent mask_pngs steps in
    # every kind of run: queued, backfill, sensor, CLI (see dagster_home/dagster.yaml)
    pool="gpu",
    group_name="masks",
    kinds={"pytorch", "png"},
    owners=["team:wsovvis"],
    tags={"gpu": "true"},  # asset tag (UI filter); run tags come from jobs/sensors/backfills
    code_version=CODE_VERSION,
)
def mask_pngs(
    context: AssetExecutionContext,
    config: MaskConfig,
    paths: DatasetPaths,
    predictor: PredictorResource,
) -> MaterializeResult:
    """Class-agnostic instance masks per video, written atomically:
    `<output_root>/<split>/masks/<video_id>/mask_<frame>.png`, one id per track, 0 = background.
    Imported masks (`source.json`) are kept unless `overwrite_imported`.
    """
    keys = context.partition_keys
    importing = bool(config.import_root)
    done: dict[str, dict] = {}
    failed: dict[str, str] = {}
    refs = [VideoRef.from_partition_key(key) for key in keys]
    kept = ({} if importing or config.overwrite_imported
            else find_imported_masks(paths.outputs, refs))
    if kept:
        context.log.info(
            f"keeping the imported masks of {len(kept)} of {len(keys)} videos (their folders "
            "hold source.json): set overwrite_imported: true to replace them with predictor "
            "output")
    if importing:
        outcomes = import_videos(
            paths.data, paths.outputs, refs, Path(config.import_root),
            scores_file=Path(config.import_scores) if config.import_scores else None,
        )
    else:
        # the pipelined loop (in the predictor worker, or here): next video decoded and last
        # one's PNGs written while this one runs; the GPU is leased only if a video needs it
        todo = [r for r in refs if r not in kept]
        outcomes = itertools.chain(
            kept_imported_videos(paths.data, paths.outputs, kept),
            predictor.session.segment_videos(paths.data, paths.outputs, todo,
                                             skip_bad_frames=config.skip_bad_frames)
            if todo else ())
    for i, outcome in enumerate(outcomes, start=1):
        key = outcome.ref.partition_key
        if outcome.error is not None:
            if len(keys) == 1:
                raise outcome.error
            # a bad video must not cost the others of a multi-video run their masks
            context.log.error(f"video {i}/{len(keys)}: {key} failed: {outcome.error}")
            failed[key] = str(outcome.error)
            continue
        result = outcome.result
        context.log.info(
            f"video {i}/{len(keys)}: {key}: {result.frames} frames, {result.tracks} tracks, "
            + ("imported masks kept" if outcome.ref in kept
               else f"{result.frames_per_second:.1f} frames/s")
        )
        if outcome.imported is not None:
            done[key] = _import_metadata(key, result, outcome.imported,
                                         kept=outcome.ref in kept)
        else:
            done[key] = _video_metadata(key, result, predictor)
    if not importing:
        predictor.check_fence()  # a run Dagster failed meanwhile (node lost) records nothing
    if failed:
        # record the good videos as materialised, then fail the run naming the bad ones
        for key, metadata in done.items():
            context.log_event(AssetMaterialization(
                asset_key=context.asset_key, partition=key, metadata=metadata,
                tags={MASK_SOURCE_TAG: _mask_source(metadata)}))
        raise Failure(
            description=f"{len(failed)} of {len(keys)} videos failed: "
            + "; ".join(f"{k}: {v}" for k, v in failed.items()),
            metadata={"failed_videos": MetadataValue.json(failed)},
        )
    for key, metadata in done.items():
        context.add_asset_metadata(metadata, partition_key=key)
    # a tag on each materialisation says where the masks came from (per video: `predictor`)
    sources = {_mask_source(m) for m in done.values()}
    return MaterializeResult(tags={MASK_SOURCE_TAG: sources.pop() if len(sources) == 1
                                   else "mixed"})


def _mask_source(metadata: dict) -> str:
    return "import" if metadata["predictor"] == "import" else "predictor"


def _import_metadata(key: str, result: VideoMasksResult, imported: ImportedVideo, *,
                     kept: bool = False) -> dict:
    preview = base64.b64encode(result.preview_jpeg).decode("ascii")
    source = read_mask_source(result.folder) or {}
    return {
        "path": MetadataValue.path(str(result.folder)),
        "frames": imported.frames,
        "frames_with_masks": imported.masks,
        "tracks": result.tracks,
        "mean_mask_area": round(result.mean_area, 1),
        "seconds": round(result.seconds, 3),
        "predictor": "import",
        "predictor_version": f"import{source.get('import_version', IMPORT_VERSION)}:"
                             f"{imported.fingerprint}",
        "mask_source": MetadataValue.path(str(source.get("folder", "?"))),
        "import_rewritten": imported.written,
        **({"kept_imported": "imported masks kept (not replaced by the predictor); "
                             "overwrite_imported: true replaces them"} if kept else {}),
        "preview": MetadataValue.md(f"![{key}](data:{PREVIEW_MIME};base64,{preview})"),
    }


def _video_metadata(key: str, result: VideoMasksResult, predictor: PredictorResource) -> dict:
    session = predictor.session  # this run's lease and model
    name, version = session.model_identity
    worker = session.worker_info
    preview = base64.b64encode(result.preview_jpeg).decode("ascii")
    return {
        "path": MetadataValue.path(str(result.folder)),
        "frames": result.frames,
        "tracks": result.tracks,
        "mean_mask_area": round(result.mean_area, 1),
        "seconds": round(result.seconds, 3),
        "frames_per_second": round(result.frames_per_second, 2),
        # where the loop's time went (decode and write overlap other videos' predict)
        "decode_seconds": round(result.decode_seconds, 3),
        "predict_seconds": round(result.predict_seconds, 3),
        "write_seconds": round(result.write_seconds, 3),
        "skipped_frames": MetadataValue.json(list(result.skipped_frames)),
        "predictor": name,
        "predictor_version": version,
        "device": session.device,
        **session.placement,  # node (+ physical GPU id on a cluster)
        "predictor_settings": MetadataValue.json(predictor.effective_settings()),
        # which long-lived process ran it (pid, reused or started by this run), if any
        **({"predictor_worker": MetadataValue.json(worker)} if worker else {}),
        **({"peak_gpu_gib": result.peak_gpu_gib} if result.peak_gpu_gib is not None else {}),
        "preview": MetadataValue.md(f"![{key}](data:{PREVIEW_MIME};base64,{preview})"),
    }


def stamp_predictor_version(assets: Iterable, predictor: PredictorResource) -> list:
    """`assets` with `mask_pngs`' code version set to `CODE_VERSION+<predictor fingerprint>`.

    Changing the backend, weights or output-affecting thresholds then shows every `mask_pngs`
    partition (and `tube_json`) stale in the UI; device, GPU list and hold time do not count.
    """
    version = f"{CODE_VERSION}+{predictor.output_fingerprint()}"

    def stamp(a):
        if isinstance(a, AssetsDefinition) and mask_pngs.key in a.keys:
            return a.map_asset_specs(
                lambda spec: spec.replace_attributes(code_version=version)
                if spec.key == mask_pngs.key else spec
            )
        return a

    return [stamp(a) for a in assets]


def with_videos_per_run(assets: Iterable, videos_per_run: int) -> list:
    """`assets` with `mask_pngs`' backfill policy set to at most `videos_per_run` per run."""
    if videos_per_run < 1:
        raise ValueError(f"WSOVVIS_VIDEOS_PER_RUN must be >= 1, got {videos_per_run}")
    policy = BackfillPolicy.multi_run(max_partitions_per_run=videos_per_run)
    return [a.with_attributes(backfill_policy=policy)
            if isinstance(a, AssetsDefinition) and mask_pngs.key in a.keys else a
            for a in assets]
