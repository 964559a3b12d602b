"""Tube JSON against the frames (names, sizes, sparse masks, dot folders, allow_partial) and
bringing your own masks (`wsovvis import-masks`, `mask_pngs` with `import_root`)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, materialize
from dagster._core.definitions.data_version import StaleStatus
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from dagster._utils.test.data_versions import get_stale_status_resolver
from PIL import Image

from wsovvis_dagster.cli import main as cli
from wsovvis_dagster.errors import MaskFormatError, UnsafeNameError
from wsovvis_dagster.gpu.run_tags import BATCH_TAG
from wsovvis_dagster.masks.import_masks import import_masks
from wsovvis_dagster.masks.png_io import SOURCE_FILE, load_id_map, write_mask_pngs
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.video.frames import scan_videos
from wsovvis_dagster.ytvis.format import validate_tube_json
from wsovvis_dagster.ytvis.linking import LinkParams
from wsovvis_dagster.ytvis.split import build_split_tubes
from wsovvis_dagster.ytvis.tubes import decode_video_id_maps, load_tube_json

REPO = Path(__file__).resolve().parents[2]


def _assets():
    from definitions import defs

    return list(defs.assets)


def _run(instance, resources, asset, *, config=None, tags=None):
    run_config = {"ops": {asset: {"config": config}}} if config else None
    return materialize(_assets(), selection=[asset], instance=instance, resources=resources,
                       run_config=run_config, tags=tags, raise_on_error=False)


def _metadata(result, asset):
    (mat,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mat.metadata.items()}


def make_frames(data: Path, video: str, n: int, size=(40, 30), suffix=".png", split="val"):
    """`n` noise frames `<index:05d><suffix>` of `size` (w, h) for one video."""
    folder = data / split / "JPEGImages" / video
    folder.mkdir(parents=True)
    rng = np.random.default_rng(n)
    for t in range(n):
        img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{t:05d}{suffix}")
    return sorted(folder.iterdir())


def blob_maps(n: int, size=(40, 30), ids=(1, 2)) -> np.ndarray:
    """`(n, h, w)` id maps with one moving rectangle per id."""
    maps = np.zeros((n, size[1], size[0]), dtype=np.uint16)
    for t in range(n):
        for k, i in enumerate(ids):
            maps[t, 2 + 6 * k : 8 + 6 * k, t % 10 + 3 * k : t % 10 + 3 * k + 9] = i
    return maps


def write_source(src: Path, video: str, stems, maps, mode="L"):
    """Per-frame id PNGs as another tool writes them (`<stem>.png`, mode P / L / I;16)."""
    folder = src / video
    folder.mkdir(parents=True)
    for stem, m in zip(stems, maps, strict=True):
        if mode == "I;16":
            img = Image.fromarray(m.astype(np.uint16))
        else:
            img = Image.fromarray(m.astype(np.uint8), mode="L")
            if mode == "P":
                img = img.convert("P")
                img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
        img.save(folder / f"{stem}.png")
    return folder


# ---------------------------------------------------------------------------------------------
# tube JSON checked against the frames
# ---------------------------------------------------------------------------------------------
def test_png_frames_and_sparse_masks_give_full_length_video_with_nulls(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    frames = make_frames(data, "v", 8, suffix=".png")
    maps = blob_maps(8)
    kept = [1, 2, 5, 6]  # masks for 4 of 8 frames
    write_mask_pngs(out / "val" / "masks" / "v", [frames[t].stem for t in kept],
                    [maps[t] for t in kept], {1: 0.9, 2: 0.8})
    result = build_split_tubes(data, out, "val", [VideoRef("val", "v")])
    tubes = load_tube_json(result.path)
    (video,) = tubes["videos"]
    assert video["file_names"] == [f"v/{f.name}" for f in frames]
    assert all(n.endswith(".png") for n in video["file_names"])
    assert (video["length"], video["width"], video["height"]) == (8, 40, 30)
    assert validate_tube_json(tubes) == []
    for ann in tubes["annotations"]:
        present = [t for t, s in enumerate(ann["segmentations"]) if s is not None]
        assert present == kept
    expected = np.zeros_like(maps)
    expected[kept] = maps[kept]
    assert np.array_equal(decode_video_id_maps(tubes, video["id"]), expected)


def test_linked_sparse_masks_keep_source_ids_per_video_frame(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    frames = make_frames(data, "v", 6, suffix=".jpg")
    maps = blob_maps(6)
    kept = [0, 1, 4]
    write_mask_pngs(out / "val" / "masks" / "v", [frames[t].stem for t in kept],
                    [maps[t] for t in kept], {1: 0.9, 2: 0.8})
    result = build_split_tubes(data, out, "val", [VideoRef("val", "v")], linking=LinkParams())
    tubes = load_tube_json(result.path)
    assert validate_tube_json(tubes) == []
    for ann in tubes["annotations"]:
        assert len(ann["source_ids"]) == 6
        assert [t for t, s in enumerate(ann["source_ids"]) if s is not None] == kept


def test_mask_of_wrong_size_or_unknown_stem_is_an_error_naming_the_file(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    make_frames(data, "v", 4, size=(40, 30), suffix=".jpg")
    folder = out / "val" / "masks" / "v"
    refs = [VideoRef("val", "v")]
    write_mask_pngs(folder, ["00000", "00001"], list(blob_maps(2, size=(32, 24))), {1: 1, 2: 1})
    with pytest.raises(MaskFormatError, match=r"mask_00000\.png is 32x24 but its frame .*40x30"):
        build_split_tubes(data, out, "val", refs)
    write_mask_pngs(folder, ["00000", "99999"], list(blob_maps(2)), {1: 1, 2: 1})
    with pytest.raises(MaskFormatError, match=r"mask_99999\.png has no frame"):
        build_split_tubes(data, out, "val", refs)
    assert not (out / "val" / "tubes_val.json").exists()


def test_dot_folders_are_reported_and_own_temp_folders_skipped(tmp_path):
    data = tmp_path / "data"
    make_frames(data, "good", 1)
    make_frames(data, "..evil", 1)
    make_frames(data, ".hidden", 1)
    make_frames(data, ".tmp-good-0123456789ab", 1)  # an ingest still writing (atomic_dir)
    report = scan_videos(data)
    assert [v.ref.video_id for v in report.videos] == ["good"]
    assert set(report.rejected) == {"val/..evil", "val/.hidden"}
    assert "unsafe video id" in report.rejected["val/..evil"]


def test_allow_partial_lists_the_videos_it_left_out(tmp_path, instance, resources_for):
    data = tmp_path / "data"
    for vid in ("a", "b", "c"):
        make_frames(data, vid, 3)
    resources = resources_for(data)
    assert _run(instance, resources, "video_partitions").success
    out = resources["paths"].outputs
    write_mask_pngs(out / "val" / "masks" / "b", ["00000"], [blob_maps(1)[0]], {1: 1, 2: 1})
    assert not _run(instance, resources, "tube_json").success  # a and c have no masks
    result = _run(instance, resources, "tube_json", config={"allow_partial": True})
    assert result.success
    left_out = _metadata(result, "tube_json")["val_left_out"]
    assert set(left_out) == {"val__a", "val__c"}
    assert all("no mask PNGs" in why for why in left_out.values())
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("left out" in m and "val__a" in m for m in logs)
    assert [v["name"] for v in load_tube_json(out / "val" / "tubes_val.json")["videos"]] == ["b"]


# ---------------------------------------------------------------------------------------------
# bring your own masks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["P", "L", "I;16"])
def test_import_each_png_mode_round_trips_exactly(tmp_path, mode):
    data, out, src = tmp_path / "data", tmp_path / "out", tmp_path / "src"
    frames = make_frames(data, "v", 5, suffix=".jpg")
    ids = (1, 300) if mode == "I;16" else (1, 2)
    maps = blob_maps(5, ids=ids)
    write_source(src, "v", [f.stem for f in frames], maps, mode=mode)
    report = import_masks(src, data, out, "val")
    assert [v.written for v in report.videos] == [True]
    dest = out / "val" / "masks" / "v"
    for f, m in zip(frames, maps, strict=True):
        assert np.array_equal(load_id_map(dest / f"mask_{f.stem}.png"), m)
    assert Image.open(dest / "mask_00000.png").mode == ("I;16" if mode == "I;16" else "L")
    tubes = load_tube_json(build_split_tubes(data, out, "val", [VideoRef("val", "v")]).path)
    assert np.array_equal(decode_video_id_maps(tubes, 1), maps)
    assert tubes["info"]["mask_sources"] == {f"import:{src.resolve()}": 1}


def test_import_refuses_bad_input_before_writing_anything(tmp_path):
    data, out, src = tmp_path / "data", tmp_path / "out", tmp_path / "src"
    stems = [f.stem for f in make_frames(data, "v", 3)]
    make_frames(data, "w", 3)
    write_source(src, "v", stems, blob_maps(3))
    bad = write_source(src, "w", stems, blob_maps(3, size=(20, 15)))
    with pytest.raises(MaskFormatError, match=r"w/00000\.png is 20x15 but its frame .*40x30"):
        import_masks(src, data, out, "val")
    assert not (out / "val" / "masks" / "v").exists()  # the good video was not written either
    shutil.rmtree(bad)
    write_source(src, "w", ["00000", "00007"], blob_maps(2))
    with pytest.raises(MaskFormatError, match=r"w/00007\.png has no frame"):
        import_masks(src, data, out, "val")
    shutil.rmtree(src / "w")
    write_source(src, "nosuchvideo", stems, blob_maps(3))
    with pytest.raises(MaskFormatError, match="nosuchvideo names no video of the val split"):
        import_masks(src, data, out, "val")
    shutil.rmtree(src / "nosuchvideo")
    (src / "bad name").mkdir()
    with pytest.raises(UnsafeNameError, match="bad name"):
        import_masks(src, data, out, "val")
    shutil.rmtree(src / "bad name")
    Image.new("RGB", (40, 30)).save(src / "v" / "00002.png")
    with pytest.raises(MaskFormatError, match=r"00002\.png has mode RGB"):
        import_masks(src, data, out, "val")
    assert not (out / "val" / "masks").exists()


def test_import_cli_scores_and_idempotent_rerun(tmp_path, capsys):
    data, out, src = tmp_path / "data", tmp_path / "out", tmp_path / "src"
    stems = [f.stem for f in make_frames(data, "v", 4)]
    write_source(src, "v", stems[:2], blob_maps(2))  # frames 2 and 3 have no objects
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"v": {"2": 0.25}}))
    args = ["import-masks", str(src), "--split", "val", "--data-root", str(data),
            "--output-root", str(out), "--scores", str(scores)]
    assert cli(args) == 0
    dest = out / "val" / "masks" / "v"
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    assert "[written]" in capsys.readouterr().out
    assert cli(args) == 0  # same files: nothing rewritten
    assert "unchanged" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before
    source = json.loads((dest / SOURCE_FILE).read_text())
    assert source["origin"] == str(src.resolve()) and source["masks"] == 2
    tubes = load_tube_json(build_split_tubes(data, out, "val", [VideoRef("val", "v")]).path)
    assert {a["track_id"]: a["score"] for a in tubes["annotations"]} == {1: 1.0, 2: 0.25}
    assert tubes["videos"][0]["length"] == 4
    scores.write_text(json.dumps({"v": {"7": 0.5}}))
    assert cli(args) == 2
    assert "has no track 7" in capsys.readouterr().err


def test_import_through_mask_pngs_config_is_fresh_like_predictor_output(
        tmp_path, instance, resources_for):
    data, src = tmp_path / "data", tmp_path / "src"
    for vid in ("a", "b"):
        frames = make_frames(data, vid, 4)
        write_source(src, vid, [f.stem for f in frames], blob_maps(4))
    resources = resources_for(data)
    assert _run(instance, resources, "video_partitions").success
    keys = instance.get_dynamic_partitions("videos")
    result = _run(instance, resources, "mask_pngs", config={"import_root": str(src)},
                  tags={ASSET_PARTITION_RANGE_START_TAG: keys[0],
                        ASSET_PARTITION_RANGE_END_TAG: keys[-1]})
    assert result.success
    mats = result.asset_materializations_for_node("mask_pngs")
    assert {m.partition for m in mats} == set(keys)
    assert all(m.metadata["predictor"].value == "import" for m in mats)
    assert all("preview" in m.metadata for m in mats)
    assert all(m.tags["wsovvis/mask_source"] == "import" for m in mats)
    assert _run(instance, resources, "tube_json").success
    resolver = get_stale_status_resolver(instance, _assets())
    assert resolver.get_status(AssetKey("tube_json")) == StaleStatus.FRESH
    assert {resolver.get_status(AssetKey("mask_pngs"), k) for k in keys} == {StaleStatus.FRESH}
    tubes = load_tube_json(resources["paths"].outputs / "val" / "tubes_val.json")
    assert tubes["info"]["mask_sources"] == {f"import:{src.resolve()}": 2}


@pytest.mark.shared
def test_osvos_masks_round_trip_through_import_and_tube_json_asset(
        shared_data, tmp_path, instance, resources_for):
    """../shared DAVIS OSVOS masks (palette P) -> import-masks -> tube_json asset -> decoded
    masks equal the PNGs exactly; file names are the real JPEGs'."""
    davis = shared_data / "davis"
    seqs = sorted(p.name for p in (davis / "osvos").iterdir())
    data = tmp_path / "data"
    for seq in seqs:
        shutil.copytree(davis / "JPEGImages" / seq, data / "val" / "JPEGImages" / seq)
    resources = resources_for(data)
    out = resources["paths"].outputs
    assert cli(["import-masks", str(davis / "osvos"), "--split", "val", "--data-root",
                str(data), "--output-root", str(out)]) == 0
    assert _run(instance, resources, "video_partitions").success
    result = _run(instance, resources, "tube_json")
    assert result.success
    assert _metadata(result, "tube_json")["val_mask_sources"] == {
        f"import:{(davis / 'osvos').resolve()}": len(seqs)}
    tubes = load_tube_json(out / "val" / "tubes_val.json")
    assert validate_tube_json(tubes) == []
    for video in tubes["videos"]:
        frames = sorted((davis / "JPEGImages" / video["name"]).iterdir())
        assert video["file_names"] == [f"{video['name']}/{f.name}" for f in frames]
        pngs = sorted((davis / "osvos" / video["name"]).glob("*.png"))
        expected = np.stack([np.asarray(Image.open(p)) for p in pngs])
        assert expected.max() > 0
        assert np.array_equal(decode_video_id_maps(tubes, video["id"]), expected)


