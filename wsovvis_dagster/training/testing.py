"""Helpers for tests and benchmarks of the trainer: a synthetic dataset with its tube JSON,
built with the plain library (no Dagster instance), as `tube_json` would write it."""

from __future__ import annotations

from pathlib import Path

from wsovvis_dagster.masks.segment import segment_video
from wsovvis_dagster.predictors.cpu import CpuVideoPredictor
from wsovvis_dagster.video.frames import scan_videos
from wsovvis_dagster.video.synthetic import generate_dataset
from wsovvis_dagster.ytvis.split import build_split_tubes


def write_tubes(data_root: Path, output_root: Path) -> dict[str, Path]:
    """Run the embedded CPU predictor on every video under `data_root` and write
    `<output_root>/<split>/tubes_<split>.json`; returns the tube JSON path per split."""
    predictor = CpuVideoPredictor()
    by_split: dict[str, list] = {}
    for video in scan_videos(data_root).videos:
        segment_video(data_root, output_root, video.ref, predictor)
        by_split.setdefault(video.ref.split, []).append(video.ref)
    return {split: build_split_tubes(data_root, output_root, split, refs).path
            for split, refs in sorted(by_split.items())}


def synthetic_with_tubes(root: Path, *, train: int, val: int, frames: int = 16,
                         seed: int = 0) -> tuple[Path, Path]:
    """Generate a synthetic dataset under `root/data` and its tubes under `root/outputs`
    (skipped when already there); returns `(data_root, output_root)`."""
    data_root, output_root = Path(root) / "data", Path(root) / "outputs"
    if not (data_root / "annotations").is_dir():
        generate_dataset(data_root, seed=seed, num_frames=frames,
                         videos_per_split={"train": train, "val": val})
    if not all((output_root / s / f"tubes_{s}.json").is_file() for s in ("train", "val")):
        write_tubes(data_root, output_root)
    return data_root, output_root
