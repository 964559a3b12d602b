"""Finding videos on disk and reading their frames."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsovvis_dagster.errors import FrameError, UnsafeNameError
from wsovvis_dagster.paths import SPLITS, VideoRef, check_video_id, frames_dir

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def natural_key(name: str) -> list:
    """Sort key that orders `frame2` before `frame10` (digits compared as numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_frame_files(folder: Path) -> list[Path]:
    """Frame images of one video folder in natural order (hidden files ignored)."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FRAME_SUFFIXES
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclass(frozen=True)
class VideoInfo:
    """A video folder found by `scan_videos`."""

    ref: VideoRef
    frame_files: tuple[Path, ...]

    @property
    def num_frames(self) -> int:
        return len(self.frame_files)


@dataclass
class ScanReport:
    """What `scan_videos` found: usable videos and folders it refused, with reasons."""

    videos: list[VideoInfo] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # "<split>/<folder>" -> reason

    def counts_per_split(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for v in self.videos:
            counts[v.ref.split] = counts.get(v.ref.split, 0) + 1
        return counts

    def frame_stats(self) -> dict[str, float]:
        n = [v.num_frames for v in self.videos]
        if not n:
            return {"min": 0, "median": 0, "max": 0}
        return {"min": min(n), "median": statistics.median(n), "max": max(n)}


def scan_videos(data_root: Path) -> ScanReport:
    """Find `<data_root>/<split>/JPEGImages/<video_id>/` folders with at least one frame.

    Unsafe names, empty folders and folders without images are reported, never registered.
    """
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FrameError(
            f"data root {data_root} does not exist: generate the demo data with "
            "`wsovvis generate-demo` or point WSOVVIS_DATA_ROOT at an LV-VIS style folder"
        )
    report = ScanReport()
    for split in SPLITS:
        split_dir = data_root / split / "JPEGImages"
        if not split_dir.is_dir():
            continue
        for folder in sorted(split_dir.iterdir(), key=lambda p: natural_key(p.name)):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            where = f"{split}/{folder.name}"
            try:
                check_video_id(folder.name)
            except UnsafeNameError as exc:
                report.rejected[where] = str(exc)
                continue
            files = list_frame_files(folder)
            if not files:
                report.rejected[where] = f"no .jpg/.png frames in {folder}"
                continue
            report.videos.append(VideoInfo(VideoRef(split, folder.name), tuple(files)))
    return report


def load_frame(path: Path) -> np.ndarray:
    """One frame as `(H, W, 3) uint8` RGB; a broken file raises `FrameError` naming it."""
    try:
        with Image.open(path) as img:
            img.load()  # force a full decode: truncated JPEGs fail here, not later
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise FrameError(
            f"cannot read frame {path}: {exc}. Replace or delete the file, or set "
            "skip_bad_frames to process the video without it"
        ) from exc


@dataclass(frozen=True)
class Frames:
    """The frames of one video: `stems[i]` names `images[i]`; images `(T, H, W, 3) uint8` RGB."""

    stems: tuple[str, ...]
    images: np.ndarray
    skipped: tuple[str, ...] = ()


def read_video(
    data_root: Path, ref: VideoRef, *, skip_bad_frames: bool = False
) -> Frames:
    """Read every frame of a video, checking that all frames decode and share one size."""
    folder = frames_dir(data_root, ref)
    if not folder.is_dir():
        raise FrameError(
            f"video folder {folder} is missing (video {ref.partition_key} was registered but "
            "deleted?): restore it, or re-run video_partitions to report it as missing"
        )
    files = list_frame_files(folder)
    if not files:
        raise FrameError(f"video folder {folder} has no .jpg/.png frames")
    return read_frames(files, skip_bad_frames=skip_bad_frames)


def iter_frames(
    files: list[Path], *, skip_bad_frames: bool = False, skipped: list[str] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield `(stem, (H, W, 3) uint8)` per readable frame, checking sizes agree."""
    size = None
    first = None
    for path in files:
        try:
            img = load_frame(path)
        except FrameError:
            if not skip_bad_frames:
                raise
            if skipped is not None:
                skipped.append(path.name)
            continue
        if size is None:
            size, first = img.shape[:2], path
        elif img.shape[:2] != size:
            raise FrameError(
                f"frame {path} is {img.shape[1]}x{img.shape[0]} but {first} is "
                f"{size[1]}x{size[0]}: all frames of a video must share one size; "
                "resize or remove the odd frame"
            )
        yield path.stem, img


def read_frames(files: list[Path], *, skip_bad_frames: bool = False) -> Frames:
    skipped: list[str] = []
    pairs = list(iter_frames(files, skip_bad_frames=skip_bad_frames, skipped=skipped))
    if not pairs:
        raise FrameError(f"no readable frame among {len(files)} files in {files[0].parent}")
    stems = tuple(s for s, _ in pairs)
    return Frames(stems, np.stack([im for _, im in pairs]), tuple(skipped))
