"""Whole-registry scale: ingest against DuckDB's own JSON load, incremental files, report size.

    .venv/bin/python benchmarks/scale.py [--n 100000] [--corpora mix,complete] [--steps ...] [--write]

Corpora are built from the real ClinicalTrials.gov API v2 study objects in
../shared/data and ../shared/data-extra, replicated with fresh NCT ids:

* ``complete`` — only complete study objects (all modules, ~17 KB each: the
  50 general studies, the 13 AACT fixtures, the 90 AML CAR-T studies), i.e.
  what the live API returns;
* ``mix`` — 75 % complete objects and 25 % of the reconstructed CAR records
  (subset of modules, ~2 KB), a registry-like mix weighted toward complete ones;
* ``registry`` — complete objects in the registry's proportions: 24 of every
  25 studies from the 63 that were not chosen for being cell therapy (the 50
  general studies posted 2023 and the 13 AACT fixtures; the classifier labels
  none of them cell therapy), 1 of 25 (4 %) from the 90 AML CAR-T studies. The
  two corpora above are 59-67 % cell therapy, and a cell-therapy trial costs
  the classifier three to four times another (``classify_stages.py``);
  ClinicalTrials.gov's share is a few percent at
  most (``../shared/data`` alone holds a 2,587-trial snapshot of its CAR
  trials, and the MSC review counts >1,000 MSC trials, of ~560,000 studies),
  so 4 % errs toward the slower side. Each replica's long texts (titles,
  summaries, intervention and arm descriptions) end in `` [replica N]``, so
  that they differ as a registry's do; the short ones (conditions,
  intervention names, arm labels) recur, as they do in a registry, though
  more often. With 63 studies repeated, the classifier's passes kept for
  recent texts would otherwise serve the replicas' summaries. This corpus shows what
  classifying the whole registry costs; it does not replace the two above.

Secondary ids are kept: each digit run of six or more digits is shifted per
replica, so registry ids keep their format and the links the real records
have among themselves recur in every replica (no giant components); every
50th study also names the previous study's NCT id as a secondary id, so
two-record merges happen throughout.

Each measurement runs in a fresh subprocess. Its peak memory ("peak MB") is
that of the subprocess and the worker processes it starts (ingest and
classify run on every core): the highest sum of their resident sizes,
sampled twice a second (an upper bound: pages they share count once per
process), and never less than the subprocess's own ``ru_maxrss``. Its CPU
seconds ("cpu s") include the workers (their fork server is stopped, so that
their usage is reaped into the subprocess's ``RUSAGE_CHILDREN``). The
ingest and classify lines also show the subprocess's own peak and the largest
worker's (the highest resident size of one of its descendant processes, a
worker or their fork server, sampled twice a second; before session 24 this
was ``RUSAGE_CHILDREN``'s ``ru_maxrss``, which counts the fork server and the
resource tracker at the subprocess's own size when it started them, so it
printed about the main process's size), and the workers' CPU seconds
(classify: the subprocess's own too, which reads the texts and stages the
labels).
``--ingest-jobs 1`` ingests in one process (the serial path), for comparison.

* ``floor``: DuckDB ``read_json_objects`` of the corpus file + extraction of
  the fields the store keeps (scalars, id/condition/intervention/arm/outcome/
  location/sponsor lists, raw JSON) into a table of a DuckDB file, 1 thread
  and all threads;
* ``ingest``: ``celltrials.ingest.ingest_paths`` of the corpus (one file) into
  an empty store; ``reingest``: the same file again (unchanged);
  ``incremental``: a 1,000-study file (900 new studies, 100 newer versions of
  stored ones) into a copy of the big store and into an empty store, three
  times each (the medians are compared; the big store itself is left as it
  was); the ingest step also prints the store's used and free blocks;
* ``split``: the corpus as files of 1,000 studies into an empty store (vs one
  file; the trial count must be the same);
* ``onefiles``: 10,000 one-study files vs one file with the same 10,000
  studies (issue 12's pathological case);
* ``classify`` and ``report`` (``build_report`` of every trial) on the big store;
* ``browser``: the report's report.html in headless Chromium from the folder
  (Debian's /usr/bin/chromium through Playwright, as the browser tests):
  seconds until every chart has drawn, then a click on a count until its
  trial list shows (the first loads report-lists.js), then another;
* ``peers``: ``pandas.json_normalize`` + Parquet and ctgforge (PyPI; its
  ``flatten_core`` objects and ``to_dataframe``, + Parquet) of the complete
  corpus (at most 20,000 studies) beside celltrials on the same file; the
  three take turns three times and each line shows the run of median wall
  time (the host's speed drifts within minutes).

``--write`` puts the result table with machine and date into BENCHMARKS.md
(between the ``scale`` markers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from machine_check import describe

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
EXTRA = SHARED / "data-extra"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

#: complete studies not chosen for being cell therapy (the 50 general ones, AACT's fixtures)
GENERAL_SOURCES = [
    DATA / "ctgov-v2-json" / "ctg-studies-50-general.json",
    *sorted((DATA / "ctgov-v2-json" / "aact-fixtures").glob("NCT*.json")),
]
#: complete cell-therapy studies
CELL_SOURCES = [EXTRA / "aml-cart-v2-json" / "raw_trials.json"]
COMPLETE_SOURCES = [*GENERAL_SOURCES, *CELL_SOURCES]
#: the ``registry`` corpus takes one study in this many from CELL_SOURCES (4 %)
REGISTRY_CELL_EVERY = 25
RECONSTRUCTED_SOURCES = [
    DATA / "ctgov-v2-json" / "reconstructed" / "car_cell_therapy_2026-08-22.json",
    DATA / "ctgov-v2-json" / "reconstructed" / "car_cell_therapy_part2_2026-08-22.json",
]

_NCT = "@@NCT@@"
_SEC = "@@SEC{}@@"
_PAIR = "@@PAIR@@"
_REP = "@@REP@@"
_PLACEHOLDER = re.compile(r"@@(NCT|SEC\d+|PAIR|REP)@@")


def _mark_long_texts(protocol: dict[str, Any]) -> None:
    """Append `` [replica N]`` to a study's titles, summaries and intervention and
    arm descriptions (see the ``registry`` corpus)."""
    ident = protocol.get("identificationModule") or {}
    desc = protocol.get("descriptionModule") or {}
    arms = protocol.get("armsInterventionsModule") or {}
    for obj, key in [
        (ident, "briefTitle"),
        (ident, "officialTitle"),
        (desc, "briefSummary"),
        (desc, "detailedDescription"),
        *((iv, "description") for iv in arms.get("interventions") or []),
        *((arm, "description") for arm in arms.get("armGroups") or []),
    ]:
        if isinstance(obj.get(key), str) and obj[key]:
            obj[key] += f" [replica {_REP}]"


# ------------------------------------------------------------------ corpora
def _studies(paths: list[Path]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in paths:
        obj = orjson.loads(p.read_bytes())
        out += obj if isinstance(obj, list) else [obj]
    return out


class _Template:
    """One real study as JSON text with placeholders for its ids."""

    def __init__(self, study: dict[str, Any], pair: bool, unique_texts: bool = False) -> None:
        s = json.loads(json.dumps(study))
        if unique_texts:
            _mark_long_texts(s["protocolSection"])
        ident = s["protocolSection"]["identificationModule"]
        ident["nctId"] = _NCT
        self.secondary: list[str] = []
        for info in ident.get("secondaryIdInfos") or []:
            self.secondary.append(str(info.get("id", "")))
            info["id"] = _SEC.format(len(self.secondary) - 1)
        for k, alias in enumerate(ident.get("nctIdAliases") or []):
            self.secondary.append(str(alias))
            ident["nctIdAliases"][k] = _SEC.format(len(self.secondary) - 1)
        if pair:
            ident.setdefault("secondaryIdInfos", []).append(
                {"id": _PAIR, "type": "OTHER", "domain": "benchmark pair"}
            )
        text = orjson.dumps(s).decode()
        self.parts = _PLACEHOLDER.split(text)  # text, name, text, name, ..., text

    def render(self, nct: str, replica: int, pair_nct: str) -> str:
        out = []
        for k, part in enumerate(self.parts):
            if k % 2 == 0:
                out.append(part)
            elif part == "NCT":
                out.append(nct)
            elif part == "PAIR":
                out.append(pair_nct)
            elif part == "REP":
                out.append(str(replica))
            else:
                out.append(_shift(self.secondary[int(part[3:])], replica))
        return "".join(out)


def _shift(text: str, replica: int) -> str:
    if not replica:
        return text

    def sub(m: re.Match[str]) -> str:
        d = m.group(0)
        return f"{(int(d) + replica * 7919) % 10 ** len(d):0{len(d)}d}"

    return re.sub(r"\d{6,}", sub, text)


class Corpus:
    """Deterministic study texts: study i of a corpus kind, with NCT id base+i."""

    def __init__(self, kind: str) -> None:
        if kind not in ("mix", "complete", "registry"):
            raise SystemExit(f"unknown corpus {kind!r} (mix, complete, registry)")
        self.kind = kind
        general = _studies(GENERAL_SOURCES)
        cell = _studies(CELL_SOURCES)
        reg = kind == "registry"
        self.complete = [
            (_Template(s, False, reg), _Template(s, True, reg))
            for s in (general if reg else general + cell)
        ]
        recon = (
            [(_Template(s, False), _Template(s, True)) for s in _studies(RECONSTRUCTED_SOURCES)]
            if kind == "mix"
            else []
        )
        # the other pool interleaved with the complete studies: one study in ``every``
        cells = [(_Template(s, False, True), _Template(s, True, True)) for s in cell] if reg else []
        self.other, self.every = (recon, 4) if recon else (cells, REGISTRY_CELL_EVERY)

    def study(self, i: int, base: int = 10_000_000, update: bool = False) -> str:
        every = self.every
        if self.other and i % every == every - 1:
            pool, k = self.other, i // every
        else:
            pool, k = self.complete, i - (i // every if self.other else 0)
        j, replica = k % len(pool), k // len(pool)
        tpl = pool[j][1 if i % 50 == 49 else 0]
        text = tpl.render(f"NCT{base + i:08d}", replica, f"NCT{base + i - 1:08d}")
        if update:  # a newer version of the same study: later update date, another status
            text = re.sub(
                r'"lastUpdatePostDateStruct":\{"date":"[^"]*"',
                '"lastUpdatePostDateStruct":{"date":"2030-01-15"',
                text,
                count=1,
            )
            text = re.sub(
                r'"overallStatus":"[A-Z_]+"', '"overallStatus":"COMPLETED"', text, count=1
            )
        return text


def write_array(path: Path, texts: Any) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        fh.write("[")
        for t in texts:
            fh.write(("," if n else "") + t)
            n += 1
        fh.write("]")
    return n


def build(corpus: Corpus, n: int, work: Path, steps: set[str]) -> dict[str, Path]:
    paths: dict[str, Path] = {"big": work / "big.json"}
    write_array(paths["big"], (corpus.study(i) for i in range(n)))
    if "incremental" in steps:
        paths["inc"] = work / "inc.json"
        step = max(1, n // 100)
        write_array(
            paths["inc"],
            [corpus.study(n + i) for i in range(900)]
            + [corpus.study(k * step, update=True) for k in range(100)],
        )
    if "split" in steps:
        d = work / "split"
        d.mkdir()
        for f in range(0, n, 1000):
            write_array(
                d / f"part{f // 1000:05d}.json",
                (corpus.study(i) for i in range(f, min(n, f + 1000))),
            )
        paths["split"] = d
    if "onefiles" in steps:
        m = min(n, 10_000)
        d = work / "one"
        d.mkdir()
        for i in range(m):
            (d / f"NCT{i:08d}.json").write_text(corpus.study(i), encoding="utf-8")
        paths["one"] = d
        paths["one_big"] = work / "one_big.json"
        write_array(paths["one_big"], (corpus.study(i) for i in range(m)))
    if "peers" in steps:
        m = min(n, 20_000)
        paths["peer"] = work / "peer.json"
        write_array(paths["peer"], (corpus.study(i) for i in range(m)))
    return paths


# ------------------------------------------------------------------ measured steps (run in a subprocess)
_SCALARS = [
    "$.protocolSection.identificationModule.nctId",
    "$.protocolSection.identificationModule.briefTitle",
    "$.protocolSection.identificationModule.officialTitle",
    "$.protocolSection.identificationModule.acronym",
    "$.protocolSection.descriptionModule.briefSummary",
    "$.protocolSection.descriptionModule.detailedDescription",
    "$.protocolSection.statusModule.overallStatus",
    "$.protocolSection.statusModule.whyStopped",
    "$.protocolSection.statusModule.startDateStruct.date",
    "$.protocolSection.statusModule.completionDateStruct.date",
    "$.protocolSection.statusModule.studyFirstSubmitDate",
    "$.protocolSection.statusModule.lastUpdatePostDateStruct.date",
    "$.protocolSection.designModule.studyType",
    "$.protocolSection.designModule.enrollmentInfo.count",
    "$.protocolSection.designModule.enrollmentInfo.type",
    "$.protocolSection.sponsorCollaboratorsModule.leadSponsor.name",
    "$.protocolSection.sponsorCollaboratorsModule.leadSponsor.class",
    "$.protocolSection.eligibilityModule.eligibilityCriteria",
    "$.hasResults",
]
_LISTS = [
    "$.protocolSection.identificationModule.secondaryIdInfos",
    "$.protocolSection.designModule.phases",
    "$.protocolSection.conditionsModule.conditions",
    "$.protocolSection.conditionsModule.keywords",
    "$.protocolSection.armsInterventionsModule.interventions",
    "$.protocolSection.armsInterventionsModule.armGroups",
    "$.protocolSection.outcomesModule",
    "$.protocolSection.contactsLocationsModule.locations",
    "$.protocolSection.sponsorCollaboratorsModule.collaborators",
    "$.derivedSection.conditionBrowseModule",
]


def _floor(path: str, db: str, threads: int) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(db)
    if threads:
        con.execute(f"SET threads = {threads}")
    t = time.perf_counter()
    scal = ", ".join(f"'{p}'" for p in _SCALARS)
    lists = ", ".join(f"'{p}'" for p in _LISTS)
    con.execute(f"""CREATE TABLE floor AS
        SELECT json_extract_string(json, [{scal}]) AS scalars, json_extract(json, [{lists}]) AS lists, json AS raw
        FROM read_json_objects('{path}', format = 'array')""")
    dt = time.perf_counter() - t
    n = con.execute("SELECT count(*) FROM floor").fetchall()[0][0]
    con.close()
    return {"seconds": dt, "n": n}


def _ingest(db: str, paths: list[str], force: bool, jobs: int | None = None) -> dict[str, Any]:
    import celltrials
    from celltrials.ingest import ingest_paths

    kw: dict[str, Any] = {"force": True} if force else {}
    if jobs is not None:
        kw["jobs"] = jobs
    store = celltrials.open(db)
    t = time.perf_counter()
    report = ingest_paths(store, paths, **kw)
    store.close()  # timed too: the last checkpoint is part of the work
    dt = time.perf_counter() - t
    with celltrials.open(db, read_only=True) as store:
        n_trials = store.con.execute("SELECT count(*) FROM trials").fetchall()[0][0]
        n_current = store.con.execute("SELECT count(*) FROM records WHERE is_current").fetchall()[
            0
        ][0]
        # (name, size, block_size, total_blocks, used_blocks, free_blocks, ...)
        size = store.con.execute("PRAGMA database_size").fetchone()
    assert report.clean, [str(f) for f in report.findings][:5]
    assert size is not None
    return {
        "seconds": dt,
        "n": report.n_records,
        "n_new": report.n_new,
        "trials": n_trials,
        "current": n_current,
        "used_mb": size[2] * size[4] / 1e6,
        "free_mb": size[2] * size[5] / 1e6,
    }


def _classify(db: str) -> dict[str, Any]:
    import celltrials
    from celltrials.labelling import classify_store

    with celltrials.open(db) as store:
        t = time.perf_counter()
        summary = classify_store(store)
        dt = time.perf_counter() - t
        # (a cell-therapy trial costs the classifier ~2.5x another: its product's
        # fields are read too, so the time depends on the corpus's share)
        n_cell = store.n_cell_therapy_trials()
    n = int(summary.get("n_classified", summary.get("classified", 0)) or 0)
    return {"seconds": dt, "n": n, "n_cell_therapy": n_cell}


def _report(db: str, out: str) -> dict[str, Any]:
    import celltrials
    from celltrials.analysis.landscape import Filters
    from celltrials.report.build import build_report

    with celltrials.open(db, read_only=True) as store:
        t = time.perf_counter()
        res = build_report(store, out, Filters(scope="all"), figures=True)
        dt = time.perf_counter() - t
    size = sum(
        p.stat().st_size for p in Path(out).iterdir() if p.is_file() and p.name != "report.xlsx"
    )
    return {
        "seconds": dt,
        "n": res.n_trials,
        "html_mb": res.html.stat().st_size / 1e6,
        "files_mb": size / 1e6,
    }


_ALL_CHARTS_DRAWN = (
    "document.querySelectorAll('div.chart').length > 0 && "
    "document.querySelectorAll('div.chart[data-rendered]').length === "
    "document.querySelectorAll('div.chart').length"
)


def _browser(html: str, n: int) -> dict[str, Any]:
    """The report in headless Chromium, from the folder (file://, the network
    blocked): seconds from opening report.html until every chart has drawn;
    then a click on a count until its trial list shows — the first one loads
    the lists file beside the page (report-lists.js) — and a click on another
    count (lists loaded). Console errors and blocked requests are counted."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT))  # Chromium as the browser tests launch it
    from tests.chromium import ARGS, CHROMIUM

    page_path = Path(html)
    errors: list[str] = []
    remote: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def route(r: Any) -> None:
                if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
                    r.continue_()
                else:
                    remote.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            t = time.perf_counter()
            page.goto(page_path.as_uri())
            page.wait_for_function(_ALL_CHARTS_DRAWN, timeout=600_000)
            opened = time.perf_counter() - t
            clicks: list[tuple[float, int]] = []
            buttons = page.locator("button.count:visible")
            for k in (0, 1):
                t = time.perf_counter()
                buttons.nth(k).click()
                page.wait_for_selector("dialog#trial-list[open]", timeout=600_000)
                page.wait_for_function(
                    "document.querySelectorAll('#tl-items li').length > 0", timeout=600_000
                )
                clicks.append((time.perf_counter() - t, page.locator("#tl-items li").count()))
                page.click("#tl-close")
                page.wait_for_selector("dialog#trial-list:not([open])", state="attached")
        finally:
            browser.close()
    side = page_path.with_name("report-lists.js")
    return {
        "seconds": opened,
        "n": n,  # the report's trials
        "first_click": clicks[0][0],
        "first_items": clicks[0][1],
        "second_click": clicks[1][0],
        "lists_mb": side.stat().st_size / 1e6 if side.exists() else 0.0,
        "errors": len(errors),
        "remote": len(remote),
    }


