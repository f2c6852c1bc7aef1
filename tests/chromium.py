"""Headless Chromium as the browser tests and ``benchmarks/scale.py`` launch it:
Debian's /usr/bin/chromium (``scripts/ensure_chromium.sh`` installs it, never
``playwright install``) with these flags."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
