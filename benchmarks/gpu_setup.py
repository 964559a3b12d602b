"""Patch, install and build the VideoCutLER toolchain on a GPU machine, as the assets do.

    python -m benchmarks.gpu_setup --third-party third_party --out $OUT

Runs the same library calls as `patched_vnext` and `deform_attn_ops` (no Dagster needed on the
GPU machine) on checkouts already at the pinned commits, twice for the patch (the second run
must change nothing), and writes `gpu_setup.json` with what each step did and how long it took.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchmarks.gpu_common import write_gpu_result
from wsovvis_dagster.vnext.deform_attn import (
    OpBuildSettings,
    build_deform_attn_op,
    compare_with_pytorch,
)
from wsovvis_dagster.vnext.install import install_vnext, torch_info, verify_imports
from wsovvis_dagster.vnext.patch import apply_patch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--third-party", type=Path, default=Path("third_party"))
    ap.add_argument("--out", type=Path, default=Path("outputs/gpu"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    args = ap.parse_args()
    vnext, cutler = args.third_party / "VNext", args.third_party / "CutLER"
    res: dict = {"torch": torch_info().__dict__}
    t0 = time.monotonic()
    first = apply_patch(vnext, cutler)
    second = apply_patch(vnext, cutler)
    res["patch"] = {"files_changed": len(first.changes), "second_run_changes": len(second.changes),
                    "seconds": time.monotonic() - t0}
    print(f"patch: {len(first.changes)} files, second run {len(second.changes)}", flush=True)
    inst = install_vnext(vnext, max_jobs=args.jobs, log_path=args.out / "install_vnext.log")
    res["install_vnext"] = {"seconds": inst.seconds, "skipped": inst.skipped}
    print(f"VNext editable install: {inst.seconds:.0f}s", flush=True)
    op = build_deform_attn_op(cutler, OpBuildSettings(max_jobs=args.jobs),
                              log_path=args.out / "build_op.log")
    res["deform_attn_ops"] = op.__dict__
    print(f"op: {op.backend} {op.library} in {op.seconds:.0f}s", flush=True)
    rep = verify_imports(vnext, cutler)
    res["imports"] = rep.__dict__
    print(f"imports ok: backend={rep.msda_backend} ({rep.seconds:.1f}s)", flush=True)
    if op.backend == "cuda":
        res["op_max_abs_err_vs_fp64_pytorch"] = compare_with_pytorch(cutler)
        print(f"op vs PyTorch fp64: max abs err {res['op_max_abs_err_vs_fp64_pytorch']:.2e}")
    write_gpu_result(args.out / "gpu_setup.json", benchmark="gpu_setup", results=res,
                     title="GPU toolchain: patch, install and op build on a fresh machine",
                     measures="library: the calls the `patched_vnext` and `deform_attn_ops` "
                              "assets make, without Dagster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