def _pandas_peer(path: str, out: str) -> dict[str, Any]:
    import pandas as pd

    t = time.perf_counter()
    studies = orjson.loads(Path(path).read_bytes())
    df = pd.json_normalize(studies)
    # nested lists (conditions, interventions, ...) as JSON text, as a Parquet file cannot hold mixed objects
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = [orjson.dumps(v).decode() if isinstance(v, list | dict) else v for v in df[c]]
    df.to_parquet(out)
    return {"seconds": time.perf_counter() - t, "n": len(df)}


def _ctgforge_peer(path: str, out: str) -> dict[str, Any]:
    """ctgforge (PyPI): its canonical trial objects of each study, its
    DataFrame of them, written as Parquet like the pandas peer."""
    from ctgforge.export import to_dataframe
    from ctgforge.flatten import flatten_core
    from pydantic import ValidationError

    t = time.perf_counter()
    studies = orjson.loads(Path(path).read_bytes())
    trials, rejected = [], 0
    for s in studies:
        try:
            trials.append(flatten_core(s))
        except ValidationError:  # e.g. a collaborator without a name or class
            rejected += 1
    df = to_dataframe(trials)
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = [orjson.dumps(v).decode() if isinstance(v, list | dict) else v for v in df[c]]
    df.to_parquet(out)
    return {"seconds": time.perf_counter() - t, "n": len(studies), "rejected": rejected}


