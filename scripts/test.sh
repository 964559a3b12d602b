#!/usr/bin/env bash
# README command 2 (and what CI runs): install with test extras, then run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,train
bash scripts/install_browser.sh  # Debian chromium for the `browser` tests (skips when it can't)
# shellcheck disable=SC1091
source .venv/bin/activate
exec python -m pytest "$@"
