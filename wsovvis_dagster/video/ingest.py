"""Turn a video file into an LV-VIS style JPEG frame folder (PyAV ships its own FFmpeg)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av

from wsovvis_dagster.atomic import atomic_dir
from wsovvis_dagster.errors import FrameError, VideoExistsError, WsovvisError
from wsovvis_dagster.paths import VideoRef, frames_dir


class IngestArgumentError(WsovvisError, ValueError):
    """An `ingest` option out of range (named, with what it must be)."""


def count_frames(video_path: Path, *, every: int = 1, max_frames: int | None = None) -> int | None:
    """Frames `ingest_video` will write, from the stream header (None when it does not say)."""
    try:
        with av.open(str(video_path)) as container:
            total = container.streams.video[0].frames if container.streams.video else 0
    except (av.FFmpegError, OSError):
        return None  # ingest_video reports the error with its context
    if not total:
        return None
    kept = -(-total // max(every, 1))
    return min(kept, max_frames) if max_frames else kept


def ingest_video(
    video_path: Path,
    data_root: Path,
    split: str,
    *,
    video_id: str | None = None,
    every: int = 1,
    max_frames: int | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[VideoRef, int]:
    """Decode `video_path` and write every `every`-th frame as `<data_root>/<split>/JPEGImages/
    <video_id>/<index:05d>.jpg` (atomically). Returns the video ref and the frame count.

    An existing frame folder is replaced only with `force` (its masks then turn stale)."""
    video_path = Path(video_path)
    ref = VideoRef(split, video_id or video_path.stem)
    if every < 1:
        raise IngestArgumentError(f"--every must be 1 or more (keep every N-th frame), got {every}")
    if max_frames is not None and max_frames < 1:
        raise IngestArgumentError(
            f"--max-frames must be 1 or more, got {max_frames}; leave it out for every frame")
    target = frames_dir(data_root, ref)
    if target.exists() and not force:
        raise VideoExistsError(
            f"{target} already exists (video {ref.partition_key}); pass --force to replace its "
            "frames, or --video-id to ingest under another name"
        )
    try:
        container = av.open(str(video_path))
    except (av.FFmpegError, OSError) as exc:
        raise FrameError(f"cannot open video {video_path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise FrameError(
            f"{video_path} has no video stream (an audio-only file?): nothing to ingest")
    written = 0
    with container, atomic_dir(target) as tmp:
        try:
            for index, frame in enumerate(container.decode(video=0)):
                if index % every:
                    continue
                frame.to_image().save(tmp / f"{written:05d}.jpg", quality=95)
                written += 1
                if progress:
                    progress(written)
                if max_frames and written >= max_frames:
                    break
        except av.FFmpegError as exc:
            raise FrameError(f"cannot decode {video_path} after {written} frames: {exc}") from exc
        if written == 0:
            raise FrameError(f"{video_path} has no decodable video frames")
    return ref, written
