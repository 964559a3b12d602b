"""The tables of docs/benchmarks.md: how each result file's figures are shown.

`RENDERERS[benchmark]` turns a file's `results` into Markdown lines; `render_generic` shows any
other file (scalars as a key/value table, lists of flat records as tables). `Results` reads a
folder of result files once. Used by `benchmarks.render_docs` (the page) and
`benchmarks.doc_pages` (the figures of README.md and the other docs/ pages).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from wsovvis_dagster.predictors.backends import BACKENDS

REPO = Path(__file__).resolve().parents[1]

BASELINE_SUFFIX = "_cpu3"  # the same command over the previous predictor: shown side by side
ENVELOPE = ("benchmark", "title", "measures", "context")
FALLBACK_NOTE = "*(This file's layout is not the one its renderer knows; shown generically.)*"


class Results:
    """The result files of one folder, by name (`<name>.json`), read once."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._read: dict[str, object] = {}

    def names(self) -> list[str]:
        return sorted(f.stem for f in self.folder.glob("*.json"))

    def __getitem__(self, name: str) -> object:
        if name not in self._read:
            path = self.folder / f"{name}.json"
            if not path.is_file():
                raise SystemExit(f"{path} is missing: a page's figures are rendered from it; "
                                 "run the benchmark that writes it (its command is in "
                                 "docs/benchmarks.md) or restore it from git")
            try:
                self._read[name] = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}: not valid JSON ({e}); fix or rerun the benchmark") \
                    from e
        return self._read[name]

    def body(self, name: str) -> dict:
        """The figures (`results`) of one file."""
        return self[name]["results"]

    def command(self, name: str) -> str:
        """The recorded command, the machine's own data folders shown by name
        (`--davis=/work/x/DAVIS --split-file=/work/x/DAVIS/...` -> `--davis=DAVIS ...`): what
        to type with your copy in their place."""
        command = self[name]["context"]["command"]
        # `--code LABEL=DIR` (another checkout, side by side): the commit it held, not its path
        codes = (self[name]["context"].get("sizes") or {}).get("codes")
        codes = codes if isinstance(codes, dict) else {}
        command = re.sub(r"--code (\w+)=\S+", lambda m: f"--code {m[1]}=<checkout of "
                         f"{codes.get(m[1], 'the code compared')}>", command)
        for root in re.findall(r"--[\w-]+=(/\S+)", command):
            if not root.startswith(str(REPO)):
                command = command.replace(str(Path(root).parent).rstrip("/") + "/", "")
        return command


# --- formatting ---------------------------------------------------------------------------

