"""`wsovvis_dagster.video.frames`: corrupt, duplicate and odd-sized frames are typed errors
naming the file (frames cut from real DAVIS JPEGs where ../shared exists).
"""

from __future__ import annotations

import shutil

import pytest

from video_files import corruptions, make_video, resized
from wsovvis_dagster.errors import (
    FrameError,
)
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.video.frames import load_frame, read_video, scan_videos


def test_each_kind_of_corrupt_jpeg_raises_frame_error_naming_file(real_jpegs, tmp_path):
    for kind, data in corruptions(real_jpegs[0]).items():
        path = tmp_path / f"{kind}.jpg"
        path.write_bytes(data)
        with pytest.raises(FrameError) as err:
            load_frame(path)
        assert str(path) in str(err.value), kind
        assert "skip_bad_frames" in str(err.value)  # the fix is in the message


def test_duplicate_frame_stems_are_refused(real_jpegs, tmp_path):
    """`00001.jpg` + `00001.png` would write one mask PNG twice: refused, not overwritten."""
    folder = make_video(tmp_path, "val", "dup", real_jpegs[:2])
    shutil.copy(folder / "00001.jpg", folder / "00001.png")
    report = scan_videos(tmp_path)
    assert not report.videos and "share the stem '00001'" in report.rejected["val/dup"]
    with pytest.raises(FrameError, match="share the stem"):
        read_video(tmp_path, VideoRef("val", "dup"))


def test_odd_first_frame_names_both_frames(real_jpegs, tmp_path):
    frames = list(real_jpegs[:2])
    frames[0] = resized(frames[0], (64, 48))
    make_video(tmp_path, "val", "v", frames)
    with pytest.raises(FrameError) as err:
        read_video(tmp_path, VideoRef("val", "v"))
    assert "00001.jpg" in str(err.value) and "00000.jpg is 64x48" in str(err.value)
