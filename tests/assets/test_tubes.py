"""`tube_json` and its checks on generated data: index, results export, linking, checks."""

import json
import shutil

import numpy as np
import polars as pl
import pytest
from dagster import AssetCheckSeverity, AssetKey, AssetSelection, instance_for_test, materialize
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from dagster_runs import failure_text, metadata, run
from video_files import FRAMES_PER_VIDEO, make_video
from wsovvis_dagster.evaluation.ytvis_ap import load_results
from wsovvis_dagster.masks.png_io import list_mask_files
from wsovvis_dagster.paths import gt_json_path
from wsovvis_dagster.ytvis.format import validate_tube_json
from wsovvis_dagster.ytvis.tubes import decode_video_id_maps, load_tube_json

CHECKS = AssetSelection.checks_for_assets("tube_json")


def _everything():
    from definitions import defs

    return [*defs.assets, *defs.asset_checks]


def _tube_metadata(instance) -> dict:
    event = instance.get_latest_materialization_event(AssetKey("tube_json"))
    return event.asset_materialization.metadata


def _checks(instance, resources, run_config=None) -> dict:
    result = materialize(_everything(), selection=CHECKS, instance=instance, resources=resources,
                         run_config=run_config, raise_on_error=False)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def shared_graph(synthetic_root, tmp_path_factory):
    """The graph materialised once for the read-only tests: (instance, resources, outputs)."""
    from resources import DatasetPaths, PredictorResource, SacredObserverResource

    tmp = tmp_path_factory.mktemp("tube_graph")
    resources = {
        "paths": DatasetPaths(data_root=str(synthetic_root), output_root=str(tmp / "outputs")),
        "predictor": PredictorResource(),
        "sacred": SacredObserverResource(runs_dir=str(tmp / "runs")),
    }
    with instance_for_test() as inst:
        everything = _everything()
        materialize(everything, selection=["video_partitions"], instance=inst, resources=resources)
        keys = inst.get_dynamic_partitions("videos")
        materialize(everything, selection=["mask_pngs"], instance=inst, resources=resources,
                    tags={ASSET_PARTITION_RANGE_START_TAG: keys[0],
                          ASSET_PARTITION_RANGE_END_TAG: keys[-1]})
        materialize(everything, selection=["tube_json"], instance=inst, resources=resources)
        yield inst, resources, tmp / "outputs"


@pytest.fixture
def graph(shared_graph):
    _, resources, out = shared_graph
    return resources, out


@pytest.fixture
def graph_instance(shared_graph):
    return shared_graph[0]


def test_index_and_results_are_written_beside_each_json(graph, graph_instance, synthetic_root):
    _, out = graph
    md = _tube_metadata(graph_instance)
    for split in ("train", "val"):
        data = load_tube_json(out / split / f"tubes_{split}.json")
        index = pl.read_parquet(out / split / f"tubes_{split}.parquet")
        assert index.height == len(data["annotations"]) == md[f"{split}_tubes"].value
        assert set(index["split"]) == {split}
        table = md[f"{split}_tube_table"].value
        assert f"{index.height} tubes in 2 videos" in table and "| video | track_id |" in table
        assert md[f"{split}_short_tubes"].value == index.filter(pl.col("length") < 3).height
        # results use the GT's video ids (the synthetic dataset has GT for both splits)
        gt = json.loads(gt_json_path(synthetic_root, split).read_text())
        results = load_results(out / split / f"results_{split}.json", gt)
        assert len(results) == index.height
        assert {r["video_id"] for r in results} <= {v["id"] for v in gt["videos"]}
    assert md["linked"].value is False


def test_checks_pass_and_report_agnostic_ap_and_recall(graph, graph_instance):
    resources, _ = graph
    checks = _checks(graph_instance, resources)
    assert checks["tube_json_format"].passed
    quality = checks["tube_json_quality"]
    assert quality.passed and quality.severity == AssetCheckSeverity.WARN
    for split in ("train", "val"):
        ap = quality.metadata[f"{split}_AP"].value
        recall = quality.metadata[f"{split}_recall@0.5"].value
        assert 0.05 <= ap <= 1 and 0 < recall <= 1


