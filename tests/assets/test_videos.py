"""`video_partitions`: folders that are not videos, or have unsafe names, are reported and not
registered; a safe unicode id goes end to end.
"""

from __future__ import annotations

import json

from dagster_runs import failure_text, metadata, run
from video_files import make_video
from wsovvis_dagster.masks.png_io import list_mask_files


def test_empty_and_non_image_folders_are_reported_not_registered(real_jpegs, tmp_path, instance,
                                                                resources_for):
    data = tmp_path / "data"
    make_video(data, "train", "real_video", real_jpegs[:1])
    (data / "train" / "JPEGImages" / "empty").mkdir()
    notes = data / "train" / "JPEGImages" / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("not frames")
    (notes / "meta.json").write_text("{}")
    (notes / ".hidden.jpg").write_bytes(real_jpegs[0])  # hidden files are not frames either
    (data / "train" / "JPEGImages" / "stray.jpg").write_bytes(real_jpegs[0])  # a file, not a video

    result = run(instance, resources_for(data), "video_partitions")
    assert result.success
    assert instance.get_dynamic_partitions("videos") == ["train__real_video"]
    rejected = metadata(result, "video_partitions")["rejected_folders"]
    assert set(rejected) == {"train/empty", "train/notes"}
    assert all("not a video" in reason for reason in rejected.values())
    assert str(notes) in rejected["train/notes"]


UNSAFE_FOLDERS = ["x..", "a..b", "has space", "-rf", "x\u202egpj.exe", "e\u0301t\u0301e\u0301",
                  "é" * 101]


def test_unsafe_video_folders_rejected_and_safe_unicode_end_to_end(
        real_jpegs, tmp_path, instance, resources_for):
    data = tmp_path / "data"
    safe = "vidéo_日本-1.v2"
    make_video(data, "val", safe, real_jpegs[:2])
    for name in UNSAFE_FOLDERS:
        make_video(data, "val", name, real_jpegs[:1])
    resources = resources_for(data)
    result = run(instance, resources, "video_partitions")
    assert instance.get_dynamic_partitions("videos") == [f"val__{safe}"]
    rejected = metadata(result, "video_partitions")["rejected_folders"]
    assert set(rejected) == {f"val/{n}" for n in UNSAFE_FOLDERS}
    assert all("unsafe video id" in r and "rename the video folder" in r
               for r in rejected.values())

    assert run(instance, resources, "mask_pngs", partition=f"val__{safe}").success
    assert run(instance, resources, "tube_json").success
    out = tmp_path / "outputs" / "val"
    assert len(list_mask_files(out / "masks" / safe)) == 2
    data_json = json.loads((out / "tubes_val.json").read_text(encoding="utf-8"))
    assert [v["name"] for v in data_json["videos"]] == [safe]
    assert data_json["videos"][0]["file_names"] == [f"{safe}/00000.jpg", f"{safe}/00001.jpg"]


def test_a_data_root_without_split_folders_fails_with_the_layout_it_needs(
        real_jpegs, tmp_path, instance, resources_for):
    """A DAVIS-style root (JPEGImages/480p/<seq>/) registers nothing: say so and how to fix."""
    davis = tmp_path / "davis"
    seq = davis / "JPEGImages" / "480p" / "bear"
    seq.mkdir(parents=True)
    for i, jpeg in enumerate(real_jpegs[:2]):
        (seq / f"{i:05d}.jpg").write_bytes(jpeg)
    result = run(instance, resources_for(davis), "video_partitions")
    assert not result.success
    text = failure_text(result)
    assert "holds no <split>/JPEGImages/ folder" in text and "DAVIS layout" in text
    assert f"{davis}/val/JPEGImages/<video_id>/" in text
    assert instance.get_dynamic_partitions("videos") == []
