"""IoU linker accuracy on real OSVOS masks whose ids are shuffled per frame.

For each DAVIS sequence in ../shared/data/davis/osvos, every frame's ids are replaced by random
ones (what a per-frame detector produces), the linker relinks them, and the fraction of frames
whose linked ids equal the original tracks under one global relabelling is reported
(`frame_consistency`), for a few IoU thresholds, averaged over seeds.

    python -m benchmarks.linking
    python -m benchmarks.linking --davis ../shared/data/davis --seeds 10
    python -m benchmarks.linking --json benchmarks/results/linking.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.results_io import add_json_args, context, write_result
from wsovvis_dagster.ytvis.linking import (
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_MAX_GAP,
    frame_consistency,
    link_fragments,
    shuffle_ids,
)

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DAVIS = REPO.parent / "shared" / "data" / "davis"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DEFAULT_DAVIS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--sequences", nargs="+", metavar="NAME",
                        help="only these sequences of <davis>/osvos (default: all)")
    parser.add_argument("--max-frames", type=int, help="only the first N frames of each")
    add_json_args(parser)
    args = parser.parse_args(argv)

    print(f"{'sequence':<16} {'thr':>4} {'frames right':>12} {'tracks':>6} {'s/video':>8}"
          f"   (shuffled, unlinked: frames right)")
    rows = []
    seq_dirs = sorted(p for p in (args.davis / "osvos").iterdir() if p.is_dir())
    if args.sequences:
        seq_dirs = [p for p in seq_dirs if p.name in args.sequences]
    for seq_dir in seq_dirs:
        files = sorted(seq_dir.glob("*.png"))[: args.max_frames]
        truth = np.stack([np.array(Image.open(p)) for p in files])
        for thr in args.thresholds:
            acc, tracks, secs, unlinked = [], [], [], []
            for seed in range(args.seeds):
                shuffled = shuffle_ids(truth, np.random.default_rng(seed))
                start = time.perf_counter()
                result = link_fragments(shuffled, iou_threshold=thr, max_gap=DEFAULT_MAX_GAP)
                secs.append(time.perf_counter() - start)
                acc.append(frame_consistency(result.id_maps, truth))
                tracks.append(result.num_tracks)
                unlinked.append(frame_consistency(shuffled, truth))
            print(f"{seq_dir.name:<16} {thr:4.2f} {np.mean(acc):12.3f} {np.mean(tracks):6.1f} "
                  f"{np.mean(secs):8.2f}   ({np.mean(unlinked):.3f})")
            rows.append({"sequence": seq_dir.name, "frames": len(files), "iou_threshold": thr,
                         "frames_right": float(np.mean(acc)),
                         "frames_right_unlinked": float(np.mean(unlinked)),
                         "tracks": float(np.mean(tracks)), "s_per_video": float(np.mean(secs))})
    if args.json:
        sizes = {"davis": os.path.relpath(args.davis, REPO),
                 "sequences": [p.name for p in seq_dirs], "seeds": args.seeds,
                 "thresholds": args.thresholds, "max_frames": args.max_frames,
                 "max_gap": DEFAULT_MAX_GAP}
        write_result(
            args.json, benchmark="linking",
            title="IoU linker on real OSVOS masks whose ids are shuffled per frame",
            measures="library: `link_fragments` (accuracy, not speed) on real DAVIS OSVOS "
                     f"masks; the linker's defaults (`iou_threshold` {DEFAULT_IOU_THRESHOLD}, "
                     f"`max_gap` {DEFAULT_MAX_GAP}) were "
                     "chosen on these same sequences, so they tune and score here",
            ctx=context(argv, sizes, args.note), results={"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
