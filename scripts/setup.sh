#!/usr/bin/env bash
# Prepare the project on a fresh machine: virtual environment, package install, Dagster
# instance folder, and env vars in .venv/bin/activate. Idempotent; re-run at will.
# Usage: bash scripts/setup.sh [EXTRAS]      e.g. bash scripts/setup.sh dev,train
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
EXTRAS=${1:-}
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
spec="."
[ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
stamp=".venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-${EXTRAS:-base}"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing wsovvis-dagster $spec (first time: about a minute; a line per package)"
  # pip's own lines (Collecting / Installing / Successfully installed) are the progress;
  # only the noise is dropped
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -e "$spec" 2>&1 \
    | grep --line-buffered -v -e "is ignored: it is neither a file nor a directory" \
      -e "^Requirement already satisfied" -e "^  Using cached" -e "^  Downloading" || true
  .venv/bin/python -c "import dagster, wsovvis_dagster" # fail here if the install failed
  touch "$stamp"
fi

export DAGSTER_HOME=${DAGSTER_HOME:-$ROOT/.dagster_home}
mkdir -p "$DAGSTER_HOME"
# GPU runs at once (the `gpu` pool and the gpu=true run-tag limit): usually the GPU count
GPU_LIMIT=${WSOVVIS_GPU_LIMIT:-4}
case "$GPU_LIMIT" in
  '' | *[!0-9]* | 0) echo "[setup] WSOVVIS_GPU_LIMIT must be a positive integer, got '$GPU_LIMIT'" >&2
                     exit 1 ;;
esac
sed "s/@GPU_LIMIT@/$GPU_LIMIT/g" dagster_home/dagster.yaml > "$DAGSTER_HOME/dagster.yaml"

WARNING_FILTERS="ignore:Function \\\`asset_materialize_command\\\` is superseded:Warning"
WARNING_FILTERS+=",ignore:Parameter \\\`backfill_policy\\\` of function \\\`asset\\\` is currently in beta:Warning"
WARNING_FILTERS+=",ignore:Function \\\`observable_source_asset\\\` is currently in beta:Warning"

# `source .venv/bin/activate` then gives a shell where the bare
# `dagster asset materialize --select tube_json` works from the repo root. The block is
# rewritten on every run so an existing .venv picks up changes.
# PYTHONWARNINGS is the one place that silences the Dagster warnings we knowingly accept
# (the CLI's "superseded" notice, the beta `backfill_policy` and `observable_source_asset`
# APIs); it reaches every process (CLI, webserver, daemon, run workers). Entries match the
# start of the message; Python splits the variable on commas.
sed -i '/^# wsovvis-env: begin/,/^# wsovvis-env: end/d; /^# wsovvis-env: added by/,$d' \
  .venv/bin/activate
cat >> .venv/bin/activate <<ACT
# wsovvis-env: begin (written by scripts/setup.sh)
export DAGSTER_HOME="\${DAGSTER_HOME:-$DAGSTER_HOME}"
export DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME=definitions
export PYTHONPATH="$ROOT\${PYTHONPATH:+:\$PYTHONPATH}"
export PYTHONWARNINGS="\${PYTHONWARNINGS:+\$PYTHONWARNINGS,}$WARNING_FILTERS"
# wsovvis-env: end
ACT
