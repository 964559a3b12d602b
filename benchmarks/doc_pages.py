"""The figures of README.md and the hand-written docs/ pages, rendered from the results.

A page is written by hand except between `<!-- generated: NAME -->` and `<!-- /generated -->`:
a block (it starts with a new line) or a figure inside a sentence. `BLOCKS[NAME]` writes what
is between; `value:FILE:key/key[~FORMAT]` writes one figure of a file. `splice` renders a page
again; `benchmarks.render_docs` writes or checks them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from benchmarks.doc_tables import (
    BASELINE_SUFFIX,
    PRODUCT_PATH,
    Results,
    fmt,
    gpu_doc_block,
    json_link,
    model_tf32,
    readme_gpu_row,
    render_predictor_block,
    span,
    table,
)
from wsovvis_dagster.predictors.backends import BACKENDS

# --- issue 26: every other figure of README.md and docs/*.md -------------------------------

def _mean(res: dict) -> dict:
    return res["davis"]["mean"]


def readme_figures(results: Results) -> list[str]:
    """The README's headline table: each row's figures and command from its result file."""
    val, train = results.body("predictor_davis_val"), results.body("predictor_davis_train")
    train_old = results.body("predictor_davis_train" + BASELINE_SUFFIX)
    val_old = results.body("predictor_davis_val" + BASELINE_SUFFIX)
    demo = results.body("predictor_synthetic")["synthetic"]["val"]
    demo_old = results.body("predictor_synthetic" + BASELINE_SUFFIX)["synthetic"]["val"]
    version, old = val["predictor"]["version"], train_old["predictor"]["version"]
    mem = {(r["frames"], r["size"]): r for r in results.body("streaming_memory")["rows"]}
    big, small = sorted(k for k in mem if k[1] == "854x480"), \
        sorted(k for k in mem if k[1] == "320x180")
    whole = next((r for r in mem.values() if "whole_peak_rss_mb" in r), None)
    dead = results.body("orchestration_dead_runs")["dead_runs"]
    hold = dead["hold_s"]

    def gb(keys: list) -> str:
        return " / ".join(f"{mem[k]['peak_rss_mb'] / 1000:.2f}" for k in keys) + " GB"

    def frames(keys: list) -> str:
        return " / ".join(f"{k[0]:,}" for k in keys)

    rows = [
        [f"embedded predictor `{version}` (no weights), DAVIS-2016 **val**, held out, scored "
         "once",
         f"mean J **{_mean(val)['J']:.3f}**, best single track **{_mean(val)['J_best']:.3f}** "
         f"(the object in one id on {one_id(results, 'predictor_davis_val')} sequences; `{old}`: "
         f"{_mean(val_old)['J']:.3f}, {_mean(val_old)['J_best']:.3f})",
         f"`{results.command('predictor_davis_val')}` "
         f"({json_link('predictor_davis_val', 'README')})"],
        ["the same, DAVIS-2016 train (its tuning split)",
         f"mean J {_mean(train)['J']:.3f}, best track {_mean(train)['J_best']:.3f}, "
         f"{_mean(train)['tracks']:.2f} ids per object (`{old}`: {_mean(train_old)['J']:.3f}, "
         f"{_mean(train_old)['J_best']:.3f}, {_mean(train_old)['tracks']:.2f})",
         f"the same with `train.txt` ({json_link('predictor_davis_train', 'README')}); "
         "[docs/predictor.md](docs/predictor.md)"],
        [f"synthetic demo val tubes ({demo['videos']} videos), class-agnostic (`{version}`)",
         f"AP {demo['AP']:.2f}, AP50 {demo['AP50']:.2f} (`{old}`: {demo_old['AP']:.2f}, "
         f"{demo_old['AP50']:.2f})",
         f"`{results.command('predictor_synthetic')}` on the demo's data "
         f"({json_link('predictor_synthetic', 'README')})"],
        readme_gpu_row(results.body("gpu_product_path"), _ceiling(results)),
        orchestration_batch_row(results),
        ["`mask_pngs` peak memory on one long video (embedded predictor, streamed in 128-frame "
         "chunks)",
         f"{frames(big)} frames at 854×480: {gb(big)}; {frames(small)} frames at 320×180: "
         f"{gb(small)}" + (f" (the whole-video path before: {whole['whole_peak_rss_mb'] / 1000:.2f}"
                           f" GB for {whole['frames']} frames at {whole['size'].replace('x', '×')} "
                           "without Dagster)" if whole else ""),
         "`python -m benchmarks.streaming_memory` (`dagster asset materialize --select "
         f"mask_pngs`; {json_link('streaming_memory', 'README')}); "
         "[docs/reliability.md](docs/reliability.md)"],
        [f"a `kill -9`ed run: marked failed, GPU slot free ({dead['dead_runs']} CLI runs, each "
         f"holding its video {hold:g} s)",
         dead_run_range(results),
         f"`{results.command('orchestration_dead_runs')}` "
         f"({json_link('orchestration_dead_runs', 'README')}); "
         "[docs/operations.md](docs/operations.md)"],
    ]
    return ["", "| what | figure | measured by |", "|---|---|---|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def dead_run_range(results: Results) -> str:
    """Seconds from `kill -9` of a CLI run to run failed + GPU slot free, fastest–slowest."""
    s = results.body("orchestration_dead_runs")["dead_runs"]["kill_to_failed_and_freed_s"]
    return f"{min(s):.0f}–{max(s):.0f} s"


def dead_run_each(results: Results) -> str:
    s = results.body("orchestration_dead_runs")["dead_runs"]["kill_to_failed_and_freed_s"]
    return " / ".join(f"{x:.1f}" for x in s) + " s"


def dead_run_command(results: Results) -> str:
    return (f"`{results.command('orchestration_dead_runs')}`, "
            f"{json_link('orchestration_dead_runs')}")


BACKFILL_RUNS = ("orchestration_backfill_hold2s", "orchestration_backfill_hold5s")


def orchestration_block(results: Results) -> list[str]:
    """docs/operations.md: the daemon backfill's packing, partition registration, dead runs."""
    out = [""]
    rows = []
    for name in BACKFILL_RUNS:
        b = results.body(name)["backfill"]
        rows.append([f"{b['hold_s']:g} s", f"{b['videos']} / {b['runs']}",
                     f"{b['backfill_wall_s']} s", f"{b['sum_predictor_s']} s", b["ratio"],
                     b["ideal_ratio"], f"{b['mean_run_startup_s']} s",
                     f"`{results.command(name)}`"])
    out += table(["hold per video", "videos / runs", "backfill wall", "sum of predictor time",
                  "wall / sum", "perfect", "mean run start-up", "command"], rows)
    dead = results.body("orchestration_dead_runs")
    regs = [(results.body(n).get(f"registration_{store}"), store, n)
            for n in (*BACKFILL_RUNS, "orchestration_dead_runs")
            for store in ("sqlite", "postgres")]
    out += table(["storage", "partitions", "register, one bulk call", "in batches of 100",
                  "read back", "run"],
                 [[store if store == "sqlite" else "PostgreSQL (throw-away cluster)",
                   r["partitions"], f"{r['register_bulk_s']} s",
                   f"{r['register_batches_of_100_s']} s", f"{r['read_back_bulk_s']} s",
                   json_link(n)] for r, store, n in regs if r])
    d = dead["dead_runs"]
    out += [f"Killed CLI runs ({d['dead_runs']}, each holding its video {d['hold_s']:g} s): "
            f"failed and slot free {dead_run_each(results)} after the kill "
            f"({dead_run_command(results)}).", ""]
    return out


