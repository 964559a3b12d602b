"""Issue 14: the GPU path as users run it, measured in one run.

    # on a GPU machine (patched third_party/, 640x360 JPEGs in FRAMES)
    python -m benchmarks.gpu_dagster --frames FRAMES --out $OUT
    # dry run on any machine: embedded CPU predictor, tiny videos
    python -m benchmarks.gpu_dagster --backend cpu --scenarios long:4x8:1:fp32 --skip library

For each scenario `name:VIDEOSxFRAMES:RUNS_PER_GPU:PRECISION[:VIDEOS_PER_RUN[:WORKER]]`
(WORKER: `cold` = no predictor worker runs before the backfill: queueing it starts them
(`gpu.prestart`; before that, the first run did), counted; `warm` = the
workers of every slot were started before the clock, as an earlier backfill leaves them; `off`
= the model is built inside each run) it builds a data
root (the JPEGs hard-linked into videos) and a temporary Dagster instance, starts
`dagster-daemon`, registers the partitions, queues the `mask_pngs` runs as `scripts/backfill.py`
does (`wsovvis_ops.backfill.queue_mask_runs`; the `tube_json_after_masks` sensor then queues
`tube_json`) and waits for tube_json, sampling nvidia-smi in a thread. It prints, side by side:

- library loop fps: `masks.segment.segment_videos` (the asset's own loop) called directly in one
  fresh process on the same videos, model built once: the ceiling for the asset;
- in-asset fps: frames / sum of the per-video `seconds` in the asset's metadata;
- mask wall fps: frames / (first mask run start -> last mask run end), run records;
- submit -> tube_json fps: frames / (backfill queued -> tube_json materialised);
- overhead: mask wall / (sum of video seconds / runs per GPU) - 1;
- fixed cost per run: run wall - the seconds of its videos (process start, imports, model
  build, warm-up, teardown);
- peak GPU memory per video: torch's peak reserved (metadata) and nvidia-smi's maximum over
  the video's window (from the run's log timestamps), the first video of each run included.

Before the backfills, `--cudnn` variants of the library loop (autotuning on / allocator cap /
off) measure first-video memory and fps; `--cudnn auto` applies the fastest
variant whose nvidia-smi peak stays within `--memory-budget-gib` to every backfill. Results:
`gpu_dagster.json` under `--out` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.gpu_common import GPU_CONDITIONS, build_from_env, loop_videos, write_gpu_result

REPO = Path(__file__).resolve().parents[1]

# cuDNN variants of the library loop: env for the resource / library settings
CUDNN_VARIANTS = {
    "autotune": {"WSOVVIS_CUDNN_BENCHMARK": "1"},  # the default
    "alloc18g": {"WSOVVIS_CUDNN_BENCHMARK": "1", "WSOVVIS_GPU_MEMORY_GIB": "18"},
    "off": {"WSOVVIS_CUDNN_BENCHMARK": "0"},
}


# predictor worker per scenario: queueing the backfill starts it (cold, counted in the wall),
# an earlier backfill started it (warm), or none (off: the model is built in each run)
WORKER_MODES = ("cold", "warm", "off")


# -- GPU memory sampling -----------------------------------------------------------------------
class GpuSampler:
    """nvidia-smi's used memory (MiB, whole GPU) every `period` s, with wall-clock stamps."""

    def __init__(self, period: float = 0.2) -> None:
        self.period, self.samples = period, []
        self.process_peak_mib = 0.0  # the largest single process (workers share the GPU)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = _nvidia_smi_mib() is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            mib = _nvidia_smi_mib()
            if mib is not None:
                self.samples.append((time.time(), mib))
                self.process_peak_mib = max(self.process_peak_mib, _largest_process_mib())
            self._stop.wait(self.period)

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def peak_gib(self, start: float | None = None, end: float | None = None) -> float | None:
        vals = [m for t, m in self.samples
                if (start is None or t >= start) and (end is None or t <= end)]
        return round(max(vals) / 1024, 2) if vals else None


