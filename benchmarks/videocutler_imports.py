"""Issue 24: VideoCutLER's import seconds, an older patch against this one, side by side.

    # in the VideoCutLER environment (third_party/README.md), after materialising patched_vnext
    python -m benchmarks.videocutler_imports --reps 5 \
        --json benchmarks/results/videocutler_imports_cpu.json

For each patch version (`--versions`, default 2 and this one) the checkouts in third_party/ are
copied (upstream text restored from git, detectron2's compiled `_C` kept) and patched with the
edits up to that version (`Edit.since`). Each repetition runs, in a fresh interpreter per
version (alternating, so both see the same load), `import torch` and then what the predictor's
build imports (`videocutler._import_videocutler`), timed apart; the medians are reported side by
side. One more run per version under `python -X importtime` ranks the heaviest modules by
cumulative seconds (those imported after torch), and one builds the predictor on the CPU
(random weights, as `build_videocutler_predictor` does for `mask_pngs`) for its `load_times`,
segments a small synthetic clip (the id maps' sha256 must agree between versions: the patch
must not change masks) and lists which heavy modules were loaded by then.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.results_io import add_json_args, context, write_result
from wsovvis_dagster.vnext.patch import EDITS, PATCH_VERSION, apply_patch
from wsovvis_dagster.vnext.sources import committed_bytes, tracked_changes

REPO = Path(__file__).resolve().parents[1]
# modules inference does not need; listed when a run has them loaded
HEAVY = ("torchvision", "torch._dynamo", "scipy.optimize", "timm", "matplotlib", "pycocotools")

_IMPORTS = """
import json, sys, time
sys.path.insert(0, {vnext!r})
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
print("AFTER_TORCH", file=sys.stderr, flush=True)
from pathlib import Path
from wsovvis_dagster.predictors.videocutler import _import_videocutler
_import_videocutler(Path({cutler!r}))
t2 = time.perf_counter()
import detectron2
print(json.dumps({{"torch_s": t1 - t0, "videocutler_s": t2 - t1, "d2": detectron2.__file__}}))
"""

_BUILD = """
import hashlib, json, sys
sys.path.insert(0, {vnext!r})
import numpy as np
from wsovvis_dagster.predictors.factory import build_predictor
from wsovvis_dagster.predictors.settings import PredictorSettings

settings = PredictorSettings(backend="videocutler", device="cpu", vnext_root={vnext!r},
                             cutler_root={cutler!r}, allow_random_weights=True, confidence=0.0,
                             chunk_size=6, chunk_overlap=2)