ORCHESTRATION_BATCH = "orchestration_batch"
_BATCH_FIGURES = ("queue_to_first_run_s", "tube_json_gap_s", "tube_run_s", "submit_to_tubes_s")


def _batch_means(results: Results, name: str = ORCHESTRATION_BATCH,
                 figures: tuple[str, ...] | None = None) -> dict[tuple[str, str], dict]:
    """(scenario, code) -> round count, frames and the mean of each of `figures` (default
    `_BATCH_FIGURES`) over the rows of `gpu_product_path --code` result `name`."""
    figures = figures or _BATCH_FIGURES
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in results.body(name)["rows"]:
        groups.setdefault((f"{row['videos']} × {row['frames'] // row['videos']}", row["code"]),
                          []).append(row)
    return {key: {"rounds": len(rows), "frames": rows[0]["frames"],
                  **{k: sum(r[k] for r in rows) / len(rows) for k in figures}}
            for key, rows in groups.items()}


ORCHESTRATION_MASK_RUNS = "orchestration_mask_runs_in_process"


def orchestration_mask_runs_block(results: Results) -> list[str]:
    """docs/gpu.md: a batch's mask runs with their step in a process of its own (before) and
    in the run worker (this), on the embedded predictor."""
    means = _batch_means(results, ORCHESTRATION_MASK_RUNS,
                         ("mean_fixed_s", "mask_wall_fps", "submit_to_tubes_s"))
    rows = [[scenario, code, m["rounds"], f"{m['mean_fixed_s']:.2f} s",
             f"{m['mask_wall_fps']:.1f}", f"{m['submit_to_tubes_s']:.1f} s"]
            for (scenario, code), m in sorted(means.items(), key=lambda kv: (kv[0][0],
                                                                            kv[0][1] != "before"))]
    return ["", *table(["videos × frames", "code", "rounds",
                        "a mask run's start and teardown", "mask wall fps",
                        "submit → tube_json materialised"], rows),
            f"`{results.command(ORCHESTRATION_MASK_RUNS)}` "
            f"({json_link(ORCHESTRATION_MASK_RUNS)}; means over rounds, alternating codes).", ""]


