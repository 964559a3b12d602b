"""Issue 24: the model alone, its host syncs per chunk, and masks for the agreement figures.

    # on the GPU machine, after benchmarks/gpu_device_setup.sh
    python3 -m benchmarks.gpu_model_only --frames .gpu/frames --label v2 --out $OUT
    python3 -m benchmarks.gpu_model_only --frames .gpu/frames --label v1 \
        --cutler-root /tmp/cutler_v1 --precisions fp32 --no-graph --out $OUT
    python3 -m benchmarks.gpu_model_only --compare $OUT/masks_v1_fp32.npz $OUT/masks_v2_tf32.npz

One process, one model (built as `mask_pngs` builds it, defaults < env, random weights). For
each precision: the network alone on one device-resident 64-frame chunk (CUDA events, median
of 5; fps per computed frame), `predict_clip` (host frames in, id map out; wall median of 3),
the host syncs of each (torch's sync debug mode counts every synchronising call: `.item()`,
`nonzero`, device->host copies, stream syncs) and torch's peak memory. Then a CUDA graph of the
whole chunk forward (capture, replay time, max abs difference against eager). With
`--agreement`, every precision segments the same videos (confidence 0: every top-10 track
kept) and saves the id maps to `masks_<label>_<precision>.npz`; `--compare A B` prints the
share of pixels with the same track id and the foreground IoU of two such files.

`--cutler-root` points at another checkout, e.g. one patched with the version-1 edits only
(`apply_patch(..., edits=[e for e in EDITS if e.since == "1"])`): today's model before the
sync removal, for the baseline. Writes `gpu_model_only_<label>.json` to --out;
`--agreement-of MASKS_DIR` writes `gpu_agreement.json` from the masks of labels v1 and v2.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.gpu_common import (
    GPU_CONDITIONS,
    cuda_median,
    frame_files,
    read_rgb,
    settings,
    write_gpu_result,
)

REPO = Path(__file__).resolve().parents[1]


def video(frames_dir: Path, length: int, offset: int) -> np.ndarray:
    files = frame_files(frames_dir, length + offset)[offset:]
    return np.stack([read_rgb(f) for f in files])


def wall_median(fn, warm: int = 1, reps: int = 3) -> float:
    import torch

    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_syncs(fn) -> int:
    """Synchronising CUDA calls made by `fn()` (torch's sync debug mode, one warning each)."""
    import torch

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


def set_precision(pred, precision: str) -> None:
    import torch

    pred.settings = replace(pred.settings, precision=precision)
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"


def graph_attempt(pred, x, eager_out) -> dict:
    """Capture the whole chunk forward (backbone + head) in one CUDA graph; time replays."""
    import torch

    try:
        static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                pred.forward(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        t0 = time.perf_counter()
        with torch.cuda.graph(graph):
            static_out = pred.forward(static_x)
        capture_s = time.perf_counter() - t0
        seconds = cuda_median(graph.replay)
        diff = (static_out["pred_masks"].float() - eager_out["pred_masks"].float()).abs().max()
        return {"fps": round(len(x) / seconds, 1), "seconds": round(seconds, 4),
                "capture_s": round(capture_s, 2), "max_abs_diff_vs_eager": float(diff),
                "syncs_per_replay": count_syncs(graph.replay)}
    except Exception as exc:  # noqa: BLE001 - reported, the benchmark goes on
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def model_section(pred, frames_dir: Path, precisions: list[str], chunk: int,
                  graph: bool) -> dict:
    import torch

    clip = video(frames_dir, chunk, 0)
    out: dict = {"chunk_frames": chunk}
    for precision in precisions:
        set_precision(pred, precision)
        row: dict = {}
        with torch.inference_mode():
            x, _ = pred._preprocess_fast(clip)
            forward = functools.partial(pred.forward, x)
            seconds = cuda_median(forward)
            row["forward_fps"] = round(chunk / seconds, 1)
            row["forward_syncs"] = count_syncs(forward)
            eager = forward()
        torch.cuda.reset_peak_memory_stats()
        seconds = wall_median(lambda: pred.predict_clip(clip))
        row["predict_clip_fps"] = round(chunk / seconds, 1)
        row["predict_clip_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30,
                                                       2)
        row["predict_clip_syncs"] = count_syncs(lambda: pred.predict_clip(clip))
        if graph:
            with torch.inference_mode():
                row["cuda_graph"] = graph_attempt(pred, x, eager)
        del eager
        torch.cuda.empty_cache()
        out[precision] = row
        print(f"model {precision}: {row}", flush=True)
    return out


def agreement_masks(pred, frames_dir: Path, specs: list[tuple[int, int]], precisions: list[str],
                    out_dir: Path, label: str) -> dict:
    """Segment the same videos at confidence 0 per precision; id maps to an npz per precision."""
    import torch

    pred.settings = replace(pred.settings, confidence=0.0)
    written = {}
    for precision in precisions:
        set_precision(pred, precision)
        maps = {}
        t0 = time.perf_counter()
        for count, length in specs:
            for v in range(count):
                frames = video(frames_dir, length, 7 * v)
                maps[f"{length}_{v}"] = pred.predict(frames).id_maps
        torch.cuda.synchronize()
        path = out_dir / f"masks_{label}_{precision}.npz"
        np.savez_compressed(path, **maps)
        written[precision] = {"file": path.name, "seconds": round(time.perf_counter() - t0, 2)}
        print(f"masks {label} {precision}: {written[precision]}", flush=True)
    return written


def compare(a_path: Path, b_path: Path) -> dict:
    """Same-id pixel share and foreground IoU of two mask npz files (same keys)."""
    a_all, b_all = np.load(a_path), np.load(b_path)
    inter = union = same = total = 0
    for key in a_all.files:
        a, b = a_all[key], b_all[key]
        inter += int(((a > 0) & (b > 0)).sum())
        union += int(((a > 0) | (b > 0)).sum())
        same += int((a == b).sum())
        total += a.size
    return {"a": a_path.name, "b": b_path.name, "videos": len(a_all.files),
            "same_id_pixels": round(same / total, 5) if total else None,
            "foreground_iou": round(inter / union, 5) if union else None,
            "foreground_share": round(union / total, 4) if total else None}


def save(args, res: dict) -> None:
    write_gpu_result(
        args.out / f"gpu_model_only_{args.label}.json", benchmark="gpu_model_only", results=res,
        title=f"The model alone and its host syncs per chunk ({args.label})",
        measures="library: the network alone on one device-resident chunk (CUDA events) and "
                 "`predict_clip` (host frames in, id map out), as `mask_pngs` builds the model",
        conditions=f"{GPU_CONDITIONS}; CutLER checkout {args.cutler_root or 'third_party'}, "
                   f"chunk {args.chunk}")


def write_agreement(masks_dir: Path, out: Path) -> None:
    """The agreement figures of the masks `--label v1` / `v2` saved: the new defaults (tf32)
    and the patch against today's fp32 eager model."""
    pairs = {"defaults_vs_today_fp32": ("masks_v1_fp32.npz", "masks_v2_tf32.npz"),
             "patch_v2_vs_v1_fp32": ("masks_v1_fp32.npz", "masks_v2_fp32.npz")}
    res = {k: compare(masks_dir / a, masks_dir / b) for k, (a, b) in pairs.items()
           if (masks_dir / a).is_file() and (masks_dir / b).is_file()}
    write_gpu_result(
        out, benchmark="gpu_agreement", results=res,
        title="Masks of the new defaults against today's fp32 eager model, same videos",
        measures="library: the id maps `predict` gives (confidence 0: every top-10 track), "
                 "compared pixel by pixel")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    ap.add_argument("--agreement-of", type=Path, metavar="MASKS_DIR",
                    help="write <out>/gpu_agreement.json from the masks of --label v1 and v2")
    ap.add_argument("--frames", type=Path)
    ap.add_argument("--third-party", type=Path, default=REPO / "third_party")
    ap.add_argument("--cutler-root", type=Path, help="default: <third-party>/CutLER")
    ap.add_argument("--label", default="v2")
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--no-graph", action="store_true")
    ap.add_argument("--agreement", default="4x200,8x32",
                    help="videos x frames for the masks ('' = none)")
    ap.add_argument("--agreement-precisions", default="fp32,tf32")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--masks-dir", type=Path, help="where the mask npz files go (default --out)")
    args = ap.parse_args(argv)
    if args.compare:
        print(json.dumps(compare(*args.compare)))
        return 0
    if args.agreement_of:
        write_agreement(args.agreement_of, args.out / "gpu_agreement.json")
        return 0
    from wsovvis_dagster.predictors.factory import build_predictor

    args.out.mkdir(parents=True, exist_ok=True)
    kw = {"cutler_root": str(args.cutler_root)} if args.cutler_root else {}
    t0 = time.perf_counter()
    pred = build_predictor(settings(args.third_party, **kw))
    res: dict = {"label": args.label, "build_s": round(time.perf_counter() - t0, 2),
                 "settings": {k: v for k, v in vars(pred.settings).items()
                              if k not in ("vnext_root", "cutler_root")}}
    res["model"] = model_section(pred, args.frames, args.precisions.split(","), args.chunk,
                                 graph=not args.no_graph)
    save(args, res)
    if args.agreement:
        specs = [tuple(int(x) for x in s.split("x")) for s in args.agreement.split(",")]
        masks_dir = args.masks_dir or args.out
        masks_dir.mkdir(parents=True, exist_ok=True)
        res["masks"] = agreement_masks(pred, args.frames, specs,
                                       args.agreement_precisions.split(","), masks_dir,
                                       args.label)
    save(args, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
