"""Which GPU a run uses. Placeholder until the GPU-coordination work lands: CPU only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GpuLease:
    index: int

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"

    def release(self) -> None:
        pass


def acquire_gpu_slot(gpus: str, *, run_id: str, slot_dir: str | None = None) -> GpuLease | None:
    """Lease one GPU among `gpus` ('0,1,2,3') for `run_id`; None when `gpus` is empty."""
    if not gpus.strip():
        return None
    return GpuLease(int(gpus.split(",")[0]))
