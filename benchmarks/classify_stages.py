"""Where classifying a store's trial costs its time, stage by stage, in one process.

``classify_store`` reads the store's texts (Arrow, in this process) and each
worker then, for every trial: rebuilds its records from the Arrow rows,
merges them into the classifier's segments (``TrialText.from_records``),
classifies it (the input hash included) and adds its labels and evidence to
Arrow tables. This script times each of those stages on the first ``--n``
trials of ``--store`` (by trial id; e.g. the big store ``scale.py --keep``
leaves), each the best of ``--rounds`` passes with the cyclic GC paused as
in a worker, and the classification of cell-therapy trials and of the others
apart. From the per-trial costs it prints what the stages alone would take
for every trial of the store on every core, if the cores added up exactly
(they do not: see ``parallel capacity``), with nothing else (no reading,
staging or start-up); and, last, what ``classify_store``'s own process spends
reading the whole store's texts (``Store.text_table`` chunk by chunk: CPU
seconds of all its threads, DuckDB's included, and wall seconds)::

    .venv/bin/python benchmarks/scale.py --n 560000 --corpora registry --steps ingest --keep --tmp /tmp/reg
    .venv/bin/python benchmarks/classify_stages.py --store /tmp/reg/big.duckdb [--write]

``--write`` puts the table into BENCHMARKS.md (between the
``classify-stages`` markers).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from machine_check import describe
from scale import machine, write_section

import celltrials
from celltrials.classify import Classifier, TrialLabels, TrialText
from celltrials.classify_parallel import warm_up
from celltrials.labelling import CHUNK_TRIALS, _label_columns
from celltrials.native import engine_kind
from celltrials.runtime import gc_paused
from celltrials.store import records_from_text_table

_T = TypeVar("_T")


def best_of(rounds: int, fn: Callable[[], _T]) -> tuple[float, _T]:
    """The shortest of ``rounds`` runs of ``fn`` (seconds) and its last result."""
    best, out = float("inf"), None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    assert out is not None
    return best, out


def measure(store_path: Path, n: int, rounds: int) -> dict[str, Any]:
    with celltrials.open(store_path, read_only=True) as store:
        ids = store.sorted_trial_ids()
        total = len(ids)
        n = min(n, total)
        table = store.text_table((ids[0], ids[n - 1]))
        reading = read_all(store, ids)
    clf = Classifier()
    warm_up(clf)
    now = datetime.now(UTC).replace(tzinfo=None)
    stages: list[tuple[str, float]] = []
    with gc_paused():
        t, recs = best_of(rounds, lambda: records_from_text_table(table))
        stages.append(("records from the Arrow rows", t))
        t, texts = best_of(
            rounds, lambda: [TrialText.from_records(rs, tid) for tid, rs in recs.items()]
        )
        stages.append(("segments (TrialText.from_records)", t))
        # each trial timed alone, so that cell-therapy trials and the others are apart
        passes: list[dict[bool, list[float]]] = []
        labels: list[TrialLabels] = []
        for _ in range(rounds):
            kinds: dict[bool, list[float]] = {True: [0, 0.0], False: [0, 0.0]}
            labels = []
            for tt in texts:
                t0 = time.perf_counter()
                lab = clf.classify(tt)
                kinds[lab.is_cell_therapy][1] += time.perf_counter() - t0
                kinds[lab.is_cell_therapy][0] += 1
                labels.append(lab)
            passes.append(kinds)
        by_kind = min(passes, key=lambda k: k[True][1] + k[False][1])
        stages.append(("classify", sum(r[1] for r in by_kind.values())))
        t, _ = best_of(rounds, lambda: _label_columns(labels, now))
        stages.append(("labels and evidence as Arrow", t))
    n_trials = len(texts)
    return {
        "store": str(store_path),
        "store_trials": total,
        "n": n_trials,
        "stages": stages,
        "by_kind": by_kind,
        "cores": os.cpu_count() or 1,
        "reading": reading,
    }


def read_all(store: Any, ids: list[str]) -> tuple[int, float, float]:
    """(chunks, CPU s, wall s) of reading every trial's texts as ``classify_store``
    does: ``text_table`` of each range of ``CHUNK_TRIALS`` trial ids."""
    ranges = [
        (ids[k], ids[min(k + CHUNK_TRIALS, len(ids)) - 1]) for k in range(0, len(ids), CHUNK_TRIALS)
    ]
    c0, t0 = time.process_time(), time.perf_counter()
    for r in ranges:
        store.text_table(r)
    return len(ranges), time.process_time() - c0, time.perf_counter() - t0


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    n = r["n"]
    total_us = sum(t for _, t in r["stages"]) / n * 1e6
    lines = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine()}; classifier {engine_kind()}",
        f"command: benchmarks/classify_stages.py --store {Path(r['store']).name} --n {args.n} "
        f"--rounds {args.rounds}",
        f"load average at start: {r['load']:.2f}; {r['capacity']}",
        f"the first {n:,} of the store's {r['store_trials']:,} trials (by trial id), "
        f"best of {args.rounds} passes per stage",
        "",
        f"{'stage':<36} {'us/trial':>9} {'share':>6}",
    ]
    for name, t in r["stages"]:
        us = t / n * 1e6
        lines.append(f"{name:<36} {us:>9.1f} {us / total_us:>6.0%}")
    lines.append(f"{'all stages':<36} {total_us:>9.1f}")
    lines.append("")
    for kind, label in ((True, "cell-therapy trials"), (False, "other trials")):
        k, t = r["by_kind"][kind]
        if k:
            lines.append(f"classify, {label:<25} {t / k * 1e6:>9.1f} us/trial ({k:,} trials)")
    cores, store_n = r["cores"], r["store_trials"]
    lines.append(
        f"the stages alone for the store's {store_n:,} trials: {total_us * store_n / 1e6:,.0f} "
        f"cpu s, {total_us * store_n / 1e6 / cores:,.0f} s on {cores} cores that add up exactly"
    )
    chunks, cpu, wall = r["reading"]
    lines.append(
        f"reading the store's texts in classify's own process (Store.text_table, {chunks} "
        f"chunks of {CHUNK_TRIALS:,} trials): {cpu:,.1f} cpu s, {wall:,.1f} s"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store", type=Path, required=True, help="a store (classified or not)")
    ap.add_argument("--n", type=int, default=20_000, help="trials to time (the first by id)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    capacity = f"at start, {describe()}"
    r = measure(args.store, args.n, args.rounds)
    r["load"], r["capacity"] = load, capacity
    text = render(r, args)
    print(text)
    if args.write:
        write_section(
            "<!-- classify-stages:begin (written by benchmarks/classify_stages.py --write) -->",
            "<!-- classify-stages:end -->",
            f"```\n{text}\n```",
        )


if __name__ == "__main__":
    main()
