"""One training run end to end: features -> MIL training -> results on val -> AP vs baselines.

Runs in every rank of a torchrun job (or alone, world size 1). Feature extraction is split
over ranks (each fills the cache for its share of videos), training is DDP, and rank 0 alone
scores the evaluation split, writes its results JSON and evaluates it next to the random and
oracle baselines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from wsovvis_dagster.atomic import write_json_atomic
from wsovvis_dagster.paths import resolve_inside
from wsovvis_dagster.training.data import (
    annotations_by_video,
    build_samples,
    gt_video_ids,
    video_name,
    video_tags,
)
from wsovvis_dagster.training.features import (
    FrameFeatureExtractor,
    build_extractor,
    cached_video_features,
)
from wsovvis_dagster.training.inference import (
    evaluate,
    model_results,
    oracle_results,
    random_results,
)
from wsovvis_dagster.training.loop import DistContext, TrainSettings, train
from wsovvis_dagster.training.model import TubeTextModel
from wsovvis_dagster.training.schema import TrainingJob
from wsovvis_dagster.training.text import build_bank
from wsovvis_dagster.ytvis.format import load_gt
from wsovvis_dagster.ytvis.tubes import load_tube_json


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def fingerprint(job: TrainingJob, extractor_id: str, bank_source: str, tubes_digest: str) -> str:
    """What a checkpoint must share with this run to be resumed (everything but epochs)."""
    keys = ("text_dim", "hidden_dim", "dropout", "init_temperature", "batch_videos", "lr",
            "weight_decay", "pooling", "lse_r", "seed")
    payload = {k: getattr(job, k) for k in keys}
    payload.update(extractor=extractor_id, bank=bank_source, tubes=tubes_digest)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def split_features(extractor: FrameFeatureExtractor, job: TrainingJob, split: str,
                   tube_data: dict, ctx: DistContext, log: logging.Logger) -> dict[str, np.ndarray]:
    """Tube features of every video of `split`, name -> `(N, F) float32`.

    Each rank first computes (or finds cached) its share of videos; after a barrier every
    rank reads all of them from the cache.
    """
    frames_root = resolve_inside(job.data_root, split, "JPEGImages")
    by_video = annotations_by_video(tube_data)
    cache = job.feature_cache / split
    videos = tube_data["videos"]
    hits = 0
    started = time.perf_counter()
    mine = videos[ctx.rank::ctx.world_size]
    for i, video in enumerate(mine):
        _, hit = cached_video_features(extractor, frames_root=frames_root, video=video,
                         annotations=by_video.get(video["id"], []), cache_dir=cache)
        hits += hit
        if (i + 1) % 50 == 0:
            log.info(f"{split}: features of {i + 1}/{len(mine)} videos")
    log.info(f"{split}: features of {len(mine)} videos ({hits} cached) in "
             f"{time.perf_counter() - started:.1f} s")
    ctx.barrier()
    return {
        video_name(v): cached_video_features(extractor, frames_root=frames_root, video=v,
                               annotations=by_video.get(v["id"], []), cache_dir=cache)[0]
        for v in videos
    }


def fit_and_evaluate(
    job: TrainingJob, ctx: DistContext, *, log: logging.Logger,
    log_scalar: Callable[[str, float, int], None] = lambda name, value, step: None,
) -> dict | None:
    """Train on `job.train_split`, evaluate on `job.eval_split`; rank 0 returns the summary."""
    started = time.perf_counter()
    torch.manual_seed(job.seed)  # the model's initial weights (DDP then copies rank 0's)
    train_tubes_path = job.train_tubes
    train_tubes = load_tube_json(train_tubes_path)
    eval_tubes = load_tube_json(job.eval_tubes)
    train_gt, eval_gt = load_gt(job.train_gt), load_gt(job.eval_gt)
    bank = build_bank(job.text_bank, eval_gt["categories"], dim=job.text_dim,
                      names_path=job.text_bank_names or None)
    extractor = build_extractor(job.extractor, weights=job.extractor_weights or None,
                                device=ctx.device)
    train_feats = split_features(extractor, job, job.train_split, train_tubes, ctx, log)
    eval_feats = split_features(extractor, job, job.eval_split, eval_tubes, ctx, log)
    samples, skipped = build_samples(train_feats, video_tags(train_gt, bank.base_ids),
                                     bank.base_ids)
    log.info(f"{len(samples)} training videos, {sum(len(s.features) for s in samples)} tubes, "
             f"{len(bank.base_ids)} base / {int(bank.novel.sum())} novel categories; "
             f"skipped {skipped}")

    model = TubeTextModel(extractor.dim, bank.dim, hidden_dim=job.hidden_dim,
                          dropout=job.dropout, init_temperature=job.init_temperature)
    settings = TrainSettings(
        epochs=job.epochs, batch_videos=job.batch_videos, lr=job.lr,
        weight_decay=job.weight_decay, pooling=job.pooling, lse_r=job.lse_r, seed=job.seed,
        checkpoint_path=job.checkpoint_path, checkpoint_every=job.checkpoint_every,
        resume=job.resume,
        fingerprint=fingerprint(job, extractor.id, bank.source, _file_digest(train_tubes_path)),
    )

    def on_epoch(epoch: int, stats: dict[str, float]) -> None:
        if ctx.is_main:
            for name, value in stats.items():
                log_scalar(f"train.{name}", value, epoch)
            log.info(f"epoch {epoch}/{job.epochs}: loss {stats['loss']:.4f}, "
                     f"temperature {stats['temperature']:.4f}")

    outcome = train(model, samples, bank.base_embeddings, settings, ctx, log=log,
                    on_epoch=on_epoch)
    if not ctx.is_main:
        return None

    gt_ids = gt_video_ids(eval_gt)
    results = model_results(model, bank, eval_tubes, eval_feats, gt_ids, topk=job.topk,
                            background=job.inference_background)
    write_json_atomic(job.results_path, results)
    metrics = {
        "model": evaluate(eval_gt, results),
        "random": evaluate(eval_gt, random_results(eval_tubes, gt_ids, bank.category_ids,
                                                   topk=job.topk, seed=job.seed)),
        "oracle": evaluate(eval_gt, oracle_results(eval_tubes, eval_gt, gt_ids)),
    }
    for who, values in metrics.items():
        log.info(f"{job.eval_split} {who}: " + ", ".join(
            f"{k} {100 * v:.1f}" for k, v in values.items() if np.isfinite(v)))
    return {
        "final_loss": outcome.losses[-1] if outcome.losses else None,
        "losses": outcome.losses,
        "epochs": job.epochs,
        "epochs_done": outcome.epochs_done,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "temperature": model.temperature,
        "checkpoint": str(job.checkpoint_path),
        "results": str(job.results_path),
        "metrics": metrics,
        "train_videos": len(samples),
        "train_tubes": int(sum(len(s.features) for s in samples)),
        "eval_videos": len(eval_tubes["videos"]),
        "eval_tubes": len(eval_tubes["annotations"]),
        "skipped": skipped,
        "extractor": extractor.id,
        "text_bank": bank.source,
        "world_size": ctx.world_size,
        "device": ctx.device,
        "wall_time_s": time.perf_counter() - started,
        "job": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(job).items()},
    }
