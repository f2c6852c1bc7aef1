"""Labels as typed columns (issue 15 item 7): migration 7 turns a store's
``;``-joined multi-valued label text into ``VARCHAR[]`` (order and values
kept), readers get lists without looking at the schema, and the labels file,
``explain``, ``show --json`` and the exports still write ``;``-joined text.

The "old" store is built from real registry exports and given the labels
table exactly as celltrials wrote it before migration 7 (its DDL and its
``;``-joined rows, made here from the pure classifier's output), so the
migrated values are checked against text this test wrote itself."""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

import celltrials
from celltrials.analysis import landscape as L
from celltrials.classify import TrialText, classify
from celltrials.cli import cli
from celltrials.export import trials_table
from celltrials.ingest import ingest_paths
from celltrials.labelling import classify_store, explain_trial, labels_rows, store_trial_texts
from celltrials.serve.queries import prepare
from celltrials.serve.snapshot import Snapshot
from tests.conftest import CAR2_JSON, PROCHYMAL_CSV, open_and_kill

pytestmark = pytest.mark.data

#: the labels table as migration 2 created it (celltrials before migration 7)
OLD_LABELS_DDL = """
CREATE TABLE labels (
    trial_id VARCHAR PRIMARY KEY, is_cell_therapy BOOLEAN, cell_type VARCHAR, msc_source VARCHAR,
    origin VARCHAR, product_form VARCHAR, indication_group VARCHAR, therapeutic_area VARCHAR,
    targets VARCHAR, dose VARCHAR, route VARCHAR, combinations VARCHAR, manufacturing VARCHAR,
    taxonomy_version VARCHAR, classified_at TIMESTAMP, input_hash VARCHAR)"""
SORTED = ("cell_type", "msc_source", "product_form", "therapeutic_area")
IN_ORDER = ("targets", "dose", "route", "combinations", "manufacturing")
MULTI = SORTED + IN_ORDER
STAMP = datetime(2026, 1, 2, 3, 4, 5)


