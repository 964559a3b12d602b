"""Finding videos on disk and reading their frames."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import statistics
import struct
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from wsovvis_dagster.atomic import OLD_PREFIX, TEMP_PREFIX
from wsovvis_dagster.errors import FrameError, UnsafeNameError, WsovvisError
from wsovvis_dagster.paths import SPLITS, VideoRef, check_video_id, frames_dir, resolve_inside

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
# What PIL raises on broken, truncated or hostile image files (a zip bomb's declared size
# raises DecompressionBombError, which is not an OSError).
IMAGE_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError,
    Image.DecompressionBombError,
)


def natural_key(name: str) -> tuple:
    """Sort key that orders `frame2` before `frame10` (digit runs compared as numbers).

    Ties (`1.jpg` vs `01.jpg`) fall back to the plain name, so the order never depends on the
    order the file system lists a folder in.
    """
    parts = re.split(r"(\d+)", name)  # digit runs land at the odd positions
    return tuple(int(t) if i % 2 else t for i, t in enumerate(parts)), name


def list_frame_files(folder: Path) -> list[Path]:
    """Frame images of one video folder in natural order (hidden files ignored).

    Two files with the same stem (`00001.jpg`, `00001.png`) would write the same mask PNG, so
    they raise `FrameError`.
    """
    try:
        files = [
            p
            for p in Path(folder).iterdir()
            if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".") and p.is_file()
        ]
    except OSError as exc:
        raise FrameError(f"cannot list video folder {folder}: {exc}") from exc
    files.sort(key=lambda p: natural_key(p.name))
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise FrameError(
                f"frames {seen[p.stem].name} and {p.name} in {folder} share the stem {p.stem!r}, "
                "so their masks would overwrite each other; delete or rename one of them"
            )
        seen[p.stem] = p
    return files


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


def is_own_temp_name(name: str) -> bool:
    """True for the hidden temp names the project's atomic writers make (see atomic.py)."""
    return name.startswith((TEMP_PREFIX, OLD_PREFIX))


def scan_videos(data_root: Path) -> ScanReport:
    """Find `<data_root>/<split>/JPEGImages/<video_id>/` folders with at least one frame.

    Unsafe names (hidden `.name` folders included), empty folders and folders without images
    are reported in `rejected`, never registered. The one exception is the project's own temp
    folders (`is_own_temp_name`: `.tmp-*` / `.old-*` of `atomic.atomic_dir`, e.g. an `ingest`
    still writing), which are skipped without a report.
    """
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FrameError(
            f"data root {data_root} does not exist: generate the demo data with "
            "`wsovvis generate-demo` or point WSOVVIS_DATA_ROOT at an LV-VIS style folder"
        )
    if not any((data_root / split / "JPEGImages").is_dir() for split in SPLITS):
        layout = ("a DAVIS layout (JPEGImages/<resolution>/<sequence>/): copy or move the "
                  "sequences to " if (data_root / "JPEGImages").is_dir() else "expected ")
        raise FrameError(
            f"data root {data_root} holds no <split>/JPEGImages/ folder ({', '.join(SPLITS)}): "
            f"{layout}{data_root}/val/JPEGImages/<video_id>/ (one folder of frames per video), "
            "or point WSOVVIS_DATA_ROOT at an LV-VIS style folder")
    report = ScanReport()
    for split in SPLITS:
        split_dir = data_root / split / "JPEGImages"
        if not split_dir.is_dir():
            continue
        for folder in sorted(split_dir.iterdir(), key=lambda p: natural_key(p.name)):
            if is_own_temp_name(folder.name):
                continue  # a writer's temp folder (atomic.py), not a video
            where = f"{split}/{folder.name}"
            if not folder.is_dir():
                if folder.is_symlink():
                    report.rejected[where] = f"{folder} is a dangling symlink"
                continue
            try:
                check_video_id(folder.name)
                resolve_inside(data_root, split, "JPEGImages", folder.name)
                files = list_frame_files(folder)
            except (UnsafeNameError, FrameError) as exc:
                report.rejected[where] = str(exc)
                continue
            if not files:
                report.rejected[where] = (
                    f"no {'/'.join(FRAME_SUFFIXES)} frames in {folder}: an empty folder or one "
                    "holding other files is not a video"
                )
                continue
            report.videos.append(VideoInfo(VideoRef(split, folder.name), tuple(files)))
    return report