def orchestration_batch_block(results: Results) -> list[str]:
    """docs/gpu.md: a `scripts/backfill.py` batch on the embedded predictor, the code before
    the tube_json trigger / in-process tube_json run / lighter code location and after."""
    means = _batch_means(results)
    rows = [[scenario, code, m["rounds"], f"{m['queue_to_first_run_s']:.1f} s",
             f"{m['tube_json_gap_s']:.1f} s", f"{m['tube_run_s']:.1f} s",
             f"{m['submit_to_tubes_s']:.1f} s"]
            for (scenario, code), m in sorted(means.items(), key=lambda kv: (kv[0][0],
                                                                            kv[0][1] != "before"))]
    return ["", *table(["videos × frames", "code", "rounds", "submit → first mask run",
                        "last mask run → tube_json run", "tube_json run",
                        "submit → tube_json materialised"], rows),
            f"`{results.command(ORCHESTRATION_BATCH)}` ({json_link(ORCHESTRATION_BATCH)}; "
            "means over rounds, alternating codes).", ""]


def orchestration_batch_row(results: Results) -> list[str]:
    """README: the batch's tube_json gap and run and its submit -> tube_json, before and now
    (spans over the scenarios' means)."""
    means = _batch_means(results)

    def code_span(code: str, key: str) -> str:
        return span([m[key] for (_, c), m in means.items() if c == code], " s", 1)

    scenarios = " and ".join(sorted({s for s, _ in means}))
    return [f"a `scripts/backfill.py` batch ({scenarios} videos × frames) of the embedded "
            "predictor: orchestration alone, 2-core machine; before → after tube_json was queued "
            "by the last mask run and run in one process",
            f"`tube_json` starts {code_span('before', 'tube_json_gap_s')} → "
            f"**{code_span('this', 'tube_json_gap_s')}** after the last mask run; its run "
            f"(asset + 2 checks) takes {code_span('before', 'tube_run_s')} → "
            f"**{code_span('this', 'tube_run_s')}**; submit → `tube_json` "
            f"{code_span('before', 'submit_to_tubes_s')} → "
            f"**{code_span('this', 'submit_to_tubes_s')}**",
            f"`{results.command(ORCHESTRATION_BATCH)}` "
            f"({json_link(ORCHESTRATION_BATCH, 'README')}); [docs/gpu.md](docs/gpu.md)"]


def multihost_lost_node(results: Results) -> str:
    r = results.body("multihost_lost_node")
    return (f"after the SIGKILL of a node's raylet inside a run's first video, the orphaned run "
            f"process was gone after {r['orphan_gone_s']} s (the fence's raylet check), the run "
            f"{r['status']} after {r['run_failed_s']} s (Ray declares the job failed, then run "
            f"monitoring), its pool slot free after {r['pool_slot_free_s']} s, its retry on the "
            f"other node done after {r['retry_done_s']} s "
            f"(`{results.command('multihost_lost_node')}`, {json_link('multihost_lost_node')}).")


MULTIHOST = ("multihost", "multihost_amortised")


