"""Dashboard latency at whole-registry scale: p50/p95 per page with 8 concurrent clients.

    .venv/bin/python benchmarks/serve.py [--n 500000] [--store CLASSIFIED.duckdb] [--keep-store PATH]
                                         [--requests 400] [--clients 8]

The base store is ../shared/data ingested, classified and linked to products
(or --store, such a store). Every trial of it (cell therapy or not) is copied
with SQL into a fresh store until that holds N trials: copy k of trial ``T``
becomes ``T-Rk`` with all its records (raw JSON included), ids, conditions,
interventions, arms, countries, sponsors, outcomes, labels, evidence and
product links. A real ``celltrials serve`` (uvicorn, its own process) then
serves that store; 8 client threads send a mix of requests (each request of a
kind uses different filters, search words or trial ids, so no two requests
are the same) and the wall-clock latency of each is recorded.
Targets: p95 < 300 ms for the trial list with facets, search and the trial
page; < 1 s for the overview.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import duckdb
import httpx

import celltrials

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

CHILD = (
    "record_countries",
    "record_sponsors",
    "record_conditions",
    "record_interventions",
    "record_arms",
    "record_outcomes",
)


def base_store(path: Path) -> Path:
    from celltrials.ingest import ingest_paths
    from celltrials.labelling import classify_store
    from celltrials.products import link_products

    with celltrials.open(str(path)) as store:
        ingest_paths(store, [str(DATA)])
        classify_store(store)
        link_products(store)
    return path


def replicate(base: Path, out: Path, n: int) -> int:
    """A store at ``out`` with ``n`` trials copied from ``base`` (all of its trials)."""
    with celltrials.open(str(out)) as store:  # creates the schema (all migrations)
        con = store.con
        con.execute(f"ATTACH '{base}' AS b (READ_ONLY)")
        src = "SELECT trial_id FROM b.trial_records WHERE is_primary"
        n0 = con.execute(f"SELECT count(*) FROM ({src})").fetchall()[0][0]
        copies = -(-n // n0)
        con.execute(f"""
            CREATE TEMP TABLE rep AS
            WITH t AS (SELECT trial_id, row_number() OVER (ORDER BY trial_id) - 1 AS rn FROM ({src}))
            SELECT trial_id, i, CASE WHEN i = 0 THEN '' ELSE '-R' || i END AS sfx
            FROM t, range({copies}) r(i) WHERE i * {n0} + rn < {n}""")
        con.execute("""CREATE TEMP TABLE rep_keys AS
            SELECT tr.record_key, rep.sfx FROM b.trial_records tr JOIN rep USING (trial_id)""")
        con.execute("BEGIN")
        con.execute("""INSERT INTO trial_records BY NAME
            SELECT tr.* REPLACE (tr.trial_id || rep.sfx AS trial_id, tr.record_key || rep.sfx AS record_key)
            FROM b.trial_records tr JOIN rep USING (trial_id)""")
        # every version of each record (history), keyed like its current one
        con.execute("""CREATE TEMP TABLE rep_all AS
            SELECT DISTINCT r.record_key, k.sfx FROM b.records r
            JOIN b.records cur ON cur.channel = r.channel AND cur.record_id = r.record_id
            JOIN rep_keys k ON k.record_key = cur.record_key""")
        con.execute("""INSERT INTO records BY NAME
            SELECT r.* REPLACE (r.record_key || k.sfx AS record_key, r.record_id || k.sfx AS record_id)
            FROM b.records r JOIN rep_all k USING (record_key)""")
        con.execute("""INSERT INTO record_ids BY NAME
            SELECT x.* REPLACE (x.record_key || k.sfx AS record_key, x.id_key || k.sfx AS id_key,
                                x.id_raw || k.sfx AS id_raw)
            FROM b.record_ids x JOIN rep_all k USING (record_key)""")
        for table in CHILD:
            con.execute(f"""INSERT INTO {table} BY NAME
                SELECT x.* REPLACE (x.record_key || k.sfx AS record_key)
                FROM b.{table} x JOIN rep_all k USING (record_key)""")
        for table in ("labels", "label_evidence", "product_links"):
            con.execute(f"""INSERT INTO {table} BY NAME
                SELECT x.* REPLACE (x.trial_id || rep.sfx AS trial_id) FROM b.{table} x JOIN rep USING (trial_id)""")
        con.execute("INSERT INTO ingests BY NAME SELECT * FROM b.ingests")
        con.execute("COMMIT")
        con.execute("DETACH b")
        return int(con.execute("SELECT count(*) FROM trials").fetchall()[0][0])


# ------------------------------------------------------------------ requests
FILTERS = [
    {},
    {"country": "China"},
    {"cell_type": "car_t"},
    {"cell_type": "msc", "msc_source": "umbilical_cord"},
    {"cell_type": "immune", "phase": "2"},
    {"country": "United States", "status": "recruiting"},
    {"start_year": "2019-2024", "country": "China"},
    {"indication_group": "oncology", "target": "CD19"},
    {"cell_type": "msc", "therapeutic_area": "musculoskeletal"},
    {"sponsor_class": "industry"},
    {"cell_type": "nk", "registry": "ctgov"},
    {"product_form": "extracellular_vesicles"},
    {"all_trials": "1"},
    {"all_trials": "1", "country": "Iran"},
    {"origin": "allogeneic", "phase": "1/2"},
    {"cell_type": "stem_stromal", "start_year": "2015-"},
]
WORDS = [
    "knee",
    "osteoarthritis",
    "lymphoma",
    "covid",
    "wharton",
    "myeloma",
    "cord blood",
    "stroke",
    "graft",
    "cd19",
    "crohn",
    "spinal cord",
    "heart failure",
    "diabetes",
    "leukemia",
    "exosome",
    "liver cirrhosis",
    "lupus",
    "glioblastoma",
    "psoriasis",
    "bcma",
    "autologous",
    "placebo",
    "pneumonia",
]


def request_mix(ids: list[str], n: int, seed: int = 7, offset: int = 0) -> list[tuple[str, str]]:
    """(kind, url) pairs: n of each kind, each with its own parameters."""
    rnd = random.Random(seed)
    out: list[tuple[str, str]] = []
    for i in range(offset, offset + n):
        f = dict(FILTERS[i % len(FILTERS)])
        f2 = dict(FILTERS[(i * 7 + 3) % len(FILTERS)])
        words = WORDS[i % len(WORDS)] + (
            "" if i < len(WORDS) else " " + WORDS[(i * 5) % len(WORDS)]
        )
        out += [
            (
                "overview",
                "/?"
                + urlencode(
                    {**f, **({"start_year": f"{1990 + i % 31}-"} if i >= len(FILTERS) else {})}
                ),
            ),
            (
                "trial list + facets",
                "/trials?"
                + urlencode(
                    {**f2, "page": 1 + i % 5, "sort": ["trial_id", "-start_date", "title"][i % 3]}
                ),
            ),
            ("search", "/trials?" + urlencode({"q": words, **(f if i % 2 else {})})),
            ("trial page", "/trials/" + rnd.choice(ids)),
            ("api trials", "/api/trials?" + urlencode({**f, "page": 1 + i % 9})),
            ("api trial", "/api/trials/" + rnd.choice(ids)),
            ("changes", "/changes?" + urlencode({"since": f"{2015 + i % 10}-01-01", **f2})),
        ]
    rnd.shuffle(out)
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB (Linux /proc)."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            vals[k] = int(v.split()[0]) / 1024
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)


def run_pass(base_url: str, mix: list[tuple[str, str]], clients: int, server_pid: int) -> None:
    """Send ``mix`` with ``clients`` threads; print p50/p95 per kind of page."""
    lat: dict[str, list[float]] = {}
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(mix)

    def client() -> None:
        with httpx.Client(base_url=base_url, timeout=300) as c:
            while True:
                with lock:
                    if not queue:
                        return
                    kind, url = queue.pop()
                t0 = time.perf_counter()
                r = c.get(url)
                dt = time.perf_counter() - t0
                with lock:
                    lat.setdefault(kind, []).append(dt)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {url}")

    load = os.getloadavg()
    t = time.perf_counter()
    cpu0, mine0 = _cpu_seconds(server_pid), time.process_time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    cpu, mine = _cpu_seconds(server_pid) - cpu0, time.process_time() - mine0
    load_after = os.getloadavg()
    rss, peak = _rss_mb(server_pid)
    print(
        f"\n{clients} concurrent client{'s' if clients > 1 else ''}: {len(mix):,} requests in {wall:.1f} s wall; "
        f"server CPU {cpu:.1f} s ({cpu / len(mix) * 1000:.0f} ms a request), clients' CPU {mine:.1f} s; "
        f"load average (1 min) before {load[0]:.1f}, after {load_after[0]:.1f} on {os.cpu_count()} CPUs; "
        f"server RSS {rss:,.0f} MB (peak {peak:,.0f} MB)"
    )
    print(f"{'page':<22}{'requests':>9}{'p50':>9}{'p95':>9}{'max':>9}  target (p95)")
    targets = {"overview": 1.0, "trial list + facets": 0.3, "search": 0.3, "trial page": 0.3}
    for kind in (
        "overview",
        "trial list + facets",
        "search",
        "trial page",
        "api trials",
        "api trial",
        "changes",
    ):
        xs = sorted(lat.get(kind, []))
        if not xs:
            continue
        p50 = statistics.median(xs)
        p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
        tgt = targets.get(kind)
        mark = "" if tgt is None else f"< {tgt * 1000:.0f} ms {'met' if p95 < tgt else 'MISSED'}"
        print(
            f"{kind:<22}{len(xs):>9}{p50 * 1000:>7.0f}ms{p95 * 1000:>7.0f}ms{xs[-1] * 1000:>7.0f}ms  {mark}"
        )
    if errors:
        print(f"{len(errors)} non-200 answers, e.g. {errors[:3]}")


def serve(store: Path, port: int, snap: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celltrials",
            "--db",
            str(store),
            "-q",
            "serve",
            "--port",
            str(port),
            "--snapshot-dir",
            str(snap),
        ],
        env=env,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=500_000, help="trials in the benchmark store")
    ap.add_argument(
        "--store", type=Path, default=None, help="a classified, product-linked store to replicate"
    )
    ap.add_argument(
        "--keep-store",
        type=Path,
        default=None,
        help="build the benchmark store here (or reuse it if it exists)",
    )
    ap.add_argument("--requests", type=int, default=60, help="requests of each kind")
    ap.add_argument(
        "--clients",
        default="8",
        help="concurrent clients; a comma list runs one pass each (different requests each pass)",
    )
    ap.add_argument(
        "--requests-single", type=int, default=10, help="requests of each kind in a 1-client pass"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ct-bench-serve-"))
    proc = None
    try:
        t = time.perf_counter()
        bench = args.keep_store or tmp / "bench.duckdb"
        reused = bench.exists()
        if not reused:
            base = args.store or base_store(tmp / "base.duckdb")
            replicate(base, bench, args.n)
        built = "reused" if reused else f"built in {time.perf_counter() - t:.0f} s"
        con = duckdb.connect(str(bench), read_only=True)
        n = con.execute("SELECT count(*) FROM trials").fetchone()[0]  # type: ignore[index]
        ids = [
            r[0]
            for r in con.execute("SELECT trial_id FROM trials USING SAMPLE 2000 ROWS").fetchall()
        ]
        con.close()
        size_gb = bench.stat().st_size / 1e9

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base_url = f"http://127.0.0.1:{port}"
        t = time.perf_counter()
        proc = serve(bench, port, tmp / "snap")
        while True:
            try:
                if httpx.get(base_url + "/api/status", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit("the server exited")
            time.sleep(0.5)
        t_start = time.perf_counter() - t
        snap_info = httpx.get(base_url + "/api/status", timeout=30).json().get("snapshot", {})

        print(
            f"celltrials {celltrials.__version__} · Python {platform.python_version()} · "
            f"{os.cpu_count()} CPUs · {platform.machine()}"
        )
        rss, peak = _rss_mb(proc.pid)
        print(
            f"store: {n:,} trials, {size_gb:.1f} GB ({built}); server ready (snapshot copied "
            f"and loaded) in {t_start:.0f} s wall, {_cpu_seconds(proc.pid):.0f} s server CPU; the "
            f"facet/word index took {snap_info.get('index_seconds')} s wall of that and holds "
            f"{snap_info.get('index_mb')} MB; "
            f"server RSS {rss:,.0f} MB (peak {peak:,.0f} MB)"
        )
        print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for k, clients in enumerate(int(x) for x in str(args.clients).split(",")):
            n_req = args.requests if clients > 1 else args.requests_single
            run_pass(base_url, request_mix(ids, n_req, seed=k, offset=1000 * k), clients, proc.pid)
        print(f"load average (1 min) at end: {os.getloadavg()[0]:.1f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
