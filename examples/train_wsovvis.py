"""A small Sacred + torch.distributed trainer of the shape `trained_model` launches.

Like a researcher's `train_wsovvis.py`: a Sacred `Experiment`, config keys for the data, one
process per rank under torchrun (gloo on CPU, NCCL on GPUs), DDP, `_run.log_scalar`. What it
learns is deliberately tiny: from each tube's box in one frame (x, y, w, h, normalised), its box
in the next frame, a linear motion model fitted with MSE.

    torchrun --nproc_per_node=2 examples/train_wsovvis.py with epochs=3 \
        tube_json_train=outputs/train/tubes_train.json tube_json_val=outputs/val/tubes_val.json

From Dagster: `trained_model` with `entrypoint: examples/train_wsovvis.py` (docs/training.md).
"""

# ruff: noqa: F841  (a Sacred config function's locals are the config)
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from sacred import Experiment
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

ex = Experiment("train_wsovvis_example")


@ex.config
def config():
    data_root = "data/demo"  # LV-VIS layout; only checked here (frames are not read)
    tube_json_train = "outputs/train/tubes_train.json"  # YouTube-VIS tubes, as tube_json writes
    tube_json_val = "outputs/val/tubes_val.json"
    epochs = 10
    lr = 0.05
    batch_size = 64
    device = "cpu"  # cpu | cuda


def box_pairs(tube_json: str) -> torch.Tensor:
    """(N, 8) float32: a tube's normalised box in frame t, then in frame t + 1."""
    data = json.loads(Path(tube_json).read_text())
    sizes = {v["id"]: (v["width"], v["height"]) for v in data["videos"]}
    rows = []
    for ann in data["annotations"]:
        w, h = sizes[ann["video_id"]]
        boxes = [None if b is None else [b[0] / w, b[1] / h, b[2] / w, b[3] / h]
                 for b in ann["bboxes"]]
        rows += [a + b for a, b in zip(boxes, boxes[1:], strict=False) if a and b]
    if not rows:
        raise ValueError(f"{tube_json}: no tube spans two consecutive frames")
    return torch.tensor(rows, dtype=torch.float32)


@ex.automain
def main(_run, _log, data_root, tube_json_train, tube_json_val, epochs, lr, batch_size,
         device, _seed):
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not Path(data_root).is_dir():
        raise FileNotFoundError(f"data_root {data_root} is not a folder")
    dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if device == "cuda"
                       else "cpu")
    if world > 1:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    torch.manual_seed(_seed)
    train, val = box_pairs(tube_json_train), box_pairs(tube_json_val)
    model = torch.nn.Linear(4, 4).to(dev)
    ddp = DistributedDataParallel(model) if world > 1 else model
    sampler = DistributedSampler(TensorDataset(train), num_replicas=world, rank=rank, seed=_seed)
    loader = DataLoader(TensorDataset(train), batch_size=batch_size, sampler=sampler)
    optimiser = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    _log.info(f"rank {rank}/{world}: {len(train)} train / {len(val)} val box pairs")
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        total = torch.zeros(2, device=dev)
        for (batch,) in loader:
            batch = batch.to(dev)
            loss = torch.nn.functional.mse_loss(ddp(batch[:, :4]), batch[:, 4:])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += torch.stack([loss.detach() * len(batch), torch.tensor(len(batch), device=dev)])
        if world > 1:
            dist.all_reduce(total)
        with torch.no_grad():
            val_loss = torch.nn.functional.mse_loss(model(val[:, :4].to(dev)), val[:, 4:].to(dev))
        if rank == 0:
            _run.log_scalar("train.loss", (total[0] / total[1]).item(), epoch)
            _run.log_scalar("val.loss", val_loss.item(), epoch)
            _log.info(f"epoch {epoch}/{epochs}: train loss {(total[0] / total[1]).item():.5f}")
    if world > 1:
        dist.destroy_process_group()
    return {"val_loss": val_loss.item(), "epochs": epochs}
