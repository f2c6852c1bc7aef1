"""Command-line start-up: how long ``celltrials`` takes before it does any work.

    .venv/bin/python benchmarks/startup.py [--base REV] [--rounds 7] [--write]

Each command runs as a fresh process (``python -m celltrials ...``) on a small
store (../shared/data's ``msc_prochymal.csv``, ingested once, not timed), and
the table shows the median wall time of ``--rounds`` runs and which heavy
libraries the process imported (``-X importtime``, a separate run). With
``--base REV`` the revision REV (checked out into a temporary git worktree)
and this checkout take turns, so a change is measured against its base on
the same machine in the same minutes. ``--write`` replaces the section between
the markers in BENCHMARKS.md with the printed table, machine and date.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import scale
from ab_ingest import two_revisions

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT.parent / "shared" / "data" / "ctgov-classic-csv" / "msc_prochymal.csv"
BEGIN = "<!-- benchmarks/startup.py: begin -->"
END = "<!-- benchmarks/startup.py: end -->"
#: the commands timed (after ``--db STORE``)
COMMANDS = (["--version"], ["stats"], ["show", "NCT00294112"], ["--help"])
HEAVY = ("pandas", "scipy", "matplotlib", "openpyxl", "jinja2", "httpx", "plotly")


def _run(src: Path, db: Path, args: list[str], importtime: bool = False) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "celltrials"]
    t = time.perf_counter()
    res = subprocess.run(
        [*cmd, "--db", str(db), *args], env=env, capture_output=True, text=True, check=False
    )
    dt = time.perf_counter() - t
    if res.returncode:
        raise SystemExit(f"celltrials {' '.join(args)} failed:\n{res.stderr}")
    return dt, res.stderr


def _heavy(stderr: str) -> str:
    """The heavy libraries an ``-X importtime`` run imported (top-level names)."""
    names = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }
    return ", ".join(h for h in HEAVY if h in names) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--base", help="also time this revision (git rev), taking turns")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md between the markers")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ct-startup-") as tmp:
        db = Path(tmp) / "s.duckdb"
        subprocess.run(
            [sys.executable, "-m", "celltrials", "--db", str(db), "-q", "ingest", str(CSV)],
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            check=True,
        )
        if args.base:
            with two_revisions(args.base) as (_, sides):
                lines = _measure(sides, db, args.rounds)
        else:
            lines = _measure({"this checkout": ROOT / "src"}, db, args.rounds)

    head = [
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC · {scale.machine()}",
        "command: benchmarks/startup.py"
        + (f" --base {args.base}" if args.base else "")
        + f" --rounds {args.rounds}",
        f"store: {CSV.name} ingested; median wall time of {args.rounds} fresh processes each",
        "",
    ]
    table = "\n".join(head + lines)
    print(table)
    if args.write:
        scale.write_section(BEGIN, END, f"```\n{table}\n```")


def _measure(sides: dict[str, Path], db: Path, rounds: int) -> list[str]:
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for i, cmd in enumerate(COMMANDS):
            for name, src in sides.items():
                times.setdefault((name, i), []).append(_run(src, db, cmd)[0])
    lines = [f"{'revision':<18} {'command':<28} {'seconds':>8}  heavy libraries imported"]
    for i, cmd in enumerate(COMMANDS):
        for name, src in sides.items():
            heavy = _heavy(_run(src, db, cmd, importtime=True)[1])
            label = "celltrials " + " ".join(cmd)
            lines.append(
                f"{name:<18} {label:<28} {statistics.median(times[(name, i)]):>8.2f}  {heavy}"
            )
    return lines


if __name__ == "__main__":
    main()
