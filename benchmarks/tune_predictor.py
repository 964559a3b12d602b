"""Tune the embedded CPU predictor on DAVIS-2016 train: score settings given as JSON.

    nice -n 10 python -m benchmarks.tune_predictor /work/davis_data/DAVIS \\
        --split-file /work/davis_data/DAVIS/ImageSets/480p/train.txt --max-frames 40 \\
        '{}' '{"link_gap": 15}'

Prints mean J (union of ids), best-track J and tracks (ids the GT foreground was split into)
for each setting; `--json PATH` also writes them as a result file (`benchmarks/results/`), so a
tuning log in the docs can be rendered rather than copied. Train split only: the val split is
scored once, by `wsovvis quality`, with the frozen defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from benchmarks.results_io import add_json_args, context, write_result
from wsovvis_dagster.evaluation.quality import davis_quality, read_sequence_list, synthetic_quality
from wsovvis_dagster.predictors.cpu import CpuVideoPredictor


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("davis")
    ap.add_argument("settings", nargs="+", help="JSON dicts of CpuVideoPredictor kwargs")
    ap.add_argument("--split-file", required=True)
    ap.add_argument("--max-frames", type=int, default=40)
    ap.add_argument("--per-sequence", action="store_true")
    ap.add_argument("--synthetic", help="also score this synthetic data root's train split")
    add_json_args(ap)
    args = ap.parse_args(argv)
    rows = []
    names = read_sequence_list(args.split_file)
    if "val" in args.split_file.rsplit("/", 1)[-1]:
        raise SystemExit("refusing to tune on a val split")
    for setting in args.settings:
        kwargs = json.loads(setting)
        start = time.perf_counter()
        res = davis_quality(CpuVideoPredictor(**kwargs), args.davis, names,
                            max_frames=args.max_frames)
        j = np.mean([r["J"] for r in res.values()])
        jb = np.mean([r["J_best"] for r in res.values()])
        tracks = np.mean([r["tracks"] for r in res.values()])
        fps = sum(r["frames"] for r in res.values()) / sum(r["seconds"] for r in res.values())
        syn = ""
        row = {"setting": kwargs, "J": float(j), "J_best": float(jb), "tracks": float(tracks),
               "frames_per_s": float(fps)}
        if args.synthetic:
            value = synthetic_quality(CpuVideoPredictor(**kwargs), args.synthetic, ("train",))
            syn = f"  synthetic-train {value['train']:.3f}"
            row["synthetic_train_st_iou"] = float(value["train"])
        rows.append(row)
        print(f"J {j:.3f}  J_best {jb:.3f}  tracks {tracks:.2f}{syn}  {fps:5.1f} fps"
              f"  {time.perf_counter() - start:5.0f}s  {setting}", flush=True)
        if args.per_sequence:
            for name, r in res.items():
                print(f"    {name:20s} J {r['J']:.3f}  J_best {r['J_best']:.3f}  "
                      f"tracks {r['tracks']}")
    if args.json:
        write_result(
            args.json, benchmark="tune_predictor",
            title="Embedded predictor settings scored on DAVIS-2016 train (tuning only)",
            measures="library: `davis_quality` with `CpuVideoPredictor(**setting)` on the train "
                     "split (the data it is tuned on; val is scored once by `wsovvis quality`)",
            ctx=context(argv, {"sequences": len(names), "max_frames": args.max_frames},
                        args.note),
            results={"rows": rows})


if __name__ == "__main__":
    main()
