"""The report of one store by two revisions of celltrials, taking turns.

As :mod:`ab_ingest` for the report step: ``--base REV`` is checked out into
a temporary git worktree, and the two revisions write the report of the
store ``--store`` (read-only: both read the same classified store, e.g. the
big store ``scale.py --keep`` leaves) ``--rounds`` times, alternating. Each
run is :func:`scale.run`'s ``report`` step (a fresh process; every trial,
figures drawn; CPU includes the figure workers). Prints every run and the
medians::

    .venv/bin/python benchmarks/scale.py --n 560000 --corpora mix --steps ingest,classify --keep --tmp /tmp/s560
    .venv/bin/python benchmarks/ab_report.py --base f866dc2 --store /tmp/s560/big.duckdb
"""

from __future__ import annotations

import argparse
from pathlib import Path

import scale
from ab_ingest import print_head, take_turns, two_revisions


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--base", required=True, help="the revision to compare with (git rev)")
    ap.add_argument("--store", type=Path, required=True, help="a classified store")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with two_revisions(args.base) as (work, sides):
        print_head(
            f"benchmarks/ab_report.py --base {args.base} --store {args.store} --rounds {args.rounds}",
            f"store {args.store.name}, {scale._db_mb(args.store):,.0f} MB; "
            f"{args.rounds} rounds, the two taking turns",
        )
        take_turns(
            sides,
            args.rounds,
            lambda src: scale.run("report", src=src, db=str(args.store), out=str(work / "report")),
            f"{'trials':>9} {'seconds':>8} {'cpu s':>7} {'peak MB':>8}",
            lambda r: f"{r['n']:>9,} {r['seconds']:>8.2f} {r['cpu']:>7.1f} {r['rss_mb']:>8,.0f}",
        )


if __name__ == "__main__":
    main()