def worker(spec: dict[str, Any]) -> None:
    import gc

    gc.collect()
    kind = spec.pop("kind")
    steps: dict[str, Callable[..., dict[str, Any]]] = {
        "floor": _floor,
        "ingest": _ingest,
        "classify": _classify,
        "report": _report,
        "browser": _browser,
        "pandas": _pandas_peer,
        "ctgforge": _ctgforge_peer,
    }
    fn = steps[kind]
    tree = _TreeMemory()
    res = fn(**spec)
    tree_mb, child_mb = tree.stop()
    _stop_fork_server()
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["rss_self_mb"] = own.ru_maxrss / 1024
    # sampled, not RUSAGE_CHILDREN's ru_maxrss (see the module docstring)
    res["rss_child_mb"] = child_mb
    res["cpu_children"] = children.ru_utime + children.ru_stime
    res["rss_mb"] = max(res["rss_self_mb"], tree_mb)
    print("RESULT " + json.dumps(res), flush=True)


def _stop_fork_server() -> None:
    """Stop (and reap) the fork server of the worker pools, which reaped the
    workers: their CPU time and peak memory are then in ``RUSAGE_CHILDREN``."""
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # CPython's, used by its tests
    if stop is not None:
        stop()


def _tree_kb() -> tuple[int, int]:
    """Resident memory (kB) now of this process and all its descendants, and of the
    largest descendant."""
    me = os.getpid()
    pids, total, largest = [me], 0, 0
    for pid in pids:  # grows while it is walked: children, grandchildren, ...
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    pids.extend(int(x) for x in fh.read().split())
            with open(f"/proc/{pid}/status") as fh:
                rss = next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:"))
        except (OSError, ValueError, StopIteration):  # gone meanwhile
            continue
        total += rss
        if pid != me:
            largest = max(largest, rss)
    return total, largest