def test_quality_floor_warns_by_default_and_errors_on_request(graph, graph_instance):
    resources, _ = graph
    strict = {"ops": {"tube_json_tube_json_quality": {"config": {"min_ap": 1.0}}}}
    warn = _checks(graph_instance, resources, strict)["tube_json_quality"]
    assert not warn.passed and warn.severity == AssetCheckSeverity.WARN
    assert warn.metadata["splits_below_min_ap"].value == ["train", "val"]
    strict["ops"]["tube_json_tube_json_quality"]["config"]["severity"] = "ERROR"
    error = _checks(graph_instance, resources, strict)["tube_json_quality"]
    assert not error.passed and error.severity == AssetCheckSeverity.ERROR


def test_format_check_fails_on_a_broken_json(graph, graph_instance):
    resources, out = graph
    path = out / "val" / "tubes_val.json"
    original = path.read_text()
    data = json.loads(original)
    data["annotations"][0]["segmentations"].pop()  # one frame short
    path.write_text(json.dumps(data))
    try:
        check = _checks(graph_instance, resources)["tube_json_format"]
    finally:
        path.write_text(original)
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["problems"].value >= 1
    assert "annotations[0].segmentations" in json.dumps(check.metadata["first_problems"].value)


def test_linking_is_optional_and_keeps_the_masks(graph, graph_instance, tmp_path):
    from resources import DatasetPaths

    shared, shared_out = graph
    out = tmp_path / "outputs"  # a copy: the shared outputs stay unlinked for the other tests
    shutil.copytree(shared_out, out)
    resources = {**shared, "paths": DatasetPaths(data_root=shared["paths"].data_root,
                                                 output_root=str(out))}
    keys = graph_instance.get_dynamic_partitions("videos")
    with instance_for_test() as instance:  # its own instance: the shared one stays unlinked
        instance.add_dynamic_partitions("videos", keys)
        _materialize_linked(instance, resources, out)


def _materialize_linked(instance, resources, out):
    before = {s: load_tube_json(out / s / f"tubes_{s}.json") for s in ("train", "val")}
    config = {"ops": {"tube_json": {"config": {"link_fragments": True, "link_max_gap": 2}}}}
    assert materialize(_everything(), selection=["tube_json"], instance=instance,
                       resources=resources, run_config=config).success
    assert _tube_metadata(instance)["linked"].value is True
    for split, old in before.items():
        new = load_tube_json(out / split / f"tubes_{split}.json")
        assert new["info"]["linking"] == {"iou_threshold": 0.2, "max_gap": 2}
        assert validate_tube_json(new, "linked") == []
        assert all(len(a["source_ids"]) == a["length"] for a in new["annotations"])
        for video in new["videos"]:
            # same pixels covered, frame by frame, whatever the track ids became
            assert ((decode_video_id_maps(new, video["id"]) > 0)
                    == (decode_video_id_maps(old, video["id"]) > 0)).all()


def test_non_contiguous_frame_names_keep_their_stems_in_natural_order(
        real_jpegs, tmp_path, instance, resources_for):
    data = tmp_path / "data"
    frames = real_jpegs[:FRAMES_PER_VIDEO]
    stepped = [f"{693 + 5 * i:08d}.jpg" for i in range(len(frames))]  # 00000693.jpg, 00000698...
    make_video(data, "val", "stepped", frames, stepped)
    unpadded = ["2.jpg", "10.jpg", "100.jpg"]  # lexical order would be 10, 100, 2
    make_video(data, "val", "unpadded", frames, unpadded)
    resources = resources_for(data)
    assert run(instance, resources, "video_partitions").success
    for key in ("val__stepped", "val__unpadded"):
        assert run(instance, resources, "mask_pngs", partition=key).success
    assert run(instance, resources, "tube_json").success

    out = tmp_path / "outputs" / "val"
    for vid, names in (("stepped", stepped), ("unpadded", unpadded)):
        stems = [n[:-4] for n in names]
        assert [p.name for p in list_mask_files(out / "masks" / vid)] == [
            f"mask_{s}.png" for s in stems]
    data_json = load_tube_json(out / "tubes_val.json")
    by_name = {v["name"]: v for v in data_json["videos"]}
    assert by_name["stepped"]["file_names"] == [f"stepped/{n}" for n in stepped]
    assert by_name["unpadded"]["file_names"] == [f"unpadded/{n}" for n in unpadded]
    # same frames in the same (natural) order -> the same masks, whatever the names
    a = decode_video_id_maps(data_json, by_name["stepped"]["id"])
    b = decode_video_id_maps(data_json, by_name["unpadded"]["id"])
    assert np.array_equal(a, b) and a.any()


