"""Per-video and per-split steps of the graph, as plain functions (the assets call these)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from wsovvis_dagster.errors import MissingMasksError
from wsovvis_dagster.frames import read_video
from wsovvis_dagster.masks_io import write_mask_pngs
from wsovvis_dagster.paths import VideoRef, frames_dir, masks_dir, tube_json_path
from wsovvis_dagster.predictors import VideoPredictor
from wsovvis_dagster.preview import overlay_montage
from wsovvis_dagster.tubes import video_tubes_from_masks, write_tube_json


@dataclass(frozen=True)
class VideoMasksResult:
    ref: VideoRef
    folder: Path
    frames: int
    tracks: int
    mean_area: float
    seconds: float
    skipped_frames: tuple[str, ...]
    preview_png: bytes

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def segment_video(
    data_root: Path,
    output_root: Path,
    ref: VideoRef,
    predictor: VideoPredictor,
    *,
    skip_bad_frames: bool = False,
) -> VideoMasksResult:
    """Read one video, run the predictor, write its mask PNGs atomically."""
    start = time.perf_counter()
    frames = read_video(data_root, ref, skip_bad_frames=skip_bad_frames)
    output = predictor.predict(frames.images)
    dest = masks_dir(output_root, ref)
    summary = write_mask_pngs(dest, frames.stems, output.id_maps, output.scores)
    seconds = time.perf_counter() - start
    return VideoMasksResult(
        ref=ref,
        folder=dest,
        frames=summary.frames,
        tracks=summary.tracks,
        mean_area=summary.mean_area,
        seconds=seconds,
        skipped_frames=frames.skipped,
        preview_png=overlay_montage(frames.images, output.id_maps),
    )


@dataclass(frozen=True)
class SplitTubesResult:
    split: str
    path: Path
    videos: int
    tubes: int
    frames: int
    bytes: int
    missing_frames: tuple[str, ...]  # videos whose JPEG folder vanished (masks still used)


def find_videos_without_masks(output_root: Path, refs: Iterable[VideoRef]) -> list[VideoRef]:
    return [r for r in refs if not masks_dir(output_root, r).is_dir()]


def build_split_tubes(
    data_root: Path,
    output_root: Path,
    split: str,
    refs: list[VideoRef],
    *,
    allow_partial: bool = False,
    progress: Callable[[int, int, VideoRef], None] | None = None,
) -> SplitTubesResult:
    """Convert the mask folders of `refs` (one split) into `tubes_<split>.json`.

    Videos with no masks yet raise `MissingMasksError` listing them, unless `allow_partial`.
    """
    missing = find_videos_without_masks(output_root, refs)
    if missing and not allow_partial:
        listed = ", ".join(r.partition_key for r in missing[:20])
        more = f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""
        raise MissingMasksError(
            f"{len(missing)} of {len(refs)} {split} videos have no mask PNGs yet: {listed}{more}. "
            "Materialise mask_pngs for them first, or set allow_partial: true"
        )
    ready = [r for r in refs if r not in set(missing)]
    missing_frames = tuple(r.partition_key for r in ready if not frames_dir(data_root, r).is_dir())

    def videos():
        for i, ref in enumerate(ready):
            if progress:
                progress(i, len(ready), ref)
            yield video_tubes_from_masks(masks_dir(output_root, ref), ref.video_id)

    path = tube_json_path(output_root, split)
    counts = write_tube_json(path, videos(), info={"split": split, "source": "wsovvis mask_pngs"})
    return SplitTubesResult(
        split=split, path=path, videos=counts["videos"], tubes=counts["tubes"],
        frames=counts["frames"], bytes=path.stat().st_size, missing_frames=missing_frames,
    )
