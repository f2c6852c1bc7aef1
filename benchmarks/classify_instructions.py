"""Instructions the compiled classifier executes per trial, counted by valgrind.

Timings on a shared 2-vCPU host move by tens of percent from one minute to the
next (the same 8,000 trials have taken 347 to 530 us each), and ``perf`` has
no hardware counters here, so a classifier change worth a few percent cannot be
timed. Instruction counts barely move between runs: this script counts them with
valgrind's callgrind, collecting only inside ``Classifier.classify`` (the
mypyc-compiled function ``CPyDef_classify___Classifier___classify``; so the
classifier must be compiled, see README "Compiled classifier") and, in a
column of its own, inside ``TrialText.from_records`` (the trial's records
merged into the classifier's segments, which a worker does before each
classification).

It takes the first ``--n`` trials (by trial id) of each ``--store``, and runs
processes under valgrind two at a time: one merges and classifies the trials
once, another twice (and two more count ``TrialText.from_records``). The
first pass includes what the engine builds on first use (its per-field
automata, compiled patterns); the difference of the two is the steady cost
of a pass, as in a worker that has classified many trials::

    .venv/bin/python benchmarks/classify_instructions.py --store /tmp/s560/big.duckdb --store /tmp/reg/big.duckdb

To compare two revisions, run it in a checkout of each (each compiled).
``--write`` puts the table into BENCHMARKS.md (between the
``classify-instructions`` markers).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from scale import ROOT, machine, write_section

FUNCTION = "CPyDef_classify___Classifier___classify"
SEGMENTS = "CPyDef_classify___TrialText___from_records"
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _child(sample: str, passes: int) -> None:
    """Classify the pickled records ``passes`` times (run under valgrind)."""
    import gc

    from celltrials.classify import Classifier, TrialText
    from celltrials.native import compiled_modules

    if "celltrials.classify" not in compiled_modules():
        raise SystemExit("the classifier is not compiled here (pip install -e . with a C compiler)")
    with open(sample, "rb") as fh:
        recs = pickle.load(fh)
    clf = Classifier()
    gc.disable()  # as in a worker (see celltrials.runtime.gc_paused)
    for _ in range(passes):
        for tid, rs in recs.items():
            clf.classify(TrialText.from_records(rs, tid))


def _sample(store: Path, n: int, out: Path) -> int:
    import celltrials
    from celltrials.store import records_from_text_table

    with celltrials.open(store, read_only=True) as st:
        ids = st.sorted_trial_ids()
        n = min(n, len(ids))
        recs = records_from_text_table(st.text_table((ids[0], ids[n - 1])))
    with out.open("wb") as fh:
        pickle.dump(recs, fh)
    return len(recs)


def _count(sample: Path, passes: int, function: str) -> int:
    """Instructions executed inside ``function`` in a child merging and
    classifying ``sample`` ``passes`` times."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--toggle-collect={function}",
                f"--callgrind-out-file={tmp}/callgrind.out",
                sys.executable,
                __file__,
                "--child",
                str(sample),
                str(passes),
            ],
            capture_output=True,
            text=True,
            # (a fixed hash seed: the same set and dict orders in every run)
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONHASHSEED": "0"},
        )
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"the valgrind run failed (exit {proc.returncode})")
    m = _COLLECTED.search(proc.stderr)
    if m is None:
        sys.stderr.write(proc.stderr)
        raise SystemExit("valgrind printed no instruction count")
    return int(m.group(1))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", type=Path, action="append", required=True, help="a store (repeat)")
    ap.add_argument("--n", type=int, default=600, help="trials of each store (first by id)")
    ap.add_argument("--write", action="store_true", help="put the table into BENCHMARKS.md")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    head = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine()}"
    cmd = "command: benchmarks/classify_instructions.py " + " ".join(
        [f"--store {p.parent.name}/{p.name}" for p in args.store] + [f"--n {args.n}"]
    )
    lines = [
        head,
        cmd,
        f"code: {rev}{' with uncommitted changes in src/' if dirty else ''}; "
        "instructions inside Classifier.classify and (segments) TrialText.from_records"
        " (valgrind callgrind)",
        "",
        f"{'store':<28} {'trials':>7} {'first pass /trial':>18} {'steady pass /trial':>19}"
        f" {'segments /trial':>16}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, store in enumerate(args.store):
            sample = Path(tmp) / f"{i}-{store.stem}.pickle"  # (stores are often all big.duckdb)
            n = _sample(store, args.n, sample)
            with ThreadPoolExecutor(2) as pool:  # two valgrind processes, one per core
                one, two, seg_one, seg_two = pool.map(
                    _count, [sample] * 4, (1, 2, 1, 2), (FUNCTION, FUNCTION, SEGMENTS, SEGMENTS)
                )
            label = f"{store.parent.name}/{store.name}"
            lines.append(
                f"{label:<28} {n:>7,} {one / n:>18,.0f} {(two - one) / n:>19,.0f}"
                f" {(seg_two - seg_one) / n:>16,.0f}"
            )
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(
            "<!-- classify-instructions:begin (written by benchmarks/classify_instructions.py --write) -->",
            "<!-- classify-instructions:end -->",
            f"```\n{text}\n```",
        )


if __name__ == "__main__":
    main()
