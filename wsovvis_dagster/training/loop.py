"""The distributed training loop: DDP over videos, atomic checkpoints, resume after a kill.

One process per rank (torchrun). Ranks share the model through `DistributedDataParallel`
(NCCL on GPUs, gloo on CPU); a `DistributedSampler` gives each rank its share of videos per
epoch. Rank 0 writes `last.pt` atomically every `checkpoint_every` epochs; a rerun with the
same settings loads it and continues with the next epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from wsovvis_dagster.atomic import atomic_file
from wsovvis_dagster.training.data import VideoSample
from wsovvis_dagster.training.model import TubeTextModel, mil_loss


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def backend(self) -> str:
        return "nccl" if self.device.startswith("cuda") else "gloo"

    def barrier(self) -> None:
        if self.distributed:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over ranks."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.distributed:
            dist.all_reduce(t)
        return t.tolist()


def init_distributed(*, rank: int, world_size: int, local_rank: int, use_cuda: bool) -> DistContext:
    """Join the process group torchrun set up (env:// rendezvous); a no-op for one process."""
    device = f"cuda:{local_rank}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    ctx = DistContext(rank, world_size, local_rank, device)
    if ctx.distributed and not dist.is_initialized():
        dist.init_process_group(ctx.backend, rank=rank, world_size=world_size)
    return ctx


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_videos: int
    lr: float
    weight_decay: float
    pooling: str
    lse_r: float
    seed: int
    checkpoint_path: Path
    checkpoint_every: int = 1
    resume: bool = True
    fingerprint: str = ""  # what must match for a checkpoint to be resumed


@dataclass
class TrainOutcome:
    losses: list[float] = field(default_factory=list)  # mean loss per epoch, resumed ones too
    resumed_from_epoch: int = 0
    epochs_done: int = 0


def _feature_stats(samples: list[VideoSample]) -> tuple[torch.Tensor, torch.Tensor]:
    feats = np.concatenate([s.features for s in samples])
    return torch.as_tensor(feats.mean(axis=0)), torch.as_tensor(feats.std(axis=0))


def save_checkpoint(path: Path, state: dict) -> None:
    """`torch.save` to a temp file renamed over `path`: a kill leaves the previous one intact."""
    with atomic_file(Path(path), "wb") as fh:
        torch.save(state, fh)


def load_checkpoint(path: Path, fingerprint: str, log: logging.Logger) -> dict | None:
    """The checkpoint at `path` if it exists and was written with the same settings."""
    if not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        log.warning(f"checkpoint {path} is from other settings; starting from scratch")
        return None
    return state


def train(
    model: TubeTextModel,
    samples: list[VideoSample],
    base_text: np.ndarray,
    settings: TrainSettings,
    ctx: DistContext,
    *,
    log: logging.Logger,
    on_epoch: Callable[[int, dict[str, float]], None] = lambda epoch, stats: None,
) -> TrainOutcome:
    """Fit `model` on `samples` (every rank holds all; the sampler splits them).

    `base_text` `(B, D)`: the base categories' embeddings, columns of the samples' tags.
    `on_epoch(epoch, stats)` runs on every rank after each epoch with rank-averaged stats.
    """
    torch.manual_seed(settings.seed)
    outcome = TrainOutcome()
    model.set_feature_stats(*_feature_stats(samples))
    model.to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    state = load_checkpoint(settings.checkpoint_path, settings.fingerprint, log) \
        if settings.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        outcome.losses = list(state["losses"])
        outcome.resumed_from_epoch = outcome.epochs_done = int(state["epoch"])
        log.info(f"resumed from {settings.checkpoint_path} at epoch {state['epoch']}")
    ddp = DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.backend == "nccl"
                                  else None) if ctx.distributed else model
    sampler = DistributedSampler(samples, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=settings.seed, drop_last=False)
    text = torch.as_tensor(base_text, device=ctx.device)
    for epoch in range(outcome.epochs_done, settings.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        order = list(sampler)
        total, count = 0.0, 0
        for start in range(0, len(order), settings.batch_videos):
            batch = [samples[i] for i in order[start:start + settings.batch_videos]]
            feats = torch.as_tensor(np.concatenate([s.features for s in batch]), device=ctx.device)
            logits = ddp(feats, text)
            losses, offset = [], 0
            for s in batch:
                n = len(s.features)
                tags = torch.as_tensor(s.tags, device=ctx.device)
                losses.append(mil_loss(logits[offset:offset + n], tags,
                                       pooling=settings.pooling, lse_r=settings.lse_r))
                offset += n
            loss = torch.stack(losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        loss_sum, n_videos = ctx.sum([total, float(count)])
        mean_loss = loss_sum / max(n_videos, 1.0)
        outcome.losses.append(mean_loss)
        outcome.epochs_done = epoch + 1
        on_epoch(epoch + 1, {"loss": mean_loss, "temperature": model.temperature})
        last = epoch + 1 == settings.epochs
        if ctx.is_main and ((epoch + 1) % settings.checkpoint_every == 0 or last):
            save_checkpoint(settings.checkpoint_path, {
                "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "losses": outcome.losses,
                "fingerprint": settings.fingerprint,
            })
    model.eval()
    return outcome
