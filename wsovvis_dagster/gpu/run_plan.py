"""How a batch of videos becomes `mask_pngs` runs: contiguous key ranges, sized from the work.

A multi-partition run covers a key *range*, so only neighbours in the instance's key order can
share a run (`contiguous_chunks`). `run_size` splits a small batch so that every GPU slot gets a
run: 16 videos on one GPU with 2 runs per GPU become 2 runs of 8, not one run of 16 (the
default of 128 videos per run would otherwise leave the second slot idle).
"""

from __future__ import annotations

from wsovvis_dagster.gpu.leases import parse_gpus


def gpu_slots(gpus: str, runs_per_gpu: int) -> int:
    """Runs the machine takes at once: the GPUs of `gpus` ('0,1', 'auto': as the runs' leases
    read it, `leases.parse_gpus`) x runs per GPU; 1 on CPU."""
    count = len(parse_gpus(gpus))
    return count * max(1, runs_per_gpu) if count else 1


def run_size(videos: int, videos_per_run: int, slots: int) -> int:
    """Videos per run: at most `videos_per_run`, and small enough that `slots` runs share
    `videos` (so no slot idles while another works through a long run)."""
    if videos_per_run < 1 or slots < 1:
        raise ValueError(f"videos_per_run and slots must be >= 1, got {videos_per_run}, {slots}")
    return max(1, min(videos_per_run, -(-videos // slots)))


def contiguous_chunks(order: list[str], wanted: set[str], size: int) -> list[list[str]]:
    """`wanted` keys as runs of consecutive keys in `order`, each at most `size` long."""
    chunks: list[list[str]] = []
    current: list[str] = []
    for key in order:
        if key in wanted and len(current) < size:
            current.append(key)
            continue
        if current:
            chunks.append(current)
        current = [key] if key in wanted else []
    if current:
        chunks.append(current)
    return chunks


def plan_runs(order: list[str], keys: list[str], videos_per_run: int, slots: int
              ) -> list[list[str]]:
    """The key ranges of one batch's runs, sized by `run_size`."""
    wanted = set(keys)
    size = run_size(len(wanted), videos_per_run, slots)
    return contiguous_chunks(order, wanted, size)
