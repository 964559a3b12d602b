"""Issue 9: bad inputs, crashes and reruns lose nothing.

Each test is one row of the reliability matrix, driven by real files (real DAVIS frames from
../shared where present, else generated ones; corrupt JPEGs made by cutting real ones) and real
Dagster runs: in-process `materialize` against a temporary instance, or the `dagster` CLI in a
subprocess where a run has to be killed or raced.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, materialize
from PIL import Image

from wsovvis_dagster import atomic
from wsovvis_dagster.errors import (
    FrameError,
    MaskFormatError,
    OutputWriteError,
    ThirdPartyError,
    TubeFormatError,
    UnsafeNameError,
    WsovvisError,
)
from wsovvis_dagster.frames import load_frame, read_video, scan_videos
from wsovvis_dagster.masks_io import list_mask_files, load_id_map, write_mask_pngs
from wsovvis_dagster.paths import VideoRef, check_video_id
from wsovvis_dagster.pipeline import build_split_tubes, segment_video
from wsovvis_dagster.predictors import PredictorOutput
from wsovvis_dagster.ytvis.tubes import decode_video_id_maps, load_tube_json, video_tubes_from_masks

REPO = Path(__file__).resolve().parents[1]
DAVIS_SEQ = "horsejump-high"
FRAMES_PER_VIDEO = 3


# -- real input files ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_jpegs(tmp_path_factory) -> list[bytes]:
    """Bytes of real JPEG frames in order: DAVIS (854x480) if ../shared exists, else synthetic."""
    davis = REPO.parent / "shared" / "data" / "davis" / "JPEGImages" / DAVIS_SEQ
    if davis.is_dir():
        return [(davis / f"{i:05d}.jpg").read_bytes() for i in range(8)]
    from wsovvis_dagster.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("frames")
    generate_dataset(root, seed=3, num_frames=8, videos_per_split={"val": 1})
    return [p.read_bytes() for p in sorted((root / "val" / "JPEGImages" / "val0000").iterdir())]


def make_video(data_root: Path, split: str, video_id: str, frames: list[bytes],
               names: list[str] | None = None) -> Path:
    folder = data_root / split / "JPEGImages" / video_id
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:05d}.jpg" for i in range(len(frames))]
    for name, data in zip(names, frames, strict=True):
        (folder / name).write_bytes(data)
    return folder


def resized(jpeg: bytes, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("RGB").resize(size).save(out, "JPEG", quality=90)
    return out.getvalue()


def corruptions(jpeg: bytes) -> dict[str, bytes]:
    """Ways a real JPEG arrives broken: cut short, emptied, overwritten, not a JPEG at all."""
    sof = jpeg.find(b"\xff\xc0")
    bad_sof = bytearray(jpeg)
    bad_sof[sof + 5:sof + 9] = b"\x00\x00\x00\x00"  # height and width 0
    return {
        "truncated": jpeg[: len(jpeg) // 2],
        "header_only": jpeg[:600],
        "empty": b"",
        "zeroed_sof": bytes(bad_sof),
        "html_error_page": b"<html><body>404 Not Found</body></html>",
    }


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every visible file under `folder` (relative name -> bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


# -- Dagster helpers ----------------------------------------------------------------------------
def _assets():
    from definitions import defs

    return list(defs.assets)


def run(instance, resources, asset: str, *, partition: str | None = None,
        config: dict | None = None, tags: dict | None = None):
    run_config = {"ops": {asset: {"config": config}}} if config else None
    return materialize(_assets(), selection=[asset], instance=instance, resources=resources,
                       partition_key=partition, run_config=run_config, tags=tags,
                       raise_on_error=False)


def failure_text(result) -> str:
    """The step failure with its cause chain (where our typed error's message lives)."""
    events = result.get_step_failure_events()
    assert events, "expected the run to fail"
    return "\n".join(e.step_failure_data.error.to_string() for e in events)


def metadata(result, asset: str) -> dict:
    (mat,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mat.metadata.items()}


def materialized(instance, asset: str = "mask_pngs") -> set[str]:
    return set(instance.get_materialized_partitions(AssetKey(asset)))


# ===============================================================================================
# Row: truncated / corrupt JPEG in a video
# ===============================================================================================
def test_each_kind_of_corrupt_jpeg_raises_frame_error_naming_file(real_jpegs, tmp_path):
    for kind, data in corruptions(real_jpegs[0]).items():
        path = tmp_path / f"{kind}.jpg"
        path.write_bytes(data)
        with pytest.raises(FrameError) as err:
            load_frame(path)
        assert str(path) in str(err.value), kind
        assert "skip_bad_frames" in str(err.value)  # the fix is in the message


def test_corrupt_jpeg_fails_only_its_partition(real_jpegs, tmp_path, instance, resources_for):
    data = tmp_path / "data"
    frames = real_jpegs[:FRAMES_PER_VIDEO]
    make_video(data, "val", "good", frames)
    bad = make_video(data, "val", "broken", frames)
    (bad / "00001.jpg").write_bytes(corruptions(frames[1])["truncated"])
    resources = resources_for(data)
    assert run(instance, resources, "video_partitions").success
    out = tmp_path / "outputs" / "val" / "masks"

    assert run(instance, resources, "mask_pngs", partition="val__good").success
    before = tree_bytes(out / "good")
    result = run(instance, resources, "mask_pngs", partition="val__broken")
    assert not result.success
    text = failure_text(result)
    assert "FrameError" in text and str(bad / "00001.jpg") in text and "truncated" in text
    # the failure touched nothing else: no folder for the broken video, the good one unchanged
    assert not (out / "broken").exists()
    assert tree_bytes(out / "good") == before
    assert materialized(instance) == {"val__good"}

    # opting in: the bad frame is skipped, recorded, and no mask is written for it
    result = run(instance, resources, "mask_pngs", partition="val__broken",
                 config={"skip_bad_frames": True})
    assert result.success
    assert metadata(result, "mask_pngs")["skipped_frames"] == ["00001.jpg"]
    assert [p.name for p in list_mask_files(out / "broken")] == [
        "mask_00000.png", "mask_00002.png"]
    assert materialized(instance) == {"val__good", "val__broken"}


def test_corrupt_jpeg_in_multi_partition_run_spares_the_other_videos(
        real_jpegs, tmp_path, instance, resources_for):
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    data = tmp_path / "data"
    frames = real_jpegs[:2]
    for vid in ("a", "b_broken", "c"):
        make_video(data, "val", vid, frames)
    (data / "val" / "JPEGImages" / "b_broken" / "00001.jpg").write_bytes(b"")
    resources = resources_for(data)
    run(instance, resources, "video_partitions")
    result = run(instance, resources, "mask_pngs", tags={
        ASSET_PARTITION_RANGE_START_TAG: "val__a", ASSET_PARTITION_RANGE_END_TAG: "val__c"})
    assert not result.success and "b_broken" in failure_text(result)
    assert materialized(instance) == {"val__a", "val__c"}


# ===============================================================================================
# Row: empty video folder; folder with non-image files
# ===============================================================================================
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


# ===============================================================================================
# Row: frame names not contiguous / not starting at 0
# ===============================================================================================
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


def test_duplicate_frame_stems_are_refused(real_jpegs, tmp_path):
    """`00001.jpg` + `00001.png` would write one mask PNG twice: refused, not overwritten."""
    folder = make_video(tmp_path, "val", "dup", real_jpegs[:2])
    shutil.copy(folder / "00001.jpg", folder / "00001.png")
    report = scan_videos(tmp_path)
    assert not report.videos and "share the stem '00001'" in report.rejected["val/dup"]
    with pytest.raises(FrameError, match="share the stem"):
        read_video(tmp_path, VideoRef("val", "dup"))


# ===============================================================================================
# Row: frames of different sizes inside one video
# ===============================================================================================
def test_frames_of_different_sizes_fail_naming_the_odd_frame(real_jpegs, tmp_path, instance,
                                                             resources_for):
    data = tmp_path / "data"
    frames = list(real_jpegs[:FRAMES_PER_VIDEO])
    w, h = Image.open(io.BytesIO(frames[0])).size
    frames[2] = resized(frames[2], (w // 2, h // 2))
    folder = make_video(data, "val", "mixed", frames)
    resources = resources_for(data)
    run(instance, resources, "video_partitions")
    result = run(instance, resources, "mask_pngs", partition="val__mixed")
    assert not result.success
    text = failure_text(result)
    assert f"frame {folder / '00002.jpg'} is {w // 2}x{h // 2}" in text
    assert f"{w}x{h}" in text and "resize or remove the odd frame" in text
    assert not (tmp_path / "outputs" / "val" / "masks" / "mixed").exists()


def test_odd_first_frame_names_both_frames(real_jpegs, tmp_path):
    frames = list(real_jpegs[:2])
    frames[0] = resized(frames[0], (64, 48))
    make_video(tmp_path, "val", "v", frames)
    with pytest.raises(FrameError) as err:
        read_video(tmp_path, VideoRef("val", "v"))
    assert "00001.jpg" in str(err.value) and "00000.jpg is 64x48" in str(err.value)


class _ShapeShiftingPredictor:
    """A backend bug: returns masks at half resolution."""

    name, version = "half-res", "test"

    def predict(self, frames):
        t, h, w = frames.shape[:3]
        return PredictorOutput(np.ones((t, h // 2, w // 2), np.uint16), {1: 0.9})


def test_predictor_output_of_wrong_size_is_never_written(real_jpegs, tmp_path):
    make_video(tmp_path / "data", "val", "v", real_jpegs[:2])
    with pytest.raises(MaskFormatError, match="would not line up"):
        segment_video(tmp_path / "data", tmp_path / "out", VideoRef("val", "v"),
                      _ShapeShiftingPredictor())
    assert not (tmp_path / "out" / "val" / "masks" / "v").exists()


# ===============================================================================================
# Row: more than 255 instance ids
# ===============================================================================================
class _GridPredictor:
    """300 tracks: the frame cut into a 20 x 15 grid, one id per cell, shifting per frame."""

    name, version = "grid-300", "test"

    def predict(self, frames):
        t, h, w = frames.shape[:3]
        ys, xs = np.mgrid[0:h, 0:w]
        cell = (ys * 15 // h) * 20 + (xs * 20 // w)  # 0..299
        maps = np.stack([(cell + k) % 300 + 1 for k in range(t)]).astype(np.uint16)
        return PredictorOutput(maps, {i: 1.0 - i / 1000 for i in range(1, 301)})


def test_more_than_255_ids_are_written_16_bit_and_round_trip(real_jpegs, tmp_path, instance,
                                                             resources_for, monkeypatch):
    import resources.predictor as predictor_resource

    monkeypatch.setattr(predictor_resource, "build_predictor", lambda settings: _GridPredictor())
    data = tmp_path / "data"
    make_video(data, "val", "crowd", real_jpegs[:3])
    resources = resources_for(data)
    run(instance, resources, "video_partitions")
    result = run(instance, resources, "mask_pngs", partition="val__crowd")
    assert result.success and metadata(result, "mask_pngs")["tracks"] == 300
    assert run(instance, resources, "tube_json").success

    frames = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in real_jpegs[:3]])
    expected = _GridPredictor().predict(frames).id_maps
    folder = tmp_path / "outputs" / "val" / "masks" / "crowd"
    files = list_mask_files(folder)
    for f in files:
        with Image.open(f) as img:
            assert img.mode == "I;16"
    pngs = np.stack([load_id_map(f) for f in files])
    assert pngs.dtype == np.uint16 and np.array_equal(pngs, expected)
    tubes = load_tube_json(tmp_path / "outputs" / "val" / "tubes_val.json")
    assert len(tubes["annotations"]) == 300
    assert np.array_equal(decode_video_id_maps(tubes, tubes["videos"][0]["id"]), expected)


def test_ids_beyond_the_declared_bit_depth_are_refused_not_wrapped(tmp_path):
    maps = [np.full((4, 5), 300, np.uint16)]  # 300 would wrap to 44 in an 8-bit PNG
    with pytest.raises(MaskFormatError, match="do not fit 0..255"):
        write_mask_pngs(tmp_path / "m", ["00000"], maps, {1: 0.5})
    with pytest.raises(MaskFormatError, match="not integer"):
        write_mask_pngs(tmp_path / "m", ["00000"], [np.full((4, 5), 1.5)], {1: 0.5})
    assert not (tmp_path / "m").exists()


# ===============================================================================================
# Row: video ids with `..`, `/`, spaces, unicode, leading dash
# ===============================================================================================
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


def test_unsafe_partition_key_added_by_hand_is_refused(tmp_path, instance, resources_for):
    """A key registered behind the scanner's back cannot make mask_pngs read or write outside."""
    data = tmp_path / "data"
    (data / "val" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    key = "val__../../../victim"
    instance.add_dynamic_partitions("videos", [key])
    result = run(instance, resources_for(data), "mask_pngs", partition=key)
    assert not result.success
    text = failure_text(result)
    assert "UnsafeNameError" in text and "contains '..'" in text
    assert list((tmp_path / "victim").iterdir()) == []


@pytest.mark.parametrize("video_id", ["..", "a/b", "a b", "-x", "a\n", "\u202e", "x" * 201,
                                      "日" * 67, ".x", "a\x00b", "a,b"])
def test_check_video_id_refuses(video_id):
    with pytest.raises(UnsafeNameError, match="unsafe video id|empty video id"):
        check_video_id(video_id)


@pytest.mark.parametrize("video_id", ["日" * 66, "Ωmega_1", "0043f083b5", "a-b.c_d"])
def test_check_video_id_accepts(video_id):
    assert check_video_id(video_id) == video_id


def test_longest_unicode_id_fits_the_writers_temp_names(tmp_path):
    vid = "日" * 66  # 198 UTF-8 bytes: the longest accepted; temp names must still fit NAME_MAX
    maps = [np.zeros((2, 2), np.uint8)]
    write_mask_pngs(tmp_path / vid, ["0"], maps, {})
    assert [p.name for p in list_mask_files(tmp_path / vid)] == ["mask_0.png"]


# ===============================================================================================
# Row: video deleted after its partition was registered
# ===============================================================================================
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


def test_unmounted_data_root_is_not_taken_for_deleted_videos(real_jpegs, tmp_path):
    """No frames folder for the whole split: that is a mount problem, not N deletions."""
    make_video(tmp_path / "data", "val", "v", real_jpegs[:1])
    refs = [VideoRef("val", "v")]
    shutil.rmtree(tmp_path / "data" / "val")
    with pytest.raises(WsovvisError, match="have no mask PNGs yet"):
        build_split_tubes(tmp_path / "data", tmp_path / "out", "val", refs)


# ===============================================================================================
# Row: weights missing / wrong format; VNext not patched; op not built
# ===============================================================================================
HAS_VIDEOCUTLER = importlib.util.find_spec("wsovvis_dagster.predictors.videocutler") is not None


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _op_is_built() -> bool:
    try:
        from wsovvis_dagster.vnext.deform_attn import op_library
    except ImportError:
        return False
    return op_library() is not None


@pytest.mark.xfail(not HAS_VIDEOCUTLER, strict=False,
                   reason="wsovvis_dagster/predictors/videocutler.py has not landed yet")
@pytest.mark.parametrize("fault", [
    "weights_missing",
    "weights_not_a_checkpoint",
    "vnext_not_patched",
    pytest.param("op_not_built", marks=pytest.mark.thirdparty),
])
def test_videocutler_setup_faults_fail_before_gpu_work(fault, tmp_path):
    import wsovvis_dagster.predictors.videocutler  # noqa: F401  (xfail here until it lands)
    from wsovvis_dagster.predictors.factory import build_predictor
    from wsovvis_dagster.predictors.settings import PredictorSettings

    weights = tmp_path / "videocutler_m2f_rn50.pth"
    settings = dict(backend="videocutler", device="cuda:0", weights=str(weights),
                    vnext_root=str(REPO / "third_party" / "VNext"),
                    cutler_root=str(REPO / "third_party" / "CutLER"))
    if fault == "weights_missing":
        hints = (str(weights),)
    elif fault == "weights_not_a_checkpoint":
        weights.write_bytes(b"<html>403 Forbidden</html>")  # a failed download saved as .pth
        hints = (str(weights),)
    elif fault == "vnext_not_patched":
        for name in ("VNext", "CutLER"):  # checkouts that were never made / patched
            (tmp_path / name).mkdir()
        settings.update(vnext_root=str(tmp_path / "VNext"), cutler_root=str(tmp_path / "CutLER"),
                        weights="", allow_random_weights=True)
        hints = ("patched_vnext",)
    else:
        if _op_is_built():
            pytest.skip("the MultiScaleDeformableAttention op is built on this machine")
        settings.update(weights="", allow_random_weights=True)
        hints = ("deform_attn_ops", "patched_vnext")
    with pytest.raises(ThirdPartyError) as err:
        build_predictor(PredictorSettings(**settings))
    message = str(err.value)
    assert any(h in message for h in hints), message
    assert not _cuda_initialised(), "the error must come before any GPU work"


# ===============================================================================================
# Row: run killed with SIGKILL mid-video (subprocess + a pausing writer)
# ===============================================================================================
_HOOK_MODULE = '''
"""Test hook: the real definitions, but the mask writer pauses after N frames."""
import os
import time
from pathlib import Path

import wsovvis_dagster.masks_io as masks_io

_save = masks_io.save_id_map
_signals = Path(os.environ["WSOVVIS_TEST_SIGNALS"])


def _pausing_save(path, id_map, *, sixteen_bit):
    _save(path, id_map, sixteen_bit=sixteen_bit)
    # PNGs are encoded in parallel: every writer thread that sees enough files pauses
    if len(list(Path(path).parent.glob("mask_*.png"))) >= int(os.environ["WSOVVIS_TEST_PAUSE"]):
        (_signals / f"paused-{os.getpid()}").write_text(str(Path(path).parent))
        deadline = time.time() + 120
        while not (_signals / "release").exists() and time.time() < deadline:
            time.sleep(0.02)


masks_io.save_id_map = _pausing_save
from definitions import defs  # noqa: E402,F401
'''


_IN_PROCESS = "execution:\n  config:\n    in_process: {}\n"  # one process to kill, less CPU


def _start_paused_cli(key: str, env: dict, hooks: Path, pause_after: int) -> subprocess.Popen:
    env = dict(env, WSOVVIS_PREDICTOR="cpu", WSOVVIS_GPUS="", WSOVVIS_HOLD_SECONDS="0",
               WSOVVIS_TEST_SIGNALS=str(hooks / "signals"),
               WSOVVIS_TEST_PAUSE=str(pause_after),
               DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME="reliability_hook_defs",
               PYTHONPATH=os.pathsep.join([str(hooks), env["PYTHONPATH"]]))
    return subprocess.Popen(
        [sys.executable, "-m", "dagster", "asset", "materialize", "--select", "mask_pngs",
         "--partition", key, "-c", str(hooks / "in_process.yaml")],
        cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _paused(hooks: Path) -> list[Path]:
    """Temp folders the paused writers are in."""
    return [Path(p.read_text()) for p in (hooks / "signals").glob("paused-*")]


def _wait_for(predicate, procs, timeout=120.0):
    deadline = time.time() + timeout
    while not predicate():
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"CLI exited early ({p.returncode}):\n{p.stdout.read()[-3000:]}")
        if time.time() > deadline:
            pytest.fail("timed out waiting for the CLI run to reach the writer")
        time.sleep(0.05)


def _mask_events(instance) -> int:
    return len(instance.fetch_materializations(AssetKey("mask_pngs"), limit=100).records)


@pytest.fixture
def hooks(tmp_path) -> Path:
    hooks = tmp_path / "hooks"
    (hooks / "signals").mkdir(parents=True)
    (hooks / "reliability_hook_defs.py").write_text(_HOOK_MODULE)
    (hooks / "in_process.yaml").write_text(_IN_PROCESS)
    return hooks


def _reference(data: Path, root: Path, split: str, refs: list[VideoRef]) -> Path:
    """Uninterrupted output of the same library calls the assets make, in another root."""
    from wsovvis_dagster.predictors.cpu import CpuVideoPredictor

    for ref in refs:
        segment_video(data, root, ref, CpuVideoPredictor())
    return build_split_tubes(data, root, split, refs).path


def test_sigkill_mid_video_leaves_no_partial_folder_and_rerun_is_byte_identical(
        real_jpegs, tmp_path, hooks, instance, resources_for, subprocess_env):
    """Two CLI runs are SIGKILLed while writing: one rewriting a finished video, one fresh."""
    data = tmp_path / "data"
    for vid in ("done", "fresh"):
        make_video(data, "val", vid, real_jpegs[:FRAMES_PER_VIDEO])
    refs = [VideoRef("val", "done"), VideoRef("val", "fresh")]
    ref_json = _reference(data, tmp_path / "ref", "val", refs).read_bytes()
    ref_masks = {r.video_id: tree_bytes(tmp_path / "ref" / "val" / "masks" / r.video_id)
                 for r in refs}
    resources = resources_for(data)  # outputs under tmp_path/outputs, as the CLI's env says
    masks = tmp_path / "outputs" / "val" / "masks"
    run(instance, resources, "video_partitions")
    assert run(instance, resources, "mask_pngs", partition="val__done").success

    env = dict(subprocess_env, WSOVVIS_DATA_ROOT=str(data),
               WSOVVIS_OUTPUT_ROOT=str(tmp_path / "outputs"))
    procs = [_start_paused_cli(key, env, hooks, pause_after=2)
             for key in ("val__done", "val__fresh")]
    try:
        _wait_for(lambda: len(_paused(hooks)) == 2, procs)
        for temp in _paused(hooks):  # both are mid-video, >= two PNGs into hidden temp folders
            assert temp.parent == masks and temp.name.startswith(".tmp-")
            assert len(list(temp.glob("mask_*.png"))) >= 2
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
    finally:
        for p in procs:
            p.wait(timeout=60)
            p.stdout.close()
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2

    # nothing partial is visible: the finished video is intact, the fresh one absent
    assert sorted(p.name for p in masks.iterdir() if not p.name.startswith(".")) == ["done"]
    assert tree_bytes(masks / "done") == ref_masks["done"]
    assert _mask_events(instance) == 1  # the killed runs recorded no materialisation

    # the rerun writes exactly the bytes of an uninterrupted run
    assert run(instance, resources, "mask_pngs", partition="val__fresh").success
    assert run(instance, resources, "tube_json").success
    assert tree_bytes(masks / "fresh") == ref_masks["fresh"]
    assert (tmp_path / "outputs" / "val" / "tubes_val.json").read_bytes() == ref_json
    # the killed writers' hidden temp folders are ignored, and cleaned once stale
    leftovers = [p for p in masks.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 2
    assert set(atomic.remove_stale_temp_dirs(masks, min_age_s=0)) == set(leftovers)


# ===============================================================================================
# Row: the same partition launched twice concurrently
# ===============================================================================================
def test_same_partition_launched_twice_concurrently_gives_one_complete_folder(
        real_jpegs, tmp_path, hooks, instance, resources_for, subprocess_env):
    data = tmp_path / "data"
    make_video(data, "val", "v", real_jpegs[:FRAMES_PER_VIDEO])
    _reference(data, tmp_path / "ref", "val", [VideoRef("val", "v")])
    ref_masks = tree_bytes(tmp_path / "ref" / "val" / "masks" / "v")
    run(instance, resources_for(data), "video_partitions")

    env = dict(subprocess_env, WSOVVIS_DATA_ROOT=str(data),
               WSOVVIS_OUTPUT_ROOT=str(tmp_path / "outputs"))
    procs = [_start_paused_cli("val__v", env, hooks, pause_after=1) for _ in range(2)]
    try:
        # both runs are inside the same video at once, each in its own temp folder
        _wait_for(lambda: len(_paused(hooks)) == 2, procs)
        assert len(set(_paused(hooks))) == 2
        (hooks / "signals" / "release").write_text("")
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    masks = tmp_path / "outputs" / "val" / "masks"
    assert tree_bytes(masks / "v") == ref_masks
    assert [p.name for p in masks.iterdir() if p.name.startswith((".tmp-", ".old-"))] == []
    assert _mask_events(instance) == 2  # both runs are recorded; the later swap won


def test_concurrent_writers_of_one_folder_never_mix_and_never_vanish(tmp_path):
    """Two writers with different content interleave frame by frame; a reader polls meanwhile."""
    target = tmp_path / "masks" / "v"
    write_mask_pngs(target, ["0", "1", "2"], [np.zeros((4, 4), np.uint8)] * 3, {})
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    stop = threading.Event()
    seen: list[int] = []

    def writer(value: int):
        def maps():
            for _ in range(3):
                barrier.wait(timeout=30)  # lockstep: both temp folders are half full together
                yield np.full((4, 4), value, np.uint8)

        try:
            write_mask_pngs(target, ["0", "1", "2"], maps(), {value: 0.5})
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    def reader():
        while not stop.is_set():
            if not target.is_dir():  # the swap is one atomic exchange: never a gap
                errors.append(AssertionError(f"{target} vanished during a swap"))
            seen.append(1)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (7, 9)]
    poll = threading.Thread(target=reader if atomic._renameat2 else stop.wait)
    poll.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    poll.join(60)
    assert not errors, errors
    values = {int(np.unique(load_id_map(f))[0]) for f in list_mask_files(target)}
    assert values in ({7}, {9})  # one writer's folder, whole
    assert json.loads((target / "tracks.json").read_text())["scores"] == {str(values.pop()): 0.5}


# ===============================================================================================
# Row: disk full while writing
# ===============================================================================================
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs when we may mount one (root), else None (the caller fakes ENOSPC)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    can_mount = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount")
    if can_mount:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                              capture_output=True)
        can_mount = proc.returncode == 0
    yield mount if can_mount else None
    if can_mount:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> None:
    """Write until the file system is full."""
    chunk = b"\0" * 65536
    with open(disk / "filler", "wb") as fh:
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # small files fill the tail blocks too
    for i in range(10_000):
        try:
            (disk / f"filler{i}").write_bytes(b"\0" * 512)
        except OSError:
            break


class _FullDiskFile:
    """A file object whose writes fail with ENOSPC once a few bytes are in."""

    def __init__(self, fh):
        self._fh, self._budget = fh, 64

    def write(self, text):
        self._budget -= len(text)
        if self._budget < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._fh.write(text)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def _fake_full_disk(monkeypatch) -> None:
    import contextlib

    import wsovvis_dagster.masks_io as masks_io
    import wsovvis_dagster.ytvis.tubes as tubes

    def save_id_map(path, id_map, *, sixteen_bit):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    real_atomic_file = tubes.atomic_file

    @contextlib.contextmanager
    def atomic_file(path, mode="w"):
        with real_atomic_file(path, mode) as fh:
            yield _FullDiskFile(fh)

    monkeypatch.setattr(masks_io, "save_id_map", save_id_map)
    monkeypatch.setattr(tubes, "atomic_file", atomic_file)


def test_disk_full_fails_the_run_clearly_and_keeps_earlier_outputs(
        real_jpegs, tmp_path, instance, resources_for, small_disk, monkeypatch):
    from resources import DatasetPaths

    data = tmp_path / "data"
    make_video(data, "val", "v", real_jpegs[:2])
    out_root = small_disk / "outputs" if small_disk else tmp_path / "outputs"
    resources = dict(resources_for(data), paths=DatasetPaths(data_root=str(data),
                                                            output_root=str(out_root)))
    run(instance, resources, "video_partitions")
    assert run(instance, resources, "mask_pngs", partition="val__v").success
    assert run(instance, resources, "tube_json").success
    masks_before = tree_bytes(out_root / "val" / "masks" / "v")
    json_before = (out_root / "val" / "tubes_val.json").read_bytes()

    if small_disk:
        _fill(small_disk)
    else:  # no tmpfs: the writers fail the way a full disk makes them fail
        _fake_full_disk(monkeypatch)

    result = run(instance, resources, "mask_pngs", partition="val__v")
    assert not result.success
    text = failure_text(result)
    assert "OutputWriteError" in text and "No space left on device" in text
    assert str(out_root / "val" / "masks" / "v") in text and "Free disk space" in text
    result = run(instance, resources, "tube_json")
    assert not result.success and "No space left on device" in failure_text(result)

    assert tree_bytes(out_root / "val" / "masks" / "v") == masks_before
    assert (out_root / "val" / "tubes_val.json").read_bytes() == json_before
    hidden = [p.name for p in (out_root / "val").rglob(".*") if not p.name.endswith(".lock")]
    assert hidden == []  # no temp folder or temp file was left behind


# ===============================================================================================
# Row: malformed tube JSON / results JSON given to the evaluator
# ===============================================================================================
HAS_EVALUATION = importlib.util.find_spec("wsovvis_dagster.evaluation") is not None


def test_truncated_tube_json_is_a_typed_error_naming_the_file(tmp_path):
    path = tmp_path / "tubes_val.json"
    path.write_text('{"videos": [{"id": 1, "name": "v"')
    with pytest.raises(TubeFormatError) as err:
        load_tube_json(path)
    assert str(path) in str(err.value)


def _rle_4x4() -> dict:
    from pycocotools import mask as mask_utils

    m = np.zeros((4, 4), np.uint8)
    m[:2, :2] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _gt_doc() -> dict:
    return {
        "videos": [{"id": 1, "name": "v", "width": 4, "height": 4, "length": 2,
                    "file_names": ["v/0.jpg", "v/1.jpg"]}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                         "segmentations": [_rle_4x4(), None], "areas": [4, None],
                         "bboxes": [[0, 0, 2, 2], None]}],
    }


MALFORMED_RESULTS = {  # results JSON -> the JSON path the error must name
    "not_a_list": ({"video_id": 1}, "results must be a JSON list"),
    "segmentation_without_counts": (
        [{"video_id": 1, "category_id": 1, "score": 0.9,
          "segmentations": ["RLE", {"size": [4, 4]}]}],
        "[0].segmentations[1]"),
    "score_is_text": (
        [{"video_id": 1, "category_id": 1, "score": "high", "segmentations": [None, None]}],
        "[0].score"),
    "unknown_video": (
        [{"video_id": 7, "category_id": 1, "score": 0.5, "segmentations": [None, None]}],
        "[0].video_id"),
    "truncated": ('[{"video_id": 1, "score": 0.9, "segm', "not valid JSON"),
}


@pytest.mark.xfail(not HAS_EVALUATION, strict=False,
                   reason="wsovvis_dagster/evaluation.py has not landed yet")
@pytest.mark.parametrize("case", sorted(MALFORMED_RESULTS))
def test_evaluator_names_the_json_path_of_a_malformed_result(case, tmp_path):
    from wsovvis_dagster import evaluation

    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(_gt_doc()))
    gt = evaluation.load_gt(gt_path)
    doc, json_path = MALFORMED_RESULTS[case]
    if isinstance(doc, list):
        for r in doc:
            r["segmentations"] = [_rle_4x4() if s == "RLE" else s for s in r["segmentations"]]
    results_path = tmp_path / "results.json"
    results_path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(WsovvisError) as err:
        evaluation.evaluate_results(gt, evaluation.load_results(results_path, gt))
    assert str(results_path) in str(err.value)
    assert json_path in str(err.value)


@pytest.mark.xfail(not HAS_EVALUATION, strict=False,
                   reason="wsovvis_dagster/evaluation.py has not landed yet")
def test_evaluator_names_the_json_path_of_a_malformed_ground_truth(tmp_path):
    from wsovvis_dagster import evaluation

    gt = _gt_doc()
    gt["annotations"][0]["segmentations"] = [_rle_4x4()]  # 1 entry for a 2-frame video
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    with pytest.raises(WsovvisError) as err:
        evaluation.load_gt(gt_path)
    assert "annotations[0].segmentations" in str(err.value) and str(gt_path) in str(err.value)


# ===============================================================================================
# Library guarantees behind the rows (fast, no Dagster)
# ===============================================================================================
def test_stale_temp_leftovers_are_cleaned_but_live_ones_kept(tmp_path):
    old_dir = tmp_path / ".tmp-v-0123456789ab"
    old_dir.mkdir()
    old_file = tmp_path / ".tubes_val.json.abc123.tmp"
    old_file.write_text("{")
    live = tmp_path / ".tmp-w-0123456789ab"
    live.mkdir()
    past = time.time() - 7200
    os.utime(old_dir, (past, past))
    os.utime(old_file, (past, past))
    keep = tmp_path / "v"
    keep.mkdir()
    os.utime(keep, (past, past))
    assert set(atomic.remove_stale_temp_dirs(tmp_path)) == {old_dir, old_file}
    assert live.exists() and keep.exists()


def test_mask_folder_with_garbage_is_a_typed_error(tmp_path):
    folder = tmp_path / "v"
    write_mask_pngs(folder, ["0", "1"], [np.ones((3, 3), np.uint8)] * 2, {1: 0.9})
    (folder / "mask_1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(MaskFormatError, match="mask_1.png"):
        video_tubes_from_masks(folder, "v")
    (folder / "mask_1.png").unlink()
    (folder / "tracks.json").write_text('{"scores": [1, 2]}')
    with pytest.raises(MaskFormatError, match="tracks.json is malformed"):
        video_tubes_from_masks(folder, "v")


def test_write_mask_pngs_translates_write_errors(tmp_path, monkeypatch):
    import wsovvis_dagster.masks_io as masks_io

    target = tmp_path / "v"
    write_mask_pngs(target, ["0"], [np.ones((3, 3), np.uint8)], {1: 0.9})
    before = tree_bytes(target)
    calls = []

    def flaky(path, id_map, *, sixteen_bit):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        Image.fromarray(id_map.astype(np.uint8)).save(path)

    monkeypatch.setattr(masks_io, "save_id_map", flaky)
    with pytest.raises(OutputWriteError, match="No space left on device") as err:
        write_mask_pngs(target, ["0", "1"], [np.full((3, 3), 2, np.uint8)] * 2, {1: .5, 2: .5})
    assert isinstance(err.value, OSError)  # callers catching OSError keep working
    assert tree_bytes(target) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