class _TreeMemory:
    """The peaks of :func:`_tree_kb`, sampled twice a second in a thread."""

    def __init__(self) -> None:
        import threading

        self.peak = self.peak_child = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.5):
            total, largest = _tree_kb()
            self.peak = max(self.peak, total)
            self.peak_child = max(self.peak_child, largest)

    def stop(self) -> tuple[float, float]:
        """The peaks in MB: of the whole tree, and of its largest descendant."""
        self._done.set()
        self._thread.join()
        return self.peak / 1024, self.peak_child / 1024


def run(kind: str, src: Path | None = None, **spec: Any) -> dict[str, Any]:
    """One measured step in a fresh process, importing celltrials from ``src``
    (default: this checkout's; :mod:`ab_ingest` passes another revision's)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps({"kind": kind, **spec})]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src or ROOT / "src")},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{kind} failed")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    res = dict(json.loads(line[7:]))
    # CPU seconds of the whole subprocess (start-up and corpus reading included): steadier than wall time here
    res["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return res


# ------------------------------------------------------------------ driver
#: the 1k file goes this many times into (a copy of) the big store and into an empty one
INCREMENTAL_RUNS = 3


def _waited(r: dict[str, Any], what: str) -> str | None:
    """Whether a step's processes used the CPU for under half its wall time: they
    waited (at 560k on this host, DuckDB's floor keeps ~19 GB for itself, and
    the 16 GB JSON file it reads no longer fits in the page cache)."""
    if r["seconds"] <= 0 or r["cpu"] >= 0.5 * r["seconds"]:
        return None
    return f"{what} {r['cpu']:.1f} cpu s in {r['seconds']:.2f} s ({r['cpu'] / r['seconds']:.0%})"


def _db_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6


def bench_corpus(
    kind: str,
    n: int,
    steps: set[str],
    work: Path,
    rows: list[str],
    checks: list[str],
    ingest_jobs: int | None = None,
    keep: bool = False,
) -> None:
    t = time.perf_counter()
    corpus = Corpus(kind)
    paths = build(corpus, n, work, steps)
    size = paths["big"].stat().st_size
    rows.append(
        f"-- corpus {kind}: {n:,} studies, {size / 1e6:,.0f} MB JSON array "
        f"({size / n / 1e3:.1f} KB/study), built in {time.perf_counter() - t:.0f} s"
    )

    def line(
        step: str,
        r: dict[str, Any],
        floor: float | None = None,
        db: Path | None = None,
        extra: str = "",
    ) -> None:
        rate = r["n"] / r["seconds"] if r["seconds"] else 0.0
        ratio = f"{r['seconds'] / floor:6.2f}x" if floor else f"{'':>7}"
        dbs = f"{_db_mb(db):8,.0f}" if db else f"{'':>8}"
        rows.append(
            f"{kind:<9} {step:<26} {r['n']:>9,} {r['seconds']:>8.2f} {r['cpu']:>7.1f} {rate:>10,.0f} "
            f"{r['rss_mb']:>8,.0f} {dbs} {ratio} {extra}"
        )
        print(rows[-1], flush=True)

    floor1 = floor_all = None
    if "floor" in steps:
        floor1, floor_all = _floor_step(kind, paths["big"], work, line, checks)
    big_db = work / "big.duckdb"
    one_file = None
    if "ingest" in steps:
        r = run("ingest", db=str(big_db), paths=[str(paths["big"])], force=False, jobs=ingest_jobs)
        one_file = r["seconds"]
        line(
            "ingest (one file)",
            r,
            floor1,
            big_db,
            (f"(x floor all threads: {r['seconds'] / floor_all:.2f}) " if floor_all else "")
            + f"(peak MB: main {r['rss_self_mb']:,.0f}, largest worker {r['rss_child_mb']:,.0f}; "
            f"workers' cpu s {r['cpu_children']:,.1f})",
        )
        big_trials = r["trials"]
        checks.append(
            f"{kind}: store after the one-file ingest: {r['used_mb']:,.0f} MB in used blocks "
            f"({r['used_mb'] * 1e3 / n:.2f} KB/study) + {r['free_mb']:,.0f} MB of free blocks inside "
            f"the file ({r['free_mb'] / (r['used_mb'] + r['free_mb']):.0%}; left by checkpoints that "
            "rewrote under-filled row groups, reused by later writes)"
        )
        if "reingest" in steps:
            r = run("ingest", db=str(big_db), paths=[str(paths["big"])], force=False)
            line("re-ingest unchanged", r, None, big_db)
            checks.append(
                f"{kind}: unchanged re-ingest {r['seconds']:.2f} s (target < 1 s), {r['n_new']} new records"
            )
        if "incremental" in steps:
            # each run on a fresh copy of the big store (flushed to disk first), alternating
            # with a run into an empty store; the medians are compared (one run of ~1 s moves
            # by ±50 % on a shared machine)
            bigs, empties = [], []
            for _ in range(INCREMENTAL_RUNS):
                copy = work / "inc.duckdb"
                shutil.copy(big_db, copy)
                os.sync()
                bigs.append(run("ingest", db=str(copy), paths=[str(paths["inc"])], force=False))
                line("1k file into big store", bigs[-1], None, copy)
                empty = work / "empty.duckdb"
                empties.append(run("ingest", db=str(empty), paths=[str(paths["inc"])], force=False))
                line("1k file into empty store", empties[-1], None, empty)
                for p in [*work.glob("empty.duckdb*"), *work.glob("inc.duckdb*")]:
                    p.unlink()
            t_big = [r["seconds"] for r in bigs]
            t_empty = [r["seconds"] for r in empties]
            med_big, med_empty = statistics.median(t_big), statistics.median(t_empty)
            checks.append(
                f"{kind}: 1k file into the {n:,} store / into an empty store = {med_big:.2f} s / "
                f"{med_empty:.2f} s = {med_big / med_empty:.2f} (medians of {INCREMENTAL_RUNS}; "
                f"target <= 2); runs {', '.join(f'{t:.2f}' for t in t_big)} vs "
                f"{', '.join(f'{t:.2f}' for t in t_empty)}"
            )
        if "split" in steps:
            split_db = work / "split.duckdb"
            r = run("ingest", db=str(split_db), paths=[str(paths["split"])], force=False)
            line(f"{-(-n // 1000)} files of 1k", r, floor1, split_db)
            checks.append(
                f"{kind}: {-(-n // 1000)} files of 1k / one file = {r['seconds'] / one_file:.2f} (target <= 1.3); "
                f"trials {r['trials']:,} vs {big_trials:,} ({'same' if r['trials'] == big_trials else 'DIFFERENT'})"
            )
            for p in work.glob("split.duckdb*"):
                p.unlink()
    if "onefiles" in steps:
        a, b = work / "one_a.duckdb", work / "one_b.duckdb"
        ra = run("ingest", db=str(a), paths=[str(paths["one_big"])], force=False)
        line(f"{ra['n']:,} studies, one file", ra, None, a)
        rb = run("ingest", db=str(b), paths=[str(paths["one"])], force=False)
        line(f"{rb['n']:,} one-study files", rb, None, b)
        checks.append(
            f"{kind}: {rb['n']:,} one-study files / one file = {rb['seconds'] / ra['seconds']:.2f} (target <= 3)"
        )
        for p in work.glob("one_*.duckdb*"):
            p.unlink()
    if "classify" in steps and big_db.exists():
        r = run("classify", db=str(big_db))
        share = r["n_cell_therapy"] / r["n"] if r["n"] else 0.0
        line(
            "classify",
            r,
            None,
            big_db,
            f"{r['n_cell_therapy']:,} labelled cell therapy ({share:.0%}) "
            + f"(peak MB: main {r['rss_self_mb']:,.0f}, largest worker {r['rss_child_mb']:,.0f}; "
            f"main cpu s {r['cpu'] - r['cpu_children']:,.1f}, workers' cpu s {r['cpu_children']:,.1f})",
        )
    if "report" in steps and big_db.exists():
        _report_step(kind, big_db, work, steps, line, checks)
    if "peers" in steps and kind == "complete":
        peer_db = work / "peer.duckdb"
        try:
            import ctgforge  # noqa: F401  (installed with the dev extra)
        except ImportError:
            has_ctgforge = False
            checks.append(f"{kind}: ctgforge not installed (pip install ctgforge): not measured")
        else:
            has_ctgforge = True
        # the three tools take turns, PEER_ROUNDS times: this host's speed drifts
        # by ±20 % within minutes, so one run each could favour whoever ran in a fast minute
        rounds: dict[str, list[dict[str, Any]]] = {"celltrials": [], "pandas": [], "ctgforge": []}
        for _ in range(PEER_ROUNDS):
            for p in work.glob("peer.duckdb*"):
                p.unlink()  # (a fresh store each round: else the file is skipped as unchanged)
            rounds["celltrials"].append(
                run("ingest", db=str(peer_db), paths=[str(paths["peer"])], force=False)
            )
            rounds["pandas"].append(
                run("pandas", path=str(paths["peer"]), out=str(work / "peer.parquet"))
            )
            if has_ctgforge:
                rounds["ctgforge"].append(
                    run("ctgforge", path=str(paths["peer"]), out=str(work / "peer-ctg.parquet"))
                )
        ours = _median_run(rounds["celltrials"])
        line("celltrials (peer file)", ours, None, peer_db, _rounds_text(rounds["celltrials"]))
        r = _median_run(rounds["pandas"])
        line("pandas json_normalize+pq", r, None, None, _rounds_text(rounds["pandas"]))
        checks.append(_peer_check(kind, ours, r, "pandas json_normalize + Parquet", rounds))
        if has_ctgforge:
            r = _median_run(rounds["ctgforge"])
            line(
                "ctgforge flatten+df+pq",
                r,
                None,
                None,
                f"rejects {r['rejected']:,} studies " + _rounds_text(rounds["ctgforge"]),
            )
            checks.append(
                _peer_check(kind, ours, r, "ctgforge", rounds)
                + f"; ctgforge rejects {r['rejected']:,} of them (pydantic ValidationError), celltrials none"
            )
    if keep:
        return
    for p in work.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _floor_step(
    kind: str, big: Path, work: Path, line: Any, checks: list[str]
) -> tuple[float, float]:
    """DuckDB's own load of the file, on one thread and on all: the seconds of each."""
    r1 = run("floor", path=str(big), db=str(work / "floor1.duckdb"), threads=1)
    line("duckdb floor, 1 thread", r1, db=work / "floor1.duckdb")
    r = run("floor", path=str(big), db=str(work / "floorN.duckdb"), threads=0)
    line(f"duckdb floor, {os.cpu_count()} threads", r, db=work / "floorN.duckdb")
    for p in work.glob("floor*.duckdb*"):
        p.unlink()
    waited = [w for w in (_waited(r1, "1 thread"), _waited(r, "all threads")) if w]
    if waited:
        checks.append(
            f"{kind}: the DuckDB floor waited: "
            + "; ".join(waited)
            + " (its process used the CPU for under half its wall time, on the disk here: "
            "a ratio to it then understates a step's cost; compare the cpu s column)"
        )
    return r1["seconds"], r["seconds"]


