"""Report build on an existing store: what ``benchmarks/scale.py``'s ``report`` step
measures, without building the corpus and ingesting it first.

    .venv/bin/python benchmarks/report_store.py STORE.duckdb [--scope all] [--src DIR ...] [--repeat R]

Each build runs in a fresh subprocess (like scale.py): ``build_report(store,
out, Filters(scope=...), figures=True)`` on the store opened read-only. For
every run it prints the build's wall seconds (timed inside the subprocess),
the CPU seconds of the subprocess and the children it reaped, its peak RSS,
the size of report.html and of the report folder's files (without
report.xlsx, as scale.py counts them), the build's step timings and the
1-minute load average before and after (a shared machine: wall time moves
with the load, CPU time much less).

``--src DIR`` (repeatable) runs the same build with another celltrials source
tree first on the path, e.g. an older commit unpacked with ``git archive``,
for a before/after on the same store and machine state.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"

CHILD = r"""
import json, sys, time
from pathlib import Path

def main():
    import celltrials
    from celltrials.analysis.landscape import Filters
    from celltrials.report.build import build_report

    db, out, scope = sys.argv[1:4]
    with celltrials.open(db, read_only=True) as store:
        t = time.perf_counter()
        res = build_report(store, out, Filters(scope=scope), figures=True)
        seconds = time.perf_counter() - t
    files = sum(
        p.stat().st_size for p in Path(out).iterdir() if p.is_file() and p.name != "report.xlsx"
    )
    print(json.dumps({
        "seconds": seconds, "n": res.n_trials, "html_mb": res.html.stat().st_size / 1e6,
        "files_mb": files / 1e6, "timings": res.timings,
    }))

if __name__ == "__main__":
    main()
"""


def run(src: Path, db: str, scope: str, out: Path) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(src))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, db, str(out), scope],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"the build with {src} failed:\n{proc.stderr[-4000:]}")
    res: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    res["peak_mb"] = after.ru_maxrss / 1024
    res["load"] = (load0, os.getloadavg()[0])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="a classified store (opened read-only)")
    ap.add_argument("--scope", default="all", choices=["all", "cell_therapy"])
    ap.add_argument(
        "--src",
        action="append",
        type=Path,
        default=[],
        help="another celltrials src/ directory to build with (repeatable)",
    )
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    print(f"1-minute load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="report-store-") as tmp:
        for src in [SRC, *args.src]:
            for i in range(args.repeat):
                r = run(src.resolve(), args.store, args.scope, Path(tmp) / f"out{i}")
                print(
                    f"{src}: {r['n']:,} trials  {r['seconds']:.1f} s wall  {r['cpu']:.1f} cpu s  "
                    f"peak {r['peak_mb']:,.0f} MB  report.html {r['html_mb']:.1f} MB  "
                    f"folder {r['files_mb']:.1f} MB  load {r['load'][0]:.2f} -> {r['load'][1]:.2f}"
                )
                print("    steps:", {k: round(v, 2) for k, v in r["timings"].items()})
    print(f"1-minute load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
