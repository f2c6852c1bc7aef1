"""Where a store's size goes: used vs free blocks while one big file is ingested.

    .venv/bin/python benchmarks/store_blocks.py [--n 100000]

Builds the ``mix`` corpus of benchmarks/scale.py (n studies, one JSON array)
and ingests it twice into a fresh store, printing DuckDB's block accounting
(``PRAGMA database_size``: blocks in the file, used, free) after every few
staged batches and at the end:

* ``default``: as ``celltrials ingest`` runs;
* ``no vacuum``: the same with DuckDB's ``max_vacuum_tasks = 0`` (checkpoints
  no longer merge under-filled row groups), then the store is opened again
  with the default setting and one row is written and checkpointed, to show
  what the deferred merging costs.

Each checkpoint (every ``CHECKPOINT_BYTES`` of write-ahead log) writes the
rows appended since the last one as a new, under-filled row group and merges
it with its under-filled neighbours: those rows are written again, the new
copy before the old blocks are freed. The file grows to that high-water mark;
the freed blocks stay inside it as free space for later writes (DuckDB only
gives back free blocks at the end of the file).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]


def _blocks(store: Any) -> tuple[int, int, int, int]:
    """(block size, blocks in the file, used, free)"""
    row = store.con.execute("PRAGMA database_size").fetchone()
    return int(row[2]), int(row[3]), int(row[4]), int(row[5])


def _line(tag: str, t0: float, b: tuple[int, int, int, int]) -> None:
    size, total, used, free = b
    print(
        f"  {time.perf_counter() - t0:7.1f} s  {tag:<22} file {size * total / 1e6:8,.0f} MB  "
        f"used {size * used / 1e6:8,.0f} MB  free {size * free / 1e6:7,.0f} MB",
        flush=True,
    )


def ingest_traced(db: Path, corpus: Path, vacuum: bool, every: int) -> tuple[int, int, int, int]:
    import celltrials
    from celltrials.ingest import ingest_paths
    from celltrials.store import Store

    store = celltrials.open(db)
    if not vacuum:
        store.con.execute("SET max_vacuum_tasks = 0")
    t0 = time.perf_counter()
    n_batches = 0
    add_staged = Store.add_staged

    def traced(self: Store, items: Any) -> list[bool]:
        nonlocal n_batches
        flags = add_staged(self, items)
        n_batches += 1
        if n_batches % every == 0:
            _line(f"after batch {n_batches}", t0, _blocks(self))
        return flags

    Store.add_staged = traced  # type: ignore[method-assign]
    try:
        ingest_paths(store, [corpus])
    finally:
        Store.add_staged = add_staged  # type: ignore[method-assign]
    store.con.execute("CHECKPOINT")
    end = _blocks(store)
    _line("ingested, checkpointed", t0, end)
    store.close()
    return end


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=5, help="print after every this many batches")
    args = ap.parse_args()

    from scale import Corpus, write_array

    import celltrials

    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    started, cpu0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="ct-blocks-") as tmp:
        work = Path(tmp)
        corpus = work / "big.json"
        mix = Corpus("mix")
        write_array(corpus, (mix.study(i) for i in range(args.n)))
        print(f"corpus: {args.n:,} mix studies, {corpus.stat().st_size / 1e6:,.0f} MB")
        results = {}
        for name, vacuum in (("default", True), ("no vacuum", False)):
            print(f"{name}:")
            results[name] = ingest_traced(work / f"{name[:2]}.duckdb", corpus, vacuum, args.every)
        print("no vacuum, then one row written and checkpointed with the default setting:")
        with celltrials.open(work / "no.duckdb") as store:
            t0 = time.perf_counter()
            store.set_meta("store_blocks", "x")
            store.con.execute("CHECKPOINT")
            _line("checkpoint", t0, _blocks(store))
    print()
    for name, (size, total, used, free) in results.items():
        print(
            f"{name:<10} {size * total / 1e6:8,.0f} MB file = {size * used / 1e6:,.0f} MB used "
            f"({size * used / args.n / 1e3:.2f} KB/study) + {size * free / 1e6:,.0f} MB free "
            f"({free / total:.0%})"
        )
    print(
        f"load average at end: {os.getloadavg()[0]:.2f}; wall {time.perf_counter() - started:,.0f} s, "
        f"CPU of this process {time.process_time() - cpu0:,.0f} s"
    )


if __name__ == "__main__":
    main()
