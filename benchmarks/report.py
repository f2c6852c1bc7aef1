"""Landscape-report build time for N trials: real records replicated with new ids.

    .venv/bin/python benchmarks/report.py [--n 100000] [--store CLASSIFIED.duckdb] [--jobs J] [--repeat R]

The base store is ../shared/data ingested and classified (or --store, a store
that is already classified). Its trials are copied with SQL into a fresh
store until it holds N trials: copy k of trial ``T`` becomes ``T-Rk`` (records,
countries, sponsors and labels copied alike; raw JSON left out, the report
does not read it). ``celltrials.report.build.build_report`` then writes the
full report (HTML, xlsx, CSV tables, SVG+PNG figures) of all cell-therapy
trials; its build is timed (store generation is not), step by step, with
the CPU seconds of this process and of the figure-drawing workers (wall
time depends on what else runs on the machine; CPU time much less).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import celltrials
from celltrials.analysis.landscape import Filters
from celltrials.report.build import build_report

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def base_store(path: Path) -> Path:
    from celltrials.ingest import ingest_paths
    from celltrials.labelling import classify_store

    store = celltrials.open(str(path))
    try:
        ingest_paths(store, [str(DATA)])
        classify_store(store)
    finally:
        store.close()
    return path


def replicate(base: Path, out: Path, n: int, cell_therapy_only: bool = True) -> int:
    """A store at ``out`` with ``n`` trials copied from ``base`` (by default
    only its cell-therapy trials, so that all ``n`` are in the report)."""
    store = celltrials.open(str(out))  # creates the schema (all migrations)
    con = store.con
    try:
        con.execute(f"ATTACH '{base}' AS b (READ_ONLY)")
        where = "l.is_cell_therapy" if cell_therapy_only else "true"
        src = f"""SELECT tr.trial_id FROM b.trial_records tr LEFT JOIN b.labels l USING (trial_id)
                   WHERE tr.is_primary AND {where}"""
        n0 = con.execute(f"SELECT count(*) FROM ({src})").fetchall()[0][0]
        copies = -(-n // n0)
        con.execute(f"""
            CREATE TEMP TABLE rep AS
            WITH t AS (SELECT trial_id, row_number() OVER (ORDER BY trial_id) - 1 AS rn FROM ({src}))
            SELECT trial_id, i, CASE WHEN i = 0 THEN '' ELSE '-R' || i END AS sfx
            FROM t, range({copies}) r(i) WHERE i * {n0} + rn < {n}""")
        con.execute("""
            CREATE TEMP TABLE rep_keys AS
            SELECT tr.record_key, rep.sfx FROM b.trial_records tr JOIN rep USING (trial_id)""")
        con.execute("BEGIN")
        con.execute("""INSERT INTO trial_records BY NAME
            SELECT tr.trial_id || rep.sfx AS trial_id, tr.record_key || rep.sfx AS record_key,
                   tr.is_primary, tr.n_records, tr.merge_reason
            FROM b.trial_records tr JOIN rep USING (trial_id)""")
        con.execute("""INSERT INTO records BY NAME
            SELECT r.* REPLACE (r.record_key || k.sfx AS record_key, r.record_id || k.sfx AS record_id,
                                NULL AS raw, NULL AS detailed_description, NULL AS eligibility)
            FROM b.records r JOIN rep_keys k USING (record_key)""")
        for table in ("record_countries", "record_sponsors", "record_conditions"):
            con.execute(f"""INSERT INTO {table} BY NAME
                SELECT x.* REPLACE (x.record_key || k.sfx AS record_key)
                FROM b.{table} x JOIN rep_keys k USING (record_key)""")
        con.execute("""INSERT INTO labels BY NAME
            SELECT l.* REPLACE (l.trial_id || rep.sfx AS trial_id) FROM b.labels l JOIN rep USING (trial_id)""")
        con.execute("INSERT INTO ingests BY NAME SELECT * FROM b.ingests")
        con.execute("COMMIT")
        con.execute("DETACH b")
        return int(con.execute("SELECT count(*) FROM trials").fetchall()[0][0])
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="trials in the benchmark store")
    ap.add_argument("--store", type=Path, default=None, help="a classified store to replicate")
    ap.add_argument(
        "--jobs", type=int, default=None, help="figure-drawing processes (default: build_report's)"
    )
    ap.add_argument("--repeat", type=int, default=2, help="timed builds (the best is reported too)")
    ap.add_argument(
        "--all-trials",
        action="store_true",
        help="replicate every trial (not only cell-therapy ones): fewer of the N are in the report",
    )
    ap.add_argument(
        "--keep", type=Path, default=None, help="write the last report here instead of a temp dir"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ct-bench-report-"))
    try:
        t = time.perf_counter()
        base = args.store or base_store(tmp / "base.duckdb")
        t_base = time.perf_counter() - t
        t = time.perf_counter()
        n = replicate(base, tmp / "bench.duckdb", args.n, cell_therapy_only=not args.all_trials)
        t_rep = time.perf_counter() - t
        load = os.getloadavg()
        store = celltrials.open(str(tmp / "bench.duckdb"), read_only=True)
        runs = []
        try:
            for i in range(args.repeat):
                out = args.keep if (args.keep and i == args.repeat - 1) else tmp / f"out{i}"
                cpu0 = time.process_time()
                kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                res = build_report(store, out, Filters(), jobs=args.jobs)
                kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                res.timings["cpu main"] = time.process_time() - cpu0
                res.timings["cpu workers"] = (kids1.ru_utime + kids1.ru_stime) - (
                    kids0.ru_utime + kids0.ru_stime
                )
                runs.append((res, out))
        finally:
            store.close()
        res, out = runs[-1]
        html_mb = res.html.stat().st_size / 1e6
        xlsx_mb = res.xlsx.stat().st_size / 1e6
        print(
            f"celltrials {celltrials.__version__} · Python {platform.python_version()} · "
            f"{os.cpu_count()} CPUs · {platform.machine()}"
        )
        print(
            f"store: {n:,} trials ({res.n_trials:,} cell-therapy trials in the report); "
            f"base store {t_base:.1f} s, replication {t_rep:.1f} s (not timed below)"
        )
        steps = [k for k in runs[0][0].timings if k not in ("total", "cpu main", "cpu workers")]
        head = f"{'step':<14}" + "".join(f"{'run ' + str(i + 1):>10}" for i in range(len(runs)))
        print(head)
        print("-" * len(head))
        for k in [*steps, "total"]:
            print(f"{k:<14}" + "".join(f"{r.timings.get(k, 0.0):>9.2f}s" for r, _ in runs))
        print("-" * len(head))
        for k in ("cpu main", "cpu workers"):
            print(f"{k:<14}" + "".join(f"{r.timings.get(k, 0.0):>9.2f}s" for r, _ in runs))
        print(f"load average before the runs: {load[0]:.2f} (other processes share these CPUs)")
        best = min(r.timings["total"] for r, _ in runs)
        print(
            f"best total: {best:.2f} s (target < 10 s) · report.html {html_mb:.1f} MB · "
            f"report.xlsx {xlsx_mb:.1f} MB · {len(res.figures)} figure files · {len(res.tables)} tables"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