def fmt(v: object) -> str:
    """A cell: numbers to a few significant digits, lists joined, `|` escaped."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        a = abs(v)
        if a == 0:
            text = "0"
        elif a >= 1000:
            text = f"{v:,.0f}"
        elif a >= 100:
            text = f"{v:.1f}"
        elif a >= 1:
            text = f"{v:.2f}"
        elif a >= 0.001:
            text = f"{v:.3f}"
        else:
            text = f"{v:.2e}"
        return text
    if isinstance(v, list | tuple):
        if not v:
            return "none"
        return ", ".join(fmt(x) for x in v) if all(_scalar(x) for x in v) else _compact(v)
    if isinstance(v, dict):
        return _compact(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _compact(v: object) -> str:
    return "`" + json.dumps(v, separators=(",", ":")).replace("|", "\\|") + "`"


def _scalar(v: object) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return out + [""]


def _x100(mean: float, std: float | None = None) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


# --- generic renderer ---------------------------------------------------------------------

def _flat_row(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and all(_scalar(x) for x in v.values()):
            out.update(_flat_row(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _collect(obj: object, prefix: str, scalars: list, tables: list) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _collect(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}", scalars, tables)
    elif isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        tables.append((prefix or "rows", [_flat_row(x) for x in obj]))
    else:
        scalars.append((prefix or "value", obj))


def render_generic(data: object) -> list[str]:
    """Scalars (dotted keys) as one key/value table; every list of records as its own table."""
    body = {k: v for k, v in data.items() if k not in ENVELOPE} if isinstance(data, dict) \
        else data
    if isinstance(body, dict) and set(body) == {"results"}:
        body = body["results"]
    scalars: list = []
    tables: list = []
    _collect(body, "", scalars, tables)
    out = []
    if scalars:
        out += table(["key", "value"], [[f"`{k}`", v] for k, v in scalars])
    for name, rows in tables:
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        out += [f"`{name}`:", ""]
        out += table(columns, [[row.get(c) for c in columns] for row in rows])
    return out


# --- renderers of the files this script knows ---------------------------------------------

def render_tube_conversion(res: dict) -> list[str]:
    rows = res["methods"]
    out = table(["method", "frames/s", "ms/frame", "vs naive"],
                [[f"`{r['method']}`", r["frames_per_s"], r["ms_per_frame"],
                  f"{r['vs_naive']:.1f}×"] for r in rows])
    by = {r["method"]: r for r in rows}
    out += [
        "`naive`: per frame PIL decode, `np.unique`, one pycocotools encode/area/toBbox per id. "
        "`ours x1`: `convert_mask_folders(workers=1)` + `write_tube_json`; `ours x1 frames`: "
        "the same with every mask checked against its JPEG frame (headers read, not decoded), "
        "as `tube_json` runs it; `ours xN`: N worker processes. `decode only` is the floor of "
        "any PIL-decoding converter; `decode+encode` is ours without tube assembly and JSON.",
        "",
    ]
    if "ours x1" in by and "ours x1 frames" in by:
        share = by["ours x1 frames"]["frames_per_s"] / by["ours x1"]["frames_per_s"]
        why = " (above 1: the checks cost less than this benchmark resolves)" if share > 1 else ""
        out += [f"`ours x1 frames` / `ours x1` in this run: {share:.2f}{why}.", ""]
    return out


def render_evaluator(res: dict) -> list[str]:
    out = table(["step", "seconds", "vs ours"],
                [[s["step"], s["seconds"], f"{s['vs_ours']:.1f}× slower" if "vs_ours" in s
                  else ""] for s in res["steps"]])
    m = res["metrics"]
    out += ["Predictions are jittered copies of the GT tubes (some frames dropped or shifted) "
            "plus false positives with random scores; the YTVOSeval pairwise st-IoU (two "
            "`mask.merge` + `mask.area` per tube pair and frame) is timed on a sample of videos "
            "and extrapolated, and checked equal to ours. Metrics of this synthetic run: "
            f"AP {m['AP']:.3f}, AP50 {m['AP50']:.3f}, AR100 {m['AR100']:.3f}.", ""]
    return out


def render_linking(res: dict) -> list[str]:
    rows = res["rows"]
    out = table(["sequence", "frames", "IoU threshold", "frames right", "unlinked (shuffled)",
                 "tracks", "s / video"],
                [[r["sequence"], r["frames"], r["iou_threshold"], f"{r['frames_right']:.3f}",
                  f"{r['frames_right_unlinked']:.3f}", r["tracks"], r["s_per_video"]]
                 for r in rows])
    out += ["Each frame's ids are replaced by random ones (what a per-frame detector gives), "
            "the linker relinks them, and *frames right* is the fraction of frames whose linked "
            "ids equal the original tracks under one global relabelling (mean over seeds). In "
            "scooter-black, OSVOS's object 1 breaks into specks after frame 16 that do not "
            "overlap frame to frame, which no overlap-based linker can follow.", ""]
    return out


def render_training(res: dict) -> list[str]:
    keys = ("AP", "AP50", "APb", "APn")
    names = {"model": "trained model", "random": "random scores (floor)",
             "oracle": "oracle: each tube labelled with its best-IoU GT category (ceiling)"}
    out = ["Mean ± std over training seeds, ×100:", ""]
    out += table(["", *keys], [[names.get(r["who"], r["who"]),
                                *(_x100(r[f"{k}_mean"], r[f"{k}_std"]) for k in keys)]
                               for r in res["summary"]])
    out += table(["seed", *keys, "wall s"],
                 [[r["seed"], *(_x100(r[k]) for k in keys), r["wall_time_s"]]
                  for r in res["per_seed"]])
    out += ["APb / APn: AP over the base / novel categories (novel ones never appear in the "
            "training tags). Small sets vary a lot between seeds; compare the model with the "
            "random and oracle rows of the same run.", ""]
    return out


def render_orchestration(res: dict) -> list[str]:
    out = []
    regs = [(k.removeprefix("registration_"), v) for k, v in res.items()
            if k.startswith("registration_")]
    if regs:
        out += table(["storage", "partitions", "register, one bulk call s", "read back s",
                      "register in batches s", "read back s"],
                     [[store, r["partitions"], *(r[k] for k in r if k != "partitions")]
                      for store, r in regs])
    if "dead_runs" in res:
        d = res["dead_runs"]
        out += table(["killed CLI runs", "video held s", "kill -> failed and slot free, s",
                      "slowest s"],
                     [[d["dead_runs"], d["hold_s"], d["kill_to_failed_and_freed_s"], d["max_s"]]])
    if "backfill" in res:
        out += table(["key", "value"], [[f"`{k}`", v] for k, v in res["backfill"].items()])
    return out


def render_gpu_setup(data: dict) -> list[str]:
    t, p, inst, op, imp = (data["torch"], data["patch"], data["install_vnext"],
                           data["deform_attn_ops"], data["imports"])
    rows = [
        ["patch VNext + CutLER", p["seconds"],
         f"{p['files_changed']} files changed; a second run changes {p['second_run_changes']}"],
        ["VNext editable install (CUDA kernels)", inst["seconds"],
         "skipped (already installed)" if inst["skipped"] else "built"],
        ["MultiScaleDeformableAttention op", op["seconds"],
         f"backend {op['backend']}; toolkit {op['toolkit']}; arch {op['arch_list']}"],
        ["imports in a fresh interpreter", imp["seconds"],
         f"detectron2 {imp['detectron2_version']}; deformable attention: "
         f"{imp['msda_backend']}"],
    ]
    out = table(["step", "seconds", "what"], rows)
    out += [f"torch {t['version']} (CUDA {t['cuda']}, capabilities "
            f"{', '.join(t['capabilities'])}). The op against a float64 PyTorch reference: max "
            f"abs error {data['op_max_abs_err_vs_fp64_pytorch']:.1e}. On a warm machine the "
            "install and the op build are skipped.", ""]
    return out


def render_gpu_videocutler(data: dict) -> list[str]:
    load = data["load"]
    out = [f"Load against per-video time ({data['length']}-frame video; the first video "
           "includes cuDNN autotuning):", ""]
    out += table(["imports s", "model build s", "weights s", "first video s", "per video s"],
                 [[load["imports"], load["build"], load["weights"], load["first_video_s"],
                   load["per_video_s"]]])
    sweep: dict = {}
    for r in data["chunk_sweep"]:
        sweep.setdefault(r["chunk"], {})[bool(r["fast_path"])] = r
    rows = []
    for chunk, by in sorted(sweep.items()):
        ref, fast = by.get(False, {}), by.get(True, {})
        rows.append([chunk, ref.get("fps"), fast.get("fps"), ref.get("peak_gib"),
                     fast.get("peak_gib")])
    out += ["Frames/s and peak GPU memory against chunk size, reference (upstream's steps) and "
            "fast path:", ""]
    out += table(["chunk", "reference fps", "fast fps", "reference peak GiB",
                  "fast peak GiB"], rows)
    out += ["Chunks of 64 or 128 run 256 frames of a 200-frame video through the model "
            "(overlaps, last chunk shifted back), hence the step at one whole clip.", "",
            "Deformable attention, CUDA op against the PyTorch path (chunk 64):", ""]
    out += table(["backend", "path", "fps", "peak GiB"],
                 [[r["backend"], "fast" if r["fast_path"] else "reference", r["fps"],
                   r["peak_gib"]] for r in data["deform_attn"]])
    return out


def render_gpu_throughput(data: dict) -> list[str]:
    def cell(r: dict, who: str) -> str:
        if f"{who}_fps" not in r:
            return "not run"
        return f"{fmt(r[f'{who}_fps'])} ({fmt(r[f'{who}_peak_gib'])})"

    out = ["Frames/s (peak GiB) per video length, same frames, same run:", ""]
    out += table(["length", "videos", "upstream", "ours fp32", "ours bf16", "fp32 / upstream",
                  "bf16 / upstream"],
                 [[r["length"], r["videos"], cell(r, "upstream"), cell(r, "ours_fp32"),
                   cell(r, "ours_bf16"), r.get("ratio_fp32"), r.get("ratio_bf16")]
                  for r in data["lengths"]])
    if "agreement" in data:
        out += ["Agreement of our masks with upstream's on the same clip (*pooled* IoU is "
                "pixel-weighted; per-track mean IoU is dominated by the tiny tracks random "
                "weights give):", ""]
        out += table(["confidence", "path", "precision", "per-track mean IoU", "pooled IoU",
                      "pixels equal", "tracks upstream / ours"],
                     [[r["confidence"], r["path"], r["precision"], r["matched_mean_iou"],
                       f"{r['pooled_iou']:.4f}", f"{r['pixel_equal']:.4f}",
                       f"{r['tracks_upstream']} / {r['tracks_ours']}"]
                      for r in data["agreement"]])
    if "stages" in data:
        out += ["Each stage alone (frames/s), to show which one bounds the pipeline:", ""]
        out += table(["stage", "frames/s"], [[k, v] for k, v in data["stages"].items()])
    if "chunk_diag" in data:
        out += ["Chunk size, precision and the prefetch thread (next chunk on the GPU while "
                "this one is stitched). A fresh thread per video re-runs cuDNN autotuning, so "
                "it is off by default (`predict_chunked(prefetch=False)`):", ""]
        out += table(["chunk", "precision", "prefetch", "fps", "model s", "total s", "chunks",
                      "peak GiB"],
                     [[r["chunk"], r["precision"], r["prefetch"], r["fps"], r["model_s"],
                       r["total_s"], r["chunks"], r["peak_gib"]] for r in data["chunk_diag"]])
    if data.get("notes"):
        out += [f"Recorded with the figures: {data['notes']}", ""]
    return out


def render_gpu_dagster(data: dict) -> list[str]:
    rows = []
    for sc in data["scenarios"]:
        if sc.get("status") != "COMPLETED_SUCCESS":
            rows.append([sc["scenario"], sc.get("status", "?")] + [""] * 10)
            continue
        rows.append([
            sc["scenario"], sc["runs_per_gpu"], sc.get("worker_mode", "none"), sc["library_fps"],
            sc["in_asset_fps"], sc["mask_wall_fps"], sc["submit_to_tubes_fps"],
            sc["mean_fixed_s"], sc["tube_run_queued_after_masks_s"],
            sc["max_video_peak_smi_gib"], sc.get("largest_process_peak_smi_gib", ""),
            sc["wall_vs_library"],
        ])
    out = table(["scenario (videos x frames)", "runs per GPU", "predictor worker",
                 "library fps (one loop)", "in-asset fps (per run)", "backfill wall fps",
                 "submit -> tube_json fps", "fixed s per run", "tube_json queued after masks, s",
                 "peak GiB per video (nvidia-smi, GPU total)", "largest process GiB",
                 "wall / library"], rows)
    if data.get("loop_variants"):
        out += ["Library loop re-run in the same process (GIL switch interval `si`, decode/PNG "
                "pool threads `w`):", ""]
        out += table(["variant", "fps"], [[k, v["fps"]] for k, v in
                                          data["loop_variants"].items()])
    if data.get("model_only"):
        out += ["Model alone (forward passes on one 64-frame chunk):", ""]
        out += table(["variant", "fps"], [[k, v["fps"]] for k, v in data["model_only"].items()])
    if data.get("cudnn_variants"):
        out += ["cuDNN autotuning variants (2 videos, library loop):", ""]
        out += table(["variant", "fps", "setup peak GiB", "first video peak GiB", "build s"],
                     [[k, v["fps"], v["setup_peak_smi_gib"], v["first_video_peak_smi_gib"],
                       v["build_s"]] for k, v in data["cudnn_variants"].items()])
    return out


def render_gpu_profile(data: dict) -> list[str]:
    loop, prof = data["loop"], data["profiler"]
    out = [f"Loop alone: {loop['fps']} fps over {loop['videos']} x {data['length']} frames "
           f"(per video: predict {loop['mean_predict_s']} s, decode {loop['mean_decode_s']} s "
           f"and write {loop['mean_write_s']} s overlapped). Under torch.profiler "
           f"({prof['loop_under_profiler']['videos']} videos, {prof['wall_s']} s): GPU busy "
           f"{prof['gpu_busy_fraction_kernels']} of the wall ({prof['kernels']} kernels, "
           f"{prof['kernel_time_s']} s); the loop thread spent "
           f"{prof['cuda_runtime_ms_main_thread'].get('cudaStreamSynchronize')} ms in "
           "cudaStreamSynchronize, i.e. waiting for the GPU, and "
           f"{prof['cuda_runtime_ms_main_thread'].get('cudaLaunchKernel')} ms launching.", ""]
    out += ["Host syncs on the loop thread (ms, inclusive):", ""]
    out += table(["op", "ms"], [[k, v] for k, v in prof["sync_ops_ms_main_thread"].items()])
    out += ["Top GPU time by op:", ""]
    out += table(["op", "calls", "self CUDA ms"], [[r["op"], r["calls"], r["self_cuda_ms"]]
                                                   for r in prof["top_self_cuda"][:8]])
    for key, label in (("pyspy", "py-spy, all samples"), ("pyspy_gil", "py-spy --gil")):
        if isinstance(data.get(key), dict) and "share_by_thread" in data[key]:
            out += [f"{label}: share of samples by thread", ""]
            out += table(["thread", "share"], list(data[key]["share_by_thread"].items()))
    attempts = data.get("model", {}).get("attempts", {})
    if attempts:
        out += ["Model alone, one 64-frame chunk (fps; max abs difference of the output "
                "against eager fp32):", ""]
        out += table(["attempt", "fps", "setup s", "max abs diff", "error"],
                     [[k, v.get("fps", ""), v.get("setup_s", ""), v.get("max_abs_diff", ""),
                       (v.get("error") or v.get("skipped") or "")[:90]]
                      for k, v in attempts.items()])
    return out


# --- the embedded predictor's quality (`wsovvis quality --json`) ---------------------------

def _quality_rows(res: dict) -> list[list[object]]:
    """One summary row per part of a `wsovvis quality` report: DAVIS mean, synthetic splits."""
    version = res["predictor"]["version"]
    rows = []
    if "davis" in res:
        m = res["davis"]["mean"]
        rows.append([version, f"DAVIS, {len(res['davis']['sequences'])} sequences", m["frames"],
                     m["J"], m["J_best"], m["tracks"], m.get("tracks_per_object"),
                     m.get("AP"), None])
    for split, r in res.get("synthetic", {}).items():
        rows.append([version, f"synthetic {split}, {r['videos']} videos", None, None, None,
                     None, r["tracks_per_object"], r["AP"], r["st_iou"]])
    return rows


QUALITY_HEADER = ["predictor", "data", "frames", "J (union)", "J_best", "tracks / GT fg",
                  "tracks / object", "class-agnostic AP", "st-IoU"]


def _per_sequence(sequences: dict) -> list[str]:
    rows = [[name, r["frames"], r["J"], r["J_best"], r["tracks"]]
            for name, r in sequences.items()]
    return table(["sequence", "frames", "J", "J_best", "tracks"], rows)


def render_predictor_quality(res: dict) -> list[str]:
    out = table(QUALITY_HEADER, _quality_rows(res))
    if "davis" in res:
        seqs = res["davis"]["sequences"]
        if any("objects" in r for r in seqs.values()):
            out += table(["sequence", "objects", "tracks / object", "AP", "AP50"],
                         [[n, r["objects"], r["tracks_per_object"], r["AP"], r["AP50"]]
                          for n, r in seqs.items()])
        out += _per_sequence(seqs)
    return out


def render_predictor_speed(res: dict) -> list[str]:
    out = table(["predictor", "what", "frames", "seconds", "frames/s"],
                [[r["predictor"], r["what"], r["frames"], r["seconds"], r["frames_per_s"]]
                 for r in res["rows"]])
    out += [f"New / old frames/s in this run: {res['ratio']:.2f} (runs interleaved, so both "
            "saw the same load).", ""]
    return out


def render_predictor_block(results: Results) -> list[str]:
    """The figures of docs/predictor.md: a summary table over every `predictor_*` quality
    file, the speed comparison, and per-sequence tables of the DAVIS files."""
    files = {n: results[n] for n in results.names() if n.startswith("predictor_")}
    quality = {k: v for k, v in files.items() if v.get("benchmark") == "predictor_quality"}
    out = [""]
    rows = []
    for name, data in quality.items():
        for row in _quality_rows(data["results"]):
            rows.append([f"[{name}](../benchmarks/results/{name}.json)", *row])
    out += table(["result", *QUALITY_HEADER], rows)
    out += ["Commands, per result (`context.command` of each file):", ""]
    out += [f"- `{name}`: `{data['context']['command']}` ({data['context']['date']})"
            for name, data in quality.items()] + [""]
    for name, data in files.items():
        if data.get("benchmark") == "predictor_speed":
            out += [f"### Speed (`{name}`)", "", f"`{data['context']['command']}`, "
                    f"{conditions_line(data['context'])}", ""]
            out += render_predictor_speed(data["results"])
    for name, data in quality.items():
        davis = data["results"].get("davis")
        if not davis or len(davis["sequences"]) <= 2 or name.endswith(BASELINE_SUFFIX):
            continue
        version = data["results"]["predictor"]["version"]
        baseline = quality.get(name + BASELINE_SUFFIX)
        if baseline is None:
            out += [f"### Per sequence: `{name}` ({version})", ""]
            out += _per_sequence(davis["sequences"])
            continue
        old = baseline["results"]["davis"]["sequences"]
        was = baseline["results"]["predictor"]["version"]
        out += [f"### Per sequence: `{name}` ({version}) beside `{name}{BASELINE_SUFFIX}` "
                f"({was})", ""]
        out += table(["sequence", "frames", "J", "J_best", "tracks", f"{was} J",
                      f"{was} J_best", f"{was} tracks"],
                     [[n, r["frames"], r["J"], r["J_best"], r["tracks"],
                       *(old[n][k] if n in old else None for k in ("J", "J_best", "tracks"))]
                      for n, r in davis["sequences"].items()])
    return out


def json_link(name: str, page: str = "docs") -> str:
    """A link to `benchmarks/results/<name>.json` from README.md or a docs/ page."""
    prefix = "" if page == "README" else "../"
    return f"[`{name}.json`]({prefix}benchmarks/results/{name}.json)"



# --- issue 24: the product path on defaults (gpu_product_path.json) -> benchmarks.md, README,
# docs/gpu.md --------------------------------------------------------------------------------

PRODUCT_PATH = "gpu_product_path"
TARGETS = {  # issue 24, on defaults: (scenario, warm) -> mask wall fps
    ("long", True): 200, ("long", False): 150, ("lvvis", True): 180, ("lvvis", False): 140}


def _settings_label(s: object) -> str:
    return "defaults" if s == "defaults" else ", ".join(f"{k}={v}" for k, v in s.items())


def product_path_table(data: dict) -> list[str]:
    rows = []
    for sc in data["scenarios"] + data.get("failed", []):
        label = f"{sc['name']} {sc.get('videos', '?')} x " + (
            f"{sc['lengths']} (mean {sc['frames'] // sc['videos']})" if sc.get("lengths") else
            f"{sc['frames'] // sc['videos'] if sc.get('videos') else '?'}")
        if "error" in sc or not sc.get("frames"):
            why = sc.get("error") or (sc.get("detail") or {}).get("status") or "no masks"
            rows.append([label, _settings_label(sc["settings"]), "warm" if sc["warm"] else
                         "first", f"failed ({why[:60]})"] + [""] * 6 + [sc.get("source", "")])
            continue
        rows.append([label, _settings_label(sc["settings"]), "warm" if sc["warm"] else "first",
                     sc["mask_wall_fps"], sc["in_asset_fps"], sc["submit_to_tube_json_fps"],
                     sc["queue_to_first_run_s"], sc["tube_json_gap_s"], sc["smi_peak_gib"],
                     sc.get("queued_by", "run queue"), sc.get("source", "")])
    return table(["scenario (videos x frames)", "settings", "worker", "mask wall fps",
                  "in-asset fps", "submit -> tube_json fps", "queue -> first run s",
                  "last mask run -> tube_json start s", "nvidia-smi peak GiB", "queued by",
                  "measured in"],
                 rows)


def model_only_table(data: dict, ceiling: dict | None = None) -> list[str]:
    """The model alone before and after the sync removal, and `ceiling` (the model alone on
    the code of the newest product rows) when measured."""
    rows = []
    for label, section in (("before (patch v1)", data.get("baseline")),
                           ("sync removal (patch v2)", data.get("model_only")),
                           ("today (patch v4, `ceiling`)", ceiling)):
        for precision, r in (section or {}).get("model", {}).items():
            if not isinstance(r, dict):
                continue
            graph = r.get("cuda_graph") or {}
            rows.append([label, precision, r["forward_fps"], r["forward_syncs"],
                         r["predict_clip_fps"], r["predict_clip_syncs"],
                         r["predict_clip_peak_allocated_gib"], graph.get("fps", "-")])
    return table(["model", "precision", "forward fps (64-frame chunk)", "host syncs / forward",
                  "predict_clip fps (host in/out)", "host syncs / chunk", "peak GiB (torch)",
                  "CUDA graph of the forward, fps"], rows)


def agreement_table(data: dict) -> list[str]:
    rows = [[k, v["videos"], f"{100 * v['same_id_pixels']:.3f} %",
             f"{100 * v['foreground_iou']:.3f} %"]
            for k, v in (data.get("agreement") or {}).items()]
    return table(["comparison (confidence 0: every top-10 track)", "videos",
                  "same track id, share of pixels", "foreground IoU"], rows)


def render_gpu_product_path(data: dict) -> list[str]:
    out = product_path_table(data)
    out += ["Model alone, and host syncs (`benchmarks/gpu_model_only.py`):", ""]
    out += model_only_table(data)
    out += ["Masks of the new defaults against today's fp32 eager model, same videos:", ""]
    return out + agreement_table(data)


def _defaults(data: dict, name: str, warm: bool) -> dict | None:
    """The defaults' row of a scenario, queued as scripts/backfill.py queues (else any)."""
    rows = [s for s in data["scenarios"] if s["name"] == name and s["warm"] == warm
            and s["settings"] == "defaults" and s.get("frames")]
    return next((s for s in rows if s.get("queued_by") == "run queue"), rows[0] if rows else None)


