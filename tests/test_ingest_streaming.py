"""Streaming ingest with bounded memory: a large file written in many small
batches (the next parsed while the last is written) is still all or nothing;
trials of records that share no id are merged in chunks, with the same result
as grouping every record at once; DuckDB's memory is capped while ingesting
and restored afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import celltrials
from celltrials import store as store_module
from celltrials.dedup import group_records
from celltrials.errors import ConfigError
from celltrials.ingest import IngestAborted, ingest_paths
from celltrials.progress import ProgressEvent
from celltrials.sources import ctgov_json
from celltrials.store import Store
from tests.conftest import CAR2_JSON, CAR_JSON, DATA, PROCHYMAL_CSV
from tests.test_ingest import independent_counts, snapshot

pytestmark = pytest.mark.data


@pytest.fixture()
def streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file takes the large-file path: streamed and written in batches."""
    monkeypatch.setattr(ctgov_json, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest.SMALL_FILE_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest_parallel.MIN_BYTES", 0)  # workers, if cores allow


def _renumbered(path: Path, base: int) -> list[dict[str, object]]:
    studies: list[dict[str, object]] = json.loads(path.read_text())
    for k, s in enumerate(studies):
        s["protocolSection"]["identificationModule"]["nctId"] = f"NCT{base + k:08d}"  # type: ignore[index]
    return studies


@pytest.mark.parametrize("where", ["last", "first"])
def test_bad_record_in_one_batch_of_many_changes_nothing(
    where: str, tmp_path: Path, store: Store, streaming: None
) -> None:
    ingest_paths(store, [PROCHYMAL_CSV])
    before = snapshot(store)
    studies = _renumbered(CAR_JSON, 97_000_000)
    bad = len(studies) - 1 if where == "last" else 2
    studies[bad]["protocolSection"]["statusModule"]["startDateStruct"] = {"date": "2023-02-30"}  # type: ignore[index]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(studies))
    batches: list[int] = []

    def progress(ev: ProgressEvent) -> None:
        if ev.kind == "records":
            batches.append(ev.n or 0)

    with pytest.raises(IngestAborted) as info:
        ingest_paths(store, [path], batch_size=50, progress=progress)
    # the finding names the file, the record's position (1-based) and its id
    assert str(path) in str(info.value) and f"record {bad + 1}" in str(info.value)
    assert f"NCT{97_000_000 + bad:08d}" in str(info.value)
    if where == "last":
        # every batch before the bad record was written (the last full one was
        # still being written when the bad record was read), then deleted
        assert sum(batches) == (len(studies) - 1) // 50 * 50 - 50 and len(batches) >= 10
    assert snapshot(store) == before
    assert store.con.execute(
        "SELECT count(*) FROM ingests WHERE finished_at IS NULL"
    ).fetchone() == (0,)
    # the good records of the same file go in with --skip-bad
    report = ingest_paths(store, [path], batch_size=50, skip_bad=True)
    assert report.n_new == len(studies) - 1 and [f.record_id for f in report.findings] == [
        f"NCT{97_000_000 + bad:08d}"
    ]


def test_batches_written_while_parsing_store_what_one_batch_stores(
    tmp_path: Path, streaming: None
) -> None:
    studies = _renumbered(CAR2_JSON, 96_000_000)
    path = tmp_path / "car2.json"
    path.write_text(json.dumps(studies))
    rows = {}
    for batch in (5, 100_000):
        with celltrials.open(tmp_path / f"b{batch}.duckdb") as s:
            report = ingest_paths(s, [path], batch_size=batch)
            assert report.clean and report.n_new == len(studies)
            rows[batch] = {
                t: sorted(map(str, s.con.execute(f"SELECT {cols} FROM {t}").fetchall()))
                for t, cols in (
                    ("records", "* EXCLUDE (ingested_at, ingest_id)"),
                    ("record_ids", "*"),
                    ("record_interventions", "*"),
                    ("trial_records", "*"),
                )
            }
    assert rows[5] == rows[100_000]


def _all_at_once(store: Store) -> set[tuple[object, ...]]:
    """Trials grouped in one pass over every current record (the reference)."""
    recs = store.con.execute("""
        SELECT record_key, channel, record_id, registry, source_format, last_update, ingested_at
        FROM records WHERE is_current""").fetchall()
    ids = store.con.execute("""
        SELECT i.record_key, i.id_key FROM record_ids i JOIN records r USING (record_key)
        WHERE r.is_current""").fetchall()
    return set(group_records(recs, ids))


def test_trials_merged_in_small_chunks_equal_one_pass_and_the_raw_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (the thousands of records that share no id then go through in dozens of chunks)
    monkeypatch.setattr(store_module, "MERGE_CHUNK", 97)
    with celltrials.open(tmp_path / "chunked.duckdb") as s:
        report = ingest_paths(s, [DATA])
        assert report.clean
        rows = set(
            s.con.execute(
                "SELECT trial_id, record_key, is_primary, n_records, merge_reason FROM trial_records"
            ).fetchall()
        )
        assert rows == _all_at_once(s)
        groups = {
            frozenset(m)
            for m in s.query("""
                SELECT list(r.channel || ':' || r.record_id) AS members
                FROM trial_records JOIN records r USING (record_key) GROUP BY trial_id""")[
                "members"
            ]
        }
        s.merge_trials()  # the full re-merge goes through the same chunks
        assert (
            set(
                s.con.execute(
                    "SELECT trial_id, record_key, is_primary, n_records, merge_reason FROM trial_records"
                ).fetchall()
            )
            == rows
        )
    n_records, n_trials, expected = independent_counts()
    assert len(rows) == n_records and len(groups) == n_trials and groups == expected
    assert sum(1 for r in rows if r[3] > 1) > 0  # some trials do merge several records


def test_duckdb_memory_is_capped_while_ingesting_and_restored(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit_before = store.con.execute("SELECT current_setting('memory_limit')").fetchone()
    seen: list[str] = []

    def progress(ev: ProgressEvent) -> None:
        if ev.kind == "file_start":
            row = store.con.execute("SELECT current_setting('memory_limit')").fetchone()
            seen.append(str(row[0]) if row else "")

    ingest_paths(store, [PROCHYMAL_CSV], progress=progress)
    assert seen == ["488.2 MiB"]  # 512 MB, as DuckDB prints it
    assert store.con.execute("SELECT current_setting('memory_limit')").fetchone() == limit_before
    before = snapshot(store)
    monkeypatch.setenv("CELLTRIALS_INGEST_MEMORY", "lots")
    with pytest.raises(ConfigError) as info:
        ingest_paths(store, [CAR_JSON])
    assert "CELLTRIALS_INGEST_MEMORY" in str(info.value) and info.value.hint
    assert snapshot(store) == before
