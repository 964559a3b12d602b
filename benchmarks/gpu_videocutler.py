"""Issue 5 figures: the VideoCutLER backend on one GPU (random weights, 360p frames).

    python -m benchmarks.gpu_videocutler --frames third_party/gpu/frames --out $OUT

Measures, on a `--length`-frame 640x360 video:
- model load time (imports, build) against the time of one video;
- frames/s and peak GPU memory against chunk size, for the reference (upstream steps) and
  fast paths;
- the CUDA deformable-attention op against the PyTorch path (whole backend, same chunking).
Writes `gpu_videocutler.json` and `gpu_videocutler.png` into `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from benchmarks.gpu_common import GPU_CONDITIONS, load_video, measure, settings, write_gpu_result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--third-party", type=Path, default=Path("third_party"))
    ap.add_argument("--frames", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("outputs/gpu"))
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--chunks", default="8,16,32,64,128,200")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from wsovvis_dagster.predictors.videocutler import build_videocutler_predictor
    from wsovvis_dagster.vnext.deform_attn import select_backend

    res: dict = {"length": args.length}
    t0 = time.monotonic()
    pred = build_videocutler_predictor(settings(args.third_party, confidence=0.6))
    res["load"] = {"total_s": time.monotonic() - t0, **pred.load_times.__dict__}
    frames = load_video(args.frames, args.length)
    t0 = time.monotonic()
    pred.predict(frames)  # first call in the process: cudnn autotuning, allocator warm-up
    res["load"]["first_video_s"] = time.monotonic() - t0
    base = pred.settings
    sweep = []
    for fast in (False, True):
        for chunk in [int(c) for c in args.chunks.split(",")]:
            pred.settings = dataclasses.replace(base, fast_path=fast, chunk_size=chunk,
                                                chunk_overlap=min(8, chunk // 4))
            m = measure(lambda: pred.predict(frames), repeats=args.repeats)
            row = {"fast_path": fast, "chunk": chunk, "fps": args.length / m["seconds"], **m}
            sweep.append(row)
            print(f"{'fast' if fast else 'ref '} chunk {chunk:4d}: {row['fps']:7.1f} fps, "
                  f"peak {m['peak_gib']:6.2f} GiB", flush=True)
    res["chunk_sweep"] = sweep
    res["load"]["per_video_s"] = next(r["seconds"] for r in sweep
                                      if r["fast_path"] and r["chunk"] == base.chunk_size)
    op = []
    for backend in ("cuda", "pytorch"):
        select_backend(backend)
        for fast in (False, True):
            pred.settings = dataclasses.replace(base, fast_path=fast, chunk_size=64,
                                                chunk_overlap=8)
            m = measure(lambda: pred.predict(frames), repeats=args.repeats)
            op.append({"backend": backend, "fast_path": fast, "fps": args.length / m["seconds"],
                       **m})
            print(f"deform attn {backend:7s} {'fast' if fast else 'ref '}: "
                  f"{op[-1]['fps']:7.1f} fps, peak {m['peak_gib']:6.2f} GiB", flush=True)
    select_backend("cuda")
    res["deform_attn"] = op
    write_gpu_result(args.out / "gpu_videocutler.json", benchmark="gpu_videocutler", results=res,
                     title="VideoCutLER backend on one GPU: chunk size, deformable attention, "
                           "load time",
                     measures="library ceiling: the `videocutler` predictor called directly on "
                              "frames in memory (no Dagster run, no JPEG decode or PNG write)",
                     conditions=f"{GPU_CONDITIONS}; a {args.length}-frame video, fp32, "
                                "confidence 0.6, overlap min(8, chunk/4)")
    plot(res, args.out / "gpu_videocutler.png")
    return 0


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(20, 4.5))
    for fast, style in ((False, "o--"), (True, "s-")):
        rows = [r for r in res["chunk_sweep"] if r["fast_path"] == fast]
        label = "fast path" if fast else "reference (upstream steps)"
        ax[0].plot([r["chunk"] for r in rows], [r["fps"] for r in rows], style, label=label)
        ax[1].plot([r["chunk"] for r in rows], [r["peak_gib"] for r in rows], style, label=label)
    ax[0].set(xscale="log", xlabel="chunk size (frames)", ylabel="frames/s",
              title=f"{res['length']}-frame 360p video, fp32")
    ax[1].set(xscale="log", xlabel="chunk size (frames)", ylabel="peak allocated GiB",
              title="GPU memory vs chunk size")
    for a in ax[:2]:
        a.legend()
        a.grid(alpha=0.3)
    labels = [f"{r['backend']}\n{'fast' if r['fast_path'] else 'ref'}" for r in res["deform_attn"]]
    ax[2].bar(labels, [r["fps"] for r in res["deform_attn"]], color="tab:blue")
    ax2 = ax[2].twinx()
    ax2.plot(labels, [r["peak_gib"] for r in res["deform_attn"]], "ro", label="peak GiB")
    ax[2].set(ylabel="frames/s", title="deformable attention: CUDA op vs PyTorch (chunk 64)")
    ax2.set_ylabel("peak allocated GiB")
    load = res["load"]
    names = ["imports", "build model", "first video", f"one video\n({res['length']} frames)"]
    vals = [load["imports"], load["build"] + load["weights"], load["first_video_s"],
            load["per_video_s"]]
    ax[3].bar(names, vals, color=["grey", "grey", "tab:orange", "tab:blue"])
    ax[3].set(ylabel="seconds", title="model load vs per-video time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
