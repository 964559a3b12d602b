"""IoU linker accuracy on real OSVOS masks whose ids are shuffled per frame.

For each DAVIS sequence in ../shared/data/davis/osvos, every frame's ids are replaced by random
ones (what a per-frame detector produces), the linker relinks them, and the fraction of frames
whose linked ids equal the original tracks under one global relabelling is reported
(`frame_consistency`), for a few IoU thresholds, averaged over seeds.

    python benchmarks/linking.py
    python benchmarks/linking.py --davis ../shared/data/davis --seeds 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from wsovvis_dagster.linking import (
    DEFAULT_MAX_GAP,
    frame_consistency,
    link_fragments,
    shuffle_ids,
)

DEFAULT_DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DEFAULT_DAVIS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    args = parser.parse_args()

    print(f"{'sequence':<16} {'thr':>4} {'frames right':>12} {'tracks':>6} {'s/video':>8}"
          f"   (shuffled, unlinked: frames right)")
    for seq_dir in sorted((args.davis / "osvos").iterdir()):
        truth = np.stack([np.array(Image.open(p)) for p in sorted(seq_dir.glob("*.png"))])
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


if __name__ == "__main__":
    main()