def multihost_scale(results: Results) -> list[str]:
    """docs/scaling.md: Ray against the one-host launcher, by nodes and videos per run."""
    rows, local, fixed_1, ratios = [], [], [], []
    for name in MULTIHOST:
        res = results.body(name)
        hold = res["hold_per_run_s"]
        for r in res["rows"]:
            per_run = r["videos"] // r["runs"]
            rows.append([r["nodes"], f"{r['videos']} / {r['runs']}",
                         f"{per_run} ({hold:g} s of GPU per run)", f"{r['wall_s']} s",
                         r["videos_per_hour"], r["ratio_to_linear"],
                         f"{r['fixed_cost_per_run_s']:.1f} s", json_link(name)])
            if r["nodes"] == 1:
                fixed_1.append(r["fixed_cost_per_run_s"])
            else:
                ratios.append((hold, r["ratio_to_linear"]))
        lo = res["local_launcher"]
        local.append(lo["fixed_cost_per_run_s"])
        rows.append(["one-host launcher, 1 GPU", f"{lo['videos']} / {lo['runs']}",
                     lo["videos"] // lo["runs"], f"{lo['wall_s']} s", lo["videos_per_hour"], "",
                     f"{lo['fixed_cost_per_run_s']:.1f} s", json_link(name)])
    out = ["", "Commands: " + "; ".join(f"`{results.command(n)}`" for n in MULTIHOST), ""]
    out += table(["nodes", "videos / runs", "videos per run", "wall", "videos/hour",
                  "ratio to linear", "fixed cost per run", "JSON"], rows)
    worst = max(r[6] for r in rows if isinstance(r[0], int))
    by_hold = {}
    for hold, ratio in ratios:
        by_hold.setdefault(hold, []).append(ratio)
    spans = "; ".join(f"{hold:g} s of GPU work per run: {min(v):.2f}–{max(v):.2f}"
                      for hold, v in sorted(by_hold.items()))
    need = [results.body(n)["videos_per_run_for_10pct_overhead_at_0.11s_per_video"]
            for n in MULTIHOST]
    out += [f"Read: Ray's fixed cost per run is {min(fixed_1):.1f}–{max(fixed_1):.1f} s on one "
            f"node against {min(local):.1f}–{max(local):.1f} s for the one-host launcher (one run "
            "at a time: job submission, the runtime environment and the job supervisor before "
            "the same Dagster process start). Simulated nodes share 2 cores, so each start gets "
            f"slower as nodes are added (up to {worst}), and the ratio to linear falls with it "
            f"({spans}); real hosts each bring their own CPUs, so the fixed cost stays at the "
            "1-node figure and the ratio is set by GPU work per run against it. Runs of many "
            "videos amortise it: for the engine to cost at most 10 % of a GPU's time, a run "
            f"needs about 9 x the fixed cost of GPU work, ~{9 * max(fixed_1):.0f} s at the 1-node "
            f"figure here; the benchmark puts that at {min(need):,}–{max(need):,} LV-VIS-sized "
            "videos per run at 0.11 s of GPU each. The default `WSOVVIS_VIDEOS_PER_RUN="
            f"{BACKENDS['videocutler'].videos_per_run}` leaves much of a GPU's time to start-up "
            "under Ray for clips that short; use a few hundred and weigh it against what a "
            "lost node costs (its run's videos are redone).", ""]
    return out


# --- docs/gpu.md's analysis: figures of gpu_product_path, the gpu_dagster calls, gpu_profile --

def _rows(pp: dict, *, queued: str | None = "run queue", warm: bool | None = None,
          name: str | None = None) -> list[dict]:
    """The defaults' scenarios of the product path (queued as scripts/backfill.py by default)."""
    return [s for s in pp["scenarios"] if s["settings"] == "defaults" and s.get("frames")
            and (queued is None or s.get("queued_by") == queued)
            and (warm is None or s["warm"] == warm) and (name is None or s["name"] == name)]


def _ceiling(results: Results) -> dict | None:
    """The model alone on the code of the newest product rows (`gpu_device_run.sh ceiling`),
    when measured; else the product file's `model_only` (the sync removal's) stands."""
    name = "gpu_model_only_ceiling"
    return results.body(name) if name in results.names() else None


def gpu_loop_bound(results: Results) -> str:
    """In-asset fps of one loop (16 × 200, defaults) against the model's ceiling per video."""
    pp = results.body(PRODUCT_PATH)
    tf32 = model_tf32(pp, _ceiling(results))["forward_fps"]
    ceiling = tf32 * 200 / 256  # chunks of 64 with overlap 8 compute 256 of 200 frames
    return (f"in-asset {span([s['in_asset_fps'] for s in _rows(pp, name='long')])}"
            f" fps for 16 × 200 against a model ceiling of {tf32} × 200 / 256 = "
            f"{ceiling:.0f} fps of video")


