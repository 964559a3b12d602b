"""The reference trainer as a library: text bank, features + cache, MIL loss, the launcher's
failure report, the novel-AP regression floor, and resuming a killed torchrun job."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wsovvis_dagster.training.errors import MissingWeightsError, TextBankError
from wsovvis_dagster.training.features import (
    HandcraftedExtractor,
    build_extractor,
    cached_video_features,
)
from wsovvis_dagster.training.launch import (
    LaunchError,
    failure_message,
    kill_tree,
    plan_launch,
)
from wsovvis_dagster.training.model import TubeTextModel, mil_loss
from wsovvis_dagster.training.text import attribute_bank, load_bank, word_vector
from wsovvis_dagster.video.synthetic import categories

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "wsovvis_sacred.yaml"


def _category_dicts():
    return [{"id": c.id, "name": c.name, "partition": c.partition, "colour": c.colour,
             "shape": c.shape} for c in categories()]


def test_attribute_bank_reaches_novel_categories_from_seen_words():
    cats = _category_dicts()
    bank = attribute_bank(cats, dim=64)
    assert bank.embeddings.shape == (18, 64)
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1.0, rtol=1e-5)
    base_words = {w for c in cats if c["partition"] < 2 for w in (c["colour"], c["shape"])}
    for c, row in zip(cats, bank.embeddings, strict=True):
        if c["partition"] >= 2:
            assert {c["colour"], c["shape"]} <= base_words  # an unseen pair of seen words
            expected = word_vector(c["colour"], 64) + word_vector(c["shape"], 64)
            np.testing.assert_allclose(row, expected / np.linalg.norm(expected), rtol=1e-5)
    assert len(bank.base_ids) == 12 and int(bank.novel.sum()) == 6
    # same words, same vectors: the bank is fixed, not a function of the training seed
    np.testing.assert_array_equal(attribute_bank(cats, dim=64).embeddings, bank.embeddings)


def test_npy_bank_is_checked_against_the_category_list(tmp_path):
    cats = _category_dicts()
    table = np.random.default_rng(0).standard_normal((len(cats), 8)).astype(np.float32)
    np.save(tmp_path / "bank.npy", table[:5])
    with pytest.raises(TextBankError, match="bank.npy has 5 rows but the ground truth has 18"):
        load_bank(tmp_path / "bank.npy", cats)
    # rows in another order, with the names they follow: realigned by name
    np.save(tmp_path / "bank.npy", table[::-1])
    (tmp_path / "names.json").write_text(json.dumps([c["name"] for c in cats][::-1]))
    bank = load_bank(tmp_path / "bank.npy", cats, names_path=tmp_path / "names.json")
    np.testing.assert_allclose(bank.embeddings[0], table[0] / np.linalg.norm(table[0]), rtol=1e-5)
    with pytest.raises(TextBankError, match="missing.npy not found"):
        load_bank(tmp_path / "missing.npy", cats)


def test_open_clip_without_weights_fails_naming_the_path_and_the_download():
    with pytest.raises(MissingWeightsError) as err:
        build_extractor("open_clip:ViT-B-16", weights="/nowhere/open_clip_pytorch_model.bin")
    message = str(err.value)
    assert "/nowhere/open_clip_pytorch_model.bin" in message
    assert "download" in message and "ViT-B-16" in message


def test_features_are_cached_per_video_and_extractor(synthetic_root, tmp_path, monkeypatch):
    gt = json.loads((synthetic_root / "annotations" / "train_instances.json").read_text())
    video = gt["videos"][0]
    anns = [a for a in gt["annotations"] if a["video_id"] == video["id"]]
    frames_root = synthetic_root / "train" / "JPEGImages"
    extractor = HandcraftedExtractor()
    feats, hit = cached_video_features(extractor, frames_root=frames_root, video=video,
                                       annotations=anns, cache_dir=tmp_path)
    assert not hit and feats.shape == (len(anns), extractor.dim) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and (np.abs(feats).sum(axis=1) > 0).all()

    def no_frames(*args, **kwargs):
        raise AssertionError("a cached video must not be recomputed")

    monkeypatch.setattr("wsovvis_dagster.training.features.video_tube_features", no_frames)
    again, hit = cached_video_features(extractor, frames_root=frames_root, video=video,
                                       annotations=anns, cache_dir=tmp_path)
    assert hit
    np.testing.assert_array_equal(again, feats)
    # other tubes: another key, so it is recomputed
    with pytest.raises(AssertionError, match="must not be recomputed"):
        cached_video_features(extractor, frames_root=frames_root, video=video,
                              annotations=anns[:1], cache_dir=tmp_path)


def test_mil_loss_rewards_a_tube_that_explains_the_tag():
    tags = torch.tensor([1.0, 0.0, 0.0])
    # two tubes x (3 base categories + background)
    explained = torch.tensor([[8.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 8.0]])
    unexplained = torch.tensor([[0.0, 8.0, 0.0, 0.0], [0.0, 0.0, 0.0, 8.0]])
    for pooling in ("max", "lse"):
        good = mil_loss(explained, tags, pooling=pooling)
        bad = mil_loss(unexplained, tags, pooling=pooling)
        assert good < 0.05 < bad
    # gradients reach the projection, the background and the temperature
    model = TubeTextModel(5, 4, hidden_dim=8)
    mil_loss(model(torch.randn(3, 5), torch.randn(3, 4)), tags).backward()
    assert model.background.grad is not None and model.logit_scale.grad is not None


def test_launch_plan_and_failure_report(tmp_path):
    assert plan_launch(2, "auto", gpus=0) == plan_launch(2, "cpu", gpus=4)
    assert plan_launch(2, "auto", gpus=0).backend == "gloo"
    assert plan_launch(0, "auto", gpus=4).nproc == 4
    assert plan_launch(2, "auto", gpus=4).backend == "nccl"
    with pytest.raises(LaunchError, match="exceeds the 2 GPUs"):
        plan_launch(3, "cuda", gpus=2)
    errors = tmp_path / "errors"
    errors.mkdir()
    (errors / "rank0.json").write_text(json.dumps(
        {"rank": 0, "time": 2.0, "traceback": "RuntimeError: peer closed"}))
    (errors / "rank1.json").write_text(json.dumps({"rank": 1, "time": 1.0, "traceback": ""}))
    # rank 1 exited through Sacred, which printed its traceback: taken from rank 1's lines
    rank_lines = {1: ["epoch 1", "Traceback (most recent calls WITHOUT Sacred internals):",
                      '  File "fit.py", line 3', "FrameError: cannot read frame x.jpg"],
                  0: ["Traceback (most recent call last):", "RuntimeError: peer closed"]}
    message = failure_message(1, errors, ["log line"], rank_lines)
    assert "rank 1 failed first; ranks [0] failed after it" in message
    assert "FrameError: cannot read frame x.jpg" in message and "epoch 1" not in message
    assert "peer closed" not in message
    assert "before any rank reported" in failure_message(1, tmp_path / "none", ["log line"])


@pytest.fixture(scope="module")
def synthetic_24_12(tmp_path_factory):
    """24 train / 12 val synthetic videos (12 frames) with CPU-predictor tubes."""
    from wsovvis_dagster.training.testing import synthetic_with_tubes

    return synthetic_with_tubes(tmp_path_factory.mktemp("synthetic_24_12"), train=24, val=12,
                                frames=12, seed=0)


# Measured on the 24/12 set (benchmarks/training.py --train 24 --val 12 --frames 12, 8 seeds):
# model APn 51 +- 16 (worst seed 24), random APn 12 +- 8. Averaged over 3 seeds the worst triple
# of those 8 has APn 35; the floor below leaves room under that.
NOVEL_AP_FLOOR = 0.25
NOVEL_AP_MARGIN = 0.12


@pytest.mark.slow
def test_novel_ap_beats_random_baseline(synthetic_24_12, tmp_path):
    import logging

    from wsovvis_dagster.training.experiment import DEFAULT_CONFIG, job_from_config
    from wsovvis_dagster.training.fit import fit_and_evaluate
    from wsovvis_dagster.training.loop import DistContext

    data_root, output_root = synthetic_24_12
    torch.set_num_threads(1)
    model_apn, random_apn, oracle_apn = [], [], []
    for seed in (0, 1, 2):
        job = job_from_config({**DEFAULT_CONFIG, "data_root": str(data_root),
                               "output_root": str(output_root), "work_dir": str(tmp_path),
                               "seed": seed, "resume": False, "checkpoint_every": 1000})
        summary = fit_and_evaluate(job, DistContext(), log=logging.getLogger("test"))
        model_apn.append(summary["metrics"]["model"]["APn"])
        random_apn.append(summary["metrics"]["random"]["APn"])
        oracle_apn.append(summary["metrics"]["oracle"]["APn"])
    results = json.loads(Path(summary["results"]).read_text())
    assert {"video_id", "category_id", "score", "segmentations"} <= set(results[0])
    assert np.mean(model_apn) >= NOVEL_AP_FLOOR, model_apn
    assert np.mean(model_apn) >= np.mean(random_apn) + NOVEL_AP_MARGIN, (model_apn, random_apn)
    assert np.mean(oracle_apn) >= np.mean(model_apn)


def _torchrun(config: Path, *, nproc: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", "-m", "wsovvis_dagster.training", "with", str(config)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.slow
def test_killed_job_resumes_from_its_last_checkpoint(synthetic_root, tmp_path):
    """SIGKILL the whole torchrun job once a checkpoint exists; the rerun continues from it."""
    import yaml

    from wsovvis_dagster.training.testing import write_tubes

    output_root = tmp_path / "outputs"
    write_tubes(synthetic_root, output_root)
    epochs = 400
    config = yaml.safe_load(CONFIG.read_text()) | {
        "data_root": str(synthetic_root), "output_root": str(output_root),
        "runs_dir": str(tmp_path / "runs"), "epochs": epochs, "device": "cpu",
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    checkpoint = output_root / "training" / "checkpoints" / "last.pt"
    env = dict(os.environ, PYTHONWARNINGS="ignore")

    first = _torchrun(tmp_path / "config.yaml", nproc=2, env=env)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_tree(first.pid)  # SIGKILL torchrun and both ranks, as a crash would
    log = first.communicate()[0]
    assert checkpoint.exists(), log[-3000:]
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= killed_at < epochs, "the job finished before it could be killed"

    second = _torchrun(tmp_path / "config.yaml", nproc=2, env=env)
    log = second.communicate(timeout=300)[0]
    assert second.returncode == 0, log[-3000:]
    assert f"resumed from {checkpoint} at epoch {killed_at}" in log
    summary = json.loads((output_root / "training" / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == killed_at and summary["epochs_done"] == epochs
    run_dir = Path(summary["sacred"]["run_dir"])
    steps = json.loads((run_dir / "metrics.json").read_text())["train.loss"]["steps"]
    assert steps == list(range(killed_at + 1, epochs + 1))
    assert len(summary["losses"]) == epochs  # the resumed epochs' losses came with the checkpoint

