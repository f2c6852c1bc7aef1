"""Scale behaviour of ingest: unchanged files skipped, incremental merging,
streaming large files, many small files per transaction, kill -9."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import celltrials
from celltrials.classify import Classifier, TrialText
from celltrials.ingest import IngestAborted, ingest_paths
from celltrials.sources import ctgov_json
from celltrials.store import INDEX_LOOKUP_KEYS, Store
from tests.conftest import (
    AACT_DIR,
    CAR2_JSON,
    CAR_JSON,
    DATA,
    GENERAL_JSON,
    ICTRP_CSV,
    ICTRP_XLSX,
    ICTRP_XML,
    MSC_CSV,
    PROCHYMAL_CSV,
    REPO,
    stored_json,
)
from tests.test_ingest import independent_counts, snapshot

pytestmark = pytest.mark.data


def _groups(store: Store) -> set[frozenset[str]]:
    ours = store.query("""
        SELECT trial_id, list(r.channel || ':' || r.record_id) AS members
        FROM trial_records JOIN records r USING (record_key) GROUP BY 1""")
    return {frozenset(m) for m in ours["members"]}


def _trial_rows(store: Store) -> set[tuple[object, ...]]:
    return set(
        store.con.execute(
            "SELECT trial_id, record_key, is_primary, n_records, merge_reason FROM trial_records"
        ).fetchall()
    )


# ------------------------------------------------------------ unchanged files
def test_unchanged_file_is_skipped_and_force_reads_it(tmp_path: Path, store: Store) -> None:
    first = ingest_paths(store, [PROCHYMAL_CSV])
    assert first.n_new == 14 and not first.files[0].skipped_unchanged
    n_ingests = snapshot(store)[-1]
    again = ingest_paths(store, [PROCHYMAL_CSV])
    f = again.files[0]
    assert f.skipped_unchanged and f.n_records == f.n_unchanged == 14 and again.n_new == 0
    assert again.clean and any(
        "unchanged" in x.reason and x.severity == "notice" for x in again.findings
    )
    assert snapshot(store)[-1] == n_ingests  # not read: no ingest recorded
    # same bytes under another name (new path and mtime): recognised by its SHA-256
    copy = tmp_path / "copy.csv"
    shutil.copy(PROCHYMAL_CSV, copy)
    assert ingest_paths(store, [copy]).files[0].skipped_unchanged
    forced = ingest_paths(store, [copy], force=True)
    assert not forced.files[0].skipped_unchanged and forced.files[0].n_unchanged == 14
    assert snapshot(store)[-1] == n_ingests + 1
    # one changed byte: read again (its changed record is a new version)
    text = PROCHYMAL_CSV.read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    rows[1][rows[0].index("Title")] += " (edited)"
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    copy.write_text(buf.getvalue(), encoding="utf-8")
    changed = ingest_paths(store, [copy])
    assert not changed.files[0].skipped_unchanged and changed.n_new == 1


def test_forced_reingest_finds_every_stored_record_by_index_or_by_scan(full_store: Store) -> None:
    """Which records are already stored is looked up in the key index for a
    batch of up to INDEX_LOOKUP_KEYS records and by a scan for a larger one
    (the reference folder's small files are written as one group): read
    again either way, every record is found unchanged and the trials stay."""
    store = full_store  # (../shared/data ingested once)
    stored = store.con.execute("SELECT count(*) FROM records").fetchall()[0][0]
    rows = _trial_rows(store)
    read = []
    # one group of every record (a scan), then groups of 300 (the index)
    for batch_size in (5000, 300):
        again = ingest_paths(store, [DATA], force=True, batch_size=batch_size)
        assert again.clean and again.n_records > INDEX_LOOKUP_KEYS and again.n_new == 0
        assert _trial_rows(store) == rows
        read.append(again.n_records)
    assert read[0] == read[1]
    assert store.con.execute("SELECT count(*) FROM records").fetchall()[0][0] == stored


def test_file_with_bad_records_is_not_skipped_later(tmp_path: Path, store: Store) -> None:
    studies = json.loads(GENERAL_JSON.read_text())[:4]
    del studies[1]["protocolSection"]["identificationModule"]["nctId"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(studies))
    first = ingest_paths(store, [path], skip_bad=True)
    assert first.files[0].n_bad == 1
    again = ingest_paths(
        store, [path], skip_bad=True
    )  # read again, so the bad record is reported again
    assert not again.files[0].skipped_unchanged and again.files[0].n_bad == 1 and not again.clean


# ------------------------------------------------------------ incremental merge
def _split_reference_data(out: Path, rng: random.Random) -> list[Path]:
    """../shared/data cut into many small files of each format (the XML and
    XLSX exports stay whole), in a shuffled order."""
    files: list[Path] = [ICTRP_XML, ICTRP_XLSX, *sorted(AACT_DIR.glob("*.json"))]
    for src in (GENERAL_JSON, CAR_JSON, CAR2_JSON):
        studies = json.loads(src.read_text())
        for k in range(0, len(studies), 97):
            p = out / f"{src.stem}_{k:05d}.json"
            p.write_text(json.dumps(studies[k : k + 97]))
            files.append(p)
    for src in (MSC_CSV, PROCHYMAL_CSV, ICTRP_CSV):
        with src.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
        for k in range(1, len(rows), 83):
            p = out / f"{src.stem}_{k:05d}.csv"
            with p.open("w", encoding="utf-8", newline="") as fh:
                csv.writer(fh).writerows([rows[0], *rows[k : k + 83]])
            files.append(p)
    rng.shuffle(files)
    return files


def test_incremental_merge_equals_full_remerge_on_split_reference_data(tmp_path: Path) -> None:
    """Every group of files re-merges only the trials it reaches; after ~80
    such steps in a random order (newer ICTRP versions sometimes first), the
    trials equal a full re-merge and the components computed from the raw
    files with the standard library."""
    parts = tmp_path / "parts"
    parts.mkdir()
    files = _split_reference_data(parts, random.Random(15))
    assert len(files) > 60
    db = tmp_path / "inc.duckdb"
    with celltrials.open(db) as store:
        for k in range(0, len(files), 3):  # 3 files per call, and groups of ~100 records
            report = ingest_paths(store, files[k : k + 3], batch_size=100)
            assert report.clean, [str(f) for f in report.findings if f.severity == "error"]
        n_ingests = store.con.execute("SELECT count(*) FROM ingests").fetchall()[0][0]
        assert n_ingests == len(files)
        incremental = _trial_rows(store)
        groups = _groups(store)
        n_current = store.con.execute("SELECT count(*) FROM records WHERE is_current").fetchall()[
            0
        ][0]
        store.merge_trials()
        assert _trial_rows(store) == incremental
    n_records, n_trials, expected = independent_counts()
    assert n_current == n_records
    assert len(groups) == n_trials and groups == expected


def test_update_of_a_merged_trial_splits_and_joins_trials(tmp_path: Path, store: Store) -> None:
    """A newer version that drops a secondary id splits the trial it linked;
    one that adds an id joins two trials — only those trials are rewritten."""
    studies = json.loads(GENERAL_JSON.read_text())
    a, b = json.loads(json.dumps(studies[0])), json.loads(json.dumps(studies[1]))
    b_id = b["protocolSection"]["identificationModule"]["nctId"]
    a["protocolSection"]["identificationModule"].setdefault("secondaryIdInfos", []).append(
        {"id": b_id}
    )
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps([a, b, *studies[2:10]]))
    ingest_paths(store, [v1])
    before = _trial_rows(store)
    a_id = a["protocolSection"]["identificationModule"]["nctId"]
    assert store.resolve(a_id) == store.resolve(b_id)
    a2 = json.loads(json.dumps(a))
    a2["protocolSection"]["identificationModule"]["secondaryIdInfos"].pop()
    a2["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"] = {"date": "2031-01-01"}
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps([a2]))
    ingest_paths(store, [v2])
    assert store.resolve(a_id) != store.resolve(b_id)
    after = _trial_rows(store)
    untouched = {r for r in before if r[0] not in {a_id, b_id}}
    assert untouched <= after  # the other 8 trials' rows are as they were
    store.merge_trials()
    assert _trial_rows(store) == after


def test_several_settles_in_one_transaction_equal_a_full_remerge(tmp_path: Path) -> None:
    """``add_records`` called again and again inside one transaction (as
    ``sync`` does for studies fetched by id): each call re-merges trials
    written earlier in the same, uncommitted transaction (their rows are
    found and deleted by row id). After a join, a newer version and a split,
    the trials are what the ids say and equal a full re-merge."""
    studies = json.loads(GENERAL_JSON.read_text())
    ident = [s["protocolSection"]["identificationModule"] for s in studies[:6]]
    a_id, b_id = ident[0]["nctId"], ident[1]["nctId"]

    def version(study: dict[str, object], update: str, names: list[str]) -> object:
        s = json.loads(json.dumps(study))
        s["protocolSection"]["identificationModule"]["secondaryIdInfos"] = [
            {"id": n} for n in names
        ]
        s["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"] = {"date": update}
        return ctgov_json.parse_study(s)

    with celltrials.open(tmp_path / "s.duckdb") as store:
        with store.transaction():
            store.add_records([version(s, "2020-01-01", []) for s in studies[:6]], source="t1")
            assert store.resolve(a_id) != store.resolve(b_id)
            # b names a: one trial
            store.add_records([version(studies[1], "2021-01-01", [a_id])], source="t2")
            assert store.resolve(a_id) == store.resolve(b_id)
            # a newer version of a: still one trial, of a's and b's current versions
            store.add_records([version(studies[0], "2022-01-01", [])], source="t3")
            assert store.resolve(a_id) == store.resolve(b_id)
            # b drops the id: two trials again
            store.add_records([version(studies[1], "2023-01-01", [])], source="t4")
        assert store.resolve(a_id) != store.resolve(b_id)
        rows = _trial_rows(store)
        assert len(rows) == 6 and {r[3] for r in rows} == {1}  # six one-record trials
        current = store.con.execute(
            "SELECT record_id, last_update FROM records WHERE is_current ORDER BY record_id"
        ).fetchall()
        newest = {x["nctId"]: "2020-01-01" for x in ident} | {
            a_id: "2022-01-01",
            b_id: "2023-01-01",
        }
        assert [(r, str(d)) for r, d in current] == sorted(newest.items())
        store.merge_trials()
        assert _trial_rows(store) == rows


# ------------------------------------------------------------ streaming, small files
def test_streamed_json_array_stores_the_same_as_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with celltrials.open(tmp_path / "whole.duckdb") as whole:
        ingest_paths(whole, [CAR_JSON])
        expected = whole.con.execute(
            "SELECT record_key, title, raw FROM records ORDER BY 1"
        ).fetchall()
    monkeypatch.setattr(ctgov_json, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest.SMALL_FILE_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest_parallel.MIN_BYTES", 0)  # workers, if cores allow
    with celltrials.open(tmp_path / "streamed.duckdb") as streamed:
        report = ingest_paths(streamed, [CAR_JSON], batch_size=300)
        assert report.clean and report.n_new == len(json.loads(CAR_JSON.read_text()))
        got = streamed.con.execute(
            "SELECT record_key, title, raw FROM records ORDER BY 1"
        ).fetchall()
    assert got == expected
    # the stored raw JSON is the registry's study object
    by_id = {
        s["protocolSection"]["identificationModule"]["nctId"]: s
        for s in json.loads(CAR_JSON.read_text())
    }
    key, _, raw = got[0]
    assert stored_json(raw) == by_id[key.split(":")[1]]


@pytest.mark.parametrize("cut", ["truncated", "bad record"])
def test_bad_large_file_changes_nothing(
    cut: str, tmp_path: Path, full_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctgov_json, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest.SMALL_FILE_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest_parallel.MIN_BYTES", 0)  # workers, if cores allow
    studies = json.loads(CAR_JSON.read_text())
    for k, s in enumerate(studies):
        s["protocolSection"]["identificationModule"]["nctId"] = f"NCT{98000000 + k:08d}"
    path = tmp_path / "big.json"
    if cut == "truncated":
        path.write_text(json.dumps(studies)[:-3000])
    else:
        studies[-5]["protocolSection"]["statusModule"]["startDateStruct"] = {"date": "2023-02-30"}
        path.write_text(json.dumps(studies))
    before = snapshot(full_store)
    with pytest.raises(IngestAborted) as info:
        ingest_paths(
            full_store, [path], batch_size=200
        )  # several batches written before the failure
    assert str(path) in str(info.value)
    assert snapshot(full_store) == before


def test_many_one_study_files_share_transactions_but_not_fate(tmp_path: Path, store: Store) -> None:
    """One-study files are written many per transaction, yet each is its own
    ingest, and a bad one stops the run with the files before it stored."""
    folder = tmp_path / "one"
    folder.mkdir()
    studies = json.loads(GENERAL_JSON.read_text())
    for k, s in enumerate(studies):
        (folder / f"s{k:03d}.json").write_text(json.dumps(s))
    report = ingest_paths(store, [folder])
    assert (
        report.clean
        and report.n_new == len(studies)
        and all(f.committed and f.n_new == 1 for f in report.files)
    )
    rows = store.con.execute(
        "SELECT source, n_records, n_new, finished_at IS NOT NULL FROM ingests ORDER BY source"
    ).fetchall()
    assert [(Path(r[0]).name, r[1], r[2], r[3]) for r in rows] == [
        (f"s{k:03d}.json", 1, 1, True) for k in range(len(studies))
    ]
    assert store.con.execute("SELECT count(*) FROM trials").fetchall()[0][0] == len(studies)
    # a bad file in the middle: the ones before it stay, it and the ones after do not
    folder2 = tmp_path / "two"
    folder2.mkdir()
    for k, s in enumerate(json.loads(CAR2_JSON.read_text())[:30]):
        if k == 20:
            s = {"protocolSection": {"identificationModule": {}}}
        (folder2 / f"t{k:03d}.json").write_text(json.dumps(s))
    with pytest.raises(IngestAborted) as info:
        ingest_paths(store, [folder2])
    assert "t020.json" in str(info.value)
    assert [f.committed for f in info.value.report.files] == [True] * 20 + [False]
    assert store.con.execute("SELECT count(*) FROM trials").fetchall()[0][0] == len(studies) + 20


# ------------------------------------------------------------ kill -9
_KILL_SCRIPT = """
import sys
import celltrials
from celltrials import ingest, ingest_parallel
from celltrials.sources import ctgov_json
ctgov_json.STREAM_MIN_BYTES = 0
ingest.SMALL_FILE_BYTES = 0
ingest_parallel.MIN_BYTES = 0  # workers parse, if cores allow
from multiprocessing import forkserver
def progress(ev):
    if ev.kind == "records":
        print("BATCH", forkserver._forkserver._forkserver_pid, flush=True)  # the workers' parent
        sys.stdin.readline()  # wait here to be killed
with celltrials.open(sys.argv[1]) as store:
    ingest.ingest_paths(store, [sys.argv[2]], batch_size=200, progress=progress)
"""


def _children(pid: int) -> list[int]:
    return [
        int(c)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for c in (task / "children").read_text().split()
    ]


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (ended, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_kill_9_during_streaming_ingest_leaves_store_as_before(tmp_path: Path) -> None:
    """A large file's batches are committed as an unfinished ingest before it
    is published; killed meanwhile, the next open deletes them."""
    db = tmp_path / "killed.duckdb"
    with celltrials.open(db) as store:
        ingest_paths(store, [PROCHYMAL_CSV])
        before = snapshot(store)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    with subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(db), str(CAR_JSON)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 300
            while not (line := proc.stdout.readline().split()) or line[0] != "BATCH":
                assert time.monotonic() < deadline and proc.poll() is None
            # the worker processes parsing the file (none on a one-core machine)
            helpers = [] if line[1] == "None" else [int(line[1]), *_children(int(line[1]))]
            assert len(helpers) != 1  # a fork server has its workers
            proc.send_signal(signal.SIGKILL)  # 200 records written, the file's transaction open
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in helpers):  # they end when their parent is killed
        assert time.monotonic() < deadline, [pid for pid in helpers if _running(pid)]
        time.sleep(0.2)
    import duckdb

    con = duckdb.connect(str(db), read_only=True)  # as the killed process left it: one batch staged
    try:
        assert (
            con.execute("SELECT count(*) FROM ingests WHERE finished_at IS NULL").fetchall()[0][0]
            == 1
        )
        assert con.execute("SELECT count(*) FROM records").fetchall()[0][0] == before[0] + 200
        assert (
            con.execute("SELECT count(*) FROM trial_records").fetchall()[0][0] == before[1]
        )  # not published
    finally:
        con.close()
    with celltrials.open(db) as store:  # the next writer deletes the unfinished ingest
        assert snapshot(store) == before
        report = ingest_paths(store, [CAR_JSON])  # a rerun completes
        assert report.clean and report.n_new == len(json.loads(CAR_JSON.read_text()))


# ------------------------------------------------------------ the benchmark's corpora
def _scale_benchmark() -> Any:
    """``benchmarks/scale.py`` as a module."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "scale_bench", REPO / "benchmarks" / "scale.py"
        )
        assert spec is not None and spec.loader is not None
        scale = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(scale)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return scale


