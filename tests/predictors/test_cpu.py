"""The embedded CPU predictor on real video (../shared DAVIS) and on the synthetic set, and the
DAVIS scoring behind `wsovvis quality --davis` (both folder layouts, split files, union J).

Floors are regression guards set below the measured values (docs/predictor.md), not timings.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from wsovvis_dagster.errors import FrameError
from wsovvis_dagster.evaluation.quality import (
    davis_j,
    davis_j_union,
    davis_quality,
    read_sequence_list,
    synthetic_quality,
    synthetic_report,
    tracks_per_object,
)
from wsovvis_dagster.predictors import PredictorOutput
from wsovvis_dagster.predictors.cpu import CpuVideoPredictor


@pytest.mark.shared
def test_real_davis_sequences_stay_above_their_floor(shared_data):
    # measured: benchmarks/results/predictor_shared.json (docs/predictor.md)
    davis = shared_data / "davis"
    quality = davis_quality(CpuVideoPredictor(), davis, instances=davis / "osvos")
    assert set(quality) == {"horsejump-high", "scooter-black"}
    for r in quality.values():
        assert r["J"] > 0.55 and r["J_best"] > 0.55, quality
        # the GT foreground in one track, each OSVOS object in one track for its whole life
        assert r["tracks"] == 1 and r["objects"] == 2 and r["tracks_per_object"] <= 1.3, quality


def test_synthetic_quality_stays_above_its_floor(tmp_path):
    from wsovvis_dagster.video.synthetic import generate_dataset

    # the demo's shape (16 frames of 160x120), fewer videos; measured (train / val) st-IoU
    # 0.90 / 0.88, tracks per object 1.21 / 1.08, class-agnostic AP 0.85 / 0.80 (cpu-3: 0.89 /
    # 0.82, 1.21 / 1.25, 0.84 / 0.69)
    generate_dataset(tmp_path, seed=0, videos_per_split={"train": 4, "val": 4})
    report = synthetic_report(CpuVideoPredictor(), tmp_path)
    for r in report.values():
        assert r["st_iou"] > 0.8 and r["tracks_per_object"] <= 1.3 and r["AP"] > 0.7, report
    assert synthetic_quality(CpuVideoPredictor(), tmp_path, ("val",)) == {
        "val": report["val"]["st_iou"]}


def _hidden_for_a_while(num=24, hidden=range(9, 15)):
    """A textured square moving right over a textured background, hidden (occluded) in the
    frames `hidden`: `(frames, its GT masks)`."""
    rng = np.random.default_rng(0)
    background = np.kron((rng.random((30, 40, 3)) * 120 + 40).astype(np.uint8),
                         np.ones((4, 4, 1), np.uint8))
    square = np.kron((rng.random((8, 8, 3)) * 255).astype(np.uint8), np.ones((4, 4, 1),
                                                                          np.uint8))
    frames = np.repeat(background[None], num, axis=0)
    gt = np.zeros(frames.shape[:3], bool)
    for t in range(num):
        if t not in hidden:
            x = 30 + 3 * t
            frames[t, 44:76, x:x + 32] = square
            gt[t, 44:76, x:x + 32] = True
    return frames, gt


def test_an_object_lost_for_a_while_keeps_one_track():
    frames, gt = _hidden_for_a_while()
    # hidden for 6 frames, longer than the tracker's gap tolerance: without linking the
    # object comes back under new ids
    unlinked = CpuVideoPredictor(link_radius=0).predict(frames)
    assert tracks_per_object(gt[None], unlinked.id_maps) > [1]
    linked = CpuVideoPredictor().predict(frames)
    assert tracks_per_object(gt[None], linked.id_maps) == [1]
    assert davis_j(gt, linked.id_maps) > davis_j(gt, unlinked.id_maps)


def test_tracks_per_object_counts_the_ids_an_object_was_split_into():
    objects = np.zeros((2, 3, 4, 4), bool)
    objects[0, :, :2] = True  # object 0: the top half, in all 3 frames
    objects[1, 1:, 2:] = True  # object 1: the bottom half, from frame 1
    ids = np.zeros((3, 4, 4), np.uint16)
    ids[:, :2] = 1
    ids[1, :2] = 2  # object 0 is id 2 in frame 1
    ids[1:, 2:] = 3
    ids[2, 3, 0] = 1  # a stray pixel of id 1 on object 1: id 3 still covers most of it
    assert tracks_per_object(objects, ids) == [2, 1]
    ids[1, :2] = 1
    assert tracks_per_object(objects, ids) == [1, 1]
    assert tracks_per_object(objects, np.zeros_like(ids)) == [0, 0]  # never found


def test_union_j_counts_every_id_and_best_j_one_track():
    gt = np.zeros((2, 4, 4), bool)
    gt[:, :2, :] = True  # top half is the object
    ids = np.zeros((2, 4, 4), np.uint16)
    ids[:, 0, :] = 1  # track 1: the first row
    ids[:, 1, :] = 2  # track 2: the second row
    assert davis_j_union(gt, ids) == 1.0
    assert davis_j(gt, ids) == 0.5
    ids[1] = 0  # nothing predicted in frame 1: IoU 0 there
    assert davis_j_union(gt, ids) == 0.5
    empty = np.zeros_like(gt)  # no object and no prediction: that frame counts as 1
    assert davis_j_union(empty, np.zeros_like(ids)) == 1.0


class _Oracle:
    """Predicts a fixed answer (the GT, or nothing) to check the scoring itself."""

    name, version = "oracle", "0"

    def __init__(self, answer):
        self.answer = answer

    def predict(self, frames):
        ids = self.answer(frames).astype(np.uint16)
        return PredictorOutput(ids, {1: 1.0} if ids.any() else {})


def _davis_tree(root, sub, shared_data, seqs=("horsejump-high", "scooter-black"), frames=3):
    """A DAVIS tree under `root` with `sub` ("480p" or "") holding the first frames of `seqs`."""
    for seq in seqs:
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            dst = root / kind / sub / seq
            dst.mkdir(parents=True)
            src = sorted((shared_data / "davis" / kind / seq).glob(f"*.{ext}"))[:frames]
            for f in src:
                shutil.copy(f, dst / f.name)


@pytest.mark.shared
@pytest.mark.parametrize("sub", ["480p", ""])
def test_both_davis_layouts_and_split_files(tmp_path, shared_data, sub):
    root = tmp_path / "DAVIS"
    _davis_tree(root, sub, shared_data)
    split = tmp_path / "train.txt"  # the DAVIS-2016 ImageSets form: one frame pair per line
    split.write_text("".join(f"/JPEGImages/480p/scooter-black/{i:05d}.jpg "
                             f"/Annotations/480p/scooter-black/{i:05d}.png\n" for i in range(3)))
    assert read_sequence_list(split) == ["scooter-black"]

    def gt_of(frames):  # the oracle looks the GT up by the frames it is given
        for seq in ("horsejump-high", "scooter-black"):
            first = np.asarray(Image.open(sorted((root / "JPEGImages" / sub / seq).iterdir())[0]))
            if np.array_equal(first, frames[0]):
                files = sorted((root / "Annotations" / sub / seq).iterdir())
                return np.stack([np.asarray(Image.open(f)) > 0 for f in files])
        raise AssertionError("unknown frames")

    perfect = davis_quality(_Oracle(gt_of), root, read_sequence_list(split))
    assert list(perfect) == ["scooter-black"]
    assert perfect["scooter-black"]["J"] == perfect["scooter-black"]["J_best"] == 1.0
    assert perfect["scooter-black"]["frames"] == 3
    nothing = davis_quality(_Oracle(lambda f: np.zeros(f.shape[:3], bool)), root)
    assert set(nothing) == {"horsejump-high", "scooter-black"}
    assert all(r["J"] == 0.0 for r in nothing.values())


@pytest.mark.shared
def test_bad_davis_input_names_the_path(tmp_path, shared_data):
    with pytest.raises(FrameError, match="not a DAVIS folder"):
        davis_quality(CpuVideoPredictor(), tmp_path)
    _davis_tree(tmp_path, "480p", shared_data, seqs=("scooter-black",))
    with pytest.raises(FrameError, match="bear"):
        davis_quality(CpuVideoPredictor(), tmp_path, ["bear"])
    (tmp_path / "Annotations" / "480p" / "scooter-black" / "00001.png").unlink()
    with pytest.raises(FrameError, match="00001.png"):
        davis_quality(CpuVideoPredictor(), tmp_path)
    with pytest.raises(FrameError, match="split file not found"):
        read_sequence_list(tmp_path / "missing.txt")


@pytest.mark.shared
def test_quality_cli_prints_per_sequence_and_mean(tmp_path, shared_data, capsys):
    from wsovvis_dagster.cli import main

    _davis_tree(tmp_path, "480p", shared_data, frames=4)
    split = tmp_path / "seqs.txt"
    split.write_text("horsejump-high\n")
    assert main(["quality", "--davis", str(tmp_path), "--split-file", str(split)]) == 0
    out = capsys.readouterr().out
    assert "horsejump-high" in out and "scooter-black" not in out
    assert "mean (1 sequences)" in out and "J_best" in out and "tracks" in out

    # --instances adds tracks per object and AP; --json writes every figure and the command
    result = tmp_path / "quality.json"
    assert main(["quality", "--davis", str(tmp_path), "--instances",
                 str(shared_data / "davis" / "osvos"), "--json", str(result)]) == 0
    out = capsys.readouterr().out
    assert "tracks/object" in out and "mean (2 sequences)" in out
    doc = json.loads(result.read_text())
    assert doc["benchmark"] == "predictor_quality" and "--instances" in doc["context"]["command"]
    davis = doc["results"]["davis"]
    assert davis["mean"]["frames"] == 8 and davis["mean"]["objects"] == 4
    assert doc["results"]["predictor"]["version"] == CpuVideoPredictor.version
    assert davis["mean"]["J"] == pytest.approx(
        np.mean([r["J"] for r in davis["sequences"].values()]))


def test_new_predictor_version_marks_masks_stale(monkeypatch):
    from resources import PredictorResource
    from wsovvis_dagster.predictors import cpu

    before = PredictorResource().output_fingerprint()
    monkeypatch.setattr(cpu, "VERSION", cpu.VERSION + "-next")
    assert PredictorResource().output_fingerprint() != before
