"""Ingest of the same file by two revisions of celltrials, taking turns.

This host's speed drifts by ±20 % within minutes and between sessions, so a
change to the ingest path is measured against the revision before it in one
run: ``--base REV`` is checked out into a temporary git worktree, the
corpus file is built once (:class:`scale.Corpus`), and the two revisions
ingest it into fresh stores ``--rounds`` times, alternating. Each run is
:func:`scale.run`'s ``ingest`` step (a fresh process; CPU includes the
worker processes). Prints every run and the medians::

    .venv/bin/python benchmarks/ab_ingest.py --base 637a305 --corpus complete --n 20000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import scale
from machine_check import describe


@contextmanager
def two_revisions(base: str) -> Iterator[tuple[Path, dict[str, Path]]]:
    """A temporary folder and the source trees to import, by name: ``base`` checked
    out into a git worktree there, and this checkout (HEAD); both removed after."""
    work = Path(tempfile.mkdtemp(prefix="ct-ab-"))
    base_tree = work / "base"
    head = subprocess.run(
        ["git", "-C", str(scale.ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(
        ["git", "-C", str(scale.ROOT), "worktree", "add", "-q", "--detach", str(base_tree), base],
        check=True,
    )
    try:
        yield work, {f"base {base}": base_tree / "src", f"head {head}": scale.ROOT / "src"}
    finally:
        subprocess.run(
            ["git", "-C", str(scale.ROOT), "worktree", "remove", "--force", str(base_tree)],
            check=False,
        )
        shutil.rmtree(work, ignore_errors=True)


def print_head(command: str, what: str) -> None:
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {scale.machine()}")
    print(f"command: {command}")
    print(f"at start, {describe()}")
    print(what + "\n")


def take_turns(
    sides: dict[str, Path],
    rounds: int,
    measure: Callable[[Path], dict[str, Any]],
    columns: str,
    row: Callable[[dict[str, Any]], str],
    median_more: Callable[[list[dict[str, Any]]], str] = lambda runs: "",
) -> None:
    """``measure`` each source tree of ``sides`` in turn, ``rounds`` times; print a
    line per run (``columns`` its header, ``row`` its values after the revision and
    round) and each revision's median wall and CPU time (and ``median_more``)."""
    print(f"{'revision':<18} {'round':>5} {columns}")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for k in range(rounds):
        for name, src in sides.items():
            r = measure(src)
            runs[name].append(r)
            print(f"{name:<18} {k + 1:>5} {row(r)}", flush=True)
    print()
    for name, rs in runs.items():
        print(
            f"{name:<18} median {statistics.median(r['seconds'] for r in rs):.2f} s, "
            f"{statistics.median(r['cpu'] for r in rs):.1f} cpu s{median_more(rs)}"
        )
    print(f"at end, {describe()}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--base", required=True, help="the revision to compare with (git rev)")
    ap.add_argument("--corpus", default="complete", choices=["complete", "mix"])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with two_revisions(args.base) as (work, sides):
        corpus = work / "corpus.json"
        studies = scale.Corpus(args.corpus)
        scale.write_array(corpus, (studies.study(i) for i in range(args.n)))
        print_head(
            f"benchmarks/ab_ingest.py --base {args.base} --corpus {args.corpus} "
            f"--n {args.n} --rounds {args.rounds}",
            f"{args.corpus} corpus, {args.n:,} studies in one file "
            f"({corpus.stat().st_size / 1e6:,.0f} MB); {args.rounds} rounds, the two taking turns",
        )

        def ingest(src: Path) -> dict[str, Any]:
            db = work / "ab.duckdb"
            for p in work.glob("ab.duckdb*"):
                p.unlink() if p.is_file() else shutil.rmtree(p)
            r = scale.run("ingest", src=src, db=str(db), paths=[str(corpus)], force=False)
            r["db_mb"] = scale._db_mb(db)
            return r

        take_turns(
            sides,
            args.rounds,
            ingest,
            f"{'seconds':>8} {'cpu s':>7} {'peak MB':>8} {'DB MB':>7}",
            lambda r: (
                f"{r['seconds']:>8.2f} {r['cpu']:>7.1f} {r['rss_mb']:>8,.0f} {r['db_mb']:>7,.0f}"
            ),
            lambda rs: f", {statistics.median(r['db_mb'] for r in rs):,.0f} MB store",
        )


if __name__ == "__main__":
    main()