def _nvidia_smi_mib() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,"
                              "nounits", "-i", "0"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        return float(out.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        return None


def _largest_process_mib() -> float:
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=used_memory",
                              "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=5)
        return max((float(x) for x in out.stdout.split()), default=0.0)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return 0.0


# -- data --------------------------------------------------------------------------------------
def source_frames(frames: Path | None, workdir: Path, height: int, width: int) -> list[Path]:
    """The JPEGs videos are made of: `frames`, or one synthetic video written here."""
    if frames is not None:
        files = sorted(Path(frames).glob("*.jpg"))
        if not files:
            raise SystemExit(f"no JPEGs in {frames}")
        return files
    from wsovvis_dagster.video.synthetic import generate_dataset

    root = workdir / "synthetic"
    generate_dataset(root, seed=0, num_frames=16, videos_per_split={"train": 1},
                     height=height, width=width)
    return sorted((root / "train" / "JPEGImages").glob("*/*.jpg"))


def make_videos(data: Path, files: list[Path], videos: int, length: int | list[int],
                prefix: str) -> list:
    """`videos` folders of `length` frames (or `length[v]` for video v: the files played
    forward and back), hard links."""
    from wsovvis_dagster.paths import VideoRef

    cycle = files + files[-2:0:-1] if len(files) > 1 else files
    lengths = length if isinstance(length, list) else [length] * videos
    refs = []
    for v in range(videos):
        folder = data / "train" / "JPEGImages" / f"{prefix}{v:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for t in range(lengths[v]):
            dst = folder / f"{t:05d}.jpg"
            if not dst.exists():
                try:
                    os.link(cycle[(t + 7 * v) % len(cycle)], dst)
                except OSError:  # another file system: copy
                    dst.write_bytes(cycle[(t + 7 * v) % len(cycle)].read_bytes())
        refs.append(VideoRef("train", folder.name))
    return refs


# -- the library loop, in a fresh process ------------------------------------------------------
def library_child(args) -> int:
    """Child process: build the predictor as the resource does, run `segment_videos`."""
    from wsovvis_dagster.paths import VideoRef

    t0 = time.time()
    model, _, _ = build_from_env()  # the settings the resource reads from env
    built = time.time()
    refs = [VideoRef.from_partition_key(k) for k in args.keys.split(",")]
    videos, wall = loop_videos(Path(args.data), Path(args.output), refs, model)
    frames = sum(v["frames"] for v in videos)
    result = {"build_s": round(built - t0, 2), "loop_s": round(wall, 3),
              "fps": round(frames / wall, 1), "frames": frames, "videos": videos,
              "load_times": getattr(getattr(model, "load_times", None), "__dict__", None),
              "built_at": built}
    if args.loop_variants:
        result["loop_variants"] = loop_variants(model, args, refs)
    Path(args.json).write_text(json.dumps(result))
    return 0


def loop_variants(model, args, refs) -> dict:
    """The same loop again, same process and model, with the GIL switch interval and the
    decode/PNG pool sizes varied: is the loop's CPU side contending for the GIL?"""
    out = {}
    default_si = sys.getswitchinterval()
    for spec in args.loop_variants.split(";"):
        opts = dict(kv.split("=") for kv in spec.split(","))
        sys.setswitchinterval(float(opts.get("si", default_si)))
        workers = int(opts["w"]) if "w" in opts else None
        videos, wall = loop_videos(Path(args.data), Path(args.output) / f"var-{len(out)}",
                                   refs, model, workers=workers)
        frames = sum(v["frames"] for v in videos)
        out[spec] = {"fps": round(frames / wall, 1), "loop_s": round(wall, 2)}
        print(f"loop variant {spec}: {out[spec]}", flush=True)
    sys.setswitchinterval(default_si)
    return out


def run_library(env: dict, data: Path, output: Path, keys: list[str], workdir: Path,
                sampler: GpuSampler, loop_variants_: str = "") -> dict:
    path = workdir / f"lib-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_dagster", "_library", "--data", str(data),
           "--output", str(output), "--keys", ",".join(keys), "--json", str(path)]
    if loop_variants_:
        cmd += ["--loop-variants", loop_variants_]
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"library loop failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    res = json.loads(path.read_text())
    prev = res["built_at"]
    res["setup_peak_smi_gib"] = sampler.peak_gib(started, prev)
    for v in res["videos"]:
        v["peak_smi_gib"] = sampler.peak_gib(prev, v["end"])
        prev = v["end"]
    return res


