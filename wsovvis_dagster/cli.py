"""`wsovvis`: command-line tools for people (the asset graph itself runs through `dagster`).

    wsovvis generate-demo data/demo      # synthetic LV-VIS style dataset with ground truth
    wsovvis ingest clip.mp4 --split val  # a real video -> JPEG frame folder
    wsovvis quality --data-root data/demo --davis ../shared/data/davis
    wsovvis eval GT.json RESULTS.json    # video AP / AR (YouTube-VIS protocol)
    wsovvis doctor                       # VideoCutLER toolchain checks with fixes
    wsovvis gpus [--free-stale]          # GPU pool slots and leases (wsovvis_instance.cli)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from wsovvis_dagster.errors import WsovvisError


def _bar(**kwargs) -> tqdm:
    """A progress bar on stderr that switches itself off when stderr is not a terminal."""
    return tqdm(disable=None, file=sys.stderr, **kwargs)


def _generate(args: argparse.Namespace) -> int:
    from wsovvis_dagster.synthetic import generate_dataset

    with _bar(total=args.train + args.val, desc="generate", unit="video") as bar:
        paths = generate_dataset(
            Path(args.root), seed=args.seed, num_frames=args.frames, height=args.height,
            width=args.width, videos_per_split={"train": args.train, "val": args.val},
            progress=lambda _: bar.update(1),
        )
    for split, path in paths.items():
        print(f"{split}: ground truth {path}")
    print(f"frames under {args.root}/<split>/JPEGImages/<video_id>/")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from wsovvis_dagster.ingest import count_frames, ingest_video

    total = count_frames(Path(args.video), every=args.every, max_frames=args.max_frames)
    with _bar(total=total, desc=f"ingest {Path(args.video).name}", unit="frame") as bar:
        ref, n = ingest_video(
            Path(args.video), Path(args.data_root), args.split, video_id=args.video_id,
            every=args.every, max_frames=args.max_frames, progress=lambda _: bar.update(1),
        )
    print(f"wrote {n} frames for partition {ref.partition_key} "
          f"({args.data_root}/{ref.split}/JPEGImages/{ref.video_id}/); "
          "materialise video_partitions to register it")
    return 0


def _quality(args: argparse.Namespace) -> int:
    from wsovvis_dagster.predictors.cpu import CpuVideoPredictor
    from wsovvis_dagster.quality import davis_quality, synthetic_quality

    predictor = CpuVideoPredictor()
    print(f"predictor: {predictor.name} {predictor.version}")
    if args.data_root:
        with _bar(desc="synthetic", unit="video") as bar:
            quality = synthetic_quality(predictor, args.data_root, progress=bar.update)
        for split, value in quality.items():
            print(f"synthetic {split}: mean best-match st-IoU per GT tube = {value:.3f}")
    if args.davis:
        with _bar(desc="DAVIS", unit="sequence") as bar:
            quality = davis_quality(predictor, args.davis, progress=bar.update)
        for seq, value in quality.items():
            print(f"DAVIS {seq}: J = {value:.3f}")
    return 0


def build_parser(extra_commands: Sequence[Callable] = ()) -> argparse.ArgumentParser:
    """The parser; `extra_commands` add subcommands from packages that build on the library
    (`wsovvis_instance.cli` adds `gpus`, which needs Dagster)."""
    parser = argparse.ArgumentParser(
        prog="wsovvis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate-demo", help="write the synthetic dataset (deterministic)")
    gen.add_argument("root", nargs="?", default="data/demo", help="output folder (data/demo)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--train", type=int, default=24, help="train videos (24)")
    gen.add_argument("--val", type=int, default=24, help="val videos (24)")
    gen.add_argument("--frames", type=int, default=16, help="frames per video (16)")
    gen.add_argument("--height", type=int, default=120)
    gen.add_argument("--width", type=int, default=160)
    gen.set_defaults(func=_generate)

    ing = sub.add_parser("ingest", help="decode a video file into a JPEG frame folder")
    ing.add_argument("video", help="an .mp4 (anything FFmpeg reads)")
    ing.add_argument("--split", required=True, choices=["train", "val", "test"])
    ing.add_argument("--data-root", default="data/demo", help="dataset root (data/demo)")
    ing.add_argument("--video-id", help="folder / partition name (default: file stem)")
    ing.add_argument("--every", type=int, default=1, help="keep every N-th frame (1)")
    ing.add_argument("--max-frames", type=int, help="stop after this many frames")
    ing.set_defaults(func=_ingest)

    qual = sub.add_parser("quality", help="class-agnostic quality of the embedded CPU predictor")
    qual.add_argument("--data-root", help="synthetic dataset with annotations/ (mean best IoU)")
    qual.add_argument("--davis", help="DAVIS folder with JPEGImages/ and Annotations/ (J)")
    qual.set_defaults(func=_quality)

    from wsovvis_dagster.evaluation import add_eval_arguments, run_eval

    ev = sub.add_parser("eval", help="video AP/AR of results vs ground truth (YouTube-VIS)")
    add_eval_arguments(ev).set_defaults(func=run_eval)

    from wsovvis_dagster.doctor import add_doctor_arguments, run_doctor_cli

    doc = sub.add_parser("doctor", help="check the VideoCutLER toolchain and print fixes")
    add_doctor_arguments(doc).set_defaults(func=run_doctor_cli)
    for add in extra_commands:
        add(sub)
    return parser


def main(argv: list[str] | None = None, extra_commands: Sequence[Callable] = ()) -> int:
    args = build_parser(extra_commands).parse_args(argv)
    try:
        return args.func(args)
    except WsovvisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