def span(values: list[float], unit: str = "", digits: int = 0) -> str:
    """'lo–hi' of `values` (one number when they round alike), with `unit`."""
    lo, hi = min(values), max(values)
    text = f"{lo:.{digits}f}" if round(lo, digits) == round(hi, digits) \
        else f"{lo:.{digits}f}–{hi:.{digits}f}"
    return text + unit


def model_tf32(data: dict, ceiling: dict | None = None) -> dict:
    """The model-alone tf32 figures that stand: `ceiling` (the model alone on the code of the
    newest product rows) when measured, else the product file's `model_only`."""
    return (ceiling or data.get("model_only") or {}).get("model", {}).get("tf32", {})


def readme_gpu_row(data: dict, ceiling: dict | None = None) -> list[str]:
    """The README's GPU row (what, figure, measured by), from the defaults' scenarios;
    `ceiling`: a later model-only result of the code the scenarios ran (else the product
    file's own `model_only`)."""
    parts = []
    for name, shape in (("long", "16 × 200"), ("lvvis", "LV-VIS-shaped 96 × 32")):
        warm, first = _defaults(data, name, True), _defaults(data, name, False)
        figs = [f"{s['mask_wall_fps']:.0f} {w} (target {TARGETS[(name, s['warm'])]})"
                for s, w in ((warm, "warm"), (first, "first backfill")) if s]
        parts.append(f"{shape}: " + ", ".join(figs) + " frames/s")
    rows = [s for s in data["scenarios"] if s["settings"] == "defaults" and s.get("frames")]
    queued = [s for s in rows if s.get("queued_by") == "run queue"]  # as scripts/backfill.py
    tube = max((s["submit_to_tube_json_fps"] or 0) for s in queued) if queued else 0
    gap = max((s["tube_json_gap_s"] or 0) for s in queued) if queued else 0
    first = max((s["queue_to_first_run_s"] or 0) for s in queued) if queued else 0
    smi = max((s["smi_peak_gib"] or 0) for s in rows) if rows else 0
    model = model_tf32(data, ceiling)
    loop = span([s["in_asset_fps"] for s in queued]) if queued else "-"
    fixed = [r["fixed_s"] for s in queued if s["warm"]
             for r in s.get("detail", {}).get("fixed_per_run", [])]
    return ["VideoCutLER on one H200, `scripts/backfill.py` on defaults (product path: tf32, no "
            "cuDNN autotuning, 1 run per GPU, up to "
            f"{BACKENDS['videocutler'].videos_per_run} videos per run, 18 GiB cap)",
            f"{'; '.join(parts)}; submit → `tube_json` up to {tube:.0f} frames/s, first mask run "
            f"≤ {first:.1f} s after the script, `tube_json` ≤ {gap:.1f} s after the last mask "
            f"run; nvidia-smi peak {smi:.1f} GiB. Model alone {model.get('forward_fps', '-')} "
            f"frames/s (library figure: one 64-frame chunk, tf32) with "
            f"{model.get('predict_clip_syncs', '-')} host syncs per chunk in `predict_clip` "
            f"({model.get('forward_syncs', '-')} in the bare forward). What "
            f"bounds it: the mask loop ({loop} "
            f"frames/s inside the asset), a run's ~{span(fixed, ' s') if fixed else '4 s'} "
            "start and teardown, "
            "and on a first backfill the worker's model build "
            "([docs/gpu.md](docs/gpu.md#what-bounds-it-now))",
            "`python -m benchmarks.gpu_product_path`, `python -m benchmarks.gpu_model_only` "
            f"({json_link('gpu_product_path', 'README')}); [docs/gpu.md](docs/gpu.md)"]


