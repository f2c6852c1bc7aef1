#!/usr/bin/env bash
# The test command: install with dev extras, then lint, type-check and run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
if [ -f scripts/ensure_chromium.sh ]; then bash scripts/ensure_chromium.sh; fi
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check src tests benchmarks scripts
.venv/bin/mypy
.venv/bin/python -m pytest -q -n auto --dist loadfile "$@"
