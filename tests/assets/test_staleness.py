"""Staleness through Dagster's own resolver (what the UI shows): changed frames mark one video's
mask_pngs stale, changed predictor settings mark all of them, a rerun makes them fresh."""

import os
import shutil

import pytest
from dagster import AssetKey, materialize
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.definitions.observe import observe
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from dagster._utils.test.data_versions import get_stale_status_resolver

from assets import masks, tubes, videos
from resources import PredictorResource

MASKS = AssetKey("mask_pngs")


def _assets(predictor: PredictorResource) -> list:
    """The graph slice under test, with mask_pngs' code version stamped as definitions.py does."""
    from definitions import defs

    return masks.stamp_predictor_version(list(defs.assets), predictor)


def _status(instance, assets) -> dict[str, StaleStatus]:
    resolver = get_stale_status_resolver(instance, assets)
    return {k: resolver.get_status(MASKS, k) for k in instance.get_dynamic_partitions("videos")}


def _causes(instance, assets, key) -> list[str]:
    resolver = get_stale_status_resolver(instance, assets)
    return [c.reason for c in resolver.get_stale_causes(MASKS, key)]


@pytest.fixture
def data_root(synthetic_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    return root


def _materialize_masks(instance, assets, resources, keys):
    return materialize(
        assets, selection=["mask_pngs"], instance=instance, resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
    )


def test_stamped_code_version_follows_output_settings_only():
    base = PredictorResource(backend="cpu")
    assert base.output_fingerprint() == PredictorResource(
        backend="cpu-slow", gpus="0,1", hold_seconds=3).output_fingerprint()
    assert base.output_fingerprint() != PredictorResource(max_tracks=3).output_fingerprint()
    stamped = {a.key: a for a in _assets(base) if hasattr(a, "code_versions_by_key")}
    assert stamped[MASKS].code_versions_by_key[MASKS] == f"1+{base.output_fingerprint()}"


def test_frames_change_marks_one_video_stale_and_rerun_touches_only_it(
    instance, data_root, resources_for
):
    resources = resources_for(data_root, backend="cpu")
    assets = _assets(resources["predictor"])
    assert materialize(assets, selection=["video_partitions"], instance=instance,
                       resources=resources).success
    keys = instance.get_dynamic_partitions("videos")
    assert set(videos.recorded_frame_versions(instance)) == set(keys)  # versioned at registration
    assert _materialize_masks(instance, assets, resources, keys).success
    assert set(_status(instance, assets).values()) == {StaleStatus.FRESH}

    # new pixels in one frame of one video, then an observation (the sensor or the UI does it)
    target = keys[1]
    ref_dir = data_root / target.replace("__", "/JPEGImages/", 1)
    frame = sorted(ref_dir.iterdir())[0]
    shutil.copy(sorted(ref_dir.iterdir())[1], frame)
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 10**9))
    assert set(_status(instance, assets).values()) == {StaleStatus.FRESH}  # not observed yet
    assert observe([videos.video_frames], instance=instance, resources=resources).success
    status = _status(instance, assets)
    assert status[target] == StaleStatus.STALE
    assert {k for k, s in status.items() if s != StaleStatus.FRESH} == {target}
    assert "has a new dependency data version" in _causes(instance, assets, target)

    # observing again without changes adds nothing and keeps the rest fresh
    before = len(videos.recorded_frame_versions(instance))
    observe([videos.video_frames], instance=instance, resources=resources)
    assert len(videos.recorded_frame_versions(instance)) == before

    # the rerun touches only the stale video
    stale = [k for k, s in _status(instance, assets).items() if s == StaleStatus.STALE]
    assert stale == [target]
    other_dir = resources["paths"].outputs / keys[0].replace("__", "/masks/", 1)
    other_pngs = {p.name: p.stat().st_mtime_ns for p in other_dir.iterdir()}
    assert _materialize_masks(instance, assets, resources, stale).success
    assert set(_status(instance, assets).values()) == {StaleStatus.FRESH}
    assert {p.name: p.stat().st_mtime_ns for p in other_dir.iterdir()} == other_pngs


def test_predictor_settings_change_marks_every_video_stale(instance, data_root, resources_for):
    resources = resources_for(data_root, backend="cpu")
    assets = _assets(resources["predictor"])
    materialize(assets, selection=["video_partitions"], instance=instance, resources=resources)
    keys = instance.get_dynamic_partitions("videos")
    assert _materialize_masks(instance, assets, resources, keys).success
    assert set(_status(instance, assets).values()) == {StaleStatus.FRESH}

    changed = _assets(PredictorResource(backend="cpu", max_tracks=3))  # what a reload would see
    assert set(_status(instance, changed).values()) == {StaleStatus.STALE}
    assert any("code version" in c for c in _causes(instance, changed, keys[0]))
    # tube_json turns stale once the videos are redone with the new settings, fresh after a rerun
    materialize(assets, selection=["tube_json"], instance=instance, resources=resources)
    tube = tubes.tube_json.key
    assert get_stale_status_resolver(instance, changed).get_status(tube) == StaleStatus.FRESH
    new_resources = {**resources, "predictor": PredictorResource(backend="cpu", max_tracks=3)}
    assert _materialize_masks(instance, changed, new_resources, keys).success
    assert set(_status(instance, changed).values()) == {StaleStatus.FRESH}
    assert get_stale_status_resolver(instance, changed).get_status(tube) == StaleStatus.STALE
    materialize(changed, selection=["tube_json"], instance=instance, resources=new_resources)
    assert get_stale_status_resolver(instance, changed).get_status(tube) == StaleStatus.FRESH