# -- the product path: a daemon backfill -------------------------------------------------------
def start_workers(env: dict, slot_root: Path, runs_per_gpu: int) -> list[dict]:
    """Start the predictor worker of every lease slot, as an earlier run would have (the
    resource's own settings from `env`, so the backfill's runs find them matching)."""
    from concurrent.futures import ThreadPoolExecutor

    import definitions

    res = definitions.loaded_predictor(env)
    device = "cuda:0" if res.gpus else "cpu"  # the benchmark leases GPU 0 (WSOVVIS_GPUS=0)

    def start(slot: int) -> dict:
        return res.connect_worker(slot_root, device, slot, env=env).info

    with ThreadPoolExecutor(runs_per_gpu) as pool:
        return list(pool.map(start, range(runs_per_gpu)))


def run_backfill(name: str, env: dict, keys: list[str], workdir: Path, sampler: GpuSampler,
                 runs_per_gpu: int, warm: bool = False) -> dict:
    """One daemon backfill of `keys` (the videos of the scenario's data root), registered as
    a user does (`dagster asset materialize --select video_partitions`, which starts the slots'
    predictor workers) and queued right after; `warm`: the workers of every slot are started
    first (not timed), as any earlier backfill of the day would have left them."""
    from dagster import AssetKey, DagsterEventType, DagsterInstance

    from wsovvis_dagster.gpu.worker import stop_workers
    from wsovvis_ops.instance import render_instance, start_daemon, stop_daemon, wait_for

    home = workdir / f"home-{name}"
    render_instance(home, gpu_limit=runs_per_gpu)
    env = {**env, "DAGSTER_HOME": str(home)}
    with DagsterInstance.from_config(str(home)) as instance:
        daemon = start_daemon(env, workdir / f"daemon-{name}.log")
        try:
            time.sleep(3)  # let the daemon come up before the clock starts
            if warm:
                for info in start_workers(env, home / "gpu_slots", runs_per_gpu):
                    print(f"worker pid {info['pid']} ready (built in {info['built_s']} s)",
                          flush=True)
            registered = register_videos(instance, env, keys)
            submitted = time.time()
            status, prestart = queue_and_wait(instance, env, keys, wait_for)
            time.sleep(2)  # the workers idle now: what they hold between backfills
            idle_gib = sampler.peak_gib(time.time() - 1.0, time.time())
        finally:
            stop_daemon(daemon)
            stop_workers(home / "gpu_slots")  # the next scenario starts from a free GPU
        if status != "SUCCESS":  # say why, here: the instance is a temp folder
            for record in instance.get_run_records():
                for e in instance.all_logs(record.dagster_run.run_id):
                    if e.dagster_event and e.dagster_event.is_failure:
                        print(f"run {record.dagster_run.run_id[:8]}: {e.message[:1500]}")
            for log in (home / "gpu_slots").glob("predictor_workers/*/worker.log"):
                print(f"{log}:\n{log.read_text(errors='replace')[-3000:]}")
        runs = []
        for record in instance.get_run_records():
            run = record.dagster_run
            selection = run.asset_selection or set()
            if not selection & {AssetKey("mask_pngs"), AssetKey("tube_json")}:
                continue  # the registration's run
            is_tubes = AssetKey("tube_json") in selection
            logs = instance.all_logs(run.run_id)
            step_start = next((e.timestamp for e in logs if e.dagster_event and
                               e.dagster_event.event_type == DagsterEventType.STEP_START), None)
            init_start = next((e.timestamp for e in logs if e.dagster_event and
                               e.dagster_event.event_type
                               == DagsterEventType.RESOURCE_INIT_STARTED), None)
            ends = {}
            for e in logs:  # the asset logs "video i/n: key: ..." as each video is done
                msg = e.user_message or ""
                if msg.startswith("video ") and ": train__" in msg and " frames, " in msg:
                    ends[msg.split(": ")[1]] = e.timestamp
            runs.append({"run_id": run.run_id, "tubes": is_tubes, "status": run.status.value,
                         "start": record.start_time, "end": record.end_time,
                         "init_start": init_start, "step_start": step_start, "video_ends": ends})
        meta = {}
        for key in keys:
            recs = instance.fetch_materializations(_mask_filter(key), limit=1).records
            if recs:
                md = recs[0].asset_materialization.metadata
                meta[key] = {k: md[k].value for k in ("frames", "seconds", "predict_seconds",
                                                      "decode_seconds", "write_seconds")
                             if k in md}
                for extra in ("peak_gpu_gib", "predictor_worker"):
                    if extra in md:
                        meta[key][extra] = md[extra].value
        tube = instance.fetch_materializations(AssetKey("tube_json"), limit=1).records
        tube_at = tube[0].timestamp if tube else None
    out = summarize(name, status, submitted, runs, meta, tube_at, sampler, runs_per_gpu, keys)
    if tube_at:
        out["register_to_tubes_s"] = round(tube_at - registered["at"], 2)
    out["idle_workers_smi_gib"] = idle_gib  # workers alive, between requests
    return {**out, "registration": registered,
            **prestart_record(prestart, out["workers"], registered["worker_pids"])}