def gpu_per_run(results: Results) -> str:
    """The first backfill's worker start, run start-up, queue and tube_json gaps."""
    pp = results.body(PRODUCT_PATH)
    first, warm = _rows(pp, warm=False), _rows(pp, warm=True)
    # a first backfill's worker is started by the script (reused by its run) or by the run
    built = [json.loads(w)["built_s"] for s in first for w in s["detail"]["workers"]]
    fixed = [r["fixed_s"] for s in warm for r in s["detail"]["fixed_per_run"]]
    lv = next(s for s in warm if s["name"] == "lvvis")
    work = lv["frames"] / lv["in_asset_fps"]
    runs = lv["detail"]["mask_runs"]
    # the asset backfill's rows ran when autotuning was on: the tube_json gap does not care
    backfill = [s for s in pp["scenarios"] if s.get("frames")
                and s.get("queued_by") == "asset backfill (30 s daemon loop)"]
    return (f"the first backfill pays the worker's start ({span(built, ' s')}: imports, model "
            "build, the warm-up chunk) inside its wall, hence "
            f"{span([s['mask_wall_fps'] for s in first])} frames/s first against "
            f"{span([s['mask_wall_fps'] for s in warm])} warm. A run's own start and teardown "
            f"cost ~{span(fixed, ' s')} (Dagster's run process): LV-VIS-shaped "
            f"{lv['videos']} × {lv['frames'] // lv['videos']} is {runs} run"
            f"{'s, one after the other' if runs > 1 else ''}, "
            f"{lv['detail']['mask_wall_s']:.1f} s of wall for "
            f"{work:.1f} s of video work. The first mask run starts "
            f"{span([s['queue_to_first_run_s'] for s in first + warm], ' s')} after "
            "`scripts/backfill.py` returns (queue poll + run process start); `tube_json` starts "
            f"{span([s['tube_json_gap_s'] for s in first + warm], ' s', 1)} after the last mask "
            "run (its hook queues it; the sensor's 5 s loop when runs end together), against "
            f"{span([s['tube_json_gap_s'] for s in backfill], ' s')} on the asset backfill's "
            "30 s loop")


def _loop_gain(results: Results, name: str, not_measured: str) -> str:
    """The steady loop's fps before and after one change, from the two-code loop result
    `name` (one device call), or `not_measured` when that call has not run."""
    if name not in results.names():
        return not_measured
    rows = results.body(name)["rows"]
    before, after = rows[0], rows[-1]
    ratio = next(k for k in after if k.startswith("fps_vs_"))
    rounds = len({r["round"] for r in rows})
    return (f"With it, the steady loop went from {before['fps']} to {after['fps']} fps "
            f"(×{after[ratio]:.2f}, {rounds} round{'s' if rounds > 1 else ''} of "
            f"{after['frames']} frames each; `{name}.json`).")


SYNC_FIX = "gpu_loop_codes_sync_fix"  # the loop before and after 1db9ea1, one device call
ATTN_RESIZE = "gpu_loop_codes_attn_resize"  # the loop on CutLER patch v3 and v4, one call


def gpu_after_sync_fix(results: Results) -> str:
    """What the loop gained once `launch` could run ahead (or that it is not measured)."""
    names = results.names()
    if SYNC_FIX not in names and ATTN_RESIZE in names:  # only a later code's loop has it
        with_fix = results.body(ATTN_RESIZE)["rows"][0]  # the fix, patch v3
        before = results.body("gpu_loop_codes_launch")["rows"][-1]
        return (f"It was not measured alone: the loop of a later code with it (patch v3, the "
                f"first row of `{ATTN_RESIZE}.json`) ran {with_fix['fps']} fps against "
                f"{before['fps']} for `launch` before it, in another device call (a "
                "different machine start, so no like-for-like ratio).")
    return _loop_gain(results, SYNC_FIX, "That fix is not measured on a GPU: this session's "
                      "device time ran out before a call with it could run.")


def gpu_first_worker_build(results: Results) -> str:
    """What the first 16 × 200 backfill's worker spent building, by part (its load times),
    and the warm-up of the other workers of its device call (the same file)."""
    rows = _rows(results.body(PRODUCT_PATH))
    (row,) = [s for s in rows if s["name"] == "long" and not s["warm"]]
    worker = json.loads(row["detail"]["workers"][0])
    t = worker["load_times"]
    later = [json.loads(w)["load_times"]["warmup"] for s in rows if s is not row
             and s.get("source") == row.get("source") for w in s["detail"]["workers"]]
    return (f"{worker['built_s']:.1f} s build, {t['warmup']:.1f} s were the warm-up chunk "
            f"(torch import {t['torch']:.1f} s, other imports {t['imports']:.1f} s, model "
            f"{t['build']:.1f} s), against {span(later, ' s', 1)} of warm-up in the "
            f"{len(later)} workers that call started after it")


def attn_resize_share(results: Results) -> str:
    """The share of kernel time of the NCHW bilinear resizes on grids of at most 4 blocks
    (the decoder's attention masks) in the profile of the code before patch v4."""
    rows = results.body("gpu_profile_launch")["profiler"]["kernels_by_launch"]
    share = sum(r["share_of_kernel_time"] for r in rows
                if "upsample_bilinear2d_out_frame" in r["kernel"]
                and int(r["grid"].strip("[]").split(",")[0]) <= 4)
    return f"{share:.0%}"