def targets_table(data: dict, ceiling: dict | None = None) -> list[str]:
    """Issue 24's targets against the defaults' rows (queued as scripts/backfill.py does);
    the model alone from `ceiling` when measured, else the product file's."""
    rows = []
    for (name, warm), goal in TARGETS.items():
        s = _defaults(data, name, warm)
        got = s["mask_wall_fps"] if s else None
        rows.append([f"{name} {'warm' if warm else 'first'}: mask wall >= {goal} fps", got,
                     "yes" if got and got >= goal else "no"])
    queued = [s for s in data["scenarios"] if s["settings"] == "defaults"
              and s.get("queued_by") == "run queue" and s.get("frames")]
    long = [s for s in queued if s["name"] == "long"]
    checks = [
        ("submit -> tube_json >= 120 fps (16 x 200)",
         min((s["submit_to_tube_json_fps"] or 0) for s in long) if long else None, 120, max),
        ("first mask run <= 5 s after the script",
         max((s["queue_to_first_run_s"] or 0) for s in queued) if queued else None, 5, min),
        ("tube_json starts <= 5 s after the last mask run",
         max((s["tube_json_gap_s"] or 0) for s in queued) if queued else None, 5, min),
        ("nvidia-smi peak <= 20 GiB (defaults)",
         max((s["smi_peak_gib"] or 0) for s in data["scenarios"]
             if s["settings"] == "defaults" and s.get("frames")), 20, min),
    ]
    for label, got, goal, better in checks:
        ok = got is not None and (got >= goal if better is max else got <= goal)
        rows.append([label, got, "yes" if ok else "no"])
    model = model_tf32(data, ceiling)
    ok = model.get("forward_fps", 0) >= 300 and model.get("predict_clip_syncs", 99) <= 4
    rows.append(["model alone >= 300 fps, <= 4 host syncs per chunk",
                 f"{model.get('forward_fps')} fps, {model.get('predict_clip_syncs')} syncs",
                 "yes" if ok else "no"])
    agree = (data.get("agreement") or {}).get("defaults_vs_today_fp32", {})
    ok = agree.get("same_id_pixels", 0) >= 0.995 and agree.get("foreground_iou", 0) >= 0.999
    rows.append(["agreement with today's fp32 >= 0.995 same id / >= 0.999 IoU",
                 f"{agree.get('same_id_pixels')} / {agree.get('foreground_iou')}",
                 "yes" if ok else "no"])
    return table(["target (issue 24, defaults)", "measured (worst row unless said)", "met"],
                 rows)


