"""`mask_pngs` runs against bad input and crashes: corrupt or odd frames fail only their
partition, >255 tracks, unsafe keys, SIGKILL mid-video, the same partition twice at once, and
a full disk (real Dagster runs: in-process `materialize`, or the `dagster` CLI in a subprocess
where a run has to be killed or raced).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey
from PIL import Image

from dagster_runs import failure_text, materialized, metadata, run
from video_files import FRAMES_PER_VIDEO, corruptions, make_video, resized, tree_bytes
from wsovvis_dagster import atomic
from wsovvis_dagster.masks.png_io import list_mask_files, load_id_map
from wsovvis_dagster.masks.segment import segment_video
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.predictors import PredictorOutput
from wsovvis_dagster.ytvis.split import build_split_tubes
from wsovvis_dagster.ytvis.tubes import decode_video_id_maps, load_tube_json

REPO = Path(__file__).resolve().parents[2]


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
    import wsovvis_dagster.gpu.session as run_session

    monkeypatch.setattr(run_session, "build_predictor", lambda settings: _GridPredictor())
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


_HOOK_MODULE = '''
"""Test hook: the real definitions, but the mask writer pauses after N frames."""
import os
import time
from pathlib import Path

import wsovvis_dagster.masks.png_io as masks_io

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

    import wsovvis_dagster.masks.png_io as masks_io
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