def gpu_attn_resize(results: Results) -> str:
    """What patch v4 (the attention-mask resize) gave the loop (or that it is not measured)."""
    return _loop_gain(results, ATTN_RESIZE,
                      "Patch v4 is not measured on a GPU yet: no device machine was lent since.")


# the gpu_dagster calls before issue 24, newest first
GPU_DAGSTER = ("gpu_dagster_worker_cold_start", "gpu_dagster_warm_workers_2_runs_per_gpu",
               "gpu_dagster_warm_workers_lvvis_48_per_run", "gpu_dagster_no_worker_1_run_per_gpu",
               "gpu_dagster_no_worker_2_and_4_runs_per_gpu")


def _dagster_rows(results: Results) -> list[tuple[str, dict]]:
    return [(name, s) for name in GPU_DAGSTER for s in results.body(name)["scenarios"]
            if s.get("status") == "COMPLETED_SUCCESS"]


def gpu_dagster_history(results: Results) -> list[str]:
    rows = []
    for name, s in _dagster_rows(results):
        rows.append([s["scenario"], f"{s['runs_per_gpu']} × {s['videos'] // s['mask_runs']}",
                     s.get("worker_mode") or "none", s["library_fps"],
                     f"**{fmt(s['mask_wall_fps'])}** ({fmt(s['mask_wall_s'])} s)",
                     s["submit_to_tubes_fps"], s["mean_fixed_s"], s["max_video_peak_smi_gib"],
                     s.get("largest_process_peak_smi_gib"), json_link(name)])
    return ["", *table(["scenario (videos x frames, runs per GPU)", "runs/GPU × videos/run",
                        "worker", "library fps (one loop)", "**backfill wall fps**",
                        "submit → `tube_json` fps", "fixed s per run",
                        "peak GiB per video (nvidia-smi, GPU total)", "largest process GiB",
                        "JSON"], rows)]


def _precision(scenario: str) -> str:
    return next((p for p in ("tf32", "bf16") if p in scenario), "fp32")


def gpu_dagster_targets(results: Results) -> list[str]:
    """Issue 14's targets against the rows with the predictor worker."""
    rows = [s for _, s in _dagster_rows(results) if s.get("worker_mode")]
    long = [s for s in rows if s["scenario"].startswith("long")]
    best = {p: max((s["mask_wall_fps"] for s in long if _precision(s["scenario"]) == p),
                   default=None) for p in ("fp32", "tf32", "bf16")}
    lv = [s for s in rows if s["scenario"].startswith("lvvis") and
          _precision(s["scenario"]) == "fp32"]
    lv_best = max(s["mask_wall_fps"] for s in lv)
    tubes = max(s["submit_to_tubes_fps"] for s in rows)
    over = min(s["overhead"] for s in rows)
    proc = max(s.get("largest_process_peak_smi_gib") or 0 for s in rows)
    total = max(s["max_video_peak_smi_gib"] for s in rows)
    ratio = [f"{100 * s['wall_vs_library']:.0f} % ({s['scenario']})" for s in rows]
    out = table(["target", "best measured on the product path", "met?"], [
        ["≥ 180 fps fp32 / ≥ 200 bf16 backfill wall, 16 × 200",
         ", ".join(f"{fmt(v)} {p}" for p, v in best.items() if v) + " (bf16 not re-run with "
         "the worker)" * (best["bf16"] is None),
         "yes" if (best["fp32"] or 0) >= 180 else "no"],
        ["≥ 90 % of the library loop in the same run", ", ".join(ratio),
         "yes" if max(s["wall_vs_library"] for s in rows) >= 0.9 else "no"],
        ["≥ 150 fps wall, 96 × 32, fp32", lv_best, "yes" if lv_best >= 150 else "no"],
        ["submit → `tube_json` ≥ 150 fps", tubes, "yes" if tubes >= 150 else "no"],
        ["overhead (wall vs in-asset seconds) ≤ 10 %", f"+{100 * over:.0f} % (best row)",
         "yes" if over <= 0.1 else "no"],
        ["≤ 20 GiB for every video, first included (nvidia-smi)",
         f"≤ {fmt(proc)} GiB per process; the GPU total {fmt(total)} GiB",
         f"per process {'yes' if proc <= 20 else 'no'}; per GPU "
         f"{'yes' if total <= 20 else 'no'}"],
    ])
    return ["", *out]


