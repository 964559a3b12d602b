"""The pipelined per-video loop (`masks.segment.segment_videos`) that `mask_pngs` runs, on CPU.

Ordering of prefetch and writes, bytes identical to a plain sequential loop, failure isolation
for a broken frame in a prefetched video, and runs-per-GPU lease slots.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from wsovvis_dagster.errors import FrameError
from wsovvis_dagster.gpu.leases import GpuSlotError, acquire_gpu_slot, slot_holders
from wsovvis_dagster.masks.png_io import mask_png_name, save_id_map
from wsovvis_dagster.masks.segment import segment_videos
from wsovvis_dagster.paths import VideoRef, masks_dir
from wsovvis_dagster.predictors.cpu import CpuVideoPredictor
from wsovvis_dagster.video.frames import read_video
from wsovvis_dagster.video.synthetic import generate_dataset

VIDEOS = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[VideoRef]]:
    root = tmp_path_factory.mktemp("loop") / "data"
    generate_dataset(root, seed=7, num_frames=6, videos_per_split={"val": VIDEOS})
    refs = [VideoRef("val", f"val{i:04d}") for i in range(VIDEOS)]
    return root, refs


def tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class RecordingPredictor:
    """CPU predictor that records which thread called it and when, and can be slowed down."""

    def __init__(self, delay: float = 0.0) -> None:
        self.inner = CpuVideoPredictor(max_tracks=10)
        self.name, self.version = self.inner.name, self.inner.version
        self.delay, self.threads, self.calls = delay, set(), []

    def predict(self, frames):
        self.threads.add(threading.get_ident())
        self.calls.append(time.perf_counter())
        time.sleep(self.delay)
        return self.inner.predict(frames)


def sequential_reference(data: Path, out: Path, refs: list[VideoRef]) -> None:
    """What a plain loop writes: decode, predict, then one PNG after another."""
    model = CpuVideoPredictor(max_tracks=10)
    for ref in refs:
        frames = read_video(data, ref)
        output = model.predict(frames.images)
        dest = masks_dir(out, ref)
        dest.mkdir(parents=True)
        for stem, id_map in zip(frames.stems, output.id_maps, strict=True):
            save_id_map(dest / mask_png_name(stem), id_map,
                        sixteen_bit=max(output.scores, default=0) > 255)


def test_pngs_byte_identical_to_sequential_path_and_yielded_in_order(dataset, tmp_path):
    data, refs = dataset
    sequential_reference(data, tmp_path / "seq", refs)
    predictor = RecordingPredictor()
    outcomes = list(segment_videos(data, tmp_path / "loop", refs, predictor, workers=3))
    assert [o.ref for o in outcomes] == refs  # input order, whatever finished first
    assert all(o.error is None for o in outcomes)
    assert len(predictor.threads) == 1  # the model always runs on the caller's thread
    assert predictor.threads == {threading.get_ident()}
    for ref, o in zip(refs, outcomes, strict=True):
        got = tree(masks_dir(tmp_path / "loop", ref))
        want = tree(masks_dir(tmp_path / "seq", ref))
        assert got.pop("tracks.json")
        assert got == want  # every PNG byte for byte
        assert o.result.frames == 6 and o.result.seconds > 0
        assert o.result.predict_seconds > 0 and o.result.peak_gpu_gib is None


def test_next_video_is_decoded_while_this_one_is_predicted(dataset, tmp_path, monkeypatch):
    """Video i+1's frames are read during video i's predict call, not after it."""
    import wsovvis_dagster.masks.segment as mask_loop

    data, refs = dataset
    reads: list[tuple[str, float]] = []
    real = mask_loop.ChunkedVideoReader.read

    def spying_read(reader, start, end):
        out = real(reader, start, end)
        reads.append((reader.files[0].parent.name, time.perf_counter()))
        return out

    monkeypatch.setattr(mask_loop.ChunkedVideoReader, "read", spying_read)
    predictor = RecordingPredictor(delay=0.3)
    list(segment_videos(data, tmp_path / "out", refs[:3], predictor, workers=2))
    done = dict(reads)
    # video 1 was fully decoded before video 0's predict call returned (0.3 s hold)
    assert done["val0001"] < predictor.calls[0] + 0.3
    assert done["val0002"] < predictor.calls[1] + 0.3


def test_written_folder_is_complete_when_its_outcome_is_yielded(dataset, tmp_path):
    data, refs = dataset
    seen = []
    for o in segment_videos(data, tmp_path / "out", refs, RecordingPredictor(), workers=2):
        folder = masks_dir(tmp_path / "out", o.ref)
        seen.append(len(list(folder.glob("mask_*.png"))))
        # no hidden temp folder of this video is left once it is reported
        assert not [p for p in folder.parent.iterdir()
                    if p.name.startswith(".tmp-") and o.ref.video_id in p.name]
    assert seen == [6] * VIDEOS


def test_broken_frame_in_prefetched_video_fails_that_video_naming_the_file(dataset, tmp_path):
    data, refs = dataset
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    bad = copy / "val" / "JPEGImages" / "val0002" / "00003.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    outcomes = list(segment_videos(copy, tmp_path / "out", refs, RecordingPredictor(),
                                   workers=3))
    assert [o.ref for o in outcomes] == refs
    failed = [o for o in outcomes if o.error is not None]
    assert [o.ref.video_id for o in failed] == ["val0002"]
    assert isinstance(failed[0].error, FrameError)
    assert str(bad) in str(failed[0].error)
    assert not masks_dir(tmp_path / "out", refs[2]).exists()
    for o in outcomes:  # the others, before and after it, are written
        if o.error is None:
            assert len(list(masks_dir(tmp_path / "out", o.ref).glob("mask_*.png"))) == 6


def test_parallel_decode_names_the_first_bad_frame_like_the_sequential_read(dataset, tmp_path):
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    data, refs = dataset
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    folder = copy / "val" / "JPEGImages" / "val0000"
    for name in ("00002.jpg", "00004.jpg"):
        (folder / name).write_bytes(b"not a jpeg")
    with pytest.raises(FrameError) as seq:
        read_video(copy, refs[0])
    with ThreadPoolExecutor(4) as pool, pytest.raises(FrameError) as par:
        read_video(copy, refs[0], pool=pool)
    assert "00002.jpg" in str(par.value) and str(par.value) == str(seq.value)
    with ThreadPoolExecutor(4) as pool:
        frames = read_video(copy, refs[0], skip_bad_frames=True, pool=pool)
    assert frames.skipped == ("00002.jpg", "00004.jpg")
    assert frames.stems == ("00000", "00001", "00003", "00005")
    assert np.array_equal(frames.images, read_video(copy, refs[0], skip_bad_frames=True).images)


# -- runs per GPU --------------------------------------------------------------------------------
def test_runs_per_gpu_slots_are_exclusive_and_spread_over_devices(tmp_path):
    leases = [acquire_gpu_slot("0,1", run_id=f"r{i}", slot_dir=tmp_path, runs_per_gpu=2)
              for i in range(4)]
    # slot 0 of each device first, then slot 1: no two runs share a GPU before they must
    assert [(lease.index, lease.slot) for lease in leases] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert len({lease.path for lease in leases}) == 4
    holders = slot_holders("0,1", tmp_path, runs_per_gpu=2)
    assert {k: h["run_id"] for k, h in holders.items()} == {
        (0, 0): "r0", (1, 0): "r1", (0, 1): "r2", (1, 1): "r3"}
    with pytest.raises(GpuSlotError, match="no free GPU"):
        acquire_gpu_slot("0,1", run_id="extra", slot_dir=tmp_path, runs_per_gpu=2,
                         timeout_s=0.2, poll_s=0.05)
    leases[2].release()  # (0, 1) frees: the next run gets exactly that slot
    again = acquire_gpu_slot("0,1", run_id="next", slot_dir=tmp_path, runs_per_gpu=2)
    assert (again.index, again.slot) == (0, 1)
    for lease in [*leases, again]:
        lease.release()
    assert all(h is None for h in slot_holders("0,1", tmp_path, runs_per_gpu=2).values())


def test_one_run_per_gpu_keeps_the_lease_file_names(tmp_path):
    lease = acquire_gpu_slot("3", run_id="r", slot_dir=tmp_path)
    assert lease.path.name == "gpu3.lock" and lease.slot == 0
    lease.release()
    with pytest.raises(GpuSlotError, match="runs_per_gpu"):
        acquire_gpu_slot("3", run_id="r", slot_dir=tmp_path, runs_per_gpu=0)


def test_settings_from_env(monkeypatch):
    import definitions

    monkeypatch.setenv("WSOVVIS_RUNS_PER_GPU", "3")
    monkeypatch.setenv("WSOVVIS_ALLOW_RANDOM_WEIGHTS", "1")
    monkeypatch.setenv("WSOVVIS_PRECISION", "bf16")
    res = definitions.loaded_predictor()  # what build_resources' per-key defaults hold
    assert res.runs_per_gpu == 3 and res.allow_random_weights and res.precision == "bf16"
    assert res.backend == "cpu"  # the testing flag never switches the backend
    monkeypatch.delenv("WSOVVIS_ALLOW_RANDOM_WEIGHTS")
    assert not definitions.loaded_predictor().allow_random_weights


def test_job_execute_builds_the_model_once(dataset, instance, subprocess_env, tmp_path):
    """`dagster job execute` re-initialises resources after RUN_SUCCESS (to load outputs):
    the predictor must not be built (nor a GPU leased) a second time there."""
    import subprocess
    import sys

    from definitions import REPO

    data, refs = dataset
    instance.add_dynamic_partitions("videos", [refs[0].partition_key])
    env = dict(subprocess_env, WSOVVIS_DATA_ROOT=str(data),
               WSOVVIS_OUTPUT_ROOT=str(tmp_path / "out"), WSOVVIS_PREDICTOR="cpu",
               WSOVVIS_GPUS="")
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "definitions", "-j",
         "mask_pngs_job", "--tags", f'{{"dagster/partition": "{refs[0].partition_key}"}}'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "RUN_SUCCESS" in log
    assert log.count("building predictor backend=cpu") == 1
    assert "run already finished: predictor not built" in log.split("RUN_SUCCESS", 1)[1]


# -- long videos stream through the predictor in chunks ----------------------------------------
class ChunkedFake:
    """A predictor that asks the loop for small chunks and gives each chunk `tracks` new
    rectangles (ids by descending score) plus one that follows frame brightness."""

    def __init__(self, chunk=(5, 2), tracks=3):
        self.stream_chunk, self.tracks = chunk, tracks
        self.name, self.version, self.calls = "chunked-fake", "1", []

    def predict(self, frames):
        from wsovvis_dagster.predictors import PredictorOutput

        self.calls.append(len(frames))
        t, h, w = frames.shape[:3]
        ids = np.zeros((t, h, w), np.uint16)
        ids[:, : h // 4, : w // 4] = 1  # a track every chunk sees: linked across chunks
        salt = int(frames[0, 0, 0, 0])
        for k in range(2, self.tracks + 2):
            y, x = (salt * 7 + k * 3) % (h - 2), (salt * 5 + k * 11) % (w - 2)
            ids[:, y:y + 2, x:x + 2] = np.where(ids[:, y:y + 2, x:x + 2] == 0, k, 0)
        present = sorted(set(np.unique(ids).tolist()) - {0})
        lut = np.zeros(self.tracks + 2, np.uint16)
        lut[present] = np.arange(1, len(present) + 1)
        return PredictorOutput(lut[ids], {i: 1.0 - i / 1000 for i in range(1, len(present) + 1)})


def _decoded(folder: Path) -> tuple[np.ndarray, dict]:
    import json

    from wsovvis_dagster.masks.png_io import list_mask_files, load_id_map

    maps = np.stack([load_id_map(f) for f in list_mask_files(folder)])
    return maps, json.loads((folder / "tracks.json").read_text())["scores"]


@pytest.mark.parametrize("tracks", [3, 300])  # 300: ids pass 255, PNGs rewritten as 16-bit
def test_a_long_video_streams_in_chunks_with_the_masks_of_the_whole_video_path(
        dataset, tmp_path, tracks):
    import shutil

    from wsovvis_dagster.predictors.chunking import predict_chunked

    data, refs = dataset
    copy = tmp_path / "data"
    folder = copy / "val" / "JPEGImages" / "long"
    folder.mkdir(parents=True)
    source = sorted((data / "val" / "JPEGImages" / refs[0].video_id).iterdir())
    for t in range(23):  # 23 frames in chunks of 5 sharing 2: 7 chunks
        shutil.copy(source[t % len(source)], folder / f"{t:05d}.jpg")
    ref = VideoRef("val", "long")
    fake = ChunkedFake(tracks=tracks)
    (outcome,) = segment_videos(copy, tmp_path / "out", [ref], fake, workers=2)
    assert outcome.error is None and outcome.result.frames == 23
    assert fake.calls == [5] * 7  # the model saw chunks, never the whole video
    whole = predict_chunked(ChunkedFake(tracks=tracks).predict, read_video(copy, ref).images,
                            chunk_size=5, overlap=2)
    maps, scores = _decoded(masks_dir(tmp_path / "out", ref))
    assert np.array_equal(maps, whole.id_maps)
    assert {int(k): v for k, v in scores.items()} == pytest.approx(whole.scores)
    assert (maps.dtype == np.uint16) == (max(whole.scores) > 255)
    assert outcome.result.tracks == len(whole.scores) and outcome.result.preview_jpeg


def test_the_next_chunk_is_predicted_while_the_last_one_is_stitched(dataset, tmp_path,
                                                                   monkeypatch):
    """Stitching a chunk never holds the predictor's thread (on a GPU it would idle): the
    stitch of chunk k waits until chunk k+1 reaches the predictor, which deadlocks (and fails
    here after 20 s) if the loop stitched before predicting again. Masks are unchanged."""
    import shutil

    import wsovvis_dagster.masks.segment as mask_loop

    data, refs = dataset
    copy = tmp_path / "data"
    folder = copy / "val" / "JPEGImages" / "long"
    folder.mkdir(parents=True)
    source = sorted((data / "val" / "JPEGImages" / refs[0].video_id).iterdir())
    for t in range(11):  # chunks of 5 sharing 2: 3 chunks and 2 stitches
        shutil.copy(source[t % len(source)], folder / f"{t:05d}.jpg")
    ref = VideoRef("val", "long")
    fake = ChunkedFake()
    predicted = [threading.Event() for _ in range(3)]
    real_predict, real_add = fake.predict, mask_loop.ChunkStitcher.add
    stitched_after: list[bool] = []

    def predict(frames):
        out = real_predict(frames)
        predicted[len(fake.calls) - 1].set()
        return out

    def add(stitcher, output, shared):
        k = len(stitched_after)
        stitched_after.append(k + 1 < 3 and predicted[k + 1].wait(20))
        return real_add(stitcher, output, shared)

    fake.predict = predict
    monkeypatch.setattr(mask_loop.ChunkStitcher, "add", add)
    (outcome,) = segment_videos(copy, tmp_path / "out", [ref], fake, workers=2)
    assert outcome.error is None
    assert stitched_after == [True, True, False]  # chunks 0 and 1 waited for the next predict
    monkeypatch.setattr(mask_loop.ChunkStitcher, "add", real_add)
    from wsovvis_dagster.predictors.chunking import predict_chunked

    whole = predict_chunked(ChunkedFake().predict, read_video(copy, ref).images,
                            chunk_size=5, overlap=2)
    assert np.array_equal(_decoded(masks_dir(tmp_path / "out", ref))[0], whole.id_maps)


def test_a_launching_predictor_gets_the_next_chunk_before_this_one_is_collected(
        dataset, tmp_path):
    """A predictor with `launch` (VideoCutLER: work queued on the GPU) is handed chunk k+1
    before anything waits for chunk k's result, so the device is never idle between chunks;
    results are collected in order and the masks are those of `predict`."""
    import shutil

    from wsovvis_dagster.predictors.chunking import predict_chunked

    data, refs = dataset
    copy = tmp_path / "data"
    for name, length in (("long", 11), ("short", 4)):  # 3 chunks of 5 sharing 2; one chunk
        folder = copy / "val" / "JPEGImages" / name
        folder.mkdir(parents=True)
        source = sorted((data / "val" / "JPEGImages" / refs[0].video_id).iterdir())
        for t in range(length):
            shutil.copy(source[(t + length) % len(source)], folder / f"{t:05d}.jpg")
    videos = [VideoRef("val", "long"), VideoRef("val", "short")]

    class Launching(ChunkedFake):
        def __init__(self):
            super().__init__()
            self.launched = [threading.Event() for _ in range(4)]
            self.collected_after_next_launch: list[bool] = []

        def launch(self, frames):
            k = len(self.calls)
            out = self.predict(frames)
            self.launched[k].set()

            def collect():
                nxt = self.launched[k + 1] if k + 1 < len(self.launched) else None
                self.collected_after_next_launch.append(nxt is None or nxt.wait(20))
                return out
            return collect

    fake = Launching()
    outcomes = list(segment_videos(copy, tmp_path / "out", videos, fake, workers=2))
    assert all(o.error is None for o in outcomes)
    assert fake.collected_after_next_launch == [True, True, True, True]
    for ref in videos:
        whole = predict_chunked(ChunkedFake().predict, read_video(copy, ref).images,
                                chunk_size=5, overlap=2)
        assert np.array_equal(_decoded(masks_dir(tmp_path / "out", ref))[0], whole.id_maps)


def test_skipped_frames_across_chunks_are_left_out_and_named(dataset, tmp_path):
    import shutil

    data, refs = dataset
    copy = tmp_path / "data"
    folder = copy / "val" / "JPEGImages" / "long"
    folder.mkdir(parents=True)
    source = sorted((data / "val" / "JPEGImages" / refs[0].video_id).iterdir())
    for t in range(12):
        shutil.copy(source[t % len(source)], folder / f"{t:05d}.jpg")
    for t in (3, 4, 9):  # 3 and 4 sit in the frames two chunks share
        (folder / f"{t:05d}.jpg").write_bytes(b"broken")
    ref = VideoRef("val", "long")
    (outcome,) = segment_videos(copy, tmp_path / "out", [ref], ChunkedFake(), workers=2,
                                skip_bad_frames=True)
    assert outcome.error is None
    assert outcome.result.skipped_frames == ("00003.jpg", "00004.jpg", "00009.jpg")
    names = sorted(p.name for p in masks_dir(tmp_path / "out", ref).glob("mask_*.png"))
    assert names == [f"mask_{t:05d}.png" for t in range(12) if t not in (3, 4, 9)]
    (failed,) = segment_videos(copy, tmp_path / "out2", [ref], ChunkedFake(), workers=2)
    assert isinstance(failed.error, FrameError) and "00003.jpg" in str(failed.error)
    assert not masks_dir(tmp_path / "out2", ref).exists()


_RSS_CHILD = """
import resource, sys
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[3])
from test_segment import ChunkedFake
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.masks.segment import segment_videos
root = Path(sys.argv[1])
folder = root / "val" / "JPEGImages" / "v"
folder.mkdir(parents=True)
rng = np.random.default_rng(0)
frame = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
for t in range(int(sys.argv[2])):
    frame[0, 0, 0] = t % 251
    Image.fromarray(frame).save(folder / f"{t:05d}.png", compress_level=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
(o,) = segment_videos(root, root / "out", [VideoRef("val", "v")], ChunkedFake((128, 16)),
                      workers=2)
assert o.error is None, o.error
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_video_length(tmp_path):
    """300 vs 3,000 frames (320x240): the whole-video path held ~0.3 MB more per frame
    (frames + id maps, ~800 MB more for the longer video); the stream holds about a chunk."""
    import subprocess
    import sys

    def growth_mb(frames: int) -> float:
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(tmp_path / str(frames)),
                              str(frames), str(Path(__file__).parent)],
                             capture_output=True, text=True, check=True).stdout
        return int(out.strip().splitlines()[-1]) / 1024

    short, long = growth_mb(300), growth_mb(3000)
    whole_path_extra = 2700 * (240 * 320 * (3 + 2)) / 2**20  # frames + uint16 maps held
    assert long - short < 0.1 * whole_path_extra, (short, long)