def gpu_doc_block(data: dict, ceiling: dict | None = None) -> list[str]:
    lines = ["JSON: [`benchmarks/results/gpu_product_path.json`]"
             "(../benchmarks/results/gpu_product_path.json), combined from these device calls "
             "(`python -m benchmarks.gpu_product_path --combine ...`):", ""]
    lines += [f"- [`{src['file']}`](../benchmarks/results/{src['file']}): `{src['command']}`"
              for src in data.get("sources", [])]
    lines.append("")
    lines += targets_table(data, ceiling)
    lines += product_path_table(data)
    lines += model_only_table(data, ceiling)
    return lines + agreement_table(data)


def conditions_line(ctx: dict) -> str:
    parts = []
    if ctx.get("date"):
        parts.append(str(ctx["date"]))
    m = ctx.get("machine") or {}
    if m:
        bits = [f"{m['cores']} cores" if m.get("cores") else "", m.get("cpu") or ""]
        if m.get("load_avg"):
            bits.append(f"load average {fmt(m['load_avg'])}")
        if m.get("nice"):
            bits.append(f"nice {m['nice']}")
        parts.append(", ".join(b for b in bits if b))
    if ctx.get("versions"):
        parts.append(", ".join(f"{k} {v}" for k, v in ctx["versions"].items()))
    if ctx.get("sizes"):
        parts.append("sizes: " + ", ".join(f"{k} {fmt(v)}" for k, v in ctx["sizes"].items()))
    text = "; ".join(parts)
    if ctx.get("conditions"):
        text = f"{text}; {ctx['conditions']}" if text else ctx["conditions"]
    if ctx.get("note"):
        text += f". *{ctx['note']}*"
    return text


