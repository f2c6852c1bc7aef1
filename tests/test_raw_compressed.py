"""``records.raw`` as zstd frames (migration 8, issue 15): every stored record
is one zstd frame of its JSON, which zstandard itself reads back as the
registry's study object; SQL reads it with ``raw_json(raw)``. A store from
before migration 8 is migrated with every record's JSON kept byte for byte,
reads the same when opened read-only (not migrated), and opens after a kill
right after migrating.

The "old" store is made here from real registry exports: ingested, then given
the pre-migration ``raw JSON`` column holding the texts zstandard decompresses
from the new one, so the migrated values are checked against text this test
wrote itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

import celltrials
from celltrials.ingest import ingest_paths
from celltrials.quality import coverage_windows
from celltrials.store import compress_raw, decode_raw, raw_text
from tests.conftest import GENERAL_JSON, ICTRP_XLSX, open_and_kill, stored_json

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # RFC 8878, section 3.1.1


def _raw_type(store: celltrials.Store) -> str:
    return str(
        store.con.execute(
            "SELECT data_type FROM duckdb_columns() WHERE database_name = current_database() "
            "AND table_name = 'records' AND column_name = 'raw'"
        ).fetchall()[0][0]
    )


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A store of real records with the pre-migration-8 ``raw JSON`` column and
    no ``export_date``; returns its path and each record's JSON text (UTF-8) by
    record key."""
    path = tmp_path_factory.mktemp("rawz") / "old.duckdb"
    with celltrials.open(path) as store:
        report = ingest_paths(store, [GENERAL_JSON, ICTRP_XLSX])
        assert report.clean
        dz = zstandard.ZstdDecompressor()
        texts = {
            k: dz.decompress(raw)
            for k, raw in store.con.execute("SELECT record_key, raw FROM records").fetchall()
        }
        con = store.con
        con.register(
            "_old",
            pa.table(
                {
                    "record_key": list(texts),
                    "raw": pa.array([t.decode() for t in texts.values()], type=pa.string()),
                }
            ),
        )
        con.execute("ALTER TABLE records DROP COLUMN raw")
        con.execute("ALTER TABLE records DROP COLUMN export_date")
        con.execute("ALTER TABLE records ADD COLUMN raw JSON")
        con.execute(
            "UPDATE records SET raw = o.raw FROM _old o WHERE records.record_key = o.record_key"
        )
        con.unregister("_old")
        con.execute("DELETE FROM schema_version WHERE version >= 8")
    assert len(texts) > 1000
    return path, texts