def _report_step(
    kind: str, big_db: Path, work: Path, steps: set[str], line: Any, checks: list[str]
) -> None:
    r = run("report", db=str(big_db), out=str(work / "report"))
    line(
        "report (all trials)",
        r,
        None,
        None,
        f"report.html {r['html_mb']:.1f} MB, folder {r['files_mb']:.1f} MB",
    )
    checks.append(
        f"{kind}: report of {r['n']:,} trials {r['seconds']:.1f} s, report.html {r['html_mb']:.1f} MB (target < 25 MB at 560k)"
    )
    if "browser" in steps:
        _browser_step(kind, work / "report" / "report.html", r["n"], line, checks)


def _browser_step(kind: str, html: Path, n: int, line: Any, checks: list[str]) -> None:
    r = run("browser", html=str(html), n=n)
    lists = (
        f"loads report-lists.js, {r['lists_mb']:,.0f} MB"
        if r["lists_mb"]
        else "lists inside the page"
    )
    line(
        "report.html in Chromium",
        r,
        None,
        None,
        f"charts drawn; first count clicked: {r['first_click']:.2f} s ({lists}), "
        f"second: {r['second_click']:.2f} s",
    )
    checks.append(
        f"{kind}: report.html opened in headless Chromium, every chart drawn, in {r['seconds']:.2f} s "
        f"(target < 5 s); the first click on a count listed its trials in {r['first_click']:.2f} s "
        f"({lists}), a second in {r['second_click']:.2f} s; "
        f"{r['errors']} console errors, {r['remote']} network requests (blocked)"
    )


