"""Issue 11: end-to-end JPEG -> PNG throughput per GPU, ours against the upstream predictor.

    python -m benchmarks.gpu_throughput --frames third_party/gpu/frames --out $OUT

- upstream: CutLER's `demo_video/predictor.py:VideoPredictor` on the whole clip, as its demo
  runs it, with sequential JPEG decoding before and PNG writing after (fp32; lengths that
  fit the card only: it needs ~0.18 GiB per frame).
- ours: the backend's fast path (chunks of 64, overlap 8) in the `mask_pngs` asset's own loop
  (`masks.segment.segment_videos`: JPEG decoding of the next video and PNG writing of the previous
  one in thread pools while the GPU runs this one).
For each length (default 64, 256, 1000 frames) it prints frames/s of both, the ratio and our
peak GPU memory; then the agreement of our masks with upstream's on the same clip (matched
mean IoU, fp32 / bf16 / fp16), and each stage alone (decode, predict, write) to show which
one bounds the pipeline. Random weights, confidence 0 (all top-10 tracks kept, so the
post-processing does real work). Writes `gpu_throughput.json` and `gpu_throughput.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.gpu_common import (
    GPU_CONDITIONS,
    cuda_sync,
    frame_files,
    matched_iou,
    pooled_iou,
    read_rgb,
    settings,
    write_gpu_result,
)
from wsovvis_dagster.masks.png_io import mask_png_name, save_id_map
from wsovvis_dagster.predictors import compose_id_maps


def save(args, res: dict) -> None:
    write_gpu_result(
        args.out / "gpu_throughput.json", benchmark="gpu_throughput", results=res,
        title="End to end JPEG -> PNG on one GPU, ours against upstream's VideoPredictor",
        measures="library ceiling: JPEG files in, PNG files out through the backend's decode / "
                 "predict / write pipeline (no Dagster run); upstream's `VideoPredictor` on the "
                 "same frames in the same run",
        conditions=f"{GPU_CONDITIONS}; confidence {args.confidence:g}, chunk 64 / overlap 8")


def upstream_predictor(pred):
    """CutLER's demo VideoPredictor sharing our model's weights."""
    demo = Path(pred.settings.cutler_root, "videocutler", "demo_video").resolve()
    sys.path.insert(0, str(demo))
    from predictor import VideoPredictor  # CutLER demo_video/predictor.py

    up = VideoPredictor(pred.cfg)
    up.model = pred.model
    return up


def upstream_id_maps(up, frames_rgb: np.ndarray, confidence: float):
    """Upstream call (BGR frames in, as its demo reads them) + the demo's score filter."""
    import torch

    with torch.no_grad():
        p = up([f[:, :, ::-1] for f in frames_rgb])
    keep = [i for i, s in enumerate(p["pred_scores"]) if s >= confidence]
    if not keep:
        return np.zeros(frames_rgb.shape[:3], np.uint16)
    masks = np.stack([p["pred_masks"][i].numpy() for i in keep])
    return compose_id_maps(masks, np.asarray([p["pred_scores"][i] for i in keep])).id_maps


def write_video(pool, dest: Path, id_maps: np.ndarray, sixteen: bool) -> list:
    dest.mkdir(parents=True, exist_ok=True)
    return [pool.submit(save_id_map, dest / mask_png_name(f"{t:05d}"), m, sixteen_bit=sixteen)
            for t, m in enumerate(id_maps)]


def run_upstream(up, videos, out: Path, confidence: float) -> float:
    """Sequential: decode every frame, predict the whole clip, write every PNG."""
    t0 = time.perf_counter()
    for i, paths in enumerate(videos):
        frames = np.stack([read_rgb(p) for p in paths])
        ids = upstream_id_maps(up, frames, confidence)
        d = out / f"up{i}"
        d.mkdir(parents=True, exist_ok=True)
        for t, m in enumerate(ids):
            save_id_map(d / mask_png_name(f"{t:05d}"), m, sixteen_bit=False)
    return time.perf_counter() - t0


