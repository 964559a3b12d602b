"""The embedded CPU predictor on real video (../shared DAVIS) and on the synthetic set, and the
DAVIS scoring behind `wsovvis quality --davis` (both folder layouts, split files, union J).

Floors are regression guards set below the measured values (docs/predictor.md), not timings.
"""

import shutil

import numpy as np
import pytest
from PIL import Image

from wsovvis_dagster.errors import FrameError
from wsovvis_dagster.predictors import PredictorOutput
from wsovvis_dagster.predictors.cpu import CpuVideoPredictor
from wsovvis_dagster.quality import (
    davis_j,
    davis_j_union,
    davis_quality,
    read_sequence_list,
    synthetic_quality,
)


@pytest.mark.shared
def test_real_davis_sequences_stay_above_their_floor(shared_data):
    # measured J 0.661 / 0.710 (union = best track on both): see docs/predictor.md
    quality = davis_quality(CpuVideoPredictor(), shared_data / "davis")
    assert set(quality) == {"horsejump-high", "scooter-black"}
    for r in quality.values():
        assert r["J"] > 0.55 and r["J_best"] > 0.5, quality


def test_synthetic_quality_stays_above_its_floor(tmp_path):
    from wsovvis_dagster.synthetic import generate_dataset

    # the demo's shape (16 frames of 160x120), fewer videos; measured 0.89 (train) / 0.82 (val)
    generate_dataset(tmp_path, seed=0, videos_per_split={"train": 4, "val": 4})
    quality = synthetic_quality(CpuVideoPredictor(), tmp_path)
    assert quality["train"] > 0.7 and quality["val"] > 0.7, quality


def test_output_format_ids_ordered_and_contiguous(synthetic_root):
    from wsovvis_dagster.frames import read_video
    from wsovvis_dagster.paths import VideoRef

    frames = read_video(synthetic_root, VideoRef("train", "train0000")).images
    out = CpuVideoPredictor(max_tracks=3).predict(frames)
    assert out.id_maps.shape == frames.shape[:3] and out.id_maps.dtype == np.uint16
    ids = sorted(set(np.unique(out.id_maps).tolist()) - {0})
    assert ids and ids == list(range(1, len(ids) + 1)) and len(ids) <= 3
    assert sorted(out.scores) == ids
    scores = [out.scores[i] for i in ids]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


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
    assert "mean (1 sequences)" in out and "J_best" in out


def test_new_predictor_version_marks_masks_stale(monkeypatch):
    from resources import PredictorResource
    from wsovvis_dagster.predictors import cpu

    before = PredictorResource().output_fingerprint()
    monkeypatch.setattr(cpu, "VERSION", cpu.VERSION + "-next")
    assert PredictorResource().output_fingerprint() != before
