"""`wsovvis`: command-line tools for people (the asset graph itself runs through `dagster`).

    wsovvis generate-demo data/demo      # synthetic LV-VIS style dataset with ground truth
    wsovvis ingest clip.mp4 --split val  # a real video -> JPEG frame folder
    wsovvis import-masks osvos/ --split val   # your own per-frame id PNGs -> mask_pngs layout
    wsovvis quality --data-root data/demo --davis ../shared/data/davis
    wsovvis eval GT.json RESULTS.json    # video AP / AR (YouTube-VIS protocol)
    wsovvis doctor                       # VideoCutLER toolchain checks with fixes
    wsovvis gpus [--free-stale]          # GPU pool slots and leases (wsovvis_instance.cli)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from wsovvis_dagster.errors import WsovvisError


def _bar(**kwargs) -> tqdm:
    """A progress bar on stderr that switches itself off when stderr is not a terminal."""
    return tqdm(disable=None, file=sys.stderr, **kwargs)


def _generate(args: argparse.Namespace) -> int:
    from wsovvis_dagster.video.synthetic import generate_dataset

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
    from wsovvis_dagster.paths import VideoRef, frames_dir
    from wsovvis_dagster.video.ingest import count_frames, ingest_video

    ref = VideoRef(args.split, args.video_id or Path(args.video).stem)
    existed = frames_dir(Path(args.data_root), ref).exists()
    total = count_frames(Path(args.video), every=args.every, max_frames=args.max_frames)
    with _bar(total=total, desc=f"ingest {Path(args.video).name}", unit="frame") as bar:
        ref, n = ingest_video(
            Path(args.video), Path(args.data_root), args.split, video_id=args.video_id,
            every=args.every, max_frames=args.max_frames, force=args.force,
            progress=lambda _: bar.update(1),
        )
    where = f"{args.data_root}/{ref.split}/JPEGImages/{ref.video_id}/"
    if existed:
        print(f"replaced the frames of partition {ref.partition_key} with {n} frames ({where}); "
              f"its mask_pngs are now stale: materialise mask_pngs --partition {ref.partition_key}")
    else:
        print(f"wrote {n} frames for partition {ref.partition_key} ({where}); "
              "materialise video_partitions to register it")
    return 0


def _import_masks(args: argparse.Namespace) -> int:
    from wsovvis_dagster.masks.import_masks import import_masks

    with _bar(desc="import", unit="video") as bar:
        report = import_masks(
            Path(args.src), Path(args.data_root), Path(args.output_root), args.split,
            scores_file=Path(args.scores) if args.scores else None, videos=args.video,
            progress=lambda _: bar.update(1),
        )
    for v in report.videos:
        state = "written" if v.written else "unchanged (already imported)"
        print(f"{v.ref.partition_key}: {v.masks}/{v.frames} frames with masks, {v.tracks} tracks"
              f" -> {v.folder} [{state}]")
    for name, why in report.skipped.items():
        print(f"skipped {args.src}/{name}: {why}")
    written = sum(v.written for v in report.videos)
    print(f"{written} of {len(report.videos)} videos written, {len(report.videos) - written} "
          f"unchanged. Next: materialise tube_json (videos must be registered: "
          f"video_partitions). To record them in Dagster too (staleness, previews), run the import "
          f"as mask_pngs with config import_root: {report.source} (see docs/tubes.md)")
    return 0


_IMPORT_HELP = """\
Import per-frame instance-id PNGs made by another model (OSVOS, SAM 2, XMem, Cutie, ...)
into the outputs layout, so tube_json, previews and staleness use them like predictor output.

SRC holds one folder per video, named like the video's frame folder:
    SRC/<video_id>/<frame stem>.png   (or mask_<frame stem>.png)
pixel value = instance id, 0 = background; DAVIS palette PNGs (P), 8-bit (L) or 16-bit (I;16).
A frame without a PNG has no objects. Every folder must name a video of
<data-root>/<split>/JPEGImages/, every PNG one of its frames, at that frame's size; all of it
is checked before anything is written. Masks land in
<output-root>/<split>/masks/<video_id>/mask_<frame stem>.png with tracks.json (scores) and
source.json (where they came from). Rerunning with the same files writes nothing.