def _old_row(tt: TrialText) -> dict[str, Any]:
    """A labels row as the old writer stored it: multi-values ';'-joined
    (the labels file's four sorted, the others in the classifier's order)."""
    lab = classify(tt)
    return {
        "trial_id": tt.trial_id,
        "is_cell_therapy": lab.is_cell_therapy,
        **{c: ";".join(sorted(getattr(lab, c))) for c in SORTED},
        **{c: ";".join(getattr(lab, c)) for c in IN_ORDER},
        "origin": lab.origin,
        "indication_group": lab.indication_group,
        "taxonomy_version": lab.taxonomy_version,
        "classified_at": STAMP,
        "input_hash": lab.input_hash,
    }


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [p for p in text.split(";") if p]


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A store of real records whose labels table has the pre-migration-7
    schema and rows; returns its path and the rows written (by trial id)."""
    path = tmp_path_factory.mktemp("typed") / "old.duckdb"
    with celltrials.open(path) as store:
        ingest_paths(store, [PROCHYMAL_CSV, CAR2_JSON])
        rows = [_old_row(tt) for tt in store_trial_texts(store)]
        con = store.con
        con.execute("DROP TABLE labels")
        con.execute(OLD_LABELS_DDL)
        con.execute("DELETE FROM schema_version WHERE version >= 7")
        cols = list(rows[0])
        con.executemany(
            f"INSERT INTO labels ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [[r[c] for c in cols] for r in rows],
        )
        # hand-made rows: a NULL multi-value stays NULL, spaces around values go
        extra = {
            "trial_id": "ZZ-NULLS",
            "is_cell_therapy": None,
            **dict.fromkeys(MULTI),
            "origin": None,
            "indication_group": None,
            "taxonomy_version": None,
            "classified_at": None,
            "input_hash": None,
        }
        spaced = {**extra, "trial_id": "ZZ-SPACES", "cell_type": " msc ; car_t;;", "dose": ""}
        for r in (extra, spaced):
            con.execute(
                f"INSERT INTO labels ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                [r[c] for c in cols],
            )
    by_id = {r["trial_id"]: r for r in rows}
    assert sum(bool(r["targets"]) for r in rows) > 10  # the CAR file names targets
    assert any(";" in r["cell_type"] for r in rows) or any(";" in r["targets"] for r in rows)
    return path, by_id


def _types(store: celltrials.Store) -> dict[str, str]:
    return {
        r[0]: r[1]
        for r in store.con.execute(
            "SELECT column_name, column_type FROM (DESCRIBE labels)"
        ).fetchall()
    }


def test_migration_7_turns_joined_text_into_lists(
    old_store: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    src, old = old_store
    path = tmp_path / "s.duckdb"
    shutil.copy(src, path)
    with celltrials.open(path) as store:
        assert store.schema_version() == 8
        types = _types(store)
        assert {c: types[c] for c in MULTI} == dict.fromkeys(MULTI, "VARCHAR[]")
        assert types["is_cell_therapy"] == "BOOLEAN"
        got = {
            r[0]: dict(
                zip(("is_cell_therapy", *MULTI, "origin", "classified_at"), r[1:], strict=True)
            )
            for r in store.con.execute(
                f"SELECT trial_id, is_cell_therapy, {', '.join(MULTI)}, origin, classified_at FROM labels"
            ).fetchall()
        }
    assert set(got) == set(old) | {"ZZ-NULLS", "ZZ-SPACES"}
    for tid, row in old.items():
        for c in MULTI:
            assert got[tid][c] == _split(row[c]), (tid, c)
        assert got[tid]["is_cell_therapy"] is row["is_cell_therapy"]
        assert got[tid]["origin"] == row["origin"] and got[tid]["classified_at"] == STAMP
    assert all(got["ZZ-NULLS"][c] is None for c in MULTI)
    assert got["ZZ-SPACES"]["cell_type"] == ["msc", "car_t"]  # order kept, spaces and blanks gone
    assert got["ZZ-SPACES"]["dose"] == []


def test_migrated_labels_equal_the_new_writer_and_render_as_before(
    old_store: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    """The new writer stores exactly the lists migration 7 makes of the old
    text; the labels file, explain, show and the export render them as the
    old text."""
    src, old = old_store
    migrated, fresh = tmp_path / "m.duckdb", tmp_path / "f.duckdb"
    shutil.copy(src, migrated)
    shutil.copy(src, fresh)
    with celltrials.open(fresh) as store:
        classify_store(store, jobs=1)
        new = {r["trial_id"]: r for r in store.label_rows()}
    with celltrials.open(migrated) as store:
        store.con.execute("DELETE FROM labels WHERE trial_id LIKE 'ZZ-%'")
        mig = {r["trial_id"]: r for r in store.label_rows()}
    assert set(new) == set(mig) == set(old)
    for tid in old:
        for c in ("is_cell_therapy", *MULTI, "origin", "indication_group", "input_hash"):
            assert new[tid][c] == mig[tid][c], (tid, c)

    with celltrials.open(migrated, read_only=True) as store:
        file_rows = {r["registry_id"]: r for r in labels_rows(store)}
        primary = {r["trial_id"]: r["primary_record_id"] for r in store.label_rows()}
        joined = [t for t, r in old.items() if ";" in r["targets"] + r["cell_type"]]
        tid = min(joined or [t for t, r in old.items() if r["targets"]])
        ex = explain_trial(store, tid)
        trial = store.trial(tid)
        table = trials_table(store).set_index("trial_id")
    for t, r in old.items():
        rid = primary[t]  # the labels file lists each trial under its primary record id
        assert file_rows[rid]["is_cell_therapy"] == ("yes" if r["is_cell_therapy"] else "no")
        for c in SORTED:
            assert file_rows[rid][c] == r[c], (rid, c)
    for c in MULTI:
        assert ex["labels"][c] == old[tid][c]
        assert trial is not None and trial["labels"][c] == old[tid][c]
        assert (table.loc[tid, c] or "") == old[tid][c]
    assert ex["labels"]["is_cell_therapy"] == ("yes" if old[tid]["is_cell_therapy"] else "no")

    runner = CliRunner()
    res = runner.invoke(cli, ["--db", str(migrated), "show", tid, "--json"])
    assert res.exit_code == 0, res.output
    assert {c: json.loads(res.output)["labels"][c] for c in MULTI} == {
        c: old[tid][c] for c in MULTI
    }
    res = runner.invoke(cli, ["--db", str(migrated), "labels"])
    assert res.exit_code == 0, res.output
    csv_rows = {r["registry_id"]: r for r in csv.DictReader(io.StringIO(res.output))}
    assert csv_rows[primary[tid]]["cell_type"] == old[tid]["cell_type"]
    assert csv_rows[primary[tid]]["therapeutic_area"] == old[tid]["therapeutic_area"]


def test_an_old_store_opened_read_only_reads_typed(
    old_store: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    """Opened read-only (so not migrated), an old store shows its labels as
    migration 7 would store them; the file itself is not changed."""
    src, old = old_store
    path = tmp_path / "ro.duckdb"
    shutil.copy(src, path)
    with celltrials.open(path, read_only=True) as store:
        assert store.schema_version() == 6
        rows = {r["trial_id"]: r for r in store.label_rows()}
        assert L.ensure_label_view(store.con)
        view = {
            r[0]: r[1:]
            for r in store.con.execute(
                f"SELECT trial_id, is_cell_therapy, targets FROM {L.LABEL_VIEW}"
            ).fetchall()
        }
    for tid, r in old.items():
        for c in MULTI:
            assert rows[tid][c] == _split(r[c]), (tid, c)
        assert view[tid] == (r["is_cell_therapy"], sorted(set(_split(r["targets"]) or [])))
    with celltrials.open(path, read_only=True) as store:  # the file still holds the old text
        assert store.schema_version() == 6
        stored = store.con.execute(
            "SELECT data_type FROM duckdb_columns() WHERE database_name = 'ro' "
            "AND table_name = 'labels' AND column_name = 'cell_type'"
        ).fetchall()
    assert stored == [("VARCHAR",)]


def test_an_is_cell_therapy_text_column_becomes_boolean(tmp_path: Path) -> None:
    path = tmp_path / "yn.duckdb"
    with celltrials.open(path) as store:
        store.con.execute("DROP TABLE labels")
        store.con.execute(
            OLD_LABELS_DDL.replace("is_cell_therapy BOOLEAN", "is_cell_therapy VARCHAR")
        )
        store.con.execute("DELETE FROM schema_version WHERE version >= 7")
        store.con.execute(
            "INSERT INTO labels (trial_id, is_cell_therapy, cell_type) VALUES "
            "('A', 'yes', 'msc'), ('B', 'no', ''), ('C', 'TRUE', 'car_t;nk'), ('D', NULL, NULL)"
        )
    with celltrials.open(path) as store:
        got = store.con.execute(
            "SELECT trial_id, is_cell_therapy, cell_type FROM labels ORDER BY 1"
        ).fetchall()
    assert got == [
        ("A", True, ["msc"]),
        ("B", False, []),
        ("C", True, ["car_t", "nk"]),
        ("D", None, None),
    ]


def test_the_dashboard_reads_an_old_store_typed(
    old_store: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    """``celltrials serve`` attaches a read-only copy of the store: an old one
    is read through the same typed view (trial pages' labels as before)."""
    src, old = old_store
    path = tmp_path / "snap.duckdb"
    shutil.copy(src, path)
    snap = Snapshot(path, 1, datetime(2026, 1, 1), prepare)
    try:
        assert snap.info["labelled"]
        assert snap.info["cell_therapy_trials"] == sum(
            bool(r["is_cell_therapy"]) for r in old.values()
        )
        cur = snap.cursor()
        try:
            got = dict(cur.execute("SELECT trial_id, targets FROM labels").fetchall())
        finally:
            snap.give_back(cur)
    finally:
        snap.retire()
    for tid, r in old.items():
        assert got[tid] == _split(r["targets"]), tid


def test_write_labels_is_all_or_nothing(tmp_path: Path) -> None:
    """A write that fails half-way (a trial twice: the key refuses the second)
    leaves the stored labels and evidence as they were; a partial write
    replaces only its trials and drops the ones named."""
    with celltrials.open(tmp_path / "w.duckdb") as store:
        ingest_paths(store, [PROCHYMAL_CSV])
        classify_store(store, jobs=1)
        before = store.label_rows()
        ev_before = store.label_evidence()
        assert len(before) == 14 and sum(map(len, ev_before.values())) > 0
        row = {**before[0], "cell_type": ["nk"]}
        del row["primary_record_id"]
        with pytest.raises(duckdb.ConstraintException):
            store.write_labels([row, row], [])
        assert store.label_rows() == before and store.label_evidence() == ev_before

        gone = before[1]["trial_id"]
        store.write_labels([row], [], partial=True, drop=[gone])
        after = {r["trial_id"]: r for r in store.label_rows()}
        assert set(after) == {r["trial_id"] for r in before} - {gone}
        assert after[row["trial_id"]]["cell_type"] == ["nk"]
        assert row["trial_id"] not in store.label_evidence()
        for r in before[2:]:
            assert after[r["trial_id"]] == r


def test_a_store_killed_right_after_the_migration_opens(
    old_store: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    """Killed (``os._exit``, no checkpoint) just after migrating, the store's
    write-ahead log replays on the next open (it holds rows, not a conversion
    expression DuckDB could not bind while replaying)."""
    src, old = old_store
    path = tmp_path / "k.duckdb"
    shutil.copy(src, path)
    open_and_kill(path, 8)
    with celltrials.open(path, read_only=True) as store:
        got = {r["trial_id"]: r["targets"] for r in store.label_rows()}
    for tid, r in old.items():
        assert got[tid] == _split(r["targets"]), tid