def test_registry_benchmark_corpus_is_four_percent_cell_therapy() -> None:
    """``benchmarks/scale.py --corpora registry`` states its make-up: 24 of every
    25 studies from the general studies and AACT fixtures (none labelled cell
    therapy), 1 of 25 from the AML CAR-T studies (all labelled cell therapy).
    The classifier's labels of 2,500 of its studies say whether that holds."""
    corpus = _scale_benchmark().Corpus("registry")
    clf = Classifier()
    labels = [
        clf.classify(TrialText.from_record(ctgov_json.parse_study(json.loads(corpus.study(i)))))
        for i in range(2500)
    ]
    assert len({lab.trial_id for lab in labels}) == 2500
    cell = [i for i, lab in enumerate(labels) if lab.is_cell_therapy]
    assert cell == list(range(24, 2500, 25))


@pytest.mark.parametrize(
    ("seconds", "cpu", "waited"),
    [
        # session 27's 1-thread floor at 560k: the JSON file no longer fit in the page cache
        (571.87, 185.3, "1 thread 185.3 cpu s in 571.87 s (32%)"),
        (197.76, 188.1, None),  # session 26's, on a host whose cache held the file
        (514.06, 194.6, "1 thread 194.6 cpu s in 514.06 s (38%)"),
        (10.0, 5.0, None),  # exactly half: not flagged
        (10.0, 4.9, "1 thread 4.9 cpu s in 10.00 s (49%)"),
        (0.0, 0.0, None),
    ],
)
def test_scale_benchmark_flags_a_floor_that_waited(
    seconds: float, cpu: float, waited: str | None
) -> None:
    """A floor whose process used the CPU for under half its wall time waited
    (on the disk): ``scale.py`` says so under its block, since ingest's ratio
    to it then flatters ingest."""
    assert _scale_benchmark()._waited({"seconds": seconds, "cpu": cpu}, "1 thread") == waited