def check_image_size(img: Image.Image) -> None:
    """Refuse a header that declares more pixels than PIL's bomb limit, before decoding.

    PIL only warns between one and two times `Image.MAX_IMAGE_PIXELS`; this makes that an error
    too (without touching the process-wide warning filters).
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        raise Image.DecompressionBombError(
            f"{img.width}x{img.height} pixels exceeds the limit of {limit} (a decompression bomb?)"
        )


@contextlib.contextmanager
def open_image(path: Path, error: type[WsovvisError], what: str,
               fix: str = "") -> Iterator[Image.Image]:
    """`Image.open(path)`, its declared size checked before any decode; a broken, truncated or
    hostile file, opened or decoded inside the block, raises `error`
    ("cannot read {what} {path}: {reason}{fix}") naming the file."""
    try:
        with Image.open(path) as img:
            check_image_size(img)
            yield img
    except (UnidentifiedImageError, *IMAGE_DECODE_ERRORS) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise error(f"cannot read {what} {path}: {reason}{fix}") from exc


def image_size(path: Path) -> tuple[int, int]:
    """`(width, height)` of an image from its header alone (PIL opens lazily: no decode)."""
    with open_image(path, FrameError, "frame") as img:
        return img.size


def load_frame(path: Path) -> np.ndarray:
    """One frame as `(H, W, 3) uint8` RGB; a broken file raises `FrameError` naming it."""
    with open_image(path, FrameError, "frame", ". Replace or delete the file, or set "
                    "skip_bad_frames to process the video without it") as img:
        img.load()  # force a full decode: truncated JPEGs fail here, not later
        rgb = np.asarray(img.convert("RGB"))
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise FrameError(f"frame {path} decodes to an empty image (shape {rgb.shape})")
    return rgb


@dataclass(frozen=True)
class Frames:
    """The frames of one video: `stems[i]` names `images[i]`; images `(T, H, W, 3) uint8` RGB."""

    stems: tuple[str, ...]
    images: np.ndarray
    skipped: tuple[str, ...] = ()


def read_video(
    data_root: Path, ref: VideoRef, *, skip_bad_frames: bool = False,
    pool: Executor | None = None,
) -> Frames:
    """Read every frame of a video, checking that all frames decode and share one size.

    With `pool`, frames decode there in parallel; errors and order are those of the
    sequential read (the first bad file in frame order is the one named).
    """
    files = video_frame_files(data_root, ref)
    return read_frames(files, skip_bad_frames=skip_bad_frames, pool=pool)


def _load_or_error(path: Path) -> np.ndarray | FrameError:
    try:
        return load_frame(path)
    except FrameError as exc:
        return exc


class FrameChecks:
    """What `iter_frames` checks across calls: every frame shares the first good one's size."""

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None
        self.first: Path | None = None
        self.good = 0

    def check(self, path: Path, img: np.ndarray) -> None:
        if self.size is None:
            self.size, self.first = img.shape[:2], path
        elif img.shape[:2] != self.size:
            size, good = self.size, self.good
            before = (f"{self.first.name}" if good == 1
                      else f"the {good} frames from {self.first.name} on")
            raise FrameError(
                f"frame {path} is {img.shape[1]}x{img.shape[0]} but {before} "
                f"{'is' if good == 1 else 'are'} {size[1]}x{size[0]}: all frames of a video must "
                "share one size (masks would not line up); resize or remove the odd frame"
            )
        self.good += 1