def gpu_profile_model(results: Results) -> list[str]:
    """The model-alone attempts of gpu_profile.json, one row each."""
    model = results.body("gpu_profile")["model"]
    rows = []
    for name, r in model["attempts"].items():
        why = r.get("error") or r.get("skipped")
        rows.append([name.replace("_", " "), r.get("fps") if not why else why[:70],
                     f"{r['setup_s']} s" if "setup_s" in r else "",
                     r.get("max_abs_diff", "")])
    rows.append(["`predict_clip` with host transfers, fp32",
                 model["predict_clip_with_host_io"]["fps"], "", ""])
    one = model["predict_one_video"]
    rows.append([f"`predict` on one {one['frames']}-frame video (stitched), fp32", one["fps"],
                 "", ""])
    return ["", *table(["attempt", "fps", "setup", "max abs diff"], rows)]


def gpu_run_start_before(results: Results) -> str:
    """What a run paid before the predictor worker, and what it pays on a warm worker."""
    rows = [s for _, s in _dagster_rows(results)]
    none = [s["mean_fixed_s"] for s in rows if not s.get("worker_mode")]
    warm = [s["mean_fixed_s"] for s in rows if s.get("worker_mode") == "warm"]
    loads = [v["load_times"] for v in
             results.body("gpu_dagster_no_worker_1_run_per_gpu")["cudnn_variants"].values()]
    return (f"Each run used to pay {span(none, ' s')} before its first video (VNext imports "
            f"{span([x['imports'] for x in loads], ' s', 1)}, model build "
            f"~{span([x['build'] for x in loads], ' s')}, cuDNN warm-up "
            f"{span([x['warmup'] for x in loads], ' s', 1)}, then the process start). The "
            f"worker pays that once; a run on a warm worker costs {span(warm, ' s')} (Dagster's "
            "run process start and teardown) in the figures below")


def gpu_queue_to_first_run(results: Results) -> str:
    return span([s["queue_to_first_run_s"] for s in _rows(results.body(PRODUCT_PATH))], " s")


def gpu_two_runs_vs_one(results: Results) -> str:
    pp = results.body(PRODUCT_PATH)
    two = next(s for s in pp["scenarios"] if isinstance(s["settings"], dict)
               and s["settings"].get("WSOVVIS_RUNS_PER_GPU") == "2" and s.get("frames"))
    # one run per GPU, warm, in the call of the same day and code (the default then was 2)
    one = next(s for s in results.body("gpu_product_path_run_queue_2_runs_per_gpu")["scenarios"]
               if s["settings"] == {"WSOVVIS_RUNS_PER_GPU": "1"} and s["warm"]
               and s["name"] == two["name"])
    return (f"{two['mask_wall_fps']} frames/s warm for 16 × 200 against {one['mask_wall_fps']} "
            f"with one run, {two['smi_peak_gib']:.1f} GiB in nvidia-smi (both on the code of "
            "2026-12-04, before the loop changes above)")


def tube_checks_share(results: Results) -> str:
    """The frame checks' cost in the committed tube_conversion run."""
    by = {r["method"]: r["frames_per_s"] for r in results.body("tube_conversion")["methods"]}
    share = by["ours x1 frames"] / by["ours x1"]
    return (f"{share:.0%} of the speed without them in the committed run" +
            (" (above 100 %: they cost less than the benchmark resolves)" if share > 1 else ""))


def val_fragments(results: Results) -> str:
    """The val sequences the old predictor split over several tracks that are one track now."""
    new = results.body("predictor_davis_val")["davis"]["sequences"]
    old = results.body("predictor_davis_val" + BASELINE_SUFFIX)["davis"]["sequences"]
    was = results.body("predictor_davis_val" + BASELINE_SUFFIX)["predictor"]["version"]
    split = [n for n, r in old.items() if r["tracks"] > 1 and new.get(n, {}).get("tracks") == 1]
    if not split:
        return f"no val sequence that `{was}` split is one track now"
    return (f"{', '.join(split)}, which `{was}` spread over several tracks (best track "
            f"{span([old[n]['J_best'] for n in split], '', 3)}, up to "
            f"{max(old[n]['tracks'] for n in split):g} tracks), are one track each now")


def one_id(results: Results, name: str) -> str:
    seqs = results.body(name)["davis"]["sequences"]
    n = sum(1 for r in seqs.values() if r["tracks"] == 1)
    return f"all {n}" if n == len(seqs) else f"{n} of {len(seqs)}"


def _summary(results: Results, name: str) -> dict:
    return {r["who"]: r for r in results.body(name)["summary"]}


