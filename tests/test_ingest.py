"""`wsovvis ingest`: a real encoded video becomes an LV-VIS frame folder."""

import av
import numpy as np
import pytest

from wsovvis_dagster.cli import main
from wsovvis_dagster.frames import list_frame_files, read_frames


def _write_mp4(path, frames):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                      rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_ingest_mp4_to_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = [np.full((48, 64, 3), c, dtype=np.uint8) for c in rng.integers(0, 255, (12, 3))]
    video = tmp_path / "clip.mp4"
    _write_mp4(video, frames)
    assert main(["ingest", str(video), "--split", "val", "--data-root", str(tmp_path / "d"),
                 "--every", "2"]) == 0
    folder = tmp_path / "d" / "val" / "JPEGImages" / "clip"
    files = list_frame_files(folder)
    assert [f.name for f in files] == [f"{i:05d}.jpg" for i in range(6)]
    decoded = read_frames(files).images
    # frame 2k of the source, within codec + JPEG loss
    for k, img in enumerate(decoded):
        error = img.astype(int).mean(axis=(0, 1)) - frames[2 * k].mean(axis=(0, 1))
        assert np.abs(error).max() < 12


def test_ingest_rejects_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    assert main(["ingest", str(bad), "--split", "val", "--data-root", str(tmp_path / "d")]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert not (tmp_path / "d" / "val" / "JPEGImages" / "broken").exists()


@pytest.mark.parametrize("split", ["holdout"])
def test_ingest_refuses_unknown_split(tmp_path, split):
    with pytest.raises(SystemExit):
        main(["ingest", "x.mp4", "--split", split])
