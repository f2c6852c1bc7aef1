"""Ingest with worker processes stores exactly what one process stores.

A corpus made of the reference ClinicalTrials.gov files (plus repeated
studies and a second version of some) is ingested by one process and by two
workers; every table of the two stores holds the same rows (timestamps
aside), compared with SQL ``EXCEPT ALL`` both ways. A file with bad records
gives the same report, in strict and in skip-bad mode, as JSON array and as
NDJSON."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

import celltrials
from celltrials import ingest_parallel
from celltrials.cli import cli
from celltrials.errors import ConfigError
from celltrials.ingest import IngestAborted, IngestReport, ingest_paths
from celltrials.procpool import available_cores
from celltrials.sources import ctgov_json
from tests.conftest import CAR2_JSON, CAR_JSON, DATA, GENERAL_JSON
from tests.test_ingest import snapshot

pytestmark = pytest.mark.data


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file is streamed, and spread over workers when jobs allow; units of
    97 studies (NDJSON) or 200 KB (the ranges of an array), so that units and
    write batches do not line up."""
    monkeypatch.setattr(ctgov_json, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest.SMALL_FILE_BYTES", 0)
    monkeypatch.setattr(ingest_parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(ingest_parallel, "UNIT", 97)
    monkeypatch.setattr(ctgov_json, "RANGE_BYTES", 200_000)


def _studies() -> list[dict[str, Any]]:
    studies: list[dict[str, Any]] = []
    for path in (CAR_JSON, CAR2_JSON, GENERAL_JSON):
        studies.extend(json.loads(path.read_text()))
    for path in sorted((DATA / "ctgov-v2-json" / "aact-fixtures").glob("*.json")):
        studies.append(json.loads(path.read_text()))
    return studies


def _corpus(tmp: Path) -> tuple[Path, int]:
    """One JSON array: the reference studies, some twice (side by side, and far
    apart), and a changed version of others; returns it and the distinct
    (id, content) pairs, counted here from the JSON."""
    studies = _studies()
    out = list(studies)
    out[10:10] = [studies[10]]  # repeated within a unit
    out.extend(studies[:5])  # repeated in a later batch
    for s in studies[200:210]:
        changed = copy.deepcopy(s)
        changed["protocolSection"]["identificationModule"]["briefTitle"] = "changed"
        out.append(changed)
    path = tmp / "corpus.json"
    path.write_text(json.dumps(out))
    distinct = {json.dumps(s, sort_keys=True) for s in out}
    return path, len(distinct)


def _bad_corpus(tmp: Path) -> list[dict[str, Any] | int]:
    studies: list[dict[str, Any] | int] = list(json.loads(CAR_JSON.read_text())[:400])
    bad_date = copy.deepcopy(studies[5])
    assert isinstance(bad_date, dict)
    bad_date["protocolSection"]["statusModule"]["startDateStruct"] = {"date": "2023-02-30"}
    studies[5] = bad_date
    studies[150] = {"protocolSection": {"identificationModule": {}}}  # no nctId
    studies[151] = 7  # not a study object
    no_ps = copy.deepcopy(studies[390])
    assert isinstance(no_ps, dict)
    del no_ps["protocolSection"]
    studies[390] = no_ps
    return studies


def _tables_equal(a: Path, b: Path) -> dict[str, int]:
    """Rows per table, after checking that both stores hold the same rows in
    every table (timestamp columns left out)."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'a' ORDER BY 1"
            ).fetchall()
        ]
        counts = {}
        for t in tables:
            cols = ", ".join(
                f'"{r[0]}"'
                for r in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE database_name = 'a' "
                    "AND table_name = ? AND data_type NOT LIKE 'TIMESTAMP%' ORDER BY column_index",
                    [t],
                ).fetchall()
            )
            for x, y in (("a", "b"), ("b", "a")):
                extra = con.execute(
                    f"SELECT count(*) FROM (SELECT {cols} FROM {x}.{t} EXCEPT ALL SELECT {cols} FROM {y}.{t})"
                ).fetchall()[0][0]
                assert extra == 0, f"{t}: {extra} rows of {x} not in {y}"
            counts[t] = con.execute(f"SELECT count(*) FROM a.{t}").fetchall()[0][0]
        return counts
    finally:
        con.close()


def _ingest(db: Path, paths: list[Path], jobs: int, **kw: Any) -> IngestReport | IngestAborted:
    with celltrials.open(db) as store:
        try:
            return ingest_paths(store, paths, jobs=jobs, **kw)
        except IngestAborted as exc:
            return exc


def _report(r: IngestReport | IngestAborted) -> dict[str, Any]:
    if isinstance(r, IngestAborted):
        return {"aborted": str(r), "hint": r.hint, **r.report.to_dict()}
    return r.to_dict()


def test_two_workers_store_the_same_rows_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, n_versions = _corpus(tmp_path)
    units: list[int] = []

    def counted(*args: Any) -> Any:  # the units the workers parsed, as they arrive
        for unit in ingest_parallel.parse_units(*args):
            units.append(unit.n_good + len(unit.findings))
            yield unit

    monkeypatch.setattr("celltrials.ingest.parse_units", counted)
    for jobs in (1, 2):
        report = _ingest(tmp_path / f"j{jobs}.duckdb", [corpus], jobs, batch_size=300)
        assert isinstance(report, IngestReport) and report.clean
        assert report.n_new == n_versions
        if jobs == 1:
            assert units == []  # one process: the serial path
    n_studies = len(json.loads(corpus.read_text()))
    # one unit per byte range of the array (each worker read its range from the file)
    spans = list(ctgov_json.array_ranges(corpus))
    assert None not in spans and sum(units) == n_studies and len(units) == len(spans) > 10
    counts = _tables_equal(tmp_path / "j1.duckdb", tmp_path / "j2.duckdb")
    assert counts["records"] == n_versions
    n_ids = len({s["protocolSection"]["identificationModule"]["nctId"] for s in _studies()})
    with duckdb.connect(str(tmp_path / "j2.duckdb"), read_only=True) as con:
        assert (
            con.execute("SELECT count(DISTINCT record_id) FROM records").fetchall()[0][0] == n_ids
        )
    assert counts["trial_records"] == n_ids  # the current version of each study
    for child in (
        "record_conditions",
        "record_interventions",
        "record_outcomes",
        "record_sponsors",
    ):
        assert counts[child] > counts["records"] // 2
    # reading it again: nothing new, the same counts
    again = [
        _report(_ingest(tmp_path / f"j{jobs}.duckdb", [corpus], jobs, force=True))
        for jobs in (1, 2)
    ]
    assert again[0] == again[1] and again[0]["n_new"] == 0


@pytest.mark.parametrize("skip_bad", [False, True])
@pytest.mark.parametrize("fmt", ["array", "ndjson"])
def test_bad_records_give_the_same_report(tmp_path: Path, skip_bad: bool, fmt: str) -> None:
    studies = _bad_corpus(tmp_path)
    if fmt == "array":
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(studies))
    else:
        path = tmp_path / "bad.ndjson"
        lines = [json.dumps(s) for s in studies]
        lines[60] = lines[60][:-40]  # a malformed line
        lines.insert(100, "")  # blank lines are skipped but counted as lines
        path.write_text("\n".join(lines) + "\n")
    reports = []
    for jobs in (1, 2):
        db = tmp_path / f"{fmt}{jobs}.duckdb"
        with celltrials.open(db) as store:
            ingest_paths(store, [GENERAL_JSON])
            before = snapshot(store)
        reports.append(_report(_ingest(db, [path], jobs, skip_bad=skip_bad, batch_size=120)))
        if not skip_bad:
            with celltrials.open(db) as store:
                assert snapshot(store) == before  # nothing of the file stored
    assert reports[0] == reports[1]
    findings = reports[0]["findings"]
    n_bad = 5 if fmt == "ndjson" else 4
    if skip_bad:
        assert len(findings) == n_bad and reports[0]["n_records"] == len(studies) - n_bad
        positions = [f["position"] for f in findings]
        assert positions == sorted(positions)
    else:
        assert len(findings) == 1 and "aborted" in reports[0]
    _tables_equal(tmp_path / f"{fmt}1.duckdb", tmp_path / f"{fmt}2.duckdb")


def test_truncated_array_fails_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(json.loads(CAR_JSON.read_text()))[:-3000])
    reports = [
        _report(_ingest(tmp_path / f"t{jobs}.duckdb", [path], jobs, batch_size=200))
        for jobs in (1, 2)
    ]
    assert reports[0] == reports[1] and "malformed or truncated JSON" in reports[0]["aborted"]


def test_jobs_are_planned_like_classify(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(CAR_JSON.read_text())
    size = path.stat().st_size
    assert ingest_parallel.plan_workers("ctgov_json", path, size, 1) == 1
    assert ingest_parallel.plan_workers("ctgov_json", path, size, 3) == 3
    assert ingest_parallel.plan_workers("ctgov_json", path, size, None) == available_cores()
    assert ingest_parallel.plan_workers("ctgov_csv", path, size, 2) == 1  # not spread
    with pytest.raises(ConfigError):
        ingest_parallel.plan_workers("ctgov_json", path, size, 0)
    with celltrials.open(tmp_path / "s.duckdb") as store, pytest.raises(ConfigError):
        ingest_paths(store, [path], jobs=0)


def test_cli_jobs_json_is_the_library_report(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_bad_corpus(tmp_path)))
    res = CliRunner().invoke(
        cli,
        [
            "--db",
            str(tmp_path / "cli.duckdb"),
            "ingest",
            "--jobs",
            "2",
            "--skip-bad",
            "--json",
            str(path),
        ],
    )
    assert res.exit_code == 1, res.output  # bad records were left out
    expected = _report(_ingest(tmp_path / "lib.duckdb", [path], 1, skip_bad=True))
    assert json.loads(res.output) == expected and len(expected["findings"]) == 4
    _tables_equal(tmp_path / "cli.duckdb", tmp_path / "lib.duckdb")
