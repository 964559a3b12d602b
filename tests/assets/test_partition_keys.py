"""Partition keys are reversible, and unsafe video ids are refused with a clear message."""

import pytest

from wsovvis_dagster.errors import UnsafeNameError
from wsovvis_dagster.paths import VideoRef, resolve_inside


@pytest.mark.parametrize("video_id", ["00001", "a__b", "clip.v2", "vidéo_été", "视频-1", "x-y_z"])
def test_safe_ids_round_trip(video_id):
    ref = VideoRef("val", video_id)
    assert VideoRef.from_partition_key(ref.partition_key) == ref


@pytest.mark.parametrize(
    "video_id, fragment",
    [("../etc", "'..'"), ("a/b", "no '/'"), ("has space", "no '/', spaces"), ("-rf", "leading '-'"),
     (".hidden", "must start"), ("a...b", "'..'"), ("a,b", "commas"), ("", "empty")],
)
def test_unsafe_ids_are_rejected_with_reason(video_id, fragment):
    with pytest.raises(UnsafeNameError) as err:
        VideoRef("train", video_id)
    assert fragment in str(err.value)
    if video_id:
        assert repr(video_id) in str(err.value)  # the message names the offending id


def test_unknown_split_and_malformed_key():
    with pytest.raises(UnsafeNameError, match="unknown split"):
        VideoRef.from_partition_key("holdout__v1")
    with pytest.raises(UnsafeNameError, match="is not '<split>__<video_id>'"):
        VideoRef.from_partition_key("v1")


def test_paths_cannot_escape_root(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeNameError, match="escapes"):
        resolve_inside(tmp_path / "root", "link", "secret")
    assert resolve_inside(tmp_path / "root", "a", "b") == (tmp_path / "root" / "a" / "b").resolve()


def test_unsafe_folder_is_reported_not_registered(tmp_path, instance, resources_for):
    from dagster import materialize

    from definitions import defs

    for name in ("good_video", "bad video"):
        folder = tmp_path / "data" / "val" / "JPEGImages" / name
        folder.mkdir(parents=True)
        from PIL import Image

        Image.new("RGB", (8, 8)).save(folder / "00000.jpg")
    result = materialize(list(defs.assets), selection=["video_partitions"], instance=instance,
                         resources=resources_for(tmp_path / "data"))
    assert instance.get_dynamic_partitions("videos") == ["val__good_video"]
    md = result.asset_materializations_for_node("video_partitions")[0].metadata
    assert "val/bad video" in md["rejected_folders"].data
