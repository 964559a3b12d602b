"""Peak memory of `tube_json` on a large split, per process: the asset step and its checks.

Builds one split of --videos videos x --frames frames (--width x --height, --objects moving
ellipses; one video's mask PNGs and one JPEG frame, hard-linked into every video, so building a
large split is cheap), registers it (`dagster asset materialize --select video_partitions`) and
runs the product command `dagster asset materialize --select tube_json` (defaults: the asset and
its checks) and then the asset step alone (a `materialize()` of `tube_json` without its checks,
which read the JSON back to check it), each time reading the peak RSS (`VmHWM` in /proc, polled)
of every process of the command's tree. `--code LABEL=DIR` (repeatable) first runs the same on
the same split with another checkout's code (e.g. the commit before a change:
`git archive <commit> | tar -x -C DIR`), so the rows sit side by side from one run.

    python -m benchmarks.tube_json_memory --videos 100 --frames 200
    python -m benchmarks.tube_json_memory --code before=/tmp/before \\
        --json benchmarks/results/tube_json_memory.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.results_io import add_json_args, code_checkouts, context, write_result
from wsovvis_dagster.masks.png_io import write_mask_pngs
from wsovvis_dagster.training.launch import process_tree
from wsovvis_ops.instance import render_instance

REPO = Path(__file__).resolve().parents[1]


def make_split(data: Path, outputs: Path, videos: int, frames: int, w: int, h: int,
               objects: int) -> None:
    """`val` videos with frames and mask folders: one video made, the rest hard links to it."""
    rng = np.random.default_rng(0)
    centres = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], size=(objects, 2))
    speeds = rng.uniform(-4, 4, size=(objects, 2))
    axes = rng.uniform(0.03, 0.12, size=(objects, 2)) * min(h, w)

    def maps():
        for t in range(frames):
            frame = np.zeros((h, w), dtype=np.uint8)
            for k in range(objects):
                cx, cy = centres[k] + speeds[k] * t
                cv2.ellipse(frame, (int(cx), int(cy)), (int(axes[k, 0]), int(axes[k, 1])),
                            7.0 * k + t, 0, 360, k + 1, -1)
            yield frame

    stems = [f"{t:05d}" for t in range(frames)]
    first = outputs / "val" / "masks" / "v0000"
    write_mask_pngs(first, stems, maps(), {k + 1: 0.5 + k / (2 * objects) for k in range(objects)})
    jpeg = data / "frame.jpg"
    jpeg.parent.mkdir(parents=True)
    cv2.imwrite(str(jpeg), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    for v in range(videos):
        name = f"v{v:04d}"
        folder = data / "val" / "JPEGImages" / name
        folder.mkdir(parents=True)
        for stem in stems:
            os.link(jpeg, folder / f"{stem}.jpg")
        if v:
            shutil.copytree(first, first.with_name(name), copy_function=os.link)


def _peak_rss_mb(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """Run `cmd` to the end, polling its process tree (a run's steps may get processes of their
    own); (the largest peak RSS of any of its processes in MB, seconds)."""
    peak = 0.0
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            for pid in process_tree(proc.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:  # gone meanwhile
                    continue
                peak = max([peak] + [int(line.split()[1]) / 1024 for line in status.splitlines()
                                     if line.startswith("VmHWM:")])
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{log.read()[-4000:]}")
    return peak, seconds


# the asset step alone: a run of `tube_json` in one process (the project's definitions,
# resources and instance), its asset checks left out: they read the JSON back to check it
ASSET_ONLY = """
from dagster import DagsterInstance, materialize
from definitions import defs
result = materialize(list(defs.assets), selection=["tube_json"], resources=defs.resources,
                     instance=DagsterInstance.get())
assert result.success
"""


def measure(label: str, code: Path, data: Path, outputs: Path, tmp: Path) -> dict:
    home = tmp / f"home_{label}"
    render_instance(home, gpu_limit=1)
    env = {**os.environ, "DAGSTER_HOME": str(home), "WSOVVIS_DATA_ROOT": str(data),
           "WSOVVIS_OUTPUT_ROOT": str(outputs),
           "DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME": "definitions",
           "PYTHONPATH": str(code) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    dagster = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize"]
    subprocess.run([*dagster, "--select", "video_partitions"], env=env, cwd=code, check=True,
                   capture_output=True)
    rss, seconds = _peak_rss_mb([*dagster, "--select", "tube_json"], env, code)
    alone, alone_seconds = _peak_rss_mb([sys.executable, "-c", ASSET_ONLY], env, code)
    tube_json = outputs / "val" / "tubes_val.json"
    return {"code": label, "tube_json_mb": round(tube_json.stat().st_size / 2**20, 1),
            "peak_rss_mb": round(rss), "seconds": round(seconds, 1),
            "asset_step_peak_rss_mb": round(alone), "asset_step_seconds": round(alone_seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                        help="also run another checkout's code (measured before this one)")
    add_json_args(parser)
    args = parser.parse_args(argv)
    codes = code_checkouts(args.code, REPO)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wsovvis-tubemem-") as tmp:
        tmp = Path(tmp)
        data, masks = tmp / "data", tmp / "masks"
        make_split(data, masks, args.videos, args.frames, args.width, args.height, args.objects)
        for label, code in codes:
            outputs = tmp / f"out_{label}"  # the same mask folders, hard-linked
            shutil.copytree(masks, outputs, copy_function=os.link)
            rows.append(measure(label, code, data, outputs, tmp))
            print(rows[-1], flush=True)
    if args.json:
        write_result(
            args.json, benchmark="tube_json_memory",
            title="tube_json peak memory per process on a large split (product path)",
            measures="product path: `dagster asset materialize --select tube_json` (defaults, "
                     "the asset and its checks), peak RSS (VmHWM) of its largest process; "
                     "asset_step: a run of the asset alone (`materialize()` without its checks); "
                     "one row per code measured",
            ctx=context(argv, {"videos": args.videos, "frames": args.frames,
                               "width": args.width, "height": args.height,
                               "objects": args.objects}, args.note),
            results={"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