def render_gpu_loop_codes(data: dict) -> list[str]:
    """`gpu_profile --code`: one row per checkout and round, fps as a ratio of the first."""
    rows = data["rows"]
    ratio = next(k for k in rows[0] if k.startswith("fps_vs_"))
    return table(["code", "round", "frames", "steady loop fps", ratio.replace("_", " "),
                  "predict s / video", "decode s / video", "write s / video",
                  "predict share of wall", "model build s"],
                 [[r["code"], r["round"], r["frames"], r["fps"], r[ratio], r["mean_predict_s"],
                   r["mean_decode_s"], r["mean_write_s"], r["predict_share_of_wall"],
                   r.get("build_s")] for r in rows])


def render_videocutler_imports(res: dict) -> list[str]:
    """Patch versions side by side: import seconds, the predictor build's load_times, and the
    self seconds of the packages that the older patch imported."""
    versions = res["versions"]
    names = list(versions)
    head = ["", *(f"patch v{v}" for v in names)]
    rows = [["`import torch` s (median)", *(versions[v]["torch_s"] for v in names)],
            ["VideoCutLER imports s (median)", *(versions[v]["videocutler_s"] for v in names)]]
    if all("build" in versions[v] for v in names):
        for key in ("imports", "build"):
            rows.append([f"`build_videocutler_predictor` {key} s",
                         *(versions[v]["build"]["load_times"][key] for v in names)])
        rows.append(["heavy modules loaded after a clip",
                     *(", ".join(versions[v]["build"]["heavy_loaded"]) or "none"
                       for v in names)])
    out = table(head, rows)
    by = [versions[v]["importtime"]["by_package"] for v in names]
    top = sorted(by[0], key=lambda k: -by[0][k])[:12]
    out += ["Self seconds by top-level package under `-X importtime` (after torch; `torch`: "
            "what torch imports lazily, e.g. `torch._dynamo` through torchvision's ops):", ""]
    out += table(["package", *(f"v{v}" for v in names)],
                 [[f"`{k}`", *(b.get(k, 0.0) for b in by)] for k in top])
    if "masks_identical" in res:
        out += [f"Masks of a synthetic clip identical across versions: {res['masks_identical']} "
                f"(new/old import seconds: {res['videocutler_import_ratio']:.2f}).", ""]
    return out


RENDERERS: dict[str, Callable[[dict], list[str]]] = {
    "tube_conversion": render_tube_conversion,
    "evaluator": render_evaluator,
    "linking": render_linking,
    "training": render_training,
    "orchestration": render_orchestration,
    "gpu_setup": render_gpu_setup,
    "gpu_videocutler": render_gpu_videocutler,
    "gpu_throughput": render_gpu_throughput,
    "gpu_dagster": render_gpu_dagster,
    "gpu_profile": render_gpu_profile,
    "gpu_loop_codes": render_gpu_loop_codes,
    "videocutler_imports": render_videocutler_imports,
    "gpu_product_path": render_gpu_product_path,
    "predictor_quality": render_predictor_quality,
    "predictor_speed": render_predictor_speed,
}
