#!/usr/bin/env bash
# Prepare a bare GPU machine (the H200 image: Python 3.12, torch 2.11+cu130) for
# benchmarks/gpu_dagster.py, from the repository root, with carried files in $1:
#   $1/wheels/                  cp312 wheels of what the image lacks (dagster 1.13.27, sacred,
#                               pycocotools, polars, setuptools<81, wrapt<2, grpcio>=1.85,
#                               py-spy for benchmarks/gpu_profile.py, ...)
#   $1/polars_stripped.tar.xz   polars-runtime-32 unpacked, its .so stripped (fits the carry)
#   $1/third_party.tar.xz       VNext@db33833 + CutLER@cca0a27 (no .git, no images)
# Then: patch (as patched_vnext), VNext editable install and the deformable-attention op
# build (as deform_attn_ops), the two builds side by side; third_party/CutLER_v1, the
# checkout with the version-1 edits only (the model before the host-sync removal, for
# benchmarks/gpu_model_only.py's baseline); and third_party/CutLER_v3, with the edits up to
# version 3 (before the attention-mask resize, for the `loop` of gpu_device_run.sh).
# Idempotent: a second run changes nothing.
set -euo pipefail
G=$(realpath "${1:?folder with wheels/ and the tarballs}")
SITE=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
tar -C "$SITE" -xJf "$G/polars_stripped.tar.xz"
python3 -m pip install -q --no-index --no-cache-dir --find-links "$G/wheels" \
  "dagster==1.13.27" "sacred>=0.8.5" "pycocotools>=2.0.7" "polars>=1.0" "setuptools<81" \
  "wrapt<2" "grpcio>=1.85" "omegaconf>=2.4" "antlr4-python3-runtime>=4.13,<4.14" \
  "yacs>=0.1.8" "termcolor>=1.1" fvcore iopath py-spy
if [ ! -d third_party/CutLER_v1 ]; then
  mkdir -p third_party && tar -C third_party -xJf "$G/third_party.tar.xz"
  cp -r third_party/CutLER third_party/CutLER_v1
  cp -r third_party/CutLER third_party/CutLER_v3
fi
PYTHONPATH=$PWD python3 - <<'PY'
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wsovvis_dagster.vnext.deform_attn import OpBuildSettings, build_deform_attn_op
from wsovvis_dagster.vnext.install import install_vnext
from wsovvis_dagster.vnext.patch import EDITS, apply_patch

vnext, cutler = Path("third_party/VNext"), Path("third_party/CutLER")
t0 = time.monotonic()
print(f"patch: {len(apply_patch(vnext, cutler).changes)} files", flush=True)
v1 = [e for e in EDITS if e.since == "1"]
print(f"v1 copy: {len(apply_patch(vnext, Path('third_party/CutLER_v1'), edits=v1).changes)} "
      "files", flush=True)
v3 = [e for e in EDITS if int(e.since) <= 3]
print(f"v3 copy: {len(apply_patch(vnext, Path('third_party/CutLER_v3'), edits=v3).changes)} "
      "files", flush=True)
jobs = max(1, (os.cpu_count() or 2) // 2)
with ThreadPoolExecutor(2) as pool:
    inst = pool.submit(install_vnext, vnext, max_jobs=jobs)
    op = pool.submit(build_deform_attn_op, cutler, OpBuildSettings(max_jobs=jobs))
    print(f"VNext install {inst.result().seconds:.0f}s; op {op.result().backend} "
          f"{op.result().seconds:.0f}s; total {time.monotonic() - t0:.0f}s", flush=True)
PY
