#!/usr/bin/env bash
# README command 1: install, generate the synthetic demo dataset, and materialise
# video_partitions -> mask_pngs (all videos) -> tube_json -> trained_model on the CPU.
# `--no-train` stops at tube_json and installs no torch. Other options: python -m scripts.run_demo --help.
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
  *" --no-train "*) bash scripts/setup.sh ;;
  *) bash scripts/setup.sh train ;;
esac
# shellcheck disable=SC1091
source .venv/bin/activate
python -m scripts.run_demo "$@"