#: each peer tool runs this many times, the three taking turns (see the peers step)
PEER_ROUNDS = 3


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time (of an odd number of runs: one of them)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def _rounds_text(runs: list[dict[str, Any]]) -> str:
    return "(median of " + " / ".join(f"{r['seconds']:.2f}" for r in runs) + " s)"


def _peer_check(
    kind: str,
    ours: dict[str, Any],
    peer: dict[str, Any],
    name: str,
    rounds: dict[str, list[dict[str, Any]]],
) -> str:
    tool = "pandas" if name.startswith("pandas") else "ctgforge"
    won = sum(
        a["seconds"] < b["seconds"] for a, b in zip(rounds["celltrials"], rounds[tool], strict=True)
    )
    return (
        f"{kind}: celltrials {ours['n'] / ours['seconds']:,.0f}/s ({ours['cpu']:.1f} cpu s) vs {name} "
        f"{peer['n'] / peer['seconds']:,.0f}/s ({peer['cpu']:.1f} cpu s) on the same {peer['n']:,} studies, "
        f"medians of {len(rounds['celltrials'])} rounds taken in turn: "
        f"{'faster' if ours['seconds'] < peer['seconds'] else 'SLOWER'} in wall time "
        f"(faster in {won} of {len(rounds['celltrials'])} rounds), "
        f"{'less' if ours['cpu'] < peer['cpu'] else 'MORE'} CPU"
    )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
        mem = (
            int(
                next(
                    x
                    for x in Path("/proc/meminfo").read_text().splitlines()
                    if x.startswith("MemTotal")
                ).split()[1]
            )
            / 1024**2
        )
    except (OSError, StopIteration, ValueError):
        mem = 0.0
    import duckdb

    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"DuckDB {duckdb.__version__}, {platform.system()} {platform.machine()}"
    )