def register_videos(instance, env: dict, keys: list[str]) -> dict:
    """`dagster asset materialize --select video_partitions`, as a user registers videos (it
    also starts the predictor workers of the videos without masks); its wall time, what its
    metadata says of the workers, and the pids of the workers it started."""
    from dagster import AssetKey

    from wsovvis_dagster.gpu.worker import list_workers

    slots = Path(env["DAGSTER_HOME"]) / "gpu_slots"
    before = {w["pid"] for w in list_workers(slots)}
    at = time.time()
    done = subprocess.run([sys.executable, "-m", "dagster", "asset", "materialize", "-m",
                           "definitions", "--select", "video_partitions"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    wall = time.time() - at
    if done.returncode != 0:
        raise RuntimeError(f"registering the videos failed:\n{done.stderr[-3000:]}")
    if sorted(instance.get_dynamic_partitions("videos")) != sorted(keys):
        raise RuntimeError("the data root holds other videos than the scenario's")
    (record,) = instance.fetch_materializations(AssetKey("video_partitions"), limit=1).records
    summary = record.asset_materialization.metadata["predictor_workers"].value
    return {"at": at, "register_s": round(wall, 2), "workers": summary,
            "worker_pids": sorted({w["pid"] for w in list_workers(slots)} - before)}


def prestart_record(prestart, used: list[str], registered_pids=()) -> dict:
    """What `queue_mask_runs` pre-started (`gpu.prestart`) and whether the runs used workers
    started ahead of them, by registering the videos or by queueing (their `predictor_worker`
    metadata names those pids; False when the workers ran before, as in `warm`)."""
    workers = [{"device": w.device, "slot": w.slot, "state": w.state, "pid": w.pid}
               for w in prestart.workers]
    pids = {json.loads(u)["pid"] for u in used}
    ahead = {w["pid"] for w in workers if w["state"] in ("started", "replaced")}
    return {"prestart": {"summary": prestart.summary(), "workers": workers},
            "runs_used_prestarted_workers": bool(pids) and pids <= ahead | set(registered_pids)}


def queue_and_wait(instance, env: dict, keys: list[str], wait_for):
    """Queue the batch as `scripts/backfill.py` does (`queue_mask_runs`, in this process with
    the scenario's env: it pre-starts the slots' predictor workers too) and wait for its
    tube_json run; ("SUCCESS" when every run succeeded, else "FAILURE"; the pre-start)."""
    from wsovvis_dagster.gpu.run_tags import BATCH_TAG
    from wsovvis_ops.backfill import queue_mask_runs

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the code location reads its settings from env
    try:
        batch = queue_mask_runs(instance, keys)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def batch_runs():
        from dagster import RunsFilter

        return instance.get_runs(RunsFilter(tags={BATCH_TAG: batch.batch_id}))

    def tubes_done():
        return any(r.asset_selection and "tube_json" in {k.to_user_string()
                                                         for k in r.asset_selection}
                   and r.is_finished for r in batch_runs())

    wait_for(tubes_done, timeout=3600, poll=0.5, what="the tube_json run")
    status = "SUCCESS" if all(r.status.value == "SUCCESS" for r in batch_runs()) else "FAILURE"
    return status, batch.workers


def _mask_filter(key: str):
    from dagster import AssetKey, AssetRecordsFilter

    return AssetRecordsFilter(asset_key=AssetKey("mask_pngs"), asset_partitions=[key])


def summarize(name, status, submitted, runs, meta, tube_at, sampler, runs_per_gpu, keys) -> dict:
    mask_runs = sorted((r for r in runs if not r["tubes"] and r["start"]), key=lambda r: r["start"])
    tube_runs = [r for r in runs if r["tubes"]]
    frames = sum(m.get("frames", 0) for m in meta.values())
    video_s = sum(m.get("seconds", 0.0) for m in meta.values())
    first = min(r["start"] for r in mask_runs)
    last = max(r["end"] for r in mask_runs)
    wall = last - first
    per_video = []
    fixed = []
    for r in mask_runs:
        prev = r["step_start"]
        own = 0.0
        for i, (key, end) in enumerate(sorted(r["video_ends"].items(), key=lambda kv: kv[1])):
            m = meta.get(key, {})
            own += m.get("seconds", 0.0)
            per_video.append({"key": key, "run": r["run_id"][:8], "index_in_run": i,
                              "seconds": m.get("seconds"), "peak_gpu_gib": m.get("peak_gpu_gib"),
                              "peak_smi_gib": sampler.peak_gib(prev, end)})
            prev = end
        fixed.append({"run": r["run_id"][:8], "videos": len(r["video_ends"]),
                      "run_s": round(r["end"] - r["start"], 2),
                      "start_to_step_s": round((r["step_start"] or r["start"]) - r["start"], 2),
                      "setup_s": round((r["step_start"] or 0) - (r["init_start"] or 0), 2)
                      if r["init_start"] else None,
                      "setup_peak_smi_gib": sampler.peak_gib(r["init_start"], r["step_start"]),
                      "fixed_s": round(r["end"] - r["start"] - own, 2)})
    out = {
        "scenario": name, "status": status, "videos": len(keys), "frames": frames,
        "runs_per_gpu": runs_per_gpu, "mask_runs": len(mask_runs),
        "in_asset_fps": round(frames / video_s, 1) if video_s else None,
        "mask_wall_s": round(wall, 2), "mask_wall_fps": round(frames / wall, 1),
        "queue_to_first_run_s": round(first - submitted, 2),
        "overhead": round(wall / (video_s / runs_per_gpu) - 1, 3) if video_s else None,
        "workers": sorted({json.dumps(m["predictor_worker"], sort_keys=True)
                           for m in meta.values() if "predictor_worker" in m}),
        "fixed_per_run": fixed,
        "mean_fixed_s": round(sum(f["fixed_s"] for f in fixed) / len(fixed), 2),
        "peak_per_video": per_video,
        "max_video_peak_smi_gib": max((v["peak_smi_gib"] or 0 for v in per_video), default=None),
        "max_video_peak_torch_gib": max((v["peak_gpu_gib"] or 0 for v in per_video),
                                        default=None),
    }
    if tube_at:
        out["submit_to_tubes_s"] = round(tube_at - submitted, 2)
        out["submit_to_tubes_fps"] = round(frames / (tube_at - submitted), 1)
    if tube_runs:
        t = tube_runs[0]
        out["tube_run_queued_after_masks_s"] = round(t["start"] - last, 2) if t["start"] else None
        out["tube_run_s"] = round(t["end"] - t["start"], 2) if t["start"] else None
    return out


def parse_scenario(text: str) -> dict:
    parts = text.split(":")
    name, shape, rpg, prec = parts[:4]
    videos, length = (int(x) for x in shape.split("x"))
    per_run = int(parts[4]) if len(parts) > 4 and parts[4] else -(-videos // int(rpg))
    worker = parts[5] if len(parts) > 5 else "cold"
    if worker not in WORKER_MODES:
        raise SystemExit(f"scenario {text!r}: worker mode must be one of {WORKER_MODES}")
    return {"name": name, "videos": videos, "length": length, "runs_per_gpu": int(rpg),
            "precision": prec, "videos_per_run": per_run, "worker": worker}


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_library":
        p = argparse.ArgumentParser()
        for a in ("--data", "--output", "--keys", "--json"):
            p.add_argument(a, required=True)
        p.add_argument("--loop-variants", default="")
        return library_child(p.parse_args(sys.argv[2:]))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="videocutler", choices=["videocutler", "cpu"])
    ap.add_argument("--frames", type=Path, help="folder of JPEGs (default: synthetic frames)")
    ap.add_argument("--size", default="360x640", help="HxW of synthetic frames")
    ap.add_argument("--weights", default="", help="checkpoint (default: random weights)")
    ap.add_argument("--scenarios", default="long:16x200:1:fp32::cold,long:16x200:1:fp32::warm,"
                    "long_bf16:16x200:1:bf16::warm,lvvis:96x32:2:fp32:16:warm")
    ap.add_argument("--cudnn", default="auto",
                    help=f"variant for the backfills: auto or one of {', '.join(CUDNN_VARIANTS)}")
    ap.add_argument("--cudnn-variants", default=",".join(CUDNN_VARIANTS))
    ap.add_argument("--variant-videos", type=int, default=3)
    ap.add_argument("--memory-budget-gib", type=float, default=20.0)
    ap.add_argument("--loop-variants", default="",
                    help="with the first library loop: re-run it in the same process per "
                    "variant, ';'-separated, each 'si=GIL_SWITCH_S,w=POOL_THREADS' (either "
                    "key optional), e.g. 'si=0.005;si=0.0005;si=0.0005,w=2'")
    ap.add_argument("--skip", default="",
                    help="comma list of: library, variants (model-only figures come from "
                    "benchmarks/gpu_profile.py)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--workdir", type=Path, help="default: a temp folder")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    scenarios = [parse_scenario(s) for s in args.scenarios.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsovvis-gpu-dagster-"))
    workdir.mkdir(parents=True, exist_ok=True)
    height, width = (int(x) for x in args.size.split("x"))
    files = source_frames(args.frames, workdir, height, width)
    gpu = args.backend == "videocutler"
    base_env = {**os.environ, "WSOVVIS_PREDICTOR": args.backend, "WSOVVIS_GPUS": "0",
                "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "PYTHONUNBUFFERED": "1"}
    if gpu and not args.weights:
        base_env["WSOVVIS_ALLOW_RANDOM_WEIGHTS"] = "1"
    if args.weights:
        base_env["WSOVVIS_VIDEOCUTLER_WEIGHTS"] = args.weights
    results: dict = {"backend": args.backend, "frames_source": str(args.frames or "synthetic"),
                     "scenarios": [], "library": [], "cudnn_variants": {}}
    with GpuSampler() as sampler:
        results["nvidia_smi"] = sampler.available
        chosen = {} if args.cudnn == "auto" else dict(CUDNN_VARIANTS[args.cudnn])
        if gpu and "variants" not in skip:
            data = workdir / "data-variants"
            refs = make_videos(data, files, args.variant_videos, 200, "var")
            keys = [r.partition_key for r in refs]
            for name in args.cudnn_variants.split(","):
                env = {**base_env, **CUDNN_VARIANTS[name]}
                res = run_library(env, data, workdir / f"out-var-{name}", keys, workdir, sampler)
                row = {"fps": res["fps"], "setup_peak_smi_gib": res["setup_peak_smi_gib"],
                       "first_video_peak_smi_gib": res["videos"][0]["peak_smi_gib"],
                       "video_peak_smi_gib": max(v["peak_smi_gib"] or 0 for v in res["videos"]),
                       "video_peak_torch_gib": max(v["peak_gpu_gib"] or 0
                                                   for v in res["videos"]),
                       "build_s": res["build_s"], "load_times": res["load_times"]}
                results["cudnn_variants"][name] = row
                print(f"cudnn variant {name}: {row}", flush=True)
            if args.cudnn == "auto":
                ok = {n: r for n, r in results["cudnn_variants"].items()
                      if max(r["setup_peak_smi_gib"] or 0, r["video_peak_smi_gib"])
                      <= args.memory_budget_gib}
                pick = max(ok, key=lambda n: ok[n]["fps"]) if ok else "autotune"
                chosen = dict(CUDNN_VARIANTS[pick])
                results["cudnn_chosen"] = pick
                print(f"backfills use cudnn variant {pick}", flush=True)
        for sc in scenarios:
            data = workdir / f"data-{sc['videos']}x{sc['length']}"
            refs = make_videos(data, files, sc["videos"], sc["length"], f"v{sc['length']}_")
            keys = [r.partition_key for r in refs]
            env = {**base_env, **chosen, "WSOVVIS_DATA_ROOT": str(data),
                   "WSOVVIS_PRECISION": sc["precision"],
                   "WSOVVIS_RUNS_PER_GPU": str(sc["runs_per_gpu"]),
                   "WSOVVIS_VIDEOS_PER_RUN": str(sc["videos_per_run"]),
                   "WSOVVIS_WORKER_IDLE_SECONDS": "0" if sc["worker"] == "off" else "600"}
            label = (f"{sc['name']}-{sc['videos']}x{sc['length']}-rpg{sc['runs_per_gpu']}"
                     f"-{sc['precision']}-{sc['worker']}")
            lib_key = (sc["videos"], sc["length"], sc["precision"])
            if "library" not in skip and lib_key not in {tuple(x["key"]) for x in
                                                          results["library"]}:
                res = run_library(env, data, workdir / f"out-lib-{label}", keys, workdir,
                                  sampler,
                                  loop_variants_="" if results["library"] else args.loop_variants)
                if "loop_variants" in res:
                    results["loop_variants"] = res["loop_variants"]
                row = {"key": list(lib_key), "output": str(workdir / f"out-lib-{label}"),
                       "fps": res["fps"], "loop_s": res["loop_s"],
                       "build_s": res["build_s"], "frames": res["frames"],
                       "setup_peak_smi_gib": res["setup_peak_smi_gib"],
                       "max_video_peak_smi_gib": max((v["peak_smi_gib"] or 0)
                                                     for v in res["videos"]),
                       "first_video_peak_smi_gib": res["videos"][0]["peak_smi_gib"]}
                results["library"].append(row)
                print(f"library loop {lib_key}: {row}", flush=True)
            env["WSOVVIS_OUTPUT_ROOT"] = str(workdir / f"out-{label}")
            sampler.process_peak_mib = 0.0
            res = run_backfill(label, env, keys, workdir, sampler, sc["runs_per_gpu"],
                               warm=sc["worker"] == "warm")
            res["largest_process_peak_smi_gib"] = round(sampler.process_peak_mib / 1024, 2)
            res["worker_mode"] = sc["worker"]
            res["library_fps"] = next((x["fps"] for x in results["library"]
                                       if tuple(x["key"]) == lib_key), None)
            if res["library_fps"]:
                res["wall_vs_library"] = round(res["mask_wall_fps"] / res["library_fps"], 3)
            results["scenarios"].append(res)
            brief = {k: v for k, v in res.items() if k not in ("fixed_per_run", "peak_per_video")}
            print(f"backfill {label}: {brief}", flush=True)
            save(args, results)
    results["agreement"] = precision_agreement(results["library"])
    for row in results["agreement"]:
        print(f"agreement with fp32: {row}", flush=True)
    print_table(results)
    save(args, results)
    return 0


def save(args, results: dict) -> None:
    write_gpu_result(
        args.out / "gpu_dagster.json", benchmark="gpu_dagster", results=results,
        title="Product path on one GPU: daemon backfills of mask_pngs + tube_json",
        measures="product path: a real `dagster-daemon` backfill queued like "
                 "`scripts/backfill.py` (wall = first mask run start to last mask run end, from "
                 "the instance's run records); `library` = the same `segment_videos` loop called "
                 "directly (the ceiling)",
        conditions=f"{GPU_CONDITIONS}; chunk 64 / overlap 8")


def precision_agreement(library: list[dict], videos: int = 2) -> list[dict]:
    """Masks of each non-fp32 library loop against the fp32 loop on the same videos (first
    `videos` of them): foreground IoU and the share of pixels with the same track id."""
    from wsovvis_dagster.masks.png_io import list_mask_files, load_id_map

    rows = []
    for row in library:
        n, length, precision = row["key"]
        ref = next((r for r in library if r["key"] == [n, length, "fp32"]), None)
        if precision == "fp32" or ref is None:
            continue
        inter = union = same = total = 0
        folders = sorted(f for f in (Path(ref["output"]) / "train" / "masks").iterdir()
                         if f.is_dir() and not f.name.startswith("."))[:videos]
        for folder in folders:
            for png in list_mask_files(folder):
                a = load_id_map(png)
                b = load_id_map(Path(row["output"]) / "train" / "masks" / folder.name / png.name)
                inter += int(((a > 0) & (b > 0)).sum())
                union += int(((a > 0) | (b > 0)).sum())
                same += int((a == b).sum())
                total += a.size
        rows.append({"key": row["key"], "videos": len(folders),
                     "foreground_iou": round(inter / union, 4) if union else None,
                     "same_id_pixels": round(same / total, 4) if total else None})
    return rows


def print_table(results: dict) -> None:
    cols = ("scenario", "worker_mode", "mask_runs", "library_fps", "in_asset_fps", "mask_wall_fps",
            "submit_to_tubes_fps", "overhead", "mean_fixed_s", "tube_run_queued_after_masks_s",
            "max_video_peak_smi_gib", "largest_process_peak_smi_gib", "max_video_peak_torch_gib")
    print(" | ".join(cols))
    for r in results["scenarios"]:
        print(" | ".join(str(r.get(c)) for c in cols))


if __name__ == "__main__":
    sys.exit(main())
