"""Peak memory of `mask_pngs` on one long video: flat in video length (streamed in chunks).

For each length, one video of T generated frames (a panning textured background with moving
objects, JPEG) is registered and its `mask_pngs` partition materialised with the product
command, `dagster asset materialize --select mask_pngs --partition val__long` (the embedded
predictor, defaults), in a fresh process whose peak RSS is read from the kernel
(`ru_maxrss` of the waited-for child). `--whole` adds, side by side, the path before streaming:
the whole video decoded and predicted at once (`read_video` + `predict`, a library call).

    python -m benchmarks.streaming_memory --frames 300 3000
    python -m benchmarks.streaming_memory --frames 300 3000 300@320x180 20000@320x180 \\
        --whole 300 --json benchmarks/results/streaming_memory.json

A length may carry its own frame size (`20000@320x180`); otherwise --width x --height.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.results_io import add_json_args, context, write_result

REPO = Path(__file__).resolve().parents[1]


def write_video(folder: Path, frames: int, width: int, height: int, seed: int = 0) -> None:
    """`frames` JPEGs of a panning textured background with three moving ellipses."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (height + 64, width * 2, 3), np.uint8),
                               (0, 0), 3)
    colours = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]
    for t in range(frames):
        x0 = (t * 2) % width  # the camera pans and wraps around
        img = np.ascontiguousarray(texture[32:32 + height, x0:x0 + width])
        for k, colour in enumerate(colours):
            cx = int(width * (0.5 + 0.35 * np.sin(t / (40 + 17 * k) + k)))
            cy = int(height * (0.5 + 0.3 * np.cos(t / (55 + 11 * k) + 2 * k)))
            axes = (width // (10 + 3 * k), height // (7 + 2 * k))
            cv2.ellipse(img, (cx, cy), axes, t % 180, 0, 360, colour, -1)
        cv2.imwrite(str(folder / f"{t:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


# runs a command and prints the peak RSS (KiB) of its process tree's largest process
_WRAPPER = ("import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(code)\n")


def _peak_rss_mb(cmd: list[str], env: dict) -> tuple[float, float]:
    """Run `cmd` to the end under a fresh wrapper process; (its peak RSS in MB, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], env=env, cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return int(proc.stdout.strip().splitlines()[-1]) / 1024, seconds


WHOLE = """
import resource, sys
from pathlib import Path
from wsovvis_dagster.video.frames import read_video
from wsovvis_dagster.paths import VideoRef
from wsovvis_dagster.predictors.cpu import CpuVideoPredictor
frames = read_video(Path(sys.argv[1]), VideoRef("val", "long"))
CpuVideoPredictor().predict(frames.images)
"""


def measure(frames: int, width: int, height: int, whole: bool, tmp: Path) -> dict:
    data, home = tmp / f"data{frames}", tmp / f"home{frames}"
    write_video(data / "val" / "JPEGImages" / "long", frames, width, height)
    from wsovvis_ops.instance import render_instance

    render_instance(home, gpu_limit=1)
    env = {**os.environ, "DAGSTER_HOME": str(home), "WSOVVIS_DATA_ROOT": str(data),
           "WSOVVIS_OUTPUT_ROOT": str(tmp / f"out{frames}"),
           "DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME": "definitions",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    dagster = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize"]
    subprocess.run([*dagster, "--select", "video_partitions"], env=env, cwd=REPO, check=True,
                   capture_output=True)
    row = {"frames": frames, "size": f"{width}x{height}"}
    if whole:
        rss, seconds = _peak_rss_mb([sys.executable, "-c", WHOLE, str(data)], env)
        row.update(whole_peak_rss_mb=round(rss), whole_seconds=round(seconds, 1))
    rss, seconds = _peak_rss_mb(
        [*dagster, "--select", "mask_pngs", "--partition", "val__long"], env)
    pngs = len(list((tmp / f"out{frames}" / "val" / "masks" / "long").glob("mask_*.png")))
    if pngs != frames:
        raise SystemExit(f"expected {frames} mask PNGs, found {pngs}")
    row.update(peak_rss_mb=round(rss), seconds=round(seconds, 1),
               frames_per_second=round(frames / seconds, 1))
    return row


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", nargs="+", default=["300", "3000"],
                        metavar="N[@WxH]", help="video lengths (and sizes) to measure")
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--whole", type=int, nargs="*", default=[], metavar="FRAMES",
                        help="also measure the whole-video path (before streaming) at these")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    add_json_args(parser)
    args = parser.parse_args(argv)
    if args.one:  # one length, in this process tree: its figures as the last line
        with tempfile.TemporaryDirectory(prefix="wsovvis-stream-") as tmp:
            row = measure(int(args.frames[0]), args.width, args.height, bool(args.whole),
                          Path(tmp))
        print(json.dumps(row))
        return 0
    rows = []
    print(f"{'frames':>7} {'size':>8} {'peak RSS MB':>11} {'s':>7} {'frames/s':>8}"
          f" {'whole-video peak MB':>19}")
    for spec in args.frames:
        frames, _, size = spec.partition("@")
        width, height = map(int, size.split("x")) if size else (args.width, args.height)
        frames = int(frames)
        # each length in its own process tree, so one's peak never hides another's
        cmd = [sys.executable, "-m", "benchmarks.streaming_memory", "--one", "--frames",
               str(frames), "--width", str(width), "--height", str(height)]
        if frames in args.whole and not size:
            cmd += ["--whole", str(frames)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        whole = row.get("whole_peak_rss_mb", "")
        print(f"{row['frames']:>7} {row['size']:>8} {row['peak_rss_mb']:>11} "
              f"{row['seconds']:>7} {row['frames_per_second']:>8} {whole:>19}", flush=True)
    if args.json:
        write_result(
            args.json, benchmark="streaming_memory",
            title="mask_pngs peak memory vs video length (embedded predictor, streamed)",
            measures="product path: `dagster asset materialize --select mask_pngs` on one "
                     "video, peak RSS of that process; whole-video column: the path before "
                     "streaming (read_video + predict, library call)",
            ctx=context(argv, {"frames": args.frames, "width": args.width,
                               "height": args.height}, args.note),
            results={"rows": rows, "peak_ratio_by_size": _ratios(rows)})
    return 0


def _ratios(rows: list[dict]) -> dict:
    """Per frame size: peak RSS of the longest video over the shortest's."""
    out = {}
    for size in dict.fromkeys(r["size"] for r in rows):
        same = sorted((r for r in rows if r["size"] == size), key=lambda r: r["frames"])
        if len(same) > 1:
            out[f"{size} {same[-1]['frames']} vs {same[0]['frames']} frames"] = round(
                same[-1]["peak_rss_mb"] / same[0]["peak_rss_mb"], 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