def training_small_sets(results: Results) -> str:
    """docs/training.md: the demo's data shape and smaller sets, x100 as benchmarks.md."""
    demo, small = _summary(results, "training_demo_shape"), \
        _summary(results, "training_24_12_12frames")
    tiny = _summary(results, "training_4_4")
    seeds = results.body("training_24_12_12frames")["per_seed"]
    m = demo["model"]
    return (f"On the demo's data shape (24 + 24 videos of 16 frames, one seed, one process; "
            f"{json_link('training_demo_shape')}) the model scores AP {100 * m['AP_mean']:.1f}, "
            f"APb {100 * m['APb_mean']:.1f}, APn {100 * m['APn_mean']:.1f} against random "
            f"{100 * demo['random']['AP_mean']:.1f} and oracle "
            f"{100 * demo['oracle']['AP_mean']:.1f}. Smaller sets vary a lot between seeds "
            f"(24/12 with 12 frames: APn {100 * small['model']['APn_mean']:.1f} ± "
            f"{100 * small['model']['APn_std']:.1f} over {len(seeds)} seeds, worst "
            f"{100 * min(r['APn'] for r in seeds):.0f}; {json_link('training_24_12_12frames')}); "
            f"the 4 + 4 set is too small to learn from (AP {100 * tiny['model']['AP_mean']:.1f} "
            f"vs random {100 * tiny['random']['AP_mean']:.1f}; {json_link('training_4_4')})")


# `<!-- generated: NAME -->...<!-- /generated -->` in README.md and docs/*.md: a block (it
# starts with a new line) or a span inside a sentence; BLOCKS[NAME] writes what is between.
BLOCKS: dict[str, Callable[[Results], list[str] | str]] = {
    "readme_figures": readme_figures,
    "predictor": lambda results: render_predictor_block(results),
    "gpu_product_path": lambda results: ["", *gpu_doc_block(results.body(PRODUCT_PATH),
                                                            _ceiling(results))],
    "dead_run_range": dead_run_range,
    "dead_run_each": dead_run_each,
    "dead_run_command": dead_run_command,
    "orchestration": orchestration_block,
    "orchestration_batch": orchestration_batch_block,
    "orchestration_mask_runs": orchestration_mask_runs_block,
    "multihost_lost_node": multihost_lost_node,
    "multihost_scale": multihost_scale,
    "gpu_loop_bound": gpu_loop_bound,
    "gpu_per_run": gpu_per_run,
    "gpu_after_sync_fix": gpu_after_sync_fix,
    "gpu_attn_resize": gpu_attn_resize,
    "attn_resize_share": attn_resize_share,
    "gpu_first_worker_build": gpu_first_worker_build,
    "gpu_dagster_history": gpu_dagster_history,
    "gpu_dagster_targets": gpu_dagster_targets,
    "gpu_profile_model": gpu_profile_model,
    "gpu_run_start_before": gpu_run_start_before,
    "gpu_queue_to_first_run": gpu_queue_to_first_run,
    "gpu_two_runs_vs_one": gpu_two_runs_vs_one,
    "tube_checks_share": tube_checks_share,
    "val_fragments": val_fragments,
    "val_one_id": lambda results: one_id(results, "predictor_davis_val"),
    "train_one_id": lambda results: one_id(results, "predictor_davis_train"),
    "training_small_sets": training_small_sets,
}
GENERATED = re.compile(r"<!-- generated: ([\w:./=%+~-]+) -->(.*?)<!-- /generated -->", re.S)


def value(results: Results, spec: str) -> str:
    """`FILE:PATH[~FORMAT]`: one figure of a result file's `results`, PATH its keys joined by
    `/` (a number picks a list item), FORMAT a Python format spec (default: as the tables show
    it)."""
    name, path = spec.split(":", 1)
    path, *form = path.split("~")
    v: object = results.body(name)
    for part in path.split("/"):
        v = v[int(part)] if isinstance(v, list) else v[part]
    return format(v, form[0]) if form else fmt(v)


def splice(text: str, page: Path, results: Results) -> str:
    """`text` with every generated block or span rendered again from `results`."""
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("value:"):
            try:
                return f"<!-- generated: {name} -->{value(results, name[6:])}<!-- /generated -->"
            except (KeyError, IndexError, ValueError, TypeError) as e:
                raise SystemExit(f"{page}: `{name}` names no figure ({type(e).__name__}: {e}); "
                                 "fix the marker (value:FILE:key/key/...[~format])") from e
        if name not in BLOCKS:
            raise SystemExit(f"{page}: unknown generated block {name!r} (known: "
                             f"{', '.join(BLOCKS)}); add it to BLOCKS in "
                             "benchmarks/render_docs.py or fix the marker")
        body = BLOCKS[name](results)
        if isinstance(body, list):
            body = "\n".join(body)
        return f"<!-- generated: {name} -->{body}<!-- /generated -->"
    return GENERATED.sub(one, text)


# by the `benchmark` key of a file: each renders the file's `results`
