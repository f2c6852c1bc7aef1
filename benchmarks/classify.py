"""Classifier throughput: real ClinicalTrials.gov API-JSON trials, replicated.

    .venv/bin/python benchmarks/classify.py [--n 100000] [--before REV] [--write]

Every API-JSON record in ../shared/data is parsed once (not timed) into a
:class:`celltrials.classify.TrialText`; the list is repeated (new trial ids)
up to N trials and classified in memory. Each configuration runs in a fresh
process (``--child``), so compiling the taxonomy and starting workers count:

* ``before``: the source tree of git revision REV (default ``main``) — the
  engine being replaced — on one core, trial by trial;
* ``after``: this tree's :func:`celltrials.classify_parallel.classify_many`
  with ``jobs=1`` and with every core, as installed: the classifier compiled
  by mypyc when ``pip install`` built it (celltrials/native.py), and once on
  one core as pure Python (``CELLTRIALS_PURE_PYTHON=1``) for comparison;
* ``unique``: as ``after`` on every core, but every text of every repetition
  made unique (the repetition's number appended to each segment), so that no
  cache keyed on text can profit from the repetition.

Wall time includes process start-up of the workers; "cpu" is this process's
CPU time (workers not included). The 1-minute load average is printed at the
start and the end: the machine may be shared. A second table times one trial whose title
is a phrase repeated to 100,000 and 200,000 characters (issue 12: quadratic
before). ``--write`` replaces the section between the markers in BENCHMARKS.md
with the printed tables, machine and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import scale
from machine_check import describe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BEGIN = "<!-- benchmarks/classify.py: begin -->"
END = "<!-- benchmarks/classify.py: end -->"
PHRASE = (
    "exosomes from mesenchymal stem cells of the umbilical cord (MSC-EVs) in the bone marrow of "
)


def _texts() -> list:  # type: ignore[type-arg]
    from celltrials.classify import TrialText
    from celltrials.models import ParsedRecord
    from celltrials.sources import parse_file

    out = []
    for path in sorted(DATA.rglob("*.json")):
        for item in parse_file(path):
            if isinstance(item, ParsedRecord) and item.source_format.startswith("ctgov_json"):
                out.append(TrialText.from_record(item))
    return out


def child(n: int, jobs: int, mode: str) -> dict[str, object]:
    """One measurement in this process (``mode``: ``before``: old Classifier loop;
    ``after``: classify_many; ``unique``: classify_many on unique texts; ``long``:
    the long-title trials)."""
    from celltrials.classify import Classifier, Segment, TrialText

    if mode == "long":
        clf = Classifier()
        clf.classify(TrialText("warm", [Segment("title", "title", "stem cells")]))
        out: dict[str, object] = {}
        for size in (100_000, 200_000):
            title = (PHRASE * (size // len(PHRASE) + 1))[:size]
            t0 = time.perf_counter()
            clf.classify(TrialText("long", [Segment("title", "title", title)]))
            out[str(size)] = time.perf_counter() - t0
        return out
    base = _texts()
    reps = [
        TrialText(f"{t.trial_id}#{i // len(base)}", t.segments)
        for i, t in enumerate(base[i % len(base)] for i in range(n))
    ]
    if mode == "unique":
        reps = [
            TrialText(
                t.trial_id,
                [
                    Segment(s.source, s.role, f"{s.text} r{i // len(base)}", s.procedure)
                    for s in t.segments
                ],
            )
            for i, t in enumerate(reps)
        ]
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "before":
        clf = Classifier()
        cell = sum(clf.classify(t).is_cell_therapy for t in reps)
    else:
        from celltrials.classify_parallel import classify_many

        cell = sum(lab.is_cell_therapy for lab in classify_many(reps, jobs=jobs))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    try:
        from celltrials.native import engine_kind
    except ImportError:  # a tree from before the compiled build
        kind = "pure Python"
    else:
        kind = engine_kind()
    return {"real": len(base), "n": n, "wall": wall, "cpu": cpu, "cell": cell, "kind": kind}


def _run(src: Path, n: int, jobs: int, mode: str, pure: bool = False) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("CELLTRIALS_PURE_PYTHON", None)
    if pure:  # the sources even where a compiled build is fresh (celltrials/native.py)
        env["CELLTRIALS_PURE_PYTHON"] = "1"
    cmd = [sys.executable, __file__, "--child", mode, "--n", str(n), "--jobs", str(jobs)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _export(rev: str, into: Path) -> str:
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    blob = subprocess.run(
        ["git", "archive", rev, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return sha


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="trials to classify")
    ap.add_argument(
        "--before", default="main", help="git revision with the engine to compare against"
    )
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md between the markers")
    ap.add_argument(
        "--child", choices=("before", "after", "unique", "long"), help=argparse.SUPPRESS
    )
    ap.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.n, args.jobs, args.child)))
        return
    cores = _cores()
    load_start = os.getloadavg()[0]
    print(f"1-minute load average at the start: {load_start:.1f}", flush=True)
    capacity_start = describe(cores)
    print(capacity_start, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sha = _export(args.before, Path(tmp))
        old_src = Path(tmp) / "src"
        new_src = ROOT / "src"
        runs = [
            (f"before ({sha}), 1 core", _run(old_src, args.n, 1, "before")),
            ("after, 1 core, pure Python", _run(new_src, args.n, 1, "after", pure=True)),
            ("after, 1 core (--jobs 1)", _run(new_src, args.n, 1, "after")),
            (f"after, {cores} cores (--jobs {cores})", _run(new_src, args.n, cores, "after")),
            ("  same, unique texts", _run(new_src, args.n, cores, "unique")),
        ]
        long_runs = [
            (f"before ({sha})", _run(old_src, 0, 1, "long")),
            ("after", _run(new_src, 0, 1, "long")),
        ]
    lines = [
        f"python benchmarks/classify.py --n {args.n} --before {args.before}",
        f"{'configuration':<32}{'trials':>9}{'wall s':>9}{'trials/s':>10}{'x before':>9}{'cpu s':>8}{'trials/cpu-s':>14}{'cell-therapy':>14}  engine",
    ]
    # (trials/s relative to the first row, the engine replaced, in this same run:
    # the machine's speed drifts between runs, this ratio much less)
    before_rate = int(runs[0][1]["n"]) / float(runs[0][1]["wall"])  # type: ignore[arg-type]
    for name, r in runs:
        n, wall, cpu = int(r["n"]), float(r["wall"]), float(r["cpu"])  # type: ignore[arg-type]
        per_cpu = f"{n / cpu:>14,.0f}" if "1 core" in name else f"{'–':>14}"
        lines.append(
            f"{name:<32}{n:>9,}{wall:>9.1f}{n / wall:>10,.0f}{n / wall / before_rate:>8.2f}x"
            f"{cpu:>8.1f}{per_cpu}{int(r['cell']) / n:>13.1%}  {r['kind']}"
        )  # type: ignore[call-overload]
    lines.append(
        f"({runs[0][1]['real']:,} real API-JSON trials, repeated; wall time includes taxonomy compile and worker"
    )
    lines.append(
        " start-up; cpu s: the calling process only, so trials/cpu-s is given for one core;"
    )
    lines.append(" unique texts: each repetition's texts made distinct, so no cache profits;")
    lines.append(" x before: trials/s relative to the first row in this run;")
    lines.append(" engine: the classifier's modules as mypyc compiled them at install, or their")
    lines.append(" sources (celltrials/native.py); pure Python is the same code uncompiled)")
    lines.append("")
    lines.append(f"{'one trial, title of':<32}{'100,000 chars':>15}{'200,000 chars':>15}")
    for name, r in long_runs:
        lines.append(f"{name:<32}{float(r['100000']):>14.2f}s{float(r['200000']):>14.2f}s")  # type: ignore[arg-type]
    table = "\n".join(lines)
    print(table)
    print(f"1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    capacity_end = describe(cores)
    print(capacity_end)
    if args.write:
        machine = (
            f"Machine: {platform.machine()}, {cores} cores visible, Python {platform.python_version()}, "
            f"{platform.system()}; 1-minute load average {load_start:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end (other jobs share the cores); "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. At the start, {capacity_start}; "
            f"at the end, {capacity_end} (benchmarks/machine_check.py)."
        )
        scale.write_section(BEGIN, END, f"```\n{table}\n```\n\n{machine}")
        print(f"wrote {scale.BENCHMARKS_MD}")


if __name__ == "__main__":
    main()