def run_ours(pred, videos, out: Path, workers: int) -> float:
    """The `mask_pngs` asset's own loop (`masks.segment.segment_videos`: decode of video i+1 and PNG
    writing of video i-1 overlap the predictor on video i) over folders of hard-linked frames.
    Folder set-up is not timed."""
    from wsovvis_dagster.masks.segment import segment_videos
    from wsovvis_dagster.paths import VideoRef

    data = out / "data"
    refs = []
    for i, paths in enumerate(videos):
        folder = data / "train" / "JPEGImages" / f"v{len(paths)}_{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for t, src in enumerate(paths):
            dst = folder / f"{t:05d}.jpg"
            if not dst.exists():
                os.link(src, dst)
        refs.append(VideoRef("train", folder.name))
    t0 = time.perf_counter()
    for outcome in segment_videos(data, out / "masks", refs, pred, workers=workers):
        if outcome.error is not None:
            raise outcome.error
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--third-party", type=Path, default=Path("third_party"))
    ap.add_argument("--frames", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("outputs/gpu"))
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/wsovvis_pngs"))
    ap.add_argument("--lengths", default="64,256,1000")
    ap.add_argument("--upstream-max", type=int, default=256, help="longest clip for upstream")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--min-frames", type=int, default=1000, help="frames per measurement")
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--confidence", type=float, default=0.0)
    ap.add_argument("--skip", default="", help="comma list of: agreement, stages, diag")
    args = ap.parse_args()

    import torch

    from wsovvis_dagster.predictors.videocutler import build_videocutler_predictor

    pred = build_videocutler_predictor(settings(args.third_party, confidence=args.confidence,
                                                chunk_size=64, chunk_overlap=8))
    base = pred.settings
    up = upstream_predictor(pred)
    res: dict = {"lengths": [], "agreement": [], "stages": {}}
    # warm-up (cudnn autotuning for each shape) on a short clip
    warm = np.stack([read_rgb(p) for p in frame_files(args.frames, 64)])
    for prec in args.precisions.split(","):
        pred.settings = dataclasses.replace(base, precision=prec)
        pred.predict(warm)
    upstream_id_maps(up, warm, args.confidence)

    for length in [int(x) for x in args.lengths.split(",")]:
        n_videos = max(1, -(-args.min_frames // length))
        videos = [frame_files(args.frames, length)] * n_videos
        total = length * n_videos
        row: dict = {"length": length, "videos": n_videos}
        if length <= args.upstream_max:
            torch.cuda.reset_peak_memory_stats()
            s = run_upstream(up, videos[: max(1, n_videos // 2)], args.scratch, args.confidence)
            row["upstream_fps"] = length * max(1, n_videos // 2) / s
            row["upstream_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            gc.collect()  # upstream leaves GPU tensors in reference cycles
            torch.cuda.empty_cache()
        for prec in args.precisions.split(","):
            pred.settings = dataclasses.replace(base, precision=prec)
            cuda_sync()
            row[f"ours_{prec}_baseline_gib"] = torch.cuda.memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
            s = run_ours(pred, videos, args.scratch, args.workers)
            row[f"ours_{prec}_fps"] = total / s
            row[f"ours_{prec}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            if "upstream_fps" in row:
                row[f"ratio_{prec}"] = row[f"ours_{prec}_fps"] / row["upstream_fps"]
        res["lengths"].append(row)
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()), flush=True)
        shutil.rmtree(args.scratch, ignore_errors=True)

    skip = set(args.skip.split(","))
    # agreement with upstream on the same 64-frame clip (one clip: no chunk stitching)
    clip = np.stack([read_rgb(p) for p in frame_files(args.frames, 64)])
    for conf in () if "agreement" in skip else (0.0, 0.6):
        ref = upstream_id_maps(up, clip, conf)
        for fast, prec in ((False, "fp32"), (True, "fp32"), (True, "bf16"), (True, "fp16")):
            pred.settings = dataclasses.replace(base, fast_path=fast, precision=prec,
                                                confidence=conf, chunk_size=64)
            ids = pred.predict_clip(clip).id_maps
            row = {"confidence": conf, "path": "fast" if fast else "reference", "precision": prec,
                   "matched_mean_iou": matched_iou(ref, ids),
                   "pooled_iou": pooled_iou(ref, ids),
                   "pixel_equal": float((ref == ids).mean()),
                   "tracks_upstream": int(ref.max(initial=0)),
                   "tracks_ours": int(ids.max(initial=0))}
            res["agreement"].append(row)
            print(row, flush=True)

    save(args, res)
    if "stages" in skip:
        plot(res, args.out / "gpu_throughput.png")
        return 0
    # each stage alone, 1000 frames: which one bounds the pipeline
    paths = frame_files(args.frames, args.min_frames)
    with ThreadPoolExecutor(args.workers) as pool:
        t0 = time.perf_counter()
        frames = np.stack(list(pool.map(read_rgb, paths)))
        res["stages"]["decode_fps"] = len(paths) / (time.perf_counter() - t0)
        for prec in args.precisions.split(","):
            pred.settings = dataclasses.replace(base, precision=prec)
            cuda_sync()
            t0 = time.perf_counter()
            out = pred.predict(frames)
            cuda_sync()
            res["stages"][f"predict_{prec}_fps"] = len(paths) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for f in write_video(pool, args.scratch / "w", out.id_maps, False):
            f.result()
        res["stages"]["write_fps"] = len(paths) / (time.perf_counter() - t0)
    shutil.rmtree(args.scratch, ignore_errors=True)
    print(res["stages"], flush=True)
    if "diag" not in skip:
        res["chunk_diag"] = chunk_diag(pred, base, frames)
    save(args, res)
    plot(res, args.out / "gpu_throughput.png")
    return 0


def chunk_diag(pred, base, frames: np.ndarray) -> list[dict]:
    """predict() alone on the whole video: chunk size x precision x prefetch, with the time
    spent inside the model calls (device-synchronised) against the total."""
    import torch

    rows = []
    inner = pred.predict_clip

    def timed_clip(clip):
        cuda_sync()
        t0 = time.perf_counter()
        out = inner(clip)
        cuda_sync()
        spent.append(time.perf_counter() - t0)
        return out

    pred.predict_clip = timed_clip
    for chunk in (64, 128):
        for prec in ("fp32", "bf16"):
            for prefetch in (True, False):
                pred.settings = dataclasses.replace(base, precision=prec, chunk_size=chunk)
                pred.prefetch = prefetch
                spent: list[float] = []
                pred.predict(frames[:chunk])  # warm-up at this shape
                spent.clear()
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                cuda_sync()
                t0 = time.perf_counter()
                pred.predict(frames)
                total = time.perf_counter() - t0
                row = {"chunk": chunk, "precision": prec, "prefetch": prefetch,
                       "fps": len(frames) / total, "model_s": sum(spent), "total_s": total,
                       "chunks": len(spent), "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
                rows.append(row)
                print(row, flush=True)
    pred.predict_clip = inner
    pred.prefetch = True
    return rows


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    lengths = [r["length"] for r in res["lengths"]]
    keys = [k for k in res["lengths"][0] if k.endswith("_fps")]
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        vals = [r.get(key, 0.0) for r in res["lengths"]]
        ax[0].bar(np.arange(len(lengths)) + j * width, vals, width, label=key[:-4])
    ax[0].axhline(200, color="k", ls=":", label="target 200")
    ax[0].set(xticks=np.arange(len(lengths)) + 0.4 - width / 2, xticklabels=lengths,
              xlabel="video length (frames)", ylabel="frames/s JPEG->PNG", title="throughput")
    ax[0].legend(fontsize=8)
    for key in [k for k in res["lengths"][0] if k.endswith("_peak_gib")]:
        pts = [(r["length"], r[key]) for r in res["lengths"] if key in r]
        ax[1].plot(*zip(*pts, strict=True), "o-", label=key[:-9])
    ax[1].axhline(20, color="k", ls=":", label="budget 20 GiB")
    ax[1].set(xscale="log", xlabel="video length (frames)", ylabel="peak allocated GiB",
              title="GPU memory")
    ax[1].legend(fontsize=8)
    st = res["stages"]
    ax[2].bar(list(st), list(st.values()))
    ax[2].set(ylabel="frames/s", title="each stage alone (1000 frames)")
    ax[2].tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