def test_each_stored_record_is_a_zstd_frame_of_the_registry_study(tmp_path: Path) -> None:
    studies = {
        s["protocolSection"]["identificationModule"]["nctId"]: s
        for s in json.loads(GENERAL_JSON.read_text(encoding="utf-8"))
    }
    with celltrials.open(tmp_path / "s.duckdb") as store:
        ingest_paths(store, [GENERAL_JSON])
        assert _raw_type(store) == "BLOB" and store.schema_version() == 8
        rows = store.con.execute(
            "SELECT record_id, raw, raw_json(raw)->>'$.protocolSection.identificationModule.nctId' "
            "FROM records"
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(studies)
    for record_id, raw, nct in rows:
        assert raw[:4] == ZSTD_MAGIC
        assert stored_json(raw) == studies[record_id]
        assert nct == record_id  # the SQL function reads the same JSON
    assert sum(len(r[1]) for r in rows) < len(GENERAL_JSON.read_bytes()) / 2


def test_migration_8_compresses_every_record_and_keeps_its_json(
    old_store: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    src, texts = old_store
    path = tmp_path / "m.duckdb"
    shutil.copy(src, path)
    with celltrials.open(path) as store:
        assert store.schema_version() == 8 and _raw_type(store) == "BLOB"
        got = dict(store.con.execute("SELECT record_key, raw FROM records").fetchall())
        assert store.con.execute("SELECT count(*) FROM records WHERE raw IS NULL").fetchall() == [
            (0,)
        ]
    dz = zstandard.ZstdDecompressor()
    assert set(got) == set(texts)
    for key, raw in got.items():
        assert raw[:4] == ZSTD_MAGIC and dz.decompress(raw) == texts[key], key


def test_the_export_stamp_has_a_column_migrated_as_ingested(
    old_store: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """``records.export_date``: the ICTRP rows' export date as the export
    wrote it, NULL for other formats; migration 8 fills it from the JSON as a
    fresh ingest of the same files does."""
    src, texts = old_store
    path = tmp_path / "m.duckdb"
    shutil.copy(src, path)
    with celltrials.open(path) as store:
        migrated = dict(store.con.execute("SELECT record_key, export_date FROM records").fetchall())
    with celltrials.open(tmp_path / "fresh.duckdb") as store:
        ingest_paths(store, [GENERAL_JSON, ICTRP_XLSX])
        fresh = dict(store.con.execute("SELECT record_key, export_date FROM records").fetchall())
    expected = {
        k: (None if (d := json.loads(t).get("export_date")) is None else str(d))
        for k, t in texts.items()
    }
    assert migrated == fresh == expected
    assert sum(v is not None for v in expected.values()) > 1000  # every workbook row has one


def test_an_old_store_opened_read_only_reads_as_a_migrated_one(
    old_store: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """Read-only (not migrated): Store.raw_record, records(with_raw=True),
    ``raw_json`` in SQL and the ICTRP export stamps of the coverage windows
    read the old JSON column as they read a migrated store; the file is not changed."""
    src, texts = old_store
    ro, new = tmp_path / "ro.duckdb", tmp_path / "new.duckdb"
    shutil.copy(src, ro)
    shutil.copy(src, new)
    with celltrials.open(new):
        pass  # migrated
    keys = sorted(texts)[:: max(1, len(texts) // 50)]
    seen = {}
    for path in (ro, new):
        with celltrials.open(path, read_only=True) as store:
            seen[path] = (
                store.schema_version(),
                _raw_type(store) if path == new else None,
                [store.raw_record(k) for k in keys],
                dict(
                    store.records(current_only=False, with_raw=True)[
                        ["record_key", "raw"]
                    ].itertuples(index=False)
                ),
                store.con.execute(
                    "SELECT record_key, raw_json(raw)->>'$.export_date' FROM records ORDER BY 1"
                ).fetchall(),
                {Path(w.source).name: w.export_date for w in coverage_windows(store)},
            )
    ro_seen, new_seen = seen[ro], seen[new]
    assert ro_seen[0] == 7 and new_seen[0] == 8 and new_seen[1] == "BLOB"
    assert ro_seen[2] == new_seen[2] == [json.loads(texts[k]) for k in keys]
    assert ro_seen[3] == new_seen[3] == {k: t.decode() for k, t in texts.items()}
    assert ro_seen[4] == new_seen[4]
    stamps = [s for _, s in new_seen[4] if s]
    assert len(stamps) > 100  # the ICTRP workbook's rows carry their export date
    assert ro_seen[5] == new_seen[5] and new_seen[5][ICTRP_XLSX.name] is not None
    with celltrials.open(ro, read_only=True) as store:
        store.con.execute("DROP VIEW temp.main.records")
        assert _raw_type(store) == "JSON"  # the file still holds the old column


def test_a_store_killed_right_after_migration_8_opens(
    old_store: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    """Killed (``os._exit``, no checkpoint) just after migrating, the store's
    write-ahead log replays on the next open: it holds the compressed values,
    not a call of the Python function that made them."""
    src, texts = old_store
    path = tmp_path / "k.duckdb"
    shutil.copy(src, path)
    open_and_kill(path, 8)
    with celltrials.open(path, read_only=True) as store:
        assert store.schema_version() == 8
        got = dict(store.con.execute("SELECT record_key, raw FROM records").fetchall())
    dz = zstandard.ZstdDecompressor()
    assert {k: dz.decompress(v) for k, v in got.items()} == texts


#: what a stored record can hold: the store writes orjson's output, which has
#: no integer outside 64 bits and no lone surrogate (such content is a finding)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda c: st.lists(c) | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",))), c),
)


@given(JSON_VALUES)
def test_any_json_round_trips_through_the_stored_form(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False).encode()
    stored = compress_raw(text)
    assert stored[:4] == ZSTD_MAGIC
    assert zstandard.ZstdDecompressor().decompress(stored) == text
    assert raw_text(stored) == text.decode() and decode_raw(stored) == value
    assert decode_raw(text) == value and decode_raw(text.decode()) == value  # older stores
