#!/usr/bin/env bash
# One device call of issue 24, from the repository root on the GPU machine (carry .gpu):
#   bash benchmarks/gpu_device_run.sh [model] [product] [SCENARIOS]
# setup (benchmarks/gpu_device_setup.sh), then the model-only figures of the model before
# (CutLER_v1) and after the sync removal, the mask agreement of the new defaults with today's
# fp32, and the product path on defaults (benchmarks/gpu_product_path.py). Everything lands in
# $OUT; each step is time-boxed so the call ends inside its 10 minutes.
set -uo pipefail
T0=$SECONDS
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 WSOVVIS_ALLOW_RANDOM_WEIGHTS=1
bash benchmarks/gpu_device_setup.sh .gpu 2>&1 | tail -5 || exit 1
echo "setup done at $((SECONDS - T0)) s"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
M=/tmp/masks
if [[ " $* " == *" model "* ]]; then
  timeout 150 python3 -m benchmarks.gpu_model_only --frames .gpu/frames --label v1 \
    --cutler-root third_party/CutLER_v1 --precisions fp32 --no-graph \
    --agreement-precisions fp32 --out "$OUT" --masks-dir $M 2>&1 | grep -v Warning | tail -8
  echo "v1 done at $((SECONDS - T0)) s"
  timeout 220 python3 -m benchmarks.gpu_model_only --frames .gpu/frames --label v2 \
    --out "$OUT" --masks-dir $M 2>&1 | grep -v Warning | tail -12
  echo "v2 done at $((SECONDS - T0)) s"
  python3 -m benchmarks.gpu_model_only --agreement-of $M --out "$OUT"
fi
if [[ " $* " == *" product "* ]]; then
  LEFT=$((${CALL_LIMIT_S:-570} - (SECONDS - T0)))
  echo "product path with $LEFT s left"
  SC=""
  for a in "$@"; do [[ "$a" == *:* ]] && SC=$a; done
  R=benchmarks/results  # model-only figures of this call, else the committed ones
  MO=$OUT/gpu_model_only_v2.json; [ -f "$MO" ] || MO=$R/gpu_model_only_sync_removal_after.json
  BL=$OUT/gpu_model_only_v1.json; [ -f "$BL" ] || BL=$R/gpu_model_only_sync_removal_before.json
  AG=$OUT/gpu_agreement.json; [ -f "$AG" ] || AG=$R/gpu_agreement.json
  timeout $LEFT python3 -m benchmarks.gpu_product_path --frames .gpu/frames --out "$OUT" \
    ${SC:+--scenarios "$SC"} --model-only "$MO" --baseline "$BL" --agreement "$AG" 2>&1 \
    | grep -v "Warning\|warn(" | tail -25
fi
echo "total $((SECONDS - T0)) s"