#: Run in a process of its own, so that the only descendant is the child it starts
#: (a pytest worker may still have a browser or a server of another test running).
_MEASURE_A_CHILD = """
import importlib.util, json, os, subprocess, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
spec = importlib.util.spec_from_file_location("scale_bench", sys.argv[1])
scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale)
held_here = b"x" * (300 << 20)
hold = "import time; b = b'x' * (100 << 20); print('ready', flush=True); time.sleep(60)"
with subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True) as child:
    try:
        assert child.stdout.readline() == "ready\\n"
        total_kb, largest_kb = scale._tree_kb()
        with open("/proc/self/status") as fh:
            own_kb = next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:"))
        with open(f"/proc/{child.pid}/status") as fh:
            child_kb = next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:"))
    finally:
        child.kill()
print(json.dumps({"total": total_kb, "largest": largest_kb, "own": own_kb,
                  "child": child_kb, "held": len(held_here)}))
"""


def test_scale_benchmark_samples_a_child_at_its_own_size() -> None:
    """The "largest worker" of ``scale.py``'s lines is the largest descendant's
    resident size, sampled: a child process holding 100 MB counts as that, not
    as its parent's size, 300 MB more (``RUSAGE_CHILDREN``'s ``ru_maxrss``,
    printed before, counted a child started by fork and exec at its parent's size)."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE_A_CHILD, str(REPO / "benchmarks" / "scale.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert out.returncode == 0, out.stderr
    kb = json.loads(out.stdout)
    assert kb["held"] == 300 << 20 and kb["own"] > 300 << 10
    assert 100 << 10 <= kb["child"] < 200 << 10  # the child and its interpreter
    # the largest descendant is the child, at its own size (read again, so it may move a little)
    assert abs(kb["largest"] - kb["child"]) < 10 << 10
    assert kb["total"] >= kb["own"] + kb["largest"] - (50 << 10)
