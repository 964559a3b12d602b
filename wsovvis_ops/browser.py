"""Headless Debian Chromium as the browser tests and `scripts/screenshots.py` launch it."""

# No sandbox (we run as root) and no background connections, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
