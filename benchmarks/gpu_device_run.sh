#!/usr/bin/env bash
# One device call of issue 24, from the repository root on the GPU machine (carry .gpu):
#   bash benchmarks/gpu_device_run.sh [tests] [model] [ceiling] [warmup] [product] [loop] [agreement]
#                                     [SCENARIOS]
# setup (benchmarks/gpu_device_setup.sh), then, in this order, what the words ask for:
#   tests    the `gpu`-marked tests of $GPU_TESTS (default: tests/predictors), with pytest from
#            .gpu/wheels;
#   model    the model-only figures of the model before (CutLER_v1) and after the sync
#            removal, and the mask agreement of the new defaults with today's fp32;
#   ceiling  the model alone on this tree (tf32, the loop's chunk, no graph, no masks):
#            $OUT/gpu_model_only_ceiling.json;
#   warmup   a worker's build by cuDNN autotuning choice (benchmarks/gpu_warmup.py);
#   product  the product path on defaults (benchmarks/gpu_product_path.py; SCENARIOS: its
#            --scenarios), leaving 110 s for `loop` and 100 s for `agreement` when asked for;
#   agreement  after the rest: the masks of today's defaults (tf32, no autotuning) against the
#            issue's reference (CutLER_v1, fp32, autotuning on, as the defaults were then):
#            $OUT/agreement/gpu_agreement.json;
#   loop     the steady loop of this tree on the patch before the attention-mask resize
#            (third_party/CutLER_v3) and on this patch, side by side
#            (benchmarks/gpu_profile.py --code).
# Everything lands in $OUT; each step is time-boxed so the call ends inside its 10 minutes
# (CALL_LIMIT_S, default 570).
set -uo pipefail
T0=$SECONDS
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 WSOVVIS_ALLOW_RANDOM_WEIGHTS=1
bash benchmarks/gpu_device_setup.sh .gpu 2>&1 | tail -5 || exit 1
echo "setup done at $((SECONDS - T0)) s"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
asked() { [[ " $ARGS " == *" $1 "* ]]; }
ARGS="$*"
if asked tests; then
  python3 -m pip install -q --no-index --find-links .gpu/wheels pytest pytest-timeout
  timeout 120 python3 -m pytest -q -s -p no:cacheprovider -m gpu ${GPU_TESTS:-tests/predictors tests/vnext} \
    2>&1 | tee "$OUT/gpu_tests.txt" | grep -v "Warning\|warn(" | tail -8
  echo "tests done at $((SECONDS - T0)) s"
fi
M=/tmp/masks
if asked model; then
  timeout 150 python3 -m benchmarks.gpu_model_only --frames .gpu/frames --label v1 \
    --cutler-root third_party/CutLER_v1 --precisions fp32 --no-graph \
    --agreement-precisions fp32 --out "$OUT" --masks-dir $M 2>&1 | grep -v Warning | tail -8
  echo "v1 done at $((SECONDS - T0)) s"
  timeout 220 python3 -m benchmarks.gpu_model_only --frames .gpu/frames --label v2 \
    --out "$OUT" --masks-dir $M 2>&1 | grep -v Warning | tail -12
  echo "v2 done at $((SECONDS - T0)) s"
  python3 -m benchmarks.gpu_model_only --agreement-of $M --out "$OUT"
fi
if asked ceiling; then
  timeout 80 python3 -m benchmarks.gpu_model_only --frames .gpu/frames --label ceiling \
    --precisions tf32 --no-graph --agreement "" --out "$OUT" 2>&1 | grep -v Warning | tail -4
  echo "ceiling done at $((SECONDS - T0)) s"
fi
if asked warmup; then
  timeout 110 python3 -m benchmarks.gpu_warmup --frames .gpu/frames --out "$OUT" \
    --variants "${WARMUP_VARIANTS:-defaults,autotune,autotune_limit_1,autotune_no_cap,defaults}" 2>&1 \
    | grep -v "Warning\|warn(" | tail -8
  echo "warmup done at $((SECONDS - T0)) s"
fi
if asked product; then
  RESERVE=0; asked loop && RESERVE=110; asked agreement && RESERVE=$((RESERVE + 100))
  LEFT=$((${CALL_LIMIT_S:-570} - (SECONDS - T0) - RESERVE))
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
if asked loop; then
  B=/tmp/patch_v3; rm -rf $B; mkdir -p $B/third_party  # this tree, CutLER as patch version 3
  for e in $(ls -A); do
    [ "$e" = third_party ] || [ "$e" = .git ] || ln -s "$PWD/$e" "$B/$e"
  done
  ln -s "$PWD/third_party/VNext" $B/third_party/VNext
  ln -s "$PWD/third_party/CutLER_v3" $B/third_party/CutLER
  timeout 100 python3 -m benchmarks.gpu_profile --frames .gpu/frames --skip profiler,pyspy,model \
    --videos 6 --code "patch_v3=$B" --json "$OUT/gpu_loop_codes.json" 2>&1 \
    | grep -v "Warning\|warn(\|USDT" | tail -4
  echo "loop done at $((SECONDS - T0)) s"
fi
if asked agreement; then
  A=$OUT/agreement  # its own folder: its v1/v2 files hold only the masks' precisions
  WSOVVIS_CUDNN_BENCHMARK=1 timeout 100 python3 -m benchmarks.gpu_model_only --frames .gpu/frames \
    --label v1 --cutler-root third_party/CutLER_v1 --precisions fp32 --no-graph \
    --agreement-precisions fp32 --out "$A" 2>&1 | grep -v Warning | tail -3
  timeout 80 python3 -m benchmarks.gpu_model_only --frames .gpu/frames --label v2 \
    --precisions tf32 --no-graph --agreement-precisions tf32 --out "$A" 2>&1 \
    | grep -v Warning | tail -3
  python3 -m benchmarks.gpu_model_only --agreement-of "$A" --out "$A" && cat "$A/gpu_agreement.json"
  echo "agreement done at $((SECONDS - T0)) s"
fi
echo "total $((SECONDS - T0)) s"