def test_import_help_explains_layout_modes_and_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["import-masks", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needed in ("SRC/<video_id>/<frame stem>.png", "I;16", "--scores", "example:",
                   "mask_<frame stem>.png"):
        assert needed in text


# ---------------------------------------------------------------------------------------------
# imported masks are data: no predictor run replaces them unless asked by name
# ---------------------------------------------------------------------------------------------
def _import_one_of_two(tmp_path, instance, resources_for):
    """Videos a and b registered; a's masks imported with the CLI (3 tracks), b has none."""
    data, src = tmp_path / "data", tmp_path / "osvos"
    for vid in ("a", "b"):
        make_frames(data, vid, 4)
    write_source(src, "a", [f"{t:05d}" for t in range(4)], blob_maps(4, ids=(1, 2, 3)))
    resources = resources_for(data)
    out = resources["paths"].outputs
    assert cli(["import-masks", str(src), "--split", "val", "--data-root", str(data),
                "--output-root", str(out)]) == 0
    assert _run(instance, resources, "video_partitions").success
    return resources, out / "val" / "masks" / "a"


def _mask_run(instance, assets, resources, keys, config=None):
    return materialize(
        assets, selection=["mask_pngs"], instance=instance, resources=resources,
        run_config={"ops": {"mask_pngs": {"config": config}}} if config else None,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        raise_on_error=False)


def test_predictor_runs_keep_imported_masks_unless_asked_by_name(tmp_path, instance,
                                                                 resources_for, monkeypatch):
    from assets.masks import stamp_predictor_version
    from resources import PredictorResource
    from video_files import tree_bytes

    resources, imported = _import_one_of_two(tmp_path, instance, resources_for)
    before = tree_bytes(imported)
    keys = instance.get_dynamic_partitions("videos")
    # every partition at once, as the UI's "Materialize all" backfill runs it
    result = _mask_run(instance, _assets(), resources, keys)
    assert result.success
    assert tree_bytes(imported) == before
    by_key = {m.partition: m for m in result.asset_materializations_for_node("mask_pngs")}
    assert by_key["val__a"].metadata["predictor"].value == "import"
    assert "overwrite_imported" in by_key["val__a"].metadata["kept_imported"].value
    assert by_key["val__a"].metadata["tracks"].value == 3
    assert "preview" in by_key["val__a"].metadata
    assert by_key["val__b"].metadata["predictor"].value != "import"
    assert by_key["val__a"].tags["wsovvis/mask_source"] == "mixed"

    # a predictor change (new code version): every video is stale, and rerunning the stale
    # ones keeps the imported masks and records them at the new version
    changed = PredictorResource(max_tracks=3)
    assets = stamp_predictor_version(_assets(), changed)
    resolver = get_stale_status_resolver(instance, assets)
    assert resolver.get_status(AssetKey("mask_pngs"), "val__a") == StaleStatus.STALE

    def no_model(settings):
        raise AssertionError("a run that only keeps imported masks built a model")

    import wsovvis_dagster.gpu.session as run_session

    with monkeypatch.context() as patched:  # nothing to predict: no model, no GPU lease
        patched.setattr(run_session, "build_predictor", no_model)
        rerun = _mask_run(instance, assets, {**resources, "predictor": changed}, ["val__a"])
    assert rerun.success and tree_bytes(imported) == before
    (mat,) = rerun.asset_materializations_for_node("mask_pngs")
    assert mat.tags["wsovvis/mask_source"] == "import"
    resolver = get_stale_status_resolver(instance, assets)
    assert resolver.get_status(AssetKey("mask_pngs"), "val__a") == StaleStatus.FRESH

    # asked by name: replaced by predictor output
    assert _mask_run(instance, _assets(), resources, ["val__a"],
                     config={"overwrite_imported": True}).success
    assert not (imported / SOURCE_FILE).exists()


def test_backfill_missing_leaves_imported_videos_out(tmp_path, instance, resources_for,
                                                     monkeypatch, capsys):
    import runpy

    resources, _ = _import_one_of_two(tmp_path, instance, resources_for)
    monkeypatch.setenv("WSOVVIS_DATA_ROOT", resources["paths"].data_root)
    monkeypatch.setenv("WSOVVIS_OUTPUT_ROOT", resources["paths"].output_root)
    monkeypatch.setenv("WSOVVIS_UI_PORT", "3917")
    backfill = runpy.run_path(str(REPO / "scripts" / "backfill.py"), run_name="backfill")

    def queued_batch() -> list:
        """The mask runs of the newest `backfill.py` call (no daemon: they stay QUEUED)."""
        runs = instance.get_runs()
        return [r for r in runs if r.tags.get(BATCH_TAG) == runs[0].tags[BATCH_TAG]]

    assert backfill["main"](["--missing"]) == 0
    assert "127.0.0.1:3917/runs" in capsys.readouterr().out
    (run,) = queued_batch()
    assert (run.tags[ASSET_PARTITION_RANGE_START_TAG],
            run.tags[ASSET_PARTITION_RANGE_END_TAG]) == ("val__b", "val__b")
    instance.add_dynamic_partitions("videos", ["val__../../etc"])  # registered by hand
    assert backfill["main"](["--missing"]) == 0
    assert backfill["main"](["--overwrite-imported"]) == 0
    latest = queued_batch()
    assert latest and all(
        r.run_config["ops"] == {"mask_pngs": {"config": {"overwrite_imported": True}}}
        and r.asset_selection == {AssetKey("mask_pngs")} for r in latest)


@pytest.mark.parametrize("damage", ["truncated", "not_png"])
def test_a_corrupt_source_png_is_named_with_import_advice(tmp_path, capsys, damage):
    data, out, src = tmp_path / "data", tmp_path / "out", tmp_path / "src"
    stems = [f.stem for f in make_frames(data, "v", 3)]
    folder = write_source(src, "v", stems, blob_maps(3))
    bad = folder / "00001.png"
    body = bad.read_bytes()
    bad.write_bytes(body[: len(body) // 2] if damage == "truncated" else b"GIF89a nonsense")
    assert cli(["import-masks", str(src), "--split", "val", "--data-root", str(data),
                "--output-root", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read mask {bad}" in err  # the source file, not the destination
    assert "export it again" in err and "re-run mask_pngs" not in err
    assert not (out / "val" / "masks" / "v").exists()