def iter_frames(
    files: list[Path], *, skip_bad_frames: bool = False, skipped: list[str] | None = None,
    pool: Executor | None = None, checks: FrameChecks | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield `(stem, (H, W, 3) uint8)` per readable frame, checking sizes agree (with
    `checks`, also with the frames of earlier calls: a video read in chunks)."""
    checks = checks if checks is not None else FrameChecks()
    # pool.map keeps frame order, so the checks below see what a sequential read sees
    decoded = pool.map(_load_or_error, files) if pool is not None else map(_load_or_error, files)
    for path, img in zip(files, decoded, strict=True):
        try:
            if isinstance(img, FrameError):
                raise img
        except FrameError:
            if not skip_bad_frames:
                raise
            if skipped is not None:
                skipped.append(path.name)
            continue
        checks.check(path, img)
        yield path.stem, img


def video_frame_files(data_root: Path, ref: VideoRef) -> list[Path]:
    """The frame files of a registered video, checked (present, not empty, none linked out of
    the data root) but not decoded."""
    folder = frames_dir(data_root, ref)
    if not folder.is_dir():
        raise FrameError(
            f"video folder {folder} is missing (video {ref.partition_key} was registered but "
            "deleted?): restore it, or re-run video_partitions to report it as missing"
        )
    files = list_frame_files(folder)
    if not files:
        raise FrameError(f"video folder {folder} has no .jpg/.png frames")
    for path in files:  # a frame symlinked out of the data root is refused, not read
        resolve_inside(data_root, ref.split, "JPEGImages", ref.video_id, path.name)
    return files


class ChunkedVideoReader:
    """Reads one video's frames a span of files at a time, with `read_frames`' checks across
    the whole video; frames of the previous span that the next one shares are not decoded
    again. Memory: about one span of frames."""

    def __init__(self, files: list[Path], *, skip_bad_frames: bool = False,
                 pool: Executor | None = None) -> None:
        self.files, self.skip_bad_frames, self.pool = files, skip_bad_frames, pool
        self.skipped: list[str] = []
        self._checks = FrameChecks()
        self._cache: dict[int, np.ndarray | None] = {}  # file index -> frame (None: skipped)

    def read(self, start: int, end: int) -> tuple[list[int], np.ndarray | None]:
        """File indices of the readable frames among files[start:end] and those frames,
        `(n, H, W, 3) uint8` (None when none is readable)."""
        todo = [i for i in range(start, end) if i not in self._cache]
        skipped: list[str] = []
        stems = iter_frames([self.files[i] for i in todo], skip_bad_frames=self.skip_bad_frames,
                            skipped=skipped, pool=self.pool, checks=self._checks)
        got = {self.files[i].stem: i for i in todo}
        fresh: dict[int, np.ndarray | None] = dict.fromkeys(todo)
        for stem, img in stems:
            fresh[got[stem]] = img
        self.skipped.extend(skipped)
        cache = {i: f for i, f in self._cache.items() if start <= i < end}
        cache.update(fresh)
        self._cache = cache
        indices = [i for i in range(start, end) if cache[i] is not None]
        return indices, np.stack([cache[i] for i in indices]) if indices else None


def read_frames(
    files: list[Path], *, skip_bad_frames: bool = False, pool: Executor | None = None
) -> Frames:
    skipped: list[str] = []
    pairs = list(iter_frames(files, skip_bad_frames=skip_bad_frames, skipped=skipped, pool=pool))
    if not pairs:
        raise FrameError(f"no readable frame among {len(files)} files in {files[0].parent}")
    stems = tuple(s for s, _ in pairs)
    return Frames(stems, np.stack([im for _, im in pairs]), tuple(skipped))


MISSING_FRAMES = "missing"  # data version of a video folder that is gone


def frames_fingerprint(folder: Path) -> str:
    """Data version of one video folder: hash of (name, size, mtime) of its frame files.

    Cheap (one stat per frame, no decoding). 'missing' when the folder is gone.
    """
    try:
        entries = sorted(
            (e.name, e.stat().st_size, e.stat().st_mtime_ns)
            for e in os.scandir(folder)
            if not e.name.startswith(".") and Path(e.name).suffix.lower() in FRAME_SUFFIXES
            and e.is_file()
        )
    except FileNotFoundError:
        return MISSING_FRAMES
    return hashlib.sha1(repr(entries).encode()).hexdigest()[:16]


def current_frame_versions(data_root: Path, keys: Iterable[str]) -> dict[str, str]:
    """Partition key -> `frames_fingerprint` of its folder under `data_root`."""
    versions = {}
    for key in keys:
        try:
            folder = frames_dir(data_root, VideoRef.from_partition_key(key))
        except WsovvisError:  # a key that is not a safe video ref has no folder to read
            versions[key] = MISSING_FRAMES
            continue
        versions[key] = frames_fingerprint(folder)
    return versions