example:
    wsovvis import-masks ../shared/data/davis/osvos --split val \\
        --data-root data/davis --output-root outputs --scores scores.json
scores.json (optional, default 1.0 per track): {"<video_id>": {"1": 0.93, "2": 0.41}}

Then materialise tube_json. To record the import in Dagster as well (mask previews, staleness),
materialise mask_pngs with config import_root: SRC instead. More: docs/tubes.md
"""


def _quality(args: argparse.Namespace) -> int:
    from wsovvis_dagster.evaluation.quality import davis_quality, quality_summary, synthetic_report
    from wsovvis_dagster.predictors.factory import build_predictor
    from wsovvis_dagster.predictors.settings import PredictorSettings

    predictor = build_predictor(PredictorSettings(backend="cpu"))  # what mask_pngs runs
    print(f"predictor: {predictor.name} {predictor.version}")
    report: dict = {"predictor": {"name": predictor.name, "version": predictor.version}}
    if args.data_root:
        with _bar(desc="synthetic", unit="video") as bar:
            report["synthetic"] = synthetic_report(predictor, args.data_root,
                                                   progress=bar.update)
        for split, r in report["synthetic"].items():
            print(f"synthetic {split}: mean best-match st-IoU per GT tube = {r['st_iou']:.3f}, "
                  f"tracks per GT object {r['tracks_per_object']:.2f}, class-agnostic AP "
                  f"{r['AP']:.3f} (AP50 {r['AP50']:.3f}); {r['videos']} videos")
    if args.davis:
        from wsovvis_dagster.evaluation.quality import read_sequence_list

        names = read_sequence_list(args.split_file) if args.split_file else None
        with _bar(desc="DAVIS", unit="sequence", total=len(names) if names else None) as bar:
            quality = davis_quality(predictor, args.davis, names, progress=bar.update,
                                    max_frames=args.max_frames, instances=args.instances)
        report["davis"] = {"sequences": quality, "mean": quality_summary(quality)}
        extra = args.instances is not None
        print(f"{'DAVIS sequence':24s} {'frames':>6s} {'J':>6s} {'J_best':>6s} {'tracks':>6s}"
              + (f" {'objects':>7s} {'tracks/object':>13s} {'AP':>6s}" if extra else ""))
        for seq, r in [*quality.items(), (f"mean ({len(quality)} sequences)",
                                          report["davis"]["mean"])]:
            line = (f"{seq:24s} {r['frames']:6d} {r['J']:6.3f} {r['J_best']:6.3f} "
                    f"{r['tracks']:6.3g}")
            if extra:
                line += f" {r['objects']:7.3g} {r['tracks_per_object']:13.2f} {r['AP']:6.3f}"
            print(line)
        if quality:
            fps = report["davis"]["mean"]["frames_per_s"]
            print("J = IoU of the union of predicted ids vs GT per frame (DAVIS-2016 "
                  "unsupervised), J_best = the best single track, tracks = ids the GT "
                  f"foreground was split into; predict() ran at {fps:.1f} frames/s")
    if args.json:
        from wsovvis_dagster.evaluation.quality import write_quality_json

        command = ["wsovvis", "quality"] + [
            f"--{key.replace('_', '-')}={value}" for key in
            ("data_root", "davis", "split_file", "max_frames", "instances")
            if (value := getattr(args, key)) is not None]
        write_quality_json(args.json, report, " ".join(command))
        print(f"wrote {args.json}")
    return 0


def _env_default(name: str, default: str) -> str:
    """The code location's setting: its env var (definitions.py reads the same one), else its
    default, `<checkout>/<default>` (definitions.PATH_DEFAULTS) when the package runs from a
    checkout, so the CLI writes where `video_partitions` looks whatever the current folder."""
    if os.environ.get(name):
        return os.environ[name]
    checkout = Path(__file__).resolve().parents[1]
    return str(checkout / default) if (checkout / "definitions.py").is_file() else default


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {text!r}")
    return value


def build_parser(extra_commands: Sequence[Callable] = ()) -> argparse.ArgumentParser:
    """The parser; `extra_commands` add subcommands from packages that build on the library
    (`wsovvis_instance.cli` adds `gpus`, which needs Dagster)."""
    parser = argparse.ArgumentParser(
        prog="wsovvis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate-demo", help="write the synthetic dataset (deterministic)")
    gen.add_argument("root", nargs="?", default="data/demo", help="output folder (data/demo)")
    gen.add_argument("--seed", type=int, default=0,
                     help="random seed; the same seed writes byte-identical data (0)")
    gen.add_argument("--train", type=int, default=24, help="train videos (24)")
    gen.add_argument("--val", type=int, default=24, help="val videos (24)")
    gen.add_argument("--frames", type=int, default=16, help="frames per video (16)")
    gen.add_argument("--height", type=int, default=120, help="frame height in pixels (120)")
    gen.add_argument("--width", type=int, default=160, help="frame width in pixels (160)")
    gen.set_defaults(func=_generate)

    ing = sub.add_parser("ingest", help="decode a video file into a JPEG frame folder")
    ing.add_argument("video", help="an .mp4 (anything FFmpeg reads)")
    ing.add_argument("--split", required=True, choices=["train", "val", "test"])
    ing.add_argument("--data-root", default=_env_default("WSOVVIS_DATA_ROOT", "data/demo"),
                     help="dataset root ($WSOVVIS_DATA_ROOT, else the checkout's data/demo: "
                     "where video_partitions looks)")
    ing.add_argument("--video-id", help="folder / partition name (default: file stem)")
    ing.add_argument("--every", type=_positive_int, default=1, help="keep every N-th frame (1)")
    ing.add_argument("--max-frames", type=_positive_int, help="stop after this many frames")
    ing.add_argument("--force", action="store_true",
                     help="replace the frames of a video that already exists (its masks go stale)")
    ing.set_defaults(func=_ingest)

    imp = sub.add_parser(
        "import-masks", help="import your own per-frame id PNGs as the videos' masks",
        description=_IMPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("src", help="folder of <video_id>/ folders of per-frame id PNGs")
    imp.add_argument("--split", required=True, choices=["train", "val", "test"])
    imp.add_argument("--data-root", default=_env_default("WSOVVIS_DATA_ROOT", "data/demo"),
                     help="dataset root with <split>/JPEGImages/ ($WSOVVIS_DATA_ROOT or "
                     "data/demo)")
    imp.add_argument("--output-root", default=_env_default("WSOVVIS_OUTPUT_ROOT", "outputs"),
                     help="where masks go ($WSOVVIS_OUTPUT_ROOT or outputs)")
    imp.add_argument("--scores", help='JSON {"<video_id>": {"<track id>": score}} (default 1.0)')
    imp.add_argument("--video", action="append",
                     help="import only this video folder of SRC (repeatable)")
    imp.set_defaults(func=_import_masks)

    qual = sub.add_parser("quality", help="class-agnostic quality of the embedded CPU predictor")
    qual.add_argument("--data-root", help="synthetic dataset with annotations/ (mean best IoU)")
    qual.add_argument("--davis", help="DAVIS folder: {JPEGImages,Annotations}/480p/<seq>/ "
                      "(DAVIS-2016) or {JPEGImages,Annotations}/<seq>/; J per sequence")
    qual.add_argument("--split-file", "--sequences", dest="split_file",
                      help="score only these sequences: one name per line, or a DAVIS-2016 "
                      "ImageSets file (e.g. DAVIS/ImageSets/480p/train.txt)")
    qual.add_argument("--max-frames", type=int, help="score only the first N frames of each")
    qual.add_argument("--instances", help="folder of per-object id PNGs (<seq>/<stem>.png, "
                      "e.g. ../shared/data/davis/osvos): tracks per object and class-agnostic "
                      "AP against them")
    qual.add_argument("--json", type=Path, metavar="PATH",
                      help="also write every figure, the command and its conditions to PATH")
    qual.set_defaults(func=_quality)

    from wsovvis_dagster.evaluation.ytvis_ap import add_eval_arguments, run_eval

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