def write_section(begin: str, end: str, body: str) -> None:
    """Replace what lies between the markers ``begin`` and ``end`` in BENCHMARKS.md
    with ``body`` (the markers kept); exits when they are not both there."""
    md = BENCHMARKS_MD.read_text(encoding="utf-8")
    if begin not in md or end not in md:
        raise SystemExit(f"{BENCHMARKS_MD}: markers {begin} / {end} not found")
    md = md[: md.index(begin)] + f"{begin}\n{body}\n{end}" + md[md.index(end) + len(end) :]
    BENCHMARKS_MD.write_text(md, encoding="utf-8")


def write_md(text: str, key: str) -> None:
    """Put ``text`` into BENCHMARKS.md in the block of this run's corpora and
    size (other runs' blocks stay)."""
    begin, end = (
        f"<!-- scale:{key}:begin (written by benchmarks/scale.py --write) -->",
        f"<!-- scale:{key}:end -->",
    )
    heading = "## Whole-registry scale — `benchmarks/scale.py`"
    md = BENCHMARKS_MD.read_text(encoding="utf-8")
    block = f"{begin}\n{text}\n{end}"
    if begin in md and end in md:
        write_section(begin, end, text)
        return
    if heading in md:
        md = md.rstrip("\n") + "\n\n" + block + "\n"
    else:
        md = md.rstrip("\n") + f"\n\n{heading}\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(md, encoding="utf-8")


