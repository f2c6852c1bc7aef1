#!/usr/bin/env bash
# One command: set up a virtual environment, install celltrials, run the main job.
#   scripts/run.sh ../shared/data      offline: ingest a folder of registry exports → classify → report
#   scripts/run.sh                     online: fetch the cell-therapy preset from ClinicalTrials.gov → classify → report
# Output: ./celltrials.duckdb and ./celltrials-report/report.html (override with CELLTRIALS_DB / CELLTRIALS_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/celltrials ] || [ pyproject.toml -nt .venv/.installed ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e .
  touch .venv/.installed
fi
.venv/bin/celltrials run --out "${CELLTRIALS_OUT:-celltrials-report}" "$@"
echo
echo "Explore it in the dashboard (read-only, this machine only; Ctrl-C stops it):"
echo "  .venv/bin/celltrials${CELLTRIALS_DB:+ --db \"$CELLTRIALS_DB\"} serve    # then open http://127.0.0.1:8000/"