def test_deleted_video_is_reported_missing_and_named_by_tube_json(
        real_jpegs, tmp_path, instance, resources_for):
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    data = tmp_path / "data"
    for vid in ("a_kept", "b_gone_after_masks", "c_gone_before_masks"):
        make_video(data, "val", vid, real_jpegs[:2])
    resources = resources_for(data)
    run(instance, resources, "video_partitions")
    assert run(instance, resources, "mask_pngs", tags={
        ASSET_PARTITION_RANGE_START_TAG: "val__a_kept",
        ASSET_PARTITION_RANGE_END_TAG: "val__b_gone_after_masks"}).success
    shutil.rmtree(data / "val" / "JPEGImages" / "b_gone_after_masks")
    shutil.rmtree(data / "val" / "JPEGImages" / "c_gone_before_masks")

    result = run(instance, resources, "video_partitions")
    assert result.success
    assert metadata(result, "video_partitions")["missing_videos"] == [
        "val__b_gone_after_masks", "val__c_gone_before_masks"]

    result = run(instance, resources, "mask_pngs", partition="val__c_gone_before_masks")
    assert not result.success
    assert "video folder" in failure_text(result) and "is missing" in failure_text(result)

    result = run(instance, resources, "tube_json")
    assert result.success, failure_text(result)
    assert metadata(result, "tube_json")["val_videos_without_frames"] == [
        "val__b_gone_after_masks", "val__c_gone_before_masks"]
    # a video without frames is left out even with masks: they cannot be checked against its
    # frames, and its file_names would name files that do not exist
    assert set(metadata(result, "tube_json")["val_left_out"]) == {
        "val__b_gone_after_masks", "val__c_gone_before_masks"}
    data_json = load_tube_json(tmp_path / "outputs" / "val" / "tubes_val.json")
    assert [v["name"] for v in data_json["videos"]] == ["a_kept"]


def test_one_broken_video_costs_itself_not_the_split(real_jpegs, tmp_path, instance,
                                                      resources_for):
    """Frames emptied or re-ingested shorter under their masks, a corrupt mask PNG, a failed
    mask_pngs run and a bad registered key each leave out one video, named; the rest of every
    split is written."""
    from wsovvis_dagster.paths import VideoRef
    from wsovvis_dagster.ytvis.split import build_split_tubes

    data = tmp_path / "data"
    names = ["good", "emptied", "shorter", "bad_mask"]
    for vid in names:
        make_video(data, "val", vid, real_jpegs[:3])
    make_video(data, "train", "t", real_jpegs[:2])
    failing = make_video(data, "val", "run_failed", real_jpegs[:3])
    (failing / "00001.jpg").write_bytes(b"")  # its mask_pngs run fails: no masks
    resources = resources_for(data)
    assert run(instance, resources, "video_partitions").success
    for key in instance.get_dynamic_partitions("videos"):
        result = run(instance, resources, "mask_pngs", partition=key)
        assert result.success == (key != "val__run_failed")
    frames, masks = data / "val" / "JPEGImages", tmp_path / "outputs" / "val" / "masks"
    for f in (frames / "emptied").iterdir():
        f.unlink()
    (frames / "shorter" / "00002.jpg").unlink()  # re-ingested with fewer frames
    (masks / "bad_mask" / "mask_00001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    instance.add_dynamic_partitions("videos", ["val__../../etc"])  # registered by hand

    result = run(instance, resources, "tube_json")
    assert result.success, failure_text(result)
    meta = metadata(result, "tube_json")
    broken = meta["val_broken_videos"]
    assert set(broken) == {"val__emptied", "val__shorter", "val__bad_mask", "val__run_failed"}
    assert "last mask_pngs run failed" in broken["val__run_failed"]
    assert "holds no frames" in broken["val__emptied"]
    assert "mask_00002.png has no frame" in broken["val__shorter"]
    assert "mask_00001.png" in broken["val__bad_mask"]
    assert set(broken) <= set(meta["val_left_out"])
    assert "delete_dynamic_partition('videos', 'val__../../etc')" in meta[
        "invalid_partition_keys"]["val__../../etc"]
    val = load_tube_json(tmp_path / "outputs" / "val" / "tubes_val.json")
    assert [v["name"] for v in val["videos"]] == ["good"]
    assert val["info"]["mask_sources"] == {"mask_pngs": 1}
    assert validate_tube_json(val) == []
    assert meta["train_videos"] == 1

    # the same over worker processes
    refs = [VideoRef("val", v) for v in names]
    parallel = build_split_tubes(data, tmp_path / "outputs", "val", refs, workers=2)
    assert set(parallel.broken) == set(broken) - {"val__run_failed"} and parallel.videos == 1