ALL_STEPS = "floor,ingest,reingest,incremental,split,onefiles,classify,report,browser,peers"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--n",
        type=int,
        default=100_000,
        help="studies per corpus (560000 and 1000000 are the issue's sizes)",
    )
    ap.add_argument("--corpora", default="mix,complete")
    ap.add_argument("--steps", default=ALL_STEPS)
    ap.add_argument(
        "--tmp", type=Path, default=None, help="work folder (default: a temporary folder)"
    )
    ap.add_argument("--write", action="store_true", help="write the results into BENCHMARKS.md")
    ap.add_argument(
        "--ingest-jobs",
        type=int,
        default=None,
        help="processes of the one-file ingest step (default: ingest's own choice; 1: serial)",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="leave the corpus files and the big store in --tmp (for profiling; one corpus)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    steps = set(args.steps.split(","))
    head = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine()}",
        f"command: benchmarks/scale.py --n {args.n} --corpora {args.corpora} --steps {args.steps}"
        + (f" --ingest-jobs {args.ingest_jobs}" if args.ingest_jobs else ""),
        f"load average at start: {os.getloadavg()[0]:.2f} (a shared machine; timings move by ±10-25 %)",
        f"at start, {describe()} (benchmarks/machine_check.py)",
        "",
        f"{'corpus':<9} {'step':<26} {'items':>9} {'seconds':>8} {'cpu s':>7} {'items/s':>10} {'peak MB':>8} {'DB MB':>8} {'/floor1':>7}",
    ]
    print("\n".join(head), flush=True)
    rows: list[str] = []
    checks: list[str] = []
    started = time.perf_counter()
    work = Path(args.tmp or tempfile.mkdtemp(prefix="ct-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for kind in args.corpora.split(","):
            bench_corpus(kind, args.n, steps, work, rows, checks, args.ingest_jobs, args.keep)
    finally:
        if not args.tmp:
            shutil.rmtree(work, ignore_errors=True)
    checks.append(
        f"load average at end: {os.getloadavg()[0]:.2f}; wall {time.perf_counter() - started:,.0f} s "
        f"for the whole run; at end, {describe()}"
    )
    text = "\n".join(["```", *head, *rows, "", *checks, "```"])
    print("\n" + "\n".join(checks))
    if args.write:
        write_md(text, f"{args.corpora.replace(',', '+')}-{args.n}")


if __name__ == "__main__":
    main()
