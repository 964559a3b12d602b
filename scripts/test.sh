#!/usr/bin/env bash
# README command 2 (and what CI runs): install with test extras, then run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
# deploy: dagster-postgres, dagster-k8s; ray: dagster-ray + Ray (scale-out and multihost tests)
bash scripts/setup.sh dev,train,deploy,ray
bash scripts/install_browser.sh  # Debian chromium for the `browser` tests (skips when it can't)
# PostgreSQL server binaries for the `postgres` tests (a throw-away cluster per test run)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing Debian's postgresql for the Postgres storage tests"
    (apt-get install -y -q postgresql >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; }) \
      || echo "[test] could not install postgresql: the postgres tests will be skipped" >&2
  else
    echo "[test] no PostgreSQL binaries and no root/apt: the postgres tests will be skipped" >&2
  fi
fi
# shellcheck disable=SC1091
source .venv/bin/activate
exec python -m pytest "$@"