pred = build_predictor(settings)
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (8, 96, 128, 3), dtype=np.uint8)
frames[:, 20:60, 30:80] = (220, 40, 40)
out = pred.predict(frames)
print(json.dumps({{"load_times": pred.load_times.__dict__,
                  "id_maps_sha256": hashlib.sha256(out.id_maps.tobytes()).hexdigest(),
                  "tracks": len(out.scores),
                  "heavy_loaded": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def patched_copy(version: str, third_party: Path, dest: Path) -> tuple[Path, Path]:
    """Copies of third_party/{VNext,CutLER} with upstream text and the edits up to `version`."""
    roots = []
    for name in ("VNext", "CutLER"):
        src, out = third_party / name, dest / name
        shutil.copytree(src, out, symlinks=True, 
                        ignore=shutil.ignore_patterns(".git", "build", "__pycache__"))
        for rel in tracked_changes(src):  # upstream text back (the patch relinks links)
            if (src / rel).is_symlink():
                continue
            (out / rel).write_bytes(committed_bytes(src, rel))
        roots.append(out)
    apply_patch(*roots, edits=[e for e in EDITS if int(e.since) <= int(version)])
    return roots[0], roots[1]


def _python(code: str, *flags: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return proc


def import_seconds(vnext: Path, cutler: Path) -> dict:
    data = json.loads(_python(_IMPORTS.format(vnext=str(vnext), cutler=str(cutler)))
                      .stdout.splitlines()[-1])
    if not Path(data.pop("d2")).is_relative_to(vnext):
        raise RuntimeError(f"detectron2 did not come from {vnext}")
    return data


def importtime(vnext: Path, cutler: Path, top: int) -> dict:
    """-X importtime of what is imported after torch: the `top` modules by cumulative seconds,
    and the self seconds summed by top-level package (torch: what torch imports lazily)."""
    err = _python(_IMPORTS.format(vnext=str(vnext), cutler=str(cutler)), "-X", "importtime")
    rows = []
    for line in err.stderr.split("AFTER_TORCH\n", 1)[1].splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.split(":", 1)[1].split("|")
        rows.append({"module": name.strip(), "cumulative_s": int(cumulative_us) / 1e6,
                     "self_s": int(self_us) / 1e6})
    packages: dict[str, float] = {}
    for row in rows:
        name = row["module"].split(".")[0]
        packages[name] = packages.get(name, 0.0) + row["self_s"]
    return {"top_modules": sorted(rows, key=lambda r: -r["cumulative_s"])[:top],
            "by_package": dict(sorted(((k, round(s, 4)) for k, s in packages.items()
                                       if s >= 0.005), key=lambda kv: -kv[1]))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--third-party", type=Path, default=REPO / "third_party",
                        help="folder with the VNext and CutLER checkouts (patched_vnext's)")
    parser.add_argument("--versions", nargs="+", default=["2", PATCH_VERSION],
                        help="patch versions to compare (edits with since <= version)")
    parser.add_argument("--reps", type=int, default=5, help="fresh interpreters per version")
    parser.add_argument("--top", type=int, default=15, help="modules listed per version")
    parser.add_argument("--no-build", action="store_true",
                        help="skip building the predictor (load_times, masks)")
    add_json_args(parser)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="videocutler-imports-") as tmp:
        trees = {v: patched_copy(v, args.third_party, Path(tmp) / f"v{v}") for v in args.versions}
        for vnext, cutler in trees.values():  # warm the page cache and the .pyc files
            _python(_IMPORTS.format(vnext=str(vnext), cutler=str(cutler)))
        runs: dict[str, list[dict]] = {v: [] for v in args.versions}
        for rep in range(args.reps):
            for v, (vnext, cutler) in trees.items():
                runs[v].append(import_seconds(vnext, cutler))
            print(f"rep {rep + 1}: " + "  ".join(
                f"v{v} torch {r[-1]['torch_s']:.2f}s videocutler {r[-1]['videocutler_s']:.2f}s"
                for v, r in runs.items()))
        results: dict = {"versions": {}}
        for v, (vnext, cutler) in trees.items():
            res = {k: statistics.median(r[k] for r in runs[v])
                   for k in ("torch_s", "videocutler_s")}
            res["runs"] = runs[v]
            res["importtime"] = importtime(vnext, cutler, args.top)
            if not args.no_build:
                res["build"] = json.loads(_python(_BUILD.format(
                    vnext=str(vnext), cutler=str(cutler), heavy=HEAVY)).stdout.splitlines()[-1])
            results["versions"][v] = res

    old, new = (results["versions"][v] for v in (args.versions[0], args.versions[-1]))
    results["videocutler_import_ratio"] = new["videocutler_s"] / old["videocutler_s"]
    if not args.no_build:
        results["masks_identical"] = (old["build"]["id_maps_sha256"]
                                      == new["build"]["id_maps_sha256"])
    print(f"\nmedian of {args.reps} (seconds)  " + "  ".join(f"v{v:>8s}" for v in args.versions))
    for key in ("torch_s", "videocutler_s"):
        print(f"{key:26s}" + "  ".join(f"{results['versions'][v][key]:9.2f}"
                                        for v in args.versions))
    print(f"videocutler imports new/old: {results['videocutler_import_ratio']:.2f}")
    for v in args.versions:
        print(f"\nv{v}: top modules by cumulative import seconds (after torch, -X importtime)")
        report = results["versions"][v]["importtime"]
        for row in report["top_modules"]:
            print(f"  {row['cumulative_s']:6.3f}  {row['module']}")
        print("  self seconds by package: " + ", ".join(
            f"{k} {s:.2f}" for k, s in report["by_package"].items()))
        if not args.no_build:
            build = results["versions"][v]["build"]
            print(f"  build_videocutler_predictor load_times: {build['load_times']}; heavy "
                  f"modules loaded after a clip: {build['heavy_loaded']}")
    if not args.no_build:
        print(f"\nmasks identical across versions: {results['masks_identical']}")
    if args.json:
        sha = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
        write_result(
            args.json, benchmark="videocutler_imports",
            title="VideoCutLER import seconds by patch version (CPU)",
            measures="wall seconds of `import torch` and of `_import_videocutler` in fresh "
                     "interpreters (median of reps), -X importtime's heaviest modules, "
                     "build_videocutler_predictor's load_times on the CPU (random weights)",
            ctx=context(argv, note=args.note, conditions=f"CPU only (no GPU); script {sha}"),
            results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
