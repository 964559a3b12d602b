#!/usr/bin/env bash
# README command 1: install, generate the synthetic demo dataset, and materialise
# video_partitions -> mask_pngs (all videos) -> tube_json on the CPU predictor.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
python scripts/run_demo.py "$@"
