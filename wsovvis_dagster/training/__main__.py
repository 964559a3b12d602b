"""Sacred command line of the reference trainer.

    python -m wsovvis_dagster.training with configs/wsovvis_sacred.yaml [key=value ...]
    torchrun --nproc_per_node=2 -m wsovvis_dagster.training with configs/wsovvis_sacred.yaml

torchrun's RANK / WORLD_SIZE / LOCAL_RANK are read here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings


def _logger(rank: int) -> logging.Logger:
    """Sacred's logger, with the rank in every line (all ranks share one terminal)."""
    log = logging.getLogger(f"wsovvis_train.rank{rank}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def main(argv: list[str] | None = None) -> None:
    # sacred 0.8.7 imports pkg_resources, which warns on import; nothing we can act on
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from wsovvis_dagster.training.experiment import build_experiment

    rank = int(os.environ.get("RANK", "0"))
    ex = build_experiment(rank=rank, world_size=int(os.environ.get("WORLD_SIZE", "1")),
                          local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    ex.logger = _logger(rank)
    ex.run_commandline(argv)


if __name__ == "__main__":
    main()
