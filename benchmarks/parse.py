"""CPU cost of parsing one ClinicalTrials.gov API v2 study, per stage.

    .venv/bin/python benchmarks/parse.py [--n 2000] [--rounds 5] [--corpora complete,mix]
    .venv/bin/python benchmarks/parse.py --file /tmp/c5k.json   # a JSON array of studies

The per-study path of ``celltrials ingest`` without the store: ``orjson.loads``
of the study's text (``loads``), :func:`celltrials.sources.ctgov_json.parse_study`
(``parse_study``: shape check, parse, text repair, countries, bounds) and
:func:`celltrials.store.raw_and_digest` (the key-sorted raw JSON and its
SHA-256). Corpora are benchmarks/scale.py's ``complete`` and ``mix`` (real
study objects from ../shared/data and ../shared/data-extra, replicated with
fresh NCT ids), or the studies of ``--file``.

CPU time (``time.process_time``) per study, best of ``--rounds``; the
cyclic GC is paused as ``ingest`` pauses it. The studies are handled in
chunks of 250 (stage by stage within a chunk) so memory stays small. The
1-minute load average is printed at start and end: on a shared machine
compare before/after runs made alternately.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import Corpus

from celltrials.runtime import gc_paused
from celltrials.sources.ctgov_json import parse_study
from celltrials.store import raw_and_digest

CHUNK = 250
STAGES = ("loads", "parse_study", "raw_and_digest")


def corpus_texts(kind: str, n: int) -> list[bytes]:
    corpus = Corpus(kind)
    return [corpus.study(i).encode() for i in range(n)]


def file_texts(path: Path, n: int | None) -> list[bytes]:
    studies = orjson.loads(path.read_bytes())
    if isinstance(studies, dict):
        studies = studies.get("studies") or [studies]
    return [orjson.dumps(s) for s in studies[:n]]


def one_round(texts: list[bytes]) -> dict[str, float]:
    """CPU seconds per stage over all ``texts``."""
    spent = dict.fromkeys(STAGES, 0.0)
    clock: Callable[[], float] = time.process_time
    with gc_paused():
        for start in range(0, len(texts), CHUNK):
            chunk = texts[start : start + CHUNK]
            t0 = clock()
            studies: list[Any] = [orjson.loads(t) for t in chunk]
            t1 = clock()
            records = [parse_study(s, position=i + 1) for i, s in enumerate(studies)]
            t2 = clock()
            for rec in records:
                raw_and_digest(rec)
            t3 = clock()
            spent["loads"] += t1 - t0
            spent["parse_study"] += t2 - t1
            spent["raw_and_digest"] += t3 - t2
            del studies, records
    return spent


def measure(texts: list[bytes], rounds: int) -> dict[str, float]:
    """µs per study per stage, best of ``rounds`` (each stage's best; total = best round)."""
    best = dict.fromkeys((*STAGES, "total"), float("inf"))
    for _ in range(rounds):
        spent = one_round(texts)
        for k, v in spent.items():
            best[k] = min(best[k], v)
        best["total"] = min(best["total"], sum(spent.values()))
    return {k: v / len(texts) * 1e6 for k, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="studies per corpus")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--corpora", default="complete,mix")
    ap.add_argument("--file", type=Path, help="a JSON array of study objects instead")
    args = ap.parse_args()

    load0 = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    print(f"load average (1 min) at start: {load0:.2f}")
    if args.file:
        sets = {args.file.name: file_texts(args.file, args.n)}
    else:
        sets = {kind: corpus_texts(kind, args.n) for kind in args.corpora.split(",")}
    header = f"| corpus | studies | KB/study | {' | '.join(STAGES)} | total |"
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, texts in sets.items():
        r = measure(texts, args.rounds)
        kb = sum(map(len, texts)) / len(texts) / 1024
        cells = " | ".join(f"{r[k]:,.0f}" for k in (*STAGES, "total"))
        rows.append(f"| {name} | {len(texts):,} | {kb:.1f} | {cells} |")
    print(f"CPU µs per study, best of {args.rounds} rounds:")
    print("\n".join(rows))
    print(
        f"load average (1 min) at end: {os.getloadavg()[0]:.2f}; "
        f"wall {time.perf_counter() - wall0:.1f} s, CPU {time.process_time() - cpu0:.1f} s"
    )


if __name__ == "__main__":
    main()
