"""Issue 24: the GPU path as a new user runs it, on DEFAULTS, into gpu_product_path.json.

    # on the GPU machine, after benchmarks/gpu_device_setup.sh
    python3 -m benchmarks.gpu_product_path --frames .gpu/frames --out $OUT \
        --model-only $OUT/gpu_model_only_v2.json --agreement $OUT/gpu_agreement.json
    # dry run anywhere: the embedded CPU predictor, tiny videos
    python -m benchmarks.gpu_product_path --backend cpu --scenarios long:3x8:first --out /tmp/pp

Each scenario `name:VIDEOSxFRAMES:first|warm[:VAR=VALUE;...]` (FRAMES may be a range `LO-HI`:
lengths spread evenly over the videos, as a real dataset's are, so a worker meets many clip shapes;
the suffix: settings other than the defaults, recorded under `settings`) is a real `dagster-daemon`
on a fresh instance, `mask_pngs` + `tube_json` queued as `scripts/backfill.py` queues them
(`gpu_dagster.run_backfill`), with no `WSOVVIS_*` setting but the GPU list (`WSOVVIS_GPUS=0`),
random weights, and the data/output roots. `first`: no predictor worker runs before the backfill;
queueing it starts them (`gpu.prestart`, as `scripts/backfill.py` does; recorded under
`worker_prestarted` and `detail.prestart`), so what the runs wait of the build is in the wall;
`warm`: the workers of every slot were started before the clock, as an earlier backfill leaves them.
The CPU dry run (`--backend cpu`) runs the cpu backend's defaults (its model is built in each run);
a scenario suffix `:WSOVVIS_WORKER_IDLE_SECONDS=600` makes it take videocutler's worker path,
recorded under `settings`. nvidia-smi is sampled every 200 ms over the whole scenario (worker start
included). The model-only and agreement sections are copied in from `benchmarks/gpu_model_only.py`'s
results. Writes `gpu_product_path.json` to --out.

    # several device calls into one result (later files win per scenario)
    python -m benchmarks.gpu_product_path --combine OUT.json CALL1.json CALL2.json ...

`--code LABEL=DIR` (repeatable) runs the same scenarios with another checkout's code as well
(e.g. the commit before a change: `git worktree add DIR <commit>`), each checkout's own copy of
this benchmark in a subprocess, alternating `--repeat` rounds, and prints the rows side by side;
with `--json PATH` they are saved together. On the CPU backend this measures the orchestration
alone (queue, run start, tube_json trigger and run) on the product path:

    python -m benchmarks.gpu_product_path --backend cpu --scenarios long:8x24:warm \
        --code before=/tmp/before --repeat 3 --json benchmarks/results/orchestration_batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.gpu_common import (
    GPU_CONDITIONS,
    report_codes,
    run_with_codes,
    strip_code_args,
    write_gpu_result,
)
from benchmarks.gpu_dagster import GpuSampler, make_videos, run_backfill, source_frames
from benchmarks.results_io import add_json_args, code_checkouts

REPO = Path(__file__).resolve().parents[1]

DEFAULT_SCENARIOS = "long:16x200:first,long:16x200:warm,lvvis:96x32:first,lvvis:96x32:warm"
FIELDS = ("name", "settings", "videos", "frames", "warm", "mask_wall_fps", "in_asset_fps",
          "submit_to_tube_json_fps", "queue_to_first_run_s", "tube_json_gap_s", "smi_peak_gib",
          "worker_prestarted")
# run_backfill's details shown beside FIELDS when codes are compared
DETAIL = ("mean_fixed_s", "tube_run_s", "submit_to_tubes_s")


def scenario_row(name: str, warm: bool, res: dict, smi_peak: float | None,
                 settings: dict | None = None) -> dict:
    """The issue's schema from `run_backfill`'s summary (its details kept under `detail`)."""
    return {
        "name": name, "settings": settings or "defaults", "videos": res["videos"],
        "frames": res["frames"],
        "warm": warm, "mask_wall_fps": res["mask_wall_fps"], "in_asset_fps": res["in_asset_fps"],
        "submit_to_tube_json_fps": res.get("submit_to_tubes_fps"),
        "queue_to_first_run_s": res["queue_to_first_run_s"],
        "tube_json_gap_s": res.get("tube_run_queued_after_masks_s"),
        "smi_peak_gib": smi_peak,
        # queueing the batch started the slots' workers and the runs used them (False: the
        # workers ran before, `warm`, or the model was built in each run)
        "worker_prestarted": res.get("runs_used_prestarted_workers"),
        "detail": {k: v for k, v in res.items() if k not in ("peak_per_video",)},
    }


def video_lengths(shape: str) -> tuple[int, int | list[int]]:
    """`VIDEOSxFRAMES` -> (videos, frames); `VIDEOSxLO-HI` -> (videos, one length per video,
    LO to HI evenly, shuffled by a fixed seed so neighbouring runs mix lengths)."""
    videos, frames = shape.split("x", 1)
    if "-" not in frames:
        return int(videos), int(frames)
    n, (lo, hi) = int(videos), (int(x) for x in frames.split("-", 1))
    lengths = [lo + (hi - lo) * i // max(1, n - 1) for i in range(n)]
    random.Random(0).shuffle(lengths)
    return n, lengths


# the overrides a row may carry and still equal today's defaults (predictor settings)
PREDICTOR_OVERRIDES = {"WSOVVIS_RUNS_PER_GPU", "WSOVVIS_PRECISION", "WSOVVIS_GPU_MEMORY_GIB",
                       "WSOVVIS_CUDNN_BENCHMARK"}


def is_default(overrides: dict, default) -> bool:
    """Settings that equal today's defaults, `default` (the code location's predictor
    resource without overrides): an override of a default that changed since."""
    import definitions

    given = definitions.loaded_predictor(overrides)
    return not set(overrides) - PREDICTOR_OVERRIDES and \
        given.settings("cuda:0") == default.settings("cuda:0") and \
        given.runs_per_gpu == default.runs_per_gpu


def combine(out: Path, inputs: list[Path]) -> dict:
    """One result from several calls of this benchmark (a device call is 10 minutes): later
    files win per (scenario, worker, settings, queue path); rows whose settings equal today's
    defaults are labelled defaults; failed rows are kept apart; each row names its file. A
    `gpu_agreement` file among them adds (or replaces) its mask comparisons."""
    import definitions

    default = definitions.loaded_predictor({})
    default_rpg, default_cudnn = default.runs_per_gpu, default.settings("cuda:0").cudnn_benchmark
    merged: dict = {"sources": [], "scenarios": [], "failed": []}
    rows: dict = {}
    for path in inputs:
        envelope = json.loads(path.read_text())
        data = envelope["results"]
        merged["sources"].append({"file": path.name, "command": envelope["context"]["command"]})
        if envelope["benchmark"] == "gpu_agreement":  # a later agreement of the masks
            merged["agreement"] = {**merged.get("agreement", {}), **data}
            continue
        for key in ("model_only", "baseline", "backend"):
            if key in data:
                merged[key] = data[key]
        merged["agreement"] = {**merged.get("agreement", {}), **data.get("agreement", {})}
        # that call's defaults, where they differ from today's
        then = {}
        if data.get("runs_per_gpu") not in (None, default_rpg):
            then["WSOVVIS_RUNS_PER_GPU"] = str(data["runs_per_gpu"])
        # recorded since autotuning went off by default; on in every call before
        cudnn_then = data.get("cudnn_benchmark", True)
        if cudnn_then != default_cudnn:
            then["WSOVVIS_CUDNN_BENCHMARK"] = "1" if cudnn_then else "0"
        for row in data["scenarios"]:
            # files before the run-queue path were queued as Dagster asset backfills
            row = {**row, "source": path.name,
                   "queued_by": data.get("queued_by", "asset backfill (30 s daemon loop)")}
            if row["settings"] == "defaults":
                row["settings"] = dict(then) or "defaults"
            if isinstance(row["settings"], dict) and is_default(row["settings"], default):
                row["settings"] = "defaults"
            if "error" in row or not row.get("frames"):
                merged["failed"].append(row)
                continue
            rows[(row["name"], row["warm"], json.dumps(row["settings"]), row["queued_by"])] = row
    merged["scenarios"] = list(rows.values())
    save(out, merged)
    return merged


def save(path: Path, results: dict) -> None:
    write_gpu_result(
        path, benchmark="gpu_product_path", results=results,
        title="Issue 24: the GPU path on defaults, as a new user runs it",
        measures="product path: `mask_pngs` runs queued as `scripts/backfill.py` queues them "
                 "(the run queue; the batch's last mask run queues `tube_json`, the "
                 "`tube_json_after_masks` sensor when runs end together), on a real "
                 "`dagster-daemon`, on today's defaults",
        conditions=f"{GPU_CONDITIONS}; chunk 64 / overlap 8, confidence 0.6")


def compare_codes(argv: list[str], codes: list[tuple[str, Path]], repeat: int,
                  json_path: Path | None, note: str | None, command: list[str]) -> list[dict]:
    """Run this benchmark (`argv`, without --code/--repeat/--json) with each checkout's code,
    alternating `repeat` rounds; rows labelled by code and round, printed side by side
    (`command`: this call's arguments, recorded)."""
    rows = [{"code": label, "round": round_, **{k: row.get(k) for k in FIELDS},
             **{k: row.get("detail", {}).get(k) for k in DETAIL}}
            for label, round_, results in run_with_codes(
                "benchmarks.gpu_product_path", argv, codes, repeat, "gpu_product_path.json")
            for row in results["scenarios"]]
    columns = ("code", "round", "name", "warm", *FIELDS[5:10], *DETAIL)
    rows.sort(key=lambda r: (r["name"], r["warm"], r["round"], r["code"]))
    report_codes(rows, columns, json_path, benchmark="product_path_codes",
                 title="The product path on two codes, side by side",
                 measures="product path: `mask_pngs` runs queued as `scripts/backfill.py` "
                          "queues them, then tube_json, on a real `dagster-daemon`, with each "
                          "code's defaults, rounds alternating",
                 command=command, codes=codes, repeat=repeat, note=note)
    return rows


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--combine":
        combine(Path(sys.argv[2]), [Path(a) for a in sys.argv[3:]])
        return 0
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="videocutler", choices=["videocutler", "cpu"])
    ap.add_argument("--frames", type=Path, help="folder of JPEGs (default: synthetic frames)")
    ap.add_argument("--size", default="360x640", help="HxW of synthetic frames")
    ap.add_argument("--scenarios", default=DEFAULT_SCENARIOS)
    ap.add_argument("--model-only", type=Path, help="gpu_model_only.py's JSON (new model)")
    ap.add_argument("--baseline", type=Path, help="gpu_model_only.py's JSON (before)")
    ap.add_argument("--agreement", type=Path, help="JSON of the mask comparisons")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--workdir", type=Path, help="default: a temp folder")
    ap.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                    help="also run another checkout's code (before this one, each round)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds, with --code")
    add_json_args(ap)
    args = ap.parse_args(argv)
    if args.code:
        codes = code_checkouts(args.code, REPO)
        command = list(sys.argv[1:] if argv is None else argv)
        compare_codes(strip_code_args(command), codes, args.repeat, args.json, args.note,
                      command)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsovvis-product-path-"))
    height, width = (int(x) for x in args.size.split("x"))
    files = source_frames(args.frames, workdir, height, width)
    base_env = {**os.environ, "WSOVVIS_PREDICTOR": args.backend,
                "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "PYTHONUNBUFFERED": "1"}
    if args.backend == "videocutler":
        base_env.update(WSOVVIS_GPUS="0", WSOVVIS_ALLOW_RANDOM_WEIGHTS="1")
    import definitions

    predictor = definitions.loaded_predictor(base_env)
    runs_per_gpu = predictor.runs_per_gpu
    results: dict = {"backend": args.backend, "runs_per_gpu": runs_per_gpu,
                     "cudnn_benchmark": predictor.settings("cuda:0").cudnn_benchmark,
                     "queued_by": "run queue", "scenarios": []}
    for extra, path in (("model_only", args.model_only), ("baseline", args.baseline),
                        ("agreement", args.agreement)):
        if path and path.is_file():
            results[extra] = json.loads(path.read_text())["results"]
    args.out.mkdir(parents=True, exist_ok=True)
    with GpuSampler() as sampler:
        for spec in args.scenarios.split(","):
            name, shape, mode, *extra = spec.split(":", 3)
            overrides = dict(kv.split("=", 1) for kv in extra[0].split(";")) if extra else {}
            videos, length = video_lengths(shape)
            data = workdir / f"data-{shape}"
            keys = [r.partition_key for r in make_videos(data, files, videos, length,
                                                         f"v{shape}_")]
            label = f"{name}-{mode}" + "".join(f"-{v}" for v in overrides.values())
            env = {**base_env, **overrides, "WSOVVIS_DATA_ROOT": str(data),
                   "WSOVVIS_OUTPUT_ROOT": str(workdir / f"out-{label}")}
            slots = definitions.loaded_predictor(env).runs_per_gpu
            started = time.time()
            try:
                res = run_backfill(label, env, keys, workdir, sampler, slots,
                                   warm=mode == "warm")
            except Exception as exc:  # noqa: BLE001 - recorded; the next scenario still runs
                results["scenarios"].append({"name": name, "settings": overrides or "defaults",
                                             "warm": mode == "warm",
                                             "error": f"{type(exc).__name__}: {exc}"[:2000]})
                print(f"scenario {label} failed: {exc}", flush=True)
                continue
            row = scenario_row(name, mode == "warm", res, sampler.peak_gib(started, time.time()),
                               overrides)
            if isinstance(length, list):
                row["lengths"] = shape.split("x", 1)[1]
            results["scenarios"].append(row)
            print(json.dumps({k: row[k] for k in FIELDS}), flush=True)
            save(args.out / "gpu_product_path.json", results)
    print(" | ".join(FIELDS[2:]))
    for r in results["scenarios"]:
        print(f"{r['name']} {r['settings']}: " + " | ".join(str(r.get(k)) for k in FIELDS[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
