#!/usr/bin/env bash
# Install the browser that the `browser` tests drive: Debian's chromium + chromium-driver
# (/usr/bin/chromium, /usr/bin/chromedriver). Playwright's own browser download is never used.
# Does nothing when chromium is already there; skips (exit 0, printing why) when not root or
# when apt-get is unavailable, and the `browser` tests are then skipped by tests/conftest.py.
# Usage: bash scripts/install_browser.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "[install_browser] chromium already installed: $(chromium --version 2>/dev/null || true)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[install_browser] skipped: not root (run 'sudo apt-get install -y chromium chromium-driver'" \
    "yourself); browser tests will be skipped"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[install_browser] skipped: no apt-get on this system (install Chromium by hand and put" \
    "it on PATH as 'chromium'); browser tests will be skipped"
  exit 0
fi

echo "[install_browser] installing Debian chromium + chromium-driver (about a minute)"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null; }; then
  echo "[install_browser] apt-get failed (no network or package mirror?);" \
    "browser tests will be skipped" >&2
  exit 0
fi
echo "[install_browser] installed: $(chromium --version 2>/dev/null || echo '?')"
