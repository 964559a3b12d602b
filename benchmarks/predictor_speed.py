"""Speed of the embedded CPU predictor as `mask_pngs` runs it: JPEG read + predict + PNG write,
the current `cpu.py` against an earlier one (from git) in the same run.

    python -m benchmarks.predictor_speed                       # against the cpu-3 commit
    python -m benchmarks.predictor_speed --rounds 3 --json benchmarks/results/predictor_speed.json

Each round runs `masks.segment.segment_video` (the function the asset runs) on every sequence with
the old predictor, then the new one, so both see the same load on a shared machine; frames/s
are totals over rounds. Frames are the ../shared DAVIS sequences (854x480), copied into a
temporary data root; masks go to a temporary folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results_io import add_json_args, context, write_result
from wsovvis_dagster.masks.segment import segment_video
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.predictors.cpu import CpuVideoPredictor

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DAVIS = REPO.parent / "shared" / "data" / "davis"
BASELINE_REV = "65998dd"  # the last commit with cpu-3


def load_old_predictor(rev: str, workdir: Path):
    """`CpuVideoPredictor` class of `wsovvis_dagster/predictors/cpu.py` at git `rev`."""
    source = subprocess.run(["git", "show", f"{rev}:wsovvis_dagster/predictors/cpu.py"],
                            cwd=REPO, check=True, capture_output=True, text=True).stdout
    path = workdir / "cpu_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("cpu_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module.CpuVideoPredictor


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DEFAULT_DAVIS,
                        help="DAVIS folder with JPEGImages/<seq>/ (../shared/data/davis)")
    parser.add_argument("--baseline-rev", default=BASELINE_REV,
                        help=f"git revision of the old predictor ({BASELINE_REV}: cpu-3)")
    parser.add_argument("--rounds", type=int, default=2)
    add_json_args(parser)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="predictor-speed-") as tmp:
        tmp = Path(tmp)
        seqs = sorted(p.name for p in (args.davis / "JPEGImages").iterdir() if p.is_dir())
        for seq in seqs:
            shutil.copytree(args.davis / "JPEGImages" / seq, tmp / "data" / "val" /
                            "JPEGImages" / seq)
        old_cls = load_old_predictor(args.baseline_rev, tmp)
        predictors = {f"{old_cls().version} ({args.baseline_rev})": old_cls(),
                      f"{CpuVideoPredictor().version} (this tree)": CpuVideoPredictor()}
        totals = {name: {"frames": 0, "seconds": 0.0, "predict_seconds": 0.0}
                  for name in predictors}
        for predictor in predictors.values():  # warm-up, untimed: imports, first allocations
            segment_video(tmp / "data", tmp / "warm", VideoRef("val", seqs[0]), predictor)
        for _ in range(args.rounds):
            for name, predictor in predictors.items():
                for seq in seqs:
                    start = time.perf_counter()
                    result = segment_video(tmp / "data", tmp / "out", VideoRef("val", seq),
                                           predictor)
                    totals[name]["seconds"] += time.perf_counter() - start
                    totals[name]["frames"] += result.frames
                    totals[name]["predict_seconds"] += result.predict_seconds
    rows = []
    for name, t in totals.items():
        rows.append({"predictor": name, "what": "JPEG read + predict + PNG write "
                     "(masks.segment.segment_video)", "frames": t["frames"],
                     "seconds": round(t["seconds"], 2),
                     "frames_per_s": round(t["frames"] / t["seconds"], 2)})
        rows.append({"predictor": name, "what": "predict() alone", "frames": t["frames"],
                     "seconds": round(t["predict_seconds"], 2),
                     "frames_per_s": round(t["frames"] / t["predict_seconds"], 2)})
        print(f"{name:28s} {rows[-2]['frames_per_s']:6.2f} frames/s end to end, "
              f"{rows[-1]['frames_per_s']:6.2f} predict() alone")
    old, new = (rows[0]["frames_per_s"], rows[2]["frames_per_s"])
    print(f"new / old (end to end): {new / old:.2f}")
    if args.json:
        write_result(args.json, benchmark="predictor_speed",
                     title="Embedded predictor speed: JPEG read + predict + PNG write, new vs "
                           "old in one run",
                     measures="library: `masks.segment.segment_video`, the function `mask_pngs` "
                              "runs per video, without a Dagster run",
                     ctx=context(argv, {"sequences": len(seqs), "rounds": args.rounds},
                                 args.note),
                     results={"rows": rows, "ratio": round(new / old, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
