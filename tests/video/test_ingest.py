"""`wsovvis ingest`: a real encoded video becomes an LV-VIS frame folder."""

import av
import numpy as np
import pytest

from wsovvis_dagster.cli import main
from wsovvis_dagster.video.frames import list_frame_files, read_frames


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


def test_ingest_over_existing_video_needs_force(tmp_path, capsys):
    rng = np.random.default_rng(1)
    video = tmp_path / "clip.mp4"
    _write_mp4(video, [np.full((48, 64, 3), c, dtype=np.uint8)
                       for c in rng.integers(0, 255, (4, 3))])
    args = ["ingest", str(video), "--split", "val", "--data-root", str(tmp_path / "d")]
    assert main(args) == 0
    assert "materialise video_partitions" in capsys.readouterr().out
    folder = tmp_path / "d" / "val" / "JPEGImages" / "clip"
    before = {f.name: f.read_bytes() for f in folder.iterdir()}
    # a second ingest under the same id keeps the frames and says how to replace them
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "--force" in err
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == before
    assert main([*args, "--max-frames", "2", "--force"]) == 0
    out = capsys.readouterr().out
    assert "replaced" in out and "stale" in out and "register" not in out
    assert sorted(f.name for f in folder.iterdir()) == ["00000.jpg", "00001.jpg"]


def test_ingest_writes_under_the_configured_data_root(tmp_path, monkeypatch):
    """Without --data-root, frames go where video_partitions looks (WSOVVIS_DATA_ROOT), not
    under the current folder."""
    video = tmp_path / "clip.mp4"
    _write_mp4(video, [np.zeros((48, 64, 3), dtype=np.uint8)] * 2)
    monkeypatch.setenv("WSOVVIS_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    assert main(["ingest", str(video), "--split", "val"]) == 0
    assert len(list_frame_files(tmp_path / "root" / "val" / "JPEGImages" / "clip")) == 2
    assert not (tmp_path / "data").exists()


def _write_audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("case", ["audio_only", "every_0", "max_frames_negative"])
def test_ingest_rejects_bad_input_with_a_clear_error(tmp_path, capsys, case):
    video = tmp_path / ("sound.wav" if case == "audio_only" else "clip.mp4")
    if case == "audio_only":
        _write_audio_only(video)
    else:
        _write_mp4(video, [np.zeros((48, 64, 3), dtype=np.uint8)] * 2)
    extra = {"audio_only": [], "every_0": ["--every", "0"],
             "max_frames_negative": ["--max-frames", "-1"]}[case]
    args = ["ingest", str(video), "--split", "val", "--data-root", str(tmp_path / "d"), *extra]
    if case == "audio_only":
        assert main(args) == 2
        assert "has no video stream" in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit) as exit_info:  # argparse: usage + the reason, no trace
            main(args)
        assert exit_info.value.code == 2
        assert "must be a whole number of 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "d" / "val" / "JPEGImages" / video.stem).exists()


def test_ingest_library_refuses_out_of_range_options(tmp_path):
    from wsovvis_dagster.errors import WsovvisError
    from wsovvis_dagster.video.ingest import ingest_video

    for kwargs in ({"every": 0}, {"max_frames": -1}):
        with pytest.raises(WsovvisError, match="must be 1 or more"):
            ingest_video(tmp_path / "clip.mp4", tmp_path / "d", "val", **kwargs)
