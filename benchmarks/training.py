"""Reference trainer on the synthetic set: AP / APb / APn next to the random and oracle baselines.

    python -m benchmarks.training --root /tmp/wsovvis-bench --train 48 --val 24 --seeds 0 1 2 3 4

Generates the dataset and its tubes (CPU predictor) under --root once, then trains one model
per seed in this process (world size 1; the same code path as one torchrun rank) and prints
mean +- std over seeds. Config keys can be overridden with --set key=value (YAML values).
`--json benchmarks/results/training.json` also writes the figures and their context.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.results_io import add_json_args, context, write_result

REPO = Path(__file__).resolve().parents[1]

KEYS = ("AP", "AP50", "APb", "APn")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("/tmp/wsovvis-bench"))
    p.add_argument("--train", type=int, default=48, help="synthetic train videos")
    p.add_argument("--val", type=int, default=24, help="synthetic val videos")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--config", type=Path, default=REPO / "configs" / "wsovvis_sacred.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    add_json_args(p)
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)

    from wsovvis_dagster.training.experiment import DEFAULT_CONFIG, job_from_config
    from wsovvis_dagster.training.fit import fit_and_evaluate
    from wsovvis_dagster.training.loop import DistContext
    from wsovvis_dagster.training.testing import synthetic_with_tubes

    torch.set_num_threads(1)  # tiny model: threads only add overhead
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    root = args.root / f"synthetic-{args.train}-{args.val}-{args.frames}-s{args.data_seed}"
    data_root, output_root = synthetic_with_tubes(root, train=args.train, val=args.val,
                                                  frames=args.frames, seed=args.data_seed)
    print(f"dataset + tubes: {root} ({time.perf_counter() - started:.1f} s)")
    config = {**DEFAULT_CONFIG, **yaml.safe_load(args.config.read_text())}
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = yaml.safe_load(value)
    config.update(data_root=str(data_root), output_root=str(output_root), resume=False,
                  work_dir=str(root / "bench"), checkpoint_every=10**6)
    rows = {"model": [], "random": [], "oracle": []}
    per_seed = []
    for seed in args.seeds:
        summary = fit_and_evaluate(job_from_config({**config, "seed": seed}), DistContext(),
                                   log=logging.getLogger("bench"))
        for who in rows:
            rows[who].append([summary["metrics"][who][k] for k in KEYS])
        m = summary["metrics"]["model"]
        per_seed.append({"seed": seed, **{k: m[k] for k in KEYS},
                         "wall_time_s": summary["wall_time_s"]})
        print(f"seed {seed}: " + " ".join(f"{k} {100 * m[k]:.1f}" for k in KEYS)
              + f"  ({summary['wall_time_s']:.1f} s)")
    print(f"\n{args.train} train / {args.val} val videos, {args.frames} frames, "
          f"seeds {args.seeds}: mean +- std (x100)")
    print(f"{'':8}" + "".join(f"{k:>14}" for k in KEYS))
    for who, values in rows.items():
        v = 100 * np.array(values)
        print(f"{who:8}" + "".join(f"{m:8.1f} +- {s:3.1f}" for m, s in zip(v.mean(0), v.std(0),
                                                                        strict=True)))
    if args.json:
        sizes = {"train_videos": args.train, "val_videos": args.val, "frames": args.frames,
                 "data_seed": args.data_seed, "seeds": args.seeds,
                 "config": str(args.config.resolve().relative_to(REPO))
                 if args.config.resolve().is_relative_to(REPO) else str(args.config),
                 "overrides": args.set}
        summary_rows = []
        for who, values in rows.items():
            v = np.array(values)
            summary_rows.append({"who": who, **{f"{k}_mean": float(m) for k, m in
                                                zip(KEYS, v.mean(0), strict=True)},
                                 **{f"{k}_std": float(s) for k, s in
                                    zip(KEYS, v.std(0), strict=True)}})
        write_result(
            args.json, benchmark="training",
            title="Reference trainer on the synthetic set: AP next to random and oracle scores",
            measures="library: `fit_and_evaluate`, the code one torchrun rank of "
                     "`trained_model` runs (world size 1, in this process); scored on the "
                     "synthetic val videos, which the model never trains on",
            ctx=context(argv, sizes, args.note),
            results={"summary": summary_rows, "per_seed": per_seed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
