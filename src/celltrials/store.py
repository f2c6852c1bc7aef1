"""The trial store: one embedded DuckDB file.

Tables (schema version 1)::

    records                every record version ever ingested, raw JSON kept
                           (zstd-compressed; SQL: ``raw_json(raw)``)
    record_ids             registry ids named by each record version
    record_conditions      conditions, MeSH terms and MeSH ancestors
    record_interventions   type, name, description, other names, arm labels
    record_arms / record_countries / record_sponsors / record_outcomes
    trial_records          trial_id → its records (is_primary marks the one it shows)
    ingests                one row per ingested file or API page
    meta                   key/value (sync checkpoints and the like)

Views over the *current* version of each trial's primary record:
``trials``, ``trial_ids``, ``conditions``, ``interventions``, ``arms``,
``countries``, ``sponsors``, ``outcomes``.

A *record* is identified by (channel, record_id): ClinicalTrials.gov and
ICTRP each version their own copies. A newer version never erases an older
one; ``records.is_current`` marks the one in use. Trials are the connected
components of records that share any registry id (:mod:`celltrials.dedup`).

The store owns the whole schema: :data:`MIGRATIONS` lists every named,
numbered step; a store applies those it lacks when opened for writing.
Migration 5 keeps raw values beside canonical ones: ``study_type_raw``,
``lead_sponsor_raw`` / ``lead_sponsor_key``, ISO codes and the raw value of
each country row, ``record_regions`` (continents named in country fields)
and ``record_text_repairs`` (every repaired text with its raw form).
Migration 7 stores the classifier's multi-valued labels as ``VARCHAR[]`` lists
and ``is_cell_therapy`` as BOOLEAN. Migration 8 keeps ``records.raw`` as a
zstd frame of the record's JSON (BLOB): compressed in the ingest workers, the
writer hands DuckDB a third of the bytes (see :func:`compress_raw`); SQL reads
it through the ``raw_json`` function every :class:`Store` connection has, and
Python through :meth:`Store.raw_record` or :func:`decode_raw`. It also gives
the ICTRP export stamp a column, ``records.export_date`` (read without
decompressing anything).

The features above the store write and read their tables through typed
methods (:meth:`Store.text_records`, :meth:`Store.write_labels`,
:meth:`Store.label_rows`, :meth:`Store.label_evidence`,
:meth:`Store.write_product_links`, :meth:`Store.product_links`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import duckdb.func
import orjson

# (imported up front, not only where a frame is made: pyarrow imports pandas on its
# first ``pa.array``, and a Ctrl-C that arrives during that import is swallowed by
# pyarrow — the command then ran to its end; tests/test_cli_no_traceback.py)
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from celltrials.dedup import group_records
from celltrials.errors import StoreError
from celltrials.models import Arm, Intervention, ParsedRecord
from celltrials.normalize import finish_record
from celltrials.registry_ids import canonical_id, trial_id_for
from celltrials.sources import FORMATS, volatile_fields
from celltrials.sources.base import content_hash

DEFAULT_DB = "celltrials.duckdb"

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS ingest_seq START 1;
CREATE TABLE IF NOT EXISTS ingests (
    ingest_id INTEGER PRIMARY KEY, source VARCHAR, format VARCHAR, source_sha256 VARCHAR,
    started_at TIMESTAMP, finished_at TIMESTAMP,
    n_records INTEGER, n_new INTEGER, n_bad INTEGER
);
CREATE TABLE IF NOT EXISTS records (
    record_key VARCHAR PRIMARY KEY,
    channel VARCHAR NOT NULL, record_id VARCHAR NOT NULL, registry VARCHAR, source_format VARCHAR,
    source VARCHAR, position INTEGER, content_hash VARCHAR NOT NULL,
    last_update DATE, ingest_id INTEGER, ingested_at TIMESTAMP, is_current BOOLEAN,
    title VARCHAR, official_title VARCHAR, acronym VARCHAR, brief_summary VARCHAR,
    detailed_description VARCHAR, keywords VARCHAR[],
    status VARCHAR, status_raw VARCHAR, why_stopped VARCHAR, phase VARCHAR, phase_raw VARCHAR,
    study_type VARCHAR,
    start_date DATE, start_date_precision VARCHAR,
    completion_date DATE, completion_date_precision VARCHAR,
    registration_date DATE,
    enrollment INTEGER, enrollment_type VARCHAR, enrollment_raw VARCHAR,
    lead_sponsor VARCHAR, sponsor_class VARCHAR,
    eligibility VARCHAR, has_results BOOLEAN, url VARCHAR,
    raw JSON
);
CREATE TABLE IF NOT EXISTS record_ids (record_key VARCHAR, id_key VARCHAR, id_raw VARCHAR, registry VARCHAR, is_primary BOOLEAN);
CREATE TABLE IF NOT EXISTS record_conditions (record_key VARCHAR, condition VARCHAR, kind VARCHAR);
CREATE TABLE IF NOT EXISTS record_interventions (
    record_key VARCHAR, idx INTEGER, type VARCHAR, name VARCHAR, description VARCHAR,
    other_names VARCHAR[], arm_labels VARCHAR[]);
CREATE TABLE IF NOT EXISTS record_arms (
    record_key VARCHAR, idx INTEGER, label VARCHAR, type VARCHAR, description VARCHAR,
    intervention_names VARCHAR[]);
CREATE TABLE IF NOT EXISTS record_countries (record_key VARCHAR, country VARCHAR);
CREATE TABLE IF NOT EXISTS record_sponsors (record_key VARCHAR, name VARCHAR, role VARCHAR, class VARCHAR);
CREATE TABLE IF NOT EXISTS record_outcomes (record_key VARCHAR, kind VARCHAR, measure VARCHAR, time_frame VARCHAR, description VARCHAR);
CREATE TABLE IF NOT EXISTS trial_records (trial_id VARCHAR, record_key VARCHAR, is_primary BOOLEAN, n_records INTEGER, merge_reason VARCHAR);

CREATE OR REPLACE VIEW trials AS
SELECT tr.trial_id, r.record_id AS primary_record_id, r.record_key AS primary_record_key,
       r.registry, r.channel, r.source_format, r.title, r.official_title, r.acronym,
       r.brief_summary, r.detailed_description, r.status, r.status_raw, r.why_stopped,
       r.phase, r.phase_raw, r.study_type, r.start_date, r.start_date_precision,
       r.completion_date, r.completion_date_precision, r.registration_date, r.last_update,
       r.enrollment, r.enrollment_type, r.enrollment_raw, r.lead_sponsor, r.sponsor_class,
       r.has_results, r.url, r.keywords, tr.n_records, r.source
FROM trial_records tr JOIN records r USING (record_key)
WHERE tr.is_primary;

CREATE OR REPLACE VIEW trial_ids AS
SELECT DISTINCT tr.trial_id, i.id_key, i.id_raw, i.registry
FROM trial_records tr JOIN record_ids i USING (record_key);

CREATE OR REPLACE VIEW conditions AS
SELECT tr.trial_id, c.condition, c.kind FROM trial_records tr JOIN record_conditions c USING (record_key) WHERE tr.is_primary;
CREATE OR REPLACE VIEW interventions AS
SELECT tr.trial_id, x.idx, x.type, x.name, x.description, x.other_names, x.arm_labels
FROM trial_records tr JOIN record_interventions x USING (record_key) WHERE tr.is_primary;
CREATE OR REPLACE VIEW arms AS
SELECT tr.trial_id, a.idx, a.label, a.type, a.description, a.intervention_names
FROM trial_records tr JOIN record_arms a USING (record_key) WHERE tr.is_primary;
CREATE OR REPLACE VIEW countries AS
SELECT DISTINCT tr.trial_id, c.country FROM trial_records tr JOIN record_countries c USING (record_key) WHERE tr.is_primary;
CREATE OR REPLACE VIEW sponsors AS
SELECT tr.trial_id, s.name, s.role, s.class FROM trial_records tr JOIN record_sponsors s USING (record_key) WHERE tr.is_primary;
CREATE OR REPLACE VIEW outcomes AS
SELECT tr.trial_id, o.kind, o.measure, o.time_frame, o.description
FROM trial_records tr JOIN record_outcomes o USING (record_key) WHERE tr.is_primary;
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[duckdb.DuckDBPyConnection], None]


def _v1(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA_V1)


SCHEMA_V5 = """
ALTER TABLE records ADD COLUMN IF NOT EXISTS study_type_raw VARCHAR;
ALTER TABLE records ADD COLUMN IF NOT EXISTS lead_sponsor_raw VARCHAR;
ALTER TABLE records ADD COLUMN IF NOT EXISTS lead_sponsor_key VARCHAR;
ALTER TABLE record_countries ADD COLUMN IF NOT EXISTS country_raw VARCHAR;
ALTER TABLE record_countries ADD COLUMN IF NOT EXISTS iso2 VARCHAR;
ALTER TABLE record_countries ADD COLUMN IF NOT EXISTS iso3 VARCHAR;
ALTER TABLE record_sponsors ADD COLUMN IF NOT EXISTS name_raw VARCHAR;
ALTER TABLE record_sponsors ADD COLUMN IF NOT EXISTS name_key VARCHAR;
CREATE TABLE IF NOT EXISTS record_regions (record_key VARCHAR, region VARCHAR, region_raw VARCHAR);
CREATE TABLE IF NOT EXISTS record_text_repairs (
    record_key VARCHAR, field VARCHAR, kinds VARCHAR[], raw VARCHAR, repaired VARCHAR);

CREATE OR REPLACE VIEW trials AS
SELECT tr.trial_id, r.record_id AS primary_record_id, r.record_key AS primary_record_key,
       r.registry, r.channel, r.source_format, r.title, r.official_title, r.acronym,
       r.brief_summary, r.detailed_description, r.status, r.status_raw, r.why_stopped,
       r.phase, r.phase_raw, r.study_type, r.start_date, r.start_date_precision,
       r.completion_date, r.completion_date_precision, r.registration_date, r.last_update,
       r.enrollment, r.enrollment_type, r.enrollment_raw, r.lead_sponsor, r.sponsor_class,
       r.has_results, r.url, r.keywords, tr.n_records, r.source,
       r.study_type_raw, r.lead_sponsor_raw, r.lead_sponsor_key
FROM trial_records tr JOIN records r USING (record_key)
WHERE tr.is_primary;

CREATE OR REPLACE VIEW countries AS
SELECT DISTINCT tr.trial_id, c.country, c.iso2, c.iso3
FROM trial_records tr JOIN record_countries c USING (record_key) WHERE tr.is_primary AND c.country IS NOT NULL;
CREATE OR REPLACE VIEW regions AS
SELECT DISTINCT tr.trial_id, g.region FROM trial_records tr JOIN record_regions g USING (record_key) WHERE tr.is_primary;
CREATE OR REPLACE VIEW sponsors AS
SELECT tr.trial_id, s.name, s.role, s.class, s.name_raw, s.name_key
FROM trial_records tr JOIN record_sponsors s USING (record_key) WHERE tr.is_primary;
"""


def _v5(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA_V5)


def _v6_ingest_file_stat(con: duckdb.DuckDBPyConnection) -> None:
    # size and modification time of an ingested file: unchanged files are skipped without re-hashing
    con.execute("ALTER TABLE ingests ADD COLUMN IF NOT EXISTS source_size BIGINT")
    con.execute("ALTER TABLE ingests ADD COLUMN IF NOT EXISTS source_mtime_ns BIGINT")


#: classifier output (:mod:`celltrials.classify` writes it)
SCHEMA_LABELS = """
CREATE TABLE IF NOT EXISTS labels (
    trial_id VARCHAR PRIMARY KEY, is_cell_therapy BOOLEAN, cell_type VARCHAR, msc_source VARCHAR,
    origin VARCHAR, product_form VARCHAR, indication_group VARCHAR, therapeutic_area VARCHAR,
    targets VARCHAR, dose VARCHAR, route VARCHAR, combinations VARCHAR, manufacturing VARCHAR,
    taxonomy_version VARCHAR, classified_at TIMESTAMP, input_hash VARCHAR);
CREATE TABLE IF NOT EXISTS label_evidence (
    trial_id VARCHAR, field VARCHAR, value VARCHAR, source_field VARCHAR, text VARCHAR,
    start INTEGER, "end" INTEGER);
"""

#: saved live-registry queries and their runs (:mod:`celltrials.sync`)
SCHEMA_SYNC = """
CREATE TABLE IF NOT EXISTS sync_queries (
    query_id VARCHAR PRIMARY KEY, name VARCHAR, params JSON, base_url VARCHAR,
    created_at TIMESTAMP, last_complete_sync TIMESTAMP, last_complete_started DATE
);
CREATE SEQUENCE IF NOT EXISTS sync_run_seq START 1;
CREATE TABLE IF NOT EXISTS sync_runs (
    run_id INTEGER PRIMARY KEY, query_id VARCHAR, kind VARCHAR, params JSON,
    started_at TIMESTAMP, updated_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR,
    next_page_token VARCHAR, pages_done INTEGER, studies_seen INTEGER, n_new INTEGER,
    total_count INTEGER, page_size INTEGER, error VARCHAR
);
"""

#: trials linked to catalogued products (:mod:`celltrials.products`)
SCHEMA_PRODUCTS = """
CREATE TABLE IF NOT EXISTS product_links (
    trial_id VARCHAR NOT NULL,
    product VARCHAR NOT NULL,
    regulators VARCHAR,
    field VARCHAR NOT NULL,
    alias VARCHAR NOT NULL,
    snippet VARCHAR,
    catalog_version VARCHAR
);
"""


#: the ``labels`` table's multi-valued columns: ``VARCHAR[]`` since migration 7
#: (``;``-joined text before); the first four sorted, the others in the
#: classifier's order
LABEL_LIST_COLUMNS: tuple[str, ...] = (
    "cell_type",
    "msc_source",
    "product_form",
    "therapeutic_area",
    "targets",
    "dose",
    "route",
    "combinations",
    "manufacturing",
)
#: every column of ``labels``, in table order
LABEL_TABLE_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "is_cell_therapy",
    "cell_type",
    "msc_source",
    "origin",
    "product_form",
    "indication_group",
    "therapeutic_area",
    "targets",
    "dose",
    "route",
    "combinations",
    "manufacturing",
    "taxonomy_version",
    "classified_at",
    "input_hash",
)
#: every column of ``label_evidence``, in table order
EVIDENCE_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "field",
    "value",
    "source_field",
    "text",
    "start",
    "end",
)
#: every column of ``product_links``, in table order
PRODUCT_LINK_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "product",
    "regulators",
    "field",
    "alias",
    "snippet",
    "catalog_version",
)


def _label_types(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Column → type of the ``labels`` table of the connection's database."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' "
        "AND table_name = 'labels' ORDER BY ordinal_position"
    ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def _typed_label_exprs(types: dict[str, str]) -> dict[str, str]:
    """Column → SQL giving its typed value, for the columns of a ``labels``
    table of the schema before migration 7: a ``;``-joined text becomes a list
    (values trimmed, in order; ``''`` → ``[]``, NULL stays NULL), a yes/no
    text a BOOLEAN."""
    out: dict[str, str] = {}
    ict = types.get("is_cell_therapy")
    if ict is not None and ict != "BOOLEAN":
        out["is_cell_therapy"] = (
            "lower(trim(CAST(is_cell_therapy AS VARCHAR))) IN ('yes', 'true', '1')"
        )
    for c in LABEL_LIST_COLUMNS:
        t = types.get(c)
        if t is not None and not t.endswith("[]"):
            out[c] = (
                f"list_filter(list_transform(string_split(CAST({c} AS VARCHAR), ';'), "
                "lambda x: trim(x)), lambda x: x <> '')"
            )
    return out


#: the ``labels`` table since migration 7 (``{name}``: the table's name)
_TYPED_LABELS_DDL = """
CREATE TABLE {name} (
    trial_id VARCHAR PRIMARY KEY, is_cell_therapy BOOLEAN, cell_type VARCHAR[], msc_source VARCHAR[],
    origin VARCHAR, product_form VARCHAR[], indication_group VARCHAR, therapeutic_area VARCHAR[],
    targets VARCHAR[], dose VARCHAR[], route VARCHAR[], combinations VARCHAR[], manufacturing VARCHAR[],
    taxonomy_version VARCHAR, classified_at TIMESTAMP, input_hash VARCHAR)"""


def _v7_typed_labels(con: duckdb.DuckDBPyConnection) -> None:
    # labels as typed columns: readers get lists and a boolean, never parse text.
    # The rows are copied into a new table rather than converted by ALTER ... USING:
    # the write-ahead log would keep that expression, and replaying it after a crash
    # needs DuckDB's function extension loaded before the store is open.
    types = _label_types(con)
    exprs = _typed_label_exprs(types)
    if not exprs:
        return
    cols = [c for c in LABEL_TABLE_COLUMNS if c in types]
    con.execute(_TYPED_LABELS_DDL.format(name="_labels_typed"))
    con.execute(
        f"INSERT INTO _labels_typed ({', '.join(cols)}) "
        f"SELECT {', '.join(exprs.get(c, c) for c in cols)} FROM labels"
    )
    con.execute("DROP TABLE labels")
    con.execute("ALTER TABLE _labels_typed RENAME TO labels")


#: formats whose records carry the export's date stamp (``export_date``, left
#: out of the content hash), kept in ``records.export_date`` (migration 8)
_STAMPED_FORMATS = frozenset(
    name for name, f in FORMATS.items() if "export_date" in f.volatile_fields
)


#: records.raw: each record's JSON as one zstd frame, level 1 (the fastest: the
#: store's own compression of the column gains another half on top, across records)
_RAW_COMPRESSOR = zstandard.ZstdCompressor(level=1)
_RAW_DECOMPRESSOR = zstandard.ZstdDecompressor()
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def compress_raw(raw: bytes) -> bytes:
    """The stored form of a record's raw JSON (UTF-8 bytes): one zstd frame."""
    return _RAW_COMPRESSOR.compress(raw)


def raw_text(stored: bytes | str | None) -> str | None:
    """The JSON text of a stored ``records.raw`` value: a zstd frame (migration
    8), plain JSON bytes (a store from before it, read through
    :func:`raw_blob_view`) or JSON text as DuckDB returns a JSON column."""
    if stored is None or isinstance(stored, str):
        return stored
    # (typed apart from ``stored``: the classifier's mypyc build checks this module
    # without zstandard installed, where decompress() is Any)
    data: bytes = stored
    if data[:4] == _ZSTD_MAGIC:
        data = _RAW_DECOMPRESSOR.decompress(data)
    return data.decode("utf-8")


def decode_raw(stored: bytes | str | None) -> Any:
    """The JSON value of a stored ``records.raw`` (see :func:`raw_text`)."""
    text = raw_text(stored)
    return None if text is None else orjson.loads(text)


def _raw_json_udf(stored: pa.Array) -> pa.Array:
    texts = pa.array([raw_text(v) for v in stored.to_pylist()], type=pa.string())
    return pa.ExtensionArray.from_storage(pa.json_(), texts)


def _arrow_function(
    con: duckdb.DuckDBPyConnection,
    name: str,
    fn: Callable[[pa.Array], pa.Array],
    param: str,
    returns: str,
) -> None:
    """A one-argument Python function in SQL on ``con``, called with Arrow
    chunks (NULLs included: ``fn`` maps them)."""
    con.create_function(
        name,
        fn,
        [duckdb.sqltype(param)],
        duckdb.sqltype(returns),
        type=duckdb.func.ARROW,
        null_handling=duckdb.func.SPECIAL,
    )


def register_raw_json(con: duckdb.DuckDBPyConnection) -> None:
    """``raw_json(raw)`` in SQL on ``con``: the JSON of a stored ``records.raw``
    (e.g. ``raw_json(raw)->>'$.protocolSection.identificationModule.briefTitle'``)."""
    # (DuckDB raises NotImplementedException for a name already registered)
    with contextlib.suppress(duckdb.CatalogException, duckdb.NotImplementedException):
        _arrow_function(con, "raw_json", _raw_json_udf, "BLOB", "JSON")


def _raw_type(con: duckdb.DuckDBPyConnection) -> str | None:
    rows = con.execute(
        "SELECT data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'records' AND column_name = 'raw'"
    ).fetchall()
    return str(rows[0][0]) if rows else None


def _compress_raw_udf(raw: pa.Array) -> pa.Array:
    return pa.array(
        [None if v is None else compress_raw(v) for v in raw.cast(pa.binary()).to_pylist()],
        type=pa.binary(),
    )


def _v8_raw_compressed(con: duckdb.DuckDBPyConnection) -> None:
    # the column is rewritten through a new one (an UPDATE logs values, not the
    # function that made them: replaying the log after a crash needs no celltrials);
    # the export stamp is read from the JSON on the way (readers need not decompress)
    con.execute("ALTER TABLE records ADD COLUMN IF NOT EXISTS export_date VARCHAR")
    if _raw_type(con) != "JSON":
        return
    _arrow_function(con, "_celltrials_compress_raw", _compress_raw_udf, "VARCHAR", "BLOB")
    try:
        con.execute("ALTER TABLE records ADD COLUMN raw_zstd BLOB")
        con.execute(
            "UPDATE records SET raw_zstd = _celltrials_compress_raw(raw::VARCHAR), "
            f"export_date = {_EXPORT_DATE_SQL}"
        )
        con.execute("ALTER TABLE records DROP COLUMN raw")
        con.execute("ALTER TABLE records RENAME COLUMN raw_zstd TO raw")
    finally:
        con.remove_function("_celltrials_compress_raw")


#: ``records.export_date`` of a record whose ``raw`` is still JSON (before migration 8)
_EXPORT_DATE_SQL = (
    "CASE WHEN source_format IN ("
    + ", ".join(f"'{f}'" for f in sorted(_STAMPED_FORMATS))
    + ") THEN raw->>'$.export_date' END"
)


def raw_blob_view(con: duckdb.DuckDBPyConnection) -> bool:
    """For a store written before migration 8 and read without migrating it:
    the temp view ``records`` shows ``raw`` as a BLOB (the JSON's UTF-8 bytes,
    which :func:`raw_text` and ``raw_json`` read too) and ``export_date``, so
    readers see one schema.
    Returns whether it was needed."""
    if _raw_type(con) != "JSON":
        return False
    db = str(con.execute("SELECT current_database()").fetchall()[0][0]).replace('"', '""')
    con.execute(
        "CREATE OR REPLACE TEMP VIEW records AS "
        f"SELECT * REPLACE (encode(raw::VARCHAR) AS raw), {_EXPORT_DATE_SQL} AS export_date "
        f'FROM "{db}".main.records'
    )
    return True


def typed_labels_view(con: duckdb.DuckDBPyConnection) -> bool:
    """For a store written before migration 7 and read without migrating it
    (opened read-only, or attached read-only as the connection's default
    database): the temp view ``labels`` shows its labels as migration 7 stores
    them (lists, a boolean), so readers see one schema. Returns whether it was
    needed."""
    types = _label_types(con)
    exprs = _typed_label_exprs(types)
    if not exprs:
        return False
    db = str(con.execute("SELECT current_database()").fetchall()[0][0]).replace('"', '""')
    cols = ", ".join(f"{exprs[c]} AS {c}" if c in exprs else f'"{c}"' for c in types)
    con.execute(f'CREATE OR REPLACE TEMP VIEW labels AS SELECT {cols} FROM "{db}".main.labels')
    return True


def _ddl(sql: str) -> Callable[[duckdb.DuckDBPyConnection], None]:
    def apply(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(sql)

    return apply


#: every schema step, in the order a store applies the ones it lacks (each
#: idempotent: a store made by an older celltrials runs the new ones once)
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core", _v1),
    Migration(2, "classification", _ddl(SCHEMA_LABELS)),
    Migration(3, "sync", _ddl(SCHEMA_SYNC)),
    Migration(4, "products", _ddl(SCHEMA_PRODUCTS)),
    Migration(5, "raw beside canonical", _v5),
    Migration(6, "ingest_file_stat", _v6_ingest_file_stat),
    Migration(7, "typed labels", _v7_typed_labels),
    Migration(8, "raw compressed", _v8_raw_compressed),
)
_MIGRATIONS: dict[int, Migration] = {m.version: m for m in MIGRATIONS}


#: a record ready to store: (record, raw JSON, content hash, source, ingest_id)
Staged = tuple[ParsedRecord, bytes, str, str, int | None]


@dataclass
class AddResult:
    n_records: int = 0
    n_new: int = 0
    n_unchanged: int = 0


#: what :func:`group_records` needs of a record
_MERGE_COLUMNS = "record_key, channel, record_id, registry, source_format, last_update, ingested_at"
#: records that share no id with another are merged this many at a time
MERGE_CHUNK = 50_000
#: up to this many record keys are looked up in the index rather than by a scan
#: (DuckDB's own limit for an index scan is 2,048 matching rows)
INDEX_LOOKUP_KEYS = 2048


def record_key(rec: ParsedRecord, digest: str) -> str:
    return f"{rec.channel}:{rec.record_id}:{digest[:16]}"


class Store:
    """A celltrials DuckDB store. Use :func:`celltrials.open` to get one."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str) -> None:
        self.con = con
        self.path = path
        self._depth = 0

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> Store:
        db = str(path or os.environ.get("CELLTRIALS_DB") or DEFAULT_DB)
        if read_only and db != ":memory:" and not Path(db).exists():
            raise StoreError(
                f"no store at {db}", hint="Run `celltrials ingest PATH` first, or pass --db."
            )
        if not read_only and db != ":memory:" and not Path(db).parent.is_dir():
            try:
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder for store {db}: {exc.strerror}",
                    hint="Pass --db a path in a folder you can write to.",
                ) from None
        con = _connect(db, read_only)
        register_raw_json(con)
        store = cls(con, db)
        if not read_only:
            store.migrate()
            store.discard_unfinished_ingests()  # a file being staged when its process was killed
        else:
            typed_labels_view(con)
            raw_blob_view(con)
        return store

    def close(self) -> None:
        self.con.close()

    def checkpoint(self) -> None:
        """Write the write-ahead log into the file now (outside a transaction;
        inside one, or while another connection writes, it is left for later)."""
        if self._depth == 0:
            with contextlib.suppress(duckdb.Error):
                self.con.execute("CHECKPOINT")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        try:
            row = self.con.execute("SELECT max(version) FROM schema_version").fetchone()
        except duckdb.CatalogException:
            return 0
        return int(row[0] or 0) if row else 0

    def migrate(self) -> None:
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
        )
        done = {r[0] for r in self.con.execute("SELECT version FROM schema_version").fetchall()}
        newest = max(_MIGRATIONS)
        if done and max(done) > newest:
            raise StoreError(
                f"store {self.path} has schema version {max(done)}, newer than this celltrials ({newest})",
                hint="Upgrade celltrials.",
            )
        for version in sorted(_MIGRATIONS):
            if version in done:
                continue
            m = _MIGRATIONS[version]
            with self.transaction():
                m.apply(self.con)
                self.con.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)", [version, m.name, _now()]
                )

    # ------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One all-or-nothing unit; nested uses join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield self.con
            finally:
                self._depth -= 1
            return
        self.con.execute("BEGIN TRANSACTION")
        self._depth = 1
        try:
            yield self.con
        except BaseException:
            self._depth = 0
            self.con.execute("ROLLBACK")
            raise
        self._depth = 0
        self.con.execute("COMMIT")

    def get_meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    # ----------------------------------------------------------------- writing
    def begin_ingest(
        self,
        source: str,
        fmt: str,
        sha256: str | None = None,
        *,
        size: int | None = None,
        mtime_ns: int | None = None,
    ) -> int:
        row = self.con.execute("SELECT nextval('ingest_seq')").fetchone()
        assert row is not None
        ingest_id = int(row[0])
        self.con.execute(
            "INSERT INTO ingests (ingest_id, source, format, source_sha256, source_size, source_mtime_ns, started_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [ingest_id, source, fmt, sha256, size, mtime_ns, _now()],
        )
        return ingest_id

    def discard_ingests(self, ingest_ids: list[int]) -> None:
        """Delete everything these (unpublished) ingests stored, and their rows in ``ingests``."""
        if not ingest_ids:
            return
        with self.transaction():
            keys = "SELECT record_key FROM records WHERE ingest_id IN (SELECT unnest(?::INTEGER[]))"
            for table in _CHILD_COLUMNS:
                self.con.execute(f"DELETE FROM {table} WHERE record_key IN ({keys})", [ingest_ids])
            self.con.execute(
                "DELETE FROM records WHERE ingest_id IN (SELECT unnest(?::INTEGER[]))", [ingest_ids]
            )
            self.con.execute(
                "DELETE FROM ingests WHERE ingest_id IN (SELECT unnest(?::INTEGER[]))", [ingest_ids]
            )

    def discard_unfinished_ingests(self) -> list[int]:
        """Delete the records of file ingests that were being staged when their
        process died (an ingest row without ``finished_at``); returns their ids."""
        ids = [
            int(r[0])
            for r in self.con.execute(
                "SELECT ingest_id FROM ingests WHERE finished_at IS NULL"
            ).fetchall()
        ]
        self.discard_ingests(ids)
        return ids

    def new_ingest_ids(self, n: int) -> list[int]:
        """``n`` fresh ingest ids (for :meth:`record_ingests`)."""
        return [
            int(r[0])
            for r in self.con.execute("SELECT nextval('ingest_seq') FROM range(?)", [n]).fetchall()
        ]

    def record_ingests(
        self, rows: list[tuple[int, str, str, str, int, int, int, int, int]]
    ) -> None:
        """Finished ingests of several files at once: (ingest_id, source, format,
        sha256, size, mtime_ns, n_records, n_new, n_bad)."""
        now = _now()
        cols = [
            "ingest_id",
            "source",
            "format",
            "source_sha256",
            "source_size",
            "source_mtime_ns",
            "n_records",
            "n_new",
            "n_bad",
        ]
        table = (
            pa.table({c: [r[k] for r in rows] for k, c in enumerate(cols)})
            .append_column("started_at", pa.array([now] * len(rows), pa.timestamp("us")))
            .append_column("finished_at", pa.array([now] * len(rows), pa.timestamp("us")))
        )
        self.con.register("_ingests", table)
        try:
            self.con.execute("INSERT INTO ingests BY NAME SELECT * FROM _ingests")
        finally:
            self.con.unregister("_ingests")

    def finish_ingest(self, ingest_id: int, result: AddResult, n_bad: int) -> None:
        self.con.execute(
            "UPDATE ingests SET finished_at=?, n_records=?, n_new=?, n_bad=? WHERE ingest_id=?",
            [_now(), result.n_records, result.n_new, n_bad, ingest_id],
        )

    def add_records(
        self,
        records: Iterable[ParsedRecord],
        *,
        source: str,
        ingest_id: int | None = None,
        merge: bool = True,
    ) -> AddResult:
        """Store record versions not seen before, mark the current versions
        and re-merge the trials they reach.

        Runs inside the caller's transaction if there is one, else its own.
        With ``merge=False`` the caller settles later: :meth:`settle` with
        the ingest ids (current versions and trials are stale until then).
        """
        with self.transaction():
            items = [(rec, *raw_and_digest(rec), source, ingest_id) for rec in records]
            flags = self._insert(items)
            result = AddResult(n_records=len(items), n_new=sum(flags))
            result.n_unchanged = result.n_records - result.n_new
            if merge and result.n_new:
                touched = {
                    (it[0].channel, it[0].record_id)
                    for it, new in zip(items, flags, strict=True)
                    if new
                }
                self.con.register(
                    "_touched_in",
                    pa.table(
                        {"channel": [t[0] for t in touched], "record_id": [t[1] for t in touched]}
                    ),
                )
                try:
                    self._settle_touched("SELECT channel, record_id FROM _touched_in", [])
                finally:
                    self.con.unregister("_touched_in")
        return result

    def add_staged(self, items: list[Staged]) -> list[bool]:
        """Insert (record, raw JSON, content hash, source, ingest_id) items,
        e.g. of several files at once (``raw`` and the hash from
        :func:`raw_and_digest`), without settling (see :meth:`settle`).
        Returns True for each record version new to the store."""
        with self.transaction():
            return self._insert(items)

    def settle(self, ingest_ids: list[int]) -> None:
        """Mark current versions and re-merge the trials reachable from the
        records these ingests added (inside the caller's transaction)."""
        if ingest_ids:
            with self.transaction():
                self._settle_touched(
                    "SELECT DISTINCT channel, record_id FROM records WHERE ingest_id IN (SELECT unnest(?))",
                    [ingest_ids],
                )

    def _settle_touched(self, touched_sql: str, params: list[Any]) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE _touched AS {touched_sql}", params)
        try:
            self._refresh_current()
            self._merge_touched()
        finally:
            self.con.execute("DROP TABLE IF EXISTS _versions")
            self.con.execute("DROP TABLE IF EXISTS _touched")

    def _insert(self, items: list[Staged]) -> list[bool]:
        flags = [False] * len(items)
        if not items:
            return flags
        now = _now()
        keyed: dict[str, int] = {}  # record_key -> item index
        for n, (rec, _, digest, _, _) in enumerate(items):
            keyed.setdefault(record_key(rec, digest), n)
        existing = self._stored_keys(list(keyed))
        cols: dict[str, list[Any]] = {c: [] for c in _RECORD_COLUMNS}
        child: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _CHILD_COLUMNS}
        for key, n in keyed.items():
            if key in existing:
                continue
            flags[n] = True
            rec, raw, digest, source, ingest_id = items[n]
            _record_row(cols, rec, key, digest, source, ingest_id, now, raw)
            _child_rows(child, rec, key)
        if cols["record_key"]:
            self._append("records", cols)
            for table, rows in child.items():
                if rows:
                    columns = zip(*rows, strict=True)
                    self._append(
                        table,
                        {c: list(v) for c, v in zip(_CHILD_COLUMNS[table], columns, strict=True)},
                    )
        return flags

    def add_tables(self, records: pa.Table, children: dict[str, pa.Table]) -> list[bool]:
        """:meth:`add_staged` of rows already built (:func:`staged_tables`, in
        worker processes): the record versions new to the store are appended
        (the first of a key repeated in ``records`` wins, as in :meth:`add_staged`),
        with their child rows (``_rec``: the row of ``records`` they belong to).
        Returns True for each record version new to the store."""
        keys = records.column("record_key").to_pylist()
        keyed: dict[str, int] = {}
        for n, key in enumerate(keys):
            keyed.setdefault(key, n)
        flags = [False] * len(keys)
        if not keys:
            return flags
        with self.transaction():
            existing = self._stored_keys(list(keyed))
            for key, n in keyed.items():
                if key not in existing:
                    flags[n] = True
            if not any(flags):
                return flags
            mask = pa.array(flags, type=pa.bool_())
            new = records.filter(mask)
            new = new.append_column(
                "ingested_at", pa.array([_now()] * new.num_rows, type=_ARROW_TYPES["ingested_at"])
            )
            self._append_table("records", new)
            for table, rows in children.items():
                if rows.num_rows:
                    keep = rows.filter(pc.take(mask, rows.column("_rec").combine_chunks()))
                    if keep.num_rows:
                        self._append_table(table, keep.drop_columns(["_rec"]))
        return flags

    def _stored_keys(self, keys: list[str]) -> set[str]:
        """The record keys among ``keys`` that ``records`` holds. A few keys
        (a small file, an API page) are looked up in the primary-key index
        (a constant ``IN`` list; its cost does not grow with the store);
        more are matched in one pass over the key column."""
        params: list[Any]
        if len(keys) <= INDEX_LOOKUP_KEYS:
            marks = ", ".join("?" * len(keys))
            sql, params = f"SELECT record_key FROM records WHERE record_key IN ({marks})", keys
        else:
            sql = "SELECT record_key FROM records WHERE record_key IN (SELECT unnest(?))"
            params = [keys]
        return {r[0] for r in self.con.execute(sql, params).fetchall()}

    def _append(self, table: str, data: dict[str, list[Any]]) -> None:
        self._append_table(
            table, pa.table({k: _arrow_column(table, k, v) for k, v in data.items()})
        )

    def _append_table(self, table: str, arrow: pa.Table) -> None:
        names = ", ".join(arrow.column_names)
        self.con.register("_incoming", arrow)
        try:
            self.con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _incoming")
        finally:
            self.con.unregister("_incoming")

    def _refresh_current(self) -> None:
        """Mark, per touched (channel, record_id), the version in use: latest
        registry update date, then the richer format, then the latest ingest.

        The touched pairs' versions are read in one pass over ``records``
        into ``_versions`` (row id, key, old and new flag); only rows whose
        flag changes are updated, found by row id (no second join on keys)."""
        rank_sql = " ".join(f"WHEN '{k}' THEN {f.rank}" for k, f in FORMATS.items() if f.rank)
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _versions AS
            SELECT r.rowid AS rid, r.record_key, r.is_current AS was_current,
                   row_number() OVER (
                       PARTITION BY r.channel, r.record_id
                       ORDER BY r.last_update DESC NULLS LAST,
                                CASE r.source_format {rank_sql} ELSE 0 END DESC,
                                r.ingested_at DESC, r.record_key DESC) = 1 AS now_current
            FROM records r SEMI JOIN _touched t USING (channel, record_id)
        """)
        self.con.execute("""
            UPDATE records SET is_current = v.now_current FROM _versions v
            WHERE records.rowid = v.rid AND v.was_current IS DISTINCT FROM v.now_current
        """)

    def _merge_touched(self) -> None:
        """Re-merge only the trials reachable from the touched records.

        Trials are connected components of current records sharing ids. The
        components after this change that contain a touched record are made
        of: the touched pairs' current records, and the (old) trials holding
        either an earlier version of a touched pair or a record sharing an id
        with a touched pair's current record — an untouched record linked to
        one of those was already in the same old trial. So only those trials
        are recomputed and rewritten; the result equals :meth:`merge_trials`.

        Each step reads the big tables once, joined to the small tables the
        step before made (``_versions`` from :meth:`_refresh_current`), so
        the work follows the number of touched records and the trials they
        reach; the old trials' rows are deleted by row id.
        """
        con = self.con
        try:
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _reached AS
                WITH cur_ids AS (
                    SELECT DISTINCT id_key FROM record_ids
                    WHERE record_key IN (SELECT record_key FROM _versions WHERE now_current)
                )
                SELECT record_key FROM _versions
                UNION
                SELECT record_key FROM record_ids WHERE id_key IN (SELECT id_key FROM cur_ids)""")
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _members AS
                SELECT rowid AS rid, record_key FROM trial_records
                WHERE trial_id IN (
                    SELECT trial_id FROM trial_records
                    WHERE record_key IN (SELECT record_key FROM _reached))""")
            con.execute("DELETE FROM trial_records WHERE rowid IN (SELECT rid FROM _members)")
            self._write_components(
                "SELECT record_key FROM _members UNION ALL SELECT record_key FROM _versions WHERE now_current"
            )
        finally:
            con.execute("DROP TABLE IF EXISTS _members")
            con.execute("DROP TABLE IF EXISTS _reached")

    def merge_trials(self) -> None:
        """Recompute all trials as connected components of current records sharing ids."""
        self.con.execute("DELETE FROM trial_records")
        self._write_components(None)

    def _write_components(self, keys_sql: str | None) -> None:
        """Write the trials of the current records among the keys ``keys_sql``
        selects (all current records for None); they must be a closed set: no
        current record outside it shares an id with one inside.

        ``records`` and ``record_ids`` are read once each (the scope's merge
        columns and ids go to temporary tables; a scope of up to
        :data:`INDEX_LOOKUP_KEYS` records is found in the key index). Only records sharing an id
        with another record in scope are grouped in memory
        (:func:`group_records`); every other record is a trial of its own and
        goes through in chunks of :data:`MERGE_CHUNK`, so memory stays
        bounded however many records a file brings."""
        con = self.con
        where, order, params = "", "", []
        if keys_sql is not None:
            rows = con.execute(
                f"SELECT DISTINCT record_key FROM ({keys_sql}) LIMIT {INDEX_LOOKUP_KEYS + 1}"
            ).fetchall()
            if not rows:
                return
            if len(rows) <= INDEX_LOOKUP_KEYS:  # a few: looked up in the key index
                params = [r[0] for r in rows]
                where = f"AND record_key IN ({', '.join('?' * len(params))})"
                order = "ORDER BY rowid"  # table order, as a scan gives
            else:
                where = f"AND record_key IN ({keys_sql})"
        try:
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE _scope AS
                SELECT {_MERGE_COLUMNS} FROM records WHERE is_current {where} {order}""",
                params,
            )
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _scope_ids AS
                SELECT i.record_key, i.id_key FROM record_ids i
                WHERE i.record_key IN (SELECT record_key FROM _scope)""")
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _linked AS
                WITH shared AS (
                    SELECT id_key FROM _scope_ids GROUP BY id_key HAVING count(DISTINCT record_key) > 1
                )
                SELECT DISTINCT record_key FROM _scope_ids JOIN shared USING (id_key)""")
            recs = con.execute(f"""
                SELECT {_MERGE_COLUMNS} FROM _scope
                WHERE record_key IN (SELECT record_key FROM _linked)""").fetchall()
            ids = con.execute("""
                SELECT record_key, id_key FROM _scope_ids
                WHERE record_key IN (SELECT record_key FROM _linked)""").fetchall()
            self._write_trials(recs, ids)
            del recs, ids
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE _single AS
                SELECT row_number() OVER () AS rn, {_MERGE_COLUMNS} FROM _scope
                WHERE record_key NOT IN (SELECT record_key FROM _linked)""")
            row = con.execute("SELECT count(*) FROM _single").fetchone()
            n = int(row[0]) if row else 0
            for lo in range(0, n, MERGE_CHUNK):
                chunk = con.execute(
                    f"SELECT {_MERGE_COLUMNS} FROM _single WHERE rn > ? AND rn <= ?",
                    [lo, lo + MERGE_CHUNK],
                ).fetchall()
                self._write_trials(chunk, [])  # no shared ids: one trial per record
        finally:
            for table in ("_single", "_linked", "_scope_ids", "_scope"):
                con.execute(f"DROP TABLE IF EXISTS {table}")

    def _write_trials(self, recs: list[Any], ids: list[Any]) -> None:

        rows = group_records(recs, ids)
        if rows:
            self._append(
                "trial_records",
                {
                    "trial_id": [r[0] for r in rows],
                    "record_key": [r[1] for r in rows],
                    "is_primary": [r[2] for r in rows],
                    "n_records": [r[3] for r in rows],
                    "merge_reason": [r[4] for r in rows],
                },
            )

    # ----------------------------------------------------------------- reading
    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        return self.con.execute(sql, params or []).df()

    def trials(self) -> pd.DataFrame:
        """One row per merged trial (its primary record's normalised fields),
        with the classifier's labels (multi-values as lists) when the store has them."""
        if self.has_label_table():
            picked = ", ".join(f'l."{c}"' for c in _LABEL_READ_COLUMNS)
            return self.query(
                f"SELECT t.*, {picked} FROM trials t LEFT JOIN labels l USING (trial_id) ORDER BY trial_id"
            )
        return self.query("SELECT * FROM trials ORDER BY trial_id")

    def has_label_table(self) -> bool:
        """Whether the store has the ``labels`` table (every store opened for
        writing has; it may be empty)."""
        try:
            self.con.execute("SELECT 1 FROM labels LIMIT 0")
        except duckdb.CatalogException:  # a read-only store older than migration 2
            return False
        return True

    # ------------------------------------------------------------------ labels
    # (the classifier's output; :mod:`celltrials.labelling` writes and reads it)
    def has_labels(self) -> bool:
        """Whether any trial has labels (``celltrials classify`` has run)."""
        try:
            return bool(self.con.execute("SELECT 1 FROM labels LIMIT 1").fetchall())
        except duckdb.CatalogException:  # a read-only store older than migration 2
            return False

    def n_cell_therapy_trials(self) -> int:
        """Trials labelled cell therapy."""
        return int(
            self.con.execute("SELECT count(*) FROM labels WHERE is_cell_therapy").fetchall()[0][0]
        )

    def label_versions(self) -> dict[str, tuple[str, str]]:
        """Trial id → (taxonomy version, input hash) of its stored labels."""
        return {
            str(tid): (str(ver), str(h))
            for tid, ver, h in self.con.execute(
                "SELECT trial_id, taxonomy_version, input_hash FROM labels"
            ).fetchall()
        }

    def write_labels(
        self,
        labels: Sequence[Mapping[str, Any]],
        evidence: Sequence[Mapping[str, Any]],
        *,
        partial: bool = False,
        drop: Iterable[str] = (),
    ) -> None:
        """Store labels and their evidence, all or nothing.

        ``labels`` rows have the :data:`LABEL_TABLE_COLUMNS` (multi-values as
        lists of strings), ``evidence`` rows the :data:`EVIDENCE_COLUMNS`.
        They replace every stored label, or with ``partial`` only those of
        their trials (and the trials in ``drop`` lose theirs)."""
        with self.label_staging() as stage:
            stage.add(labels, evidence)
            stage.publish(partial=partial, drop=drop)

    @contextlib.contextmanager
    def label_staging(self) -> Iterator[LabelStaging]:
        """A :class:`LabelStaging` of this store: labels are added batch by batch
        to temporary tables (the stored labels are untouched) and published in
        one short transaction; the temporary tables are dropped on leaving."""
        stage = LabelStaging(self)
        try:
            yield stage
        finally:
            stage.close()

    def label_rows(self, trial_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Stored labels (of every trial, or of ``trial_ids``), one dict per trial
        ordered by trial id: the :data:`LABEL_TABLE_COLUMNS` typed (multi-values
        as lists, ``is_cell_therapy`` a bool) and the trial's ``primary_record_id``
        (None for a trial no longer in the store)."""
        cols = ", ".join(f'l."{c}"' for c in LABEL_TABLE_COLUMNS)
        names = (*LABEL_TABLE_COLUMNS, "primary_record_id")
        if trial_ids is not None:
            # filter each table by trial id before joining (the join of every
            # label with the ``trials`` view costs ≈30 ms at 100,000 trials)
            ids = sorted(set(trial_ids))
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            rows = self.con.execute(
                f"SELECT {cols} FROM labels l WHERE l.trial_id IN ({marks}) ORDER BY l.trial_id",
                ids,
            ).fetchall()
            primary = dict(
                self.con.execute(
                    "SELECT tr.trial_id, r.record_id FROM trial_records tr JOIN records r "
                    f"ON r.record_key = tr.record_key WHERE tr.is_primary AND tr.trial_id IN ({marks}) "
                    "AND r.record_key IN (SELECT record_key FROM trial_records "
                    f"WHERE is_primary AND trial_id IN ({marks}))",
                    [*ids, *ids],
                ).fetchall()
            )
            return [dict(zip(names, (*r, primary.get(r[0])), strict=True)) for r in rows]
        rows = self.con.execute(
            f"SELECT {cols}, t.primary_record_id FROM labels l LEFT JOIN trials t USING (trial_id) "
            "ORDER BY l.trial_id"
        ).fetchall()
        return [dict(zip(names, r, strict=True)) for r in rows]

    def label_evidence(self, trial_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Evidence rows (field, value, source_field, text, start, end) by trial id
        (every trial, or one)."""
        sql = 'SELECT trial_id, field, value, source_field, text, start, "end" FROM label_evidence'
        params: list[Any] = []
        if trial_id is not None:
            sql += " WHERE trial_id = ?"
            params.append(trial_id)
        out: dict[str, list[dict[str, Any]]] = {}
        for tid, *values in self.con.execute(sql, params).fetchall():
            out.setdefault(tid, []).append(dict(zip(EVIDENCE_COLUMNS[1:], values, strict=True)))
        return out

    def trial_registry_ids(self) -> dict[str, list[str]]:
        """Trial id → every id it is known by (its records' ids and the raw
        registry ids they name), distinct and sorted."""
        out: dict[str, set[str]] = {}
        for tid, rid in self.con.execute("""
            SELECT DISTINCT tr.trial_id, r.record_id FROM trial_records tr JOIN records r USING (record_key)
            UNION SELECT DISTINCT trial_id, id_raw FROM trial_ids""").fetchall():
            if rid and str(rid).strip():
                out.setdefault(str(tid), set()).add(str(rid).strip())
        return {tid: sorted(ids) for tid, ids in sorted(out.items())}

    def sorted_trial_ids(self) -> list[str]:
        """Every merged trial's id, sorted."""
        return [
            str(r[0])
            for r in self.con.execute(
                "SELECT DISTINCT trial_id FROM trial_records ORDER BY trial_id"
            ).fetchall()
        ]

    def text_records(
        self,
        trial_ids: Iterable[str] | None = None,
        *,
        between: tuple[str, str] | None = None,
    ) -> dict[str, list[ParsedRecord]]:
        """Each trial's current records (primary first) with the texts a
        classifier reads: titles, acronym, summaries, conditions, MeSH terms
        and ancestors, keywords, interventions and arms (no raw JSON).

        ``between`` (first, last): only the trials whose id is in that range
        (inclusive; filtered in SQL, so a large store can be read chunk by chunk)."""
        wanted = set(trial_ids) if trial_ids is not None else None
        if wanted is None or len(wanted) > 1000:
            table = records_from_text_table(self.text_table(between))
            if wanted is not None:
                return {t: rs for t, rs in table.items() if t in wanted}
            return table
        # a few trials (explain, the dashboard): filter in SQL, not over the whole
        # store, by constant keys, in two steps (trial → record keys → records):
        # DuckDB then reads only those trials' row groups and the records' index entries
        con = self.con
        tids = sorted(wanted)
        if not tids:
            return {}
        links = con.execute(
            "SELECT trial_id, record_key, is_primary FROM trial_records "
            f"WHERE trial_id IN ({', '.join('?' * len(tids))})",
            tids,
        ).fetchall()
        if not links:
            return {}
        got = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT record_key, record_id, channel, source_format, registry, title, "
                "official_title, acronym, brief_summary, detailed_description FROM records "
                f"WHERE record_key IN ({', '.join('?' * len(links))})",
                [k for _t, k, _p in links],
            ).fetchall()
        }
        recs: dict[str, ParsedRecord] = {}
        by_trial: dict[str, list[ParsedRecord]] = {}
        for tid, key, _p in sorted(links, key=lambda x: (x[0], not x[2], x[1])):
            if key in got:
                recs[key] = _text_record(*got[key])
                by_trial.setdefault(tid, []).append(recs[key])
        if not recs:
            return by_trial
        # filters on literal keys keep table order (the order of conditions); the
        # dashboard reads through views of sorted copies, which have no rowid
        keys_sql = f"WHERE record_key IN ({', '.join('?' * len(recs))})"
        keys = list(recs)
        for key, cond, kind in con.execute(
            f"SELECT record_key, condition, kind FROM record_conditions {keys_sql}", keys
        ).fetchall():
            crec = recs.get(key)
            if crec is not None and cond:
                getattr(crec, _CONDITION_LISTS.get(kind, "conditions")).append(cond)
        for key, _idx, typ, name, desc, other, arms in con.execute(
            f"SELECT record_key, idx, type, name, description, other_names, arm_labels FROM record_interventions {keys_sql} ORDER BY record_key, idx",
            keys,
        ).fetchall():
            irec = recs.get(key)
            if irec is not None:
                irec.interventions.append(
                    Intervention(
                        typ or "", name or "", desc or "", list(other or []), list(arms or [])
                    )
                )
        for key, _idx, label, typ, desc, names in con.execute(
            f"SELECT record_key, idx, label, type, description, intervention_names FROM record_arms {keys_sql} ORDER BY record_key, idx",
            keys,
        ).fetchall():
            arec = recs.get(key)
            if arec is not None:
                arec.arms.append(Arm(label or "", typ or "", desc or "", list(names or [])))
        return by_trial

    def text_table(self, between: tuple[str, str] | None = None) -> pa.Table:
        """The classifier's input as one Arrow table (built in DuckDB and Arrow, no
        Python row objects): a row per (trial, current record), ordered by trial id
        with the primary record first, holding the record's texts and its
        ``conditions`` (list of {condition, kind} in table order), ``interventions``
        and ``arms`` (lists of structs in their order). :func:`records_from_text_table`
        turns it into records. ``between`` (first, last): only the trials in that id range."""
        where, params = ("WHERE trial_id BETWEEN ? AND ?", list(between)) if between else ("", [])
        tr = f"WITH tr AS (SELECT trial_id, record_key, is_primary FROM trial_records {where}) "
        # the range's record keys also as a key range: DuckDB then skips the row
        # groups of other records by their min/max statistics, where the join and
        # IN alone read every row group of records and the child tables (the 22
        # chunks of a 540,000-trial store: 35 CPU-s without, 14 with)
        keys_in = ""
        if between:
            lo_hi = self.con.execute(
                f"{tr} SELECT min(record_key), max(record_key) FROM tr", params
            ).fetchall()[0]
            keys_in, params = "record_key BETWEEN ? AND ?", [*params, *lo_hi]
        base = self.con.sql(
            tr
            + f"""
            SELECT tr.trial_id, r.record_key, r.record_id, r.channel, r.source_format, r.registry,
                   r.title, r.official_title, r.acronym, r.brief_summary, r.detailed_description
            FROM tr JOIN records r USING (record_key) {"WHERE r." + keys_in if keys_in else ""}
            ORDER BY tr.trial_id, tr.is_primary DESC, r.record_key""",
            params=params,
        ).to_arrow_table()
        keys = base.column("record_key")
        also = "AND " + keys_in if keys_in else ""
        lists = {
            name: _child_lists(
                self.con.sql(
                    f"{tr} SELECT record_key, {', '.join(fields)} FROM {table} "
                    f"WHERE record_key IN (SELECT record_key FROM tr) {also} "
                    f"ORDER BY record_key, {order}",
                    params=params,
                ).to_arrow_table(),
                keys,
            )
            for name, (table, fields, order) in _TEXT_TABLE_CHILDREN.items()
        }
        base = base.drop_columns(["record_key"])
        for name, column in lists.items():
            base = base.append_column(name, column)
        return base

    def trial_title(self, trial_id: str) -> str:
        """The title of a trial's primary record ("" if none)."""
        rows = self.con.execute(
            "SELECT title FROM trials WHERE trial_id = ?", [trial_id]
        ).fetchall()
        return str(rows[0][0] or "") if rows else ""

    # ----------------------------------------------------------- product links
    # (trials naming catalogued products; :mod:`celltrials.products` computes them)
    def write_product_links(self, links: pd.DataFrame) -> None:
        """Replace every stored product link with ``links`` (the
        :data:`PRODUCT_LINK_COLUMNS`), all or nothing."""
        table = pa.table(
            {
                c: pa.array([None if pd.isna(v) else str(v) for v in links[c]], pa.string())
                for c in PRODUCT_LINK_COLUMNS
            }
        )
        self.con.register("_new_product_links", table)
        try:
            with self.transaction() as con:
                con.execute("DELETE FROM product_links")
                con.execute("INSERT INTO product_links BY NAME SELECT * FROM _new_product_links")
        finally:
            with contextlib.suppress(duckdb.Error):  # inside a failed outer transaction
                self.con.unregister("_new_product_links")

    def product_links(self, product: str | None = None) -> pd.DataFrame:
        """Stored product links (of every product, or one), ordered by trial,
        product and field; an empty frame when links were never computed."""
        where, params = ("WHERE product = ?", [product]) if product is not None else ("", [])
        try:
            return self.query(
                f"SELECT * FROM product_links {where} ORDER BY trial_id, product, field", params
            )
        except duckdb.CatalogException:  # a read-only store older than migration 4
            return pd.DataFrame(columns=list(PRODUCT_LINK_COLUMNS))

    def records(self, *, current_only: bool = True, with_raw: bool = False) -> pd.DataFrame:
        """Record versions (``with_raw``: with ``raw``, the JSON text)."""
        cols = "*" if with_raw else "* EXCLUDE (raw)"
        where = "WHERE is_current" if current_only else ""
        df = self.query(
            f"SELECT {cols} FROM records {where} ORDER BY channel, record_id, ingested_at"
        )
        if with_raw:
            df["raw"] = df["raw"].map(raw_text)
        return df

    def table(self, name: str) -> pd.DataFrame:
        """A child view by name: conditions, interventions, arms, countries, sponsors, outcomes, trial_ids."""
        allowed = {
            "conditions",
            "interventions",
            "arms",
            "countries",
            "regions",
            "sponsors",
            "outcomes",
            "trial_ids",
            "trial_records",
            "ingests",
            "labels",
            "label_evidence",
        }
        if name in ("labels", "label_evidence") and not self.has_label_table():
            raise StoreError(f"no {name} in {self.path}", hint="Run `celltrials classify` first.")
        if name not in allowed:
            raise StoreError(
                f"unknown table {name!r}", hint=f"One of: {', '.join(sorted(allowed))}"
            )
        return self.query(f"SELECT * FROM {name}")

    def resolve(self, any_id: str) -> str | None:
        """The trial id for any registry id (primary or secondary, any spelling)."""
        return self.resolve_many([any_id])[any_id]

    def resolve_many(self, any_ids: Iterable[str]) -> dict[str, str | None]:
        """:meth:`resolve` for many ids at once: ``{id: trial id or None}``.

        An id is looked up as a trial's id, then as a record's id, then by its
        canonical key among every trial's ids (the first trial id in sort order
        when several trials hold it). Three set queries, each a filter on one
        column, rather than one query per id: a join filtered by ``a OR b``
        scans every record, 0.17 s per id at 560,000 trials."""
        wanted = list(dict.fromkeys(any_ids))
        if not wanted:
            return {}
        con = self.con
        texts = {i: i.strip() for i in wanted}
        as_trial = {i: trial_id_for(t) for i, t in texts.items()}
        found = {
            str(r[0])
            for r in con.execute(
                "SELECT DISTINCT trial_id FROM trial_records WHERE trial_id IN (SELECT unnest(?))",
                [sorted(set(as_trial.values()))],
            ).fetchall()
        }
        out = {i: as_trial[i] if as_trial[i] in found else None for i in wanted}
        rest = [i for i in wanted if out[i] is None]
        if rest:
            by_record = dict(
                con.execute(
                    """
                    SELECT r.record_id, min(tr.trial_id) FROM records r
                    JOIN trial_records tr USING (record_key)
                    WHERE r.record_id IN (SELECT unnest(?)) GROUP BY r.record_id""",
                    [sorted({texts[i] for i in rest})],
                ).fetchall()
            )
            for i in rest:
                out[i] = by_record.get(texts[i])
            rest = [i for i in rest if out[i] is None]
        keys = {i: rid.key for i in rest if (rid := canonical_id(texts[i])) is not None}
        if keys:
            by_key = dict(
                con.execute(
                    "SELECT id_key, min(trial_id) FROM trial_ids "
                    "WHERE id_key IN (SELECT unnest(?)) GROUP BY id_key",
                    [sorted(set(keys.values()))],
                ).fetchall()
            )
            for i, key in keys.items():
                out[i] = by_key.get(key)
        return out

    def trial(self, any_id: str) -> dict[str, Any] | None:
        """A trial with its ids, child rows and every source record (newest first)."""
        trial_id = self.resolve(any_id)
        if trial_id is None:
            return None
        t = self.query("SELECT * FROM trials WHERE trial_id = ?", [trial_id]).to_dict("records")[0]
        out: dict[str, Any] = {str(k): _plain(v) for k, v in t.items()}
        out["ids"] = self.query(
            "SELECT id_key, id_raw, registry FROM trial_ids WHERE trial_id=? ORDER BY id_key",
            [trial_id],
        ).to_dict("records")
        for name in ("conditions", "interventions", "arms", "countries", "sponsors", "outcomes"):
            df = self.query(
                f"SELECT * EXCLUDE (trial_id) FROM {name} WHERE trial_id = ?", [trial_id]
            )
            out[name] = [
                {str(k): _plain(v) for k, v in row.items()} for row in df.to_dict("records")
            ]
        recs = self.query(
            """
            SELECT r.record_key, r.channel, r.record_id, r.registry, r.source_format, r.source, r.position,
                   r.content_hash, r.last_update, r.ingested_at, r.is_current, tr.is_primary, tr.merge_reason
            FROM records r
            LEFT JOIN trial_records tr USING (record_key)
            WHERE (r.channel, r.record_id) IN (
                SELECT (r2.channel, r2.record_id) FROM trial_records t2 JOIN records r2 USING (record_key) WHERE t2.trial_id = ?)
            ORDER BY r.channel, r.record_id, r.ingested_at DESC""",
            [trial_id],
        )
        out["records"] = [
            {str(k): _plain(v) for k, v in row.items()} for row in recs.to_dict("records")
        ]
        out["labels"] = None
        if self.has_label_table():
            lab = self.label_rows([trial_id])
            if lab:  # multi-values ;-joined, as the labels file writes them
                out["labels"] = {c: _plain(label_text(lab[0][c])) for c in _LABEL_READ_COLUMNS}
        return out

    def raw_record(self, record_key: str) -> Any:
        row = self.con.execute(
            "SELECT raw FROM records WHERE record_key = ?", [record_key]
        ).fetchone()
        return decode_raw(row[0]) if row else None


# ------------------------------------------------------------------ locking
_LOCK_RE = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


@dataclass
class LockHolder:
    """The process holding a DuckDB store (from DuckDB's lock error)."""

    pid: int
    executable: str
    command: str

    def describe(self) -> str:
        return f"process {self.pid} ({self.command or self.executable})"


def lock_holder(message: str) -> LockHolder | None:
    """Parse DuckDB's "Conflicting lock is held in EXE (PID N)" error; the
    command line comes from /proc when readable."""
    m = _LOCK_RE.search(message)
    if not m:
        return None
    pid = int(m.group("pid"))
    cmd = ""
    with contextlib.suppress(OSError):
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        parts = [p.decode("utf-8", "replace") for p in raw.split(b"\0") if p]
        cmd = " ".join(Path(p).name if i == 0 else p for i, p in enumerate(parts))[:200]
    return LockHolder(pid, m.group("exe"), cmd)


#: rows per DuckDB row group of a store opened for writing (DuckDB's default
#: is 122,880). A checkpoint rewrites — decompresses and compresses again —
#: every column of each row group that received rows since the one before,
#: and a large file is ingested in committed batches: with the default, each
#: checkpoint rewrote the whole growing last row group (up to 122,880
#: studies' raw JSON), a cost that grew with the file (150,000 mix studies:
#: commits took 35 s of the main process's 71 CPU-s; with 16,384 rows, 7.7 s
#: of 38.5 s). Only the row groups this connection writes follow it: a store
#: written with another size reads (and is written to) as before.
STORE_ROW_GROUP_SIZE = 16_384


def _open_duckdb(db: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """The DuckDB connection of a store: a file opened for writing is attached
    (as ``store``, the only database, so every cursor reads it too) to set its
    row group size (:data:`STORE_ROW_GROUP_SIZE`); temporary files go beside
    it, as DuckDB puts them for a file it opens itself."""
    if read_only or db == ":memory:":
        return duckdb.connect(db, read_only=read_only)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET temp_directory = ?", [f"{db}.tmp"])
        path = str(db).replace("'", "''")
        con.execute(f"ATTACH '{path}' AS store (ROW_GROUP_SIZE {STORE_ROW_GROUP_SIZE})")
        con.execute("USE store")
        # and the only one: a cursor (a new connection) starts in the store too
        con.execute("DETACH memory")
    except BaseException:
        con.close()
        raise
    return con


def _connect(db: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file. DuckDB lets one process write a file and, while
    it does, no other process open it; any open connection keeps writers out.
    A locked store is retried for ``CELLTRIALS_LOCK_WAIT`` seconds (default 10;
    e.g. while ``celltrials serve`` copies its snapshot), then the error names
    the process holding it."""
    try:
        wait = float(os.environ.get("CELLTRIALS_LOCK_WAIT", "10"))
    except ValueError:
        wait = 10.0
    deadline = time.monotonic() + wait
    while True:
        try:
            con = _open_duckdb(db, read_only)
            # no progress bar: DuckDB draws one on stdout for queries over 2 s (e.g. merging on a busy
            # machine), which would break `--json` output
            con.execute("SET enable_progress_bar = false")
            return con
        except duckdb.Error as exc:
            holder = lock_holder(str(exc))
            if holder is None:
                text = str(exc)
                damaged = any(
                    w in text
                    for w in (
                        "not a valid DuckDB database",
                        "Corrupt database",
                        "Could not read enough bytes",
                    )
                )
                raise StoreError(
                    f"cannot open store {db}: {text.splitlines()[0] if text else type(exc).__name__}",
                    hint=(
                        "The file is damaged, truncated or not a celltrials store: move it aside and rebuild "
                        "it with `celltrials ingest` (or pass --db another file)."
                        if damaged
                        else None
                    ),
                ) from None
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            if read_only:
                raise StoreError(
                    f"store {db} is being written by {holder.describe()}; DuckDB lets no other process "
                    "read a store while one writes it",
                    hint="Run this command again when that process has finished "
                    "(a running `celltrials serve` keeps showing its last snapshot meanwhile).",
                ) from None
            raise StoreError(
                f"store {db} is in use by {holder.describe()}; DuckDB lets only one process write a store, "
                "and none while another has it open",
                hint="Wait for that process to finish (or stop it), then run this command again.",
            ) from None


# ------------------------------------------------------------------ row making
_RECORD_COLUMNS = [
    "record_key",
    "channel",
    "record_id",
    "registry",
    "source_format",
    "source",
    "position",
    "content_hash",
    "last_update",
    "ingest_id",
    "ingested_at",
    "is_current",
    "title",
    "official_title",
    "acronym",
    "brief_summary",
    "detailed_description",
    "keywords",
    "status",
    "status_raw",
    "why_stopped",
    "phase",
    "phase_raw",
    "study_type",
    "start_date",
    "start_date_precision",
    "completion_date",
    "completion_date_precision",
    "registration_date",
    "enrollment",
    "enrollment_type",
    "enrollment_raw",
    "lead_sponsor",
    "sponsor_class",
    "eligibility",
    "has_results",
    "url",
    "raw",
    "study_type_raw",
    "lead_sponsor_raw",
    "lead_sponsor_key",
    "export_date",
]
_CHILD_COLUMNS = {
    "record_ids": ["record_key", "id_key", "id_raw", "registry", "is_primary"],
    "record_conditions": ["record_key", "condition", "kind"],
    "record_interventions": [
        "record_key",
        "idx",
        "type",
        "name",
        "description",
        "other_names",
        "arm_labels",
    ],
    "record_arms": ["record_key", "idx", "label", "type", "description", "intervention_names"],
    "record_countries": ["record_key", "country", "country_raw", "iso2", "iso3"],
    "record_regions": ["record_key", "region", "region_raw"],
    "record_sponsors": ["record_key", "name", "role", "class", "name_raw", "name_key"],
    "record_text_repairs": ["record_key", "field", "kinds", "raw", "repaired"],
    "record_outcomes": ["record_key", "kind", "measure", "time_frame", "description"],
}
_ARROW_TYPES: dict[str, pa.DataType] = {
    "position": pa.int32(),
    "ingest_id": pa.int32(),
    "enrollment": pa.int64(),
    "idx": pa.int32(),
    "last_update": pa.date32(),
    "start_date": pa.date32(),
    "completion_date": pa.date32(),
    "registration_date": pa.date32(),
    "ingested_at": pa.timestamp("us"),
    "keywords": pa.list_(pa.string()),
    "other_names": pa.list_(pa.string()),
    "arm_labels": pa.list_(pa.string()),
    "intervention_names": pa.list_(pa.string()),
    "kinds": pa.list_(pa.string()),
    "is_current": pa.bool_(),
    "has_results": pa.bool_(),
    "is_primary": pa.bool_(),
    "n_records": pa.int32(),
}
for _c in (
    _RECORD_COLUMNS
    + [c for cs in _CHILD_COLUMNS.values() for c in cs]
    + ["trial_id", "merge_reason"]
):
    _ARROW_TYPES.setdefault(_c, pa.string())


def _arrow_column(table: str, name: str, values: list[Any]) -> pa.Array:
    if table == "records" and name == "raw":
        return pa.array(values, type=pa.binary())
    return pa.array(values, type=_ARROW_TYPES.get(name))


def raw_and_digest(rec: ParsedRecord) -> tuple[bytes, str]:
    """The raw JSON to store and the content hash, from one serialisation
    when no volatile key is left out (the stored text is the hashed, key-sorted one)."""
    finish_record(rec)  # no-op for parser output; completes records built elsewhere
    exclude = volatile_fields(rec.source_format)
    if exclude:
        return orjson.dumps(rec.raw, default=str), content_hash(rec.raw, exclude=exclude)
    raw = orjson.dumps(rec.raw, option=orjson.OPT_SORT_KEYS, default=str)
    return raw, hashlib.sha256(raw).hexdigest()


def _export_date(source_format: str, raw: bytes) -> str | None:
    if source_format not in _STAMPED_FORMATS:
        return None
    stamp = orjson.loads(raw).get("export_date")
    return None if stamp is None else str(stamp)


def _record_row(
    cols: dict[str, list[Any]],
    rec: ParsedRecord,
    key: str,
    digest: str,
    source: str,
    ingest_id: int | None,
    now: datetime,
    raw: bytes,
) -> None:
    lead = next((s for s in rec.sponsors if s.role == "lead"), None)
    values = {
        "record_key": key,
        "channel": rec.channel,
        "record_id": rec.record_id,
        "registry": rec.registry,
        "source_format": rec.source_format,
        "source": source,
        "position": rec.position,
        "content_hash": digest,
        "last_update": rec.last_update.value if rec.last_update else None,
        "ingest_id": ingest_id,
        "ingested_at": now,
        "is_current": False,
        "title": rec.title,
        "official_title": rec.official_title,
        "acronym": rec.acronym,
        "brief_summary": rec.brief_summary,
        "detailed_description": rec.detailed_description,
        "keywords": rec.keywords,
        "status": rec.status,
        "status_raw": rec.status_raw,
        "why_stopped": rec.why_stopped,
        "phase": rec.phase,
        "phase_raw": rec.phase_raw,
        "study_type": rec.study_type,
        "start_date": rec.start_date.value if rec.start_date else None,
        "start_date_precision": rec.start_date.precision if rec.start_date else None,
        "completion_date": rec.completion_date.value if rec.completion_date else None,
        "completion_date_precision": rec.completion_date.precision if rec.completion_date else None,
        "registration_date": rec.registration_date.value if rec.registration_date else None,
        "enrollment": rec.enrollment.count if rec.enrollment else None,
        "enrollment_type": rec.enrollment.kind if rec.enrollment else None,
        "enrollment_raw": rec.enrollment.raw if rec.enrollment else None,
        "lead_sponsor": lead.name if lead else None,
        "sponsor_class": lead.sponsor_class if lead else None,
        "eligibility": rec.eligibility,
        "has_results": rec.has_results,
        "url": rec.url,
        # compressed here, in the ingest worker that parsed it: DuckDB's own
        # compression of the JSON text cost the single writer a third of its time
        "raw": compress_raw(raw),
        "study_type_raw": rec.study_type_raw,
        "lead_sponsor_raw": lead.name_raw if lead else None,
        "lead_sponsor_key": lead.key if lead else None,
        "export_date": _export_date(rec.source_format, raw),
    }
    for k, v in values.items():
        cols[k].append(v)


def _child_rows(child: dict[str, list[tuple[Any, ...]]], rec: ParsedRecord, key: str) -> None:
    """Append the record's child rows (tuples in :data:`_CHILD_COLUMNS` order) per table."""
    ids, conds = child["record_ids"], child["record_conditions"]
    ids.extend((key, rid.key, rid.raw, rid.registry, rid.is_primary) for rid in rec.ids)
    conds.extend((key, c, "condition") for c in rec.conditions)
    conds.extend((key, c, "mesh") for c in rec.mesh_terms)
    conds.extend((key, c, "mesh_ancestor") for c in rec.mesh_ancestors)
    conds.extend((key, c, "keyword") for c in rec.keywords)
    child["record_interventions"].extend(
        (key, i, x.type, x.name, x.description, x.other_names, x.arm_labels)
        for i, x in enumerate(rec.interventions)
    )
    child["record_arms"].extend(
        (key, i, a.label, a.type, a.description, a.intervention_names)
        for i, a in enumerate(rec.arms)
    )
    seen_places: set[tuple[str, str]] = set()
    for raw, place in rec.places:
        if (raw, place.name) in seen_places:
            continue
        seen_places.add((raw, place.name))
        if place.kind == "region":
            child["record_regions"].append((key, place.name, raw))
        else:
            child["record_countries"].append((key, place.name or None, raw, place.iso2, place.iso3))
    child["record_sponsors"].extend(
        (key, s.name, s.role, s.sponsor_class, s.name_raw, s.key) for s in rec.sponsors
    )
    child["record_text_repairs"].extend(
        (key, fix.field, list(fix.kinds), fix.raw, fix.repaired) for fix in rec.repairs
    )
    child["record_outcomes"].extend(
        (key, o.kind, o.measure, o.time_frame, o.description) for o in rec.outcomes
    )


def staged_tables(
    items: list[tuple[ParsedRecord, bytes, str]], source: str, ingest_id: int | None
) -> tuple[pa.Table, dict[str, pa.Table]]:
    """The rows :meth:`Store.add_staged` would write for ``items`` (record, raw
    JSON, content hash), every one of them, as Arrow: the ``records`` table
    (``raw`` as plain binary, no ``ingested_at``: :meth:`Store.add_tables`
    adds both) and each child table with ``_rec``, the row of its record."""
    cols: dict[str, list[Any]] = {c: [] for c in _RECORD_COLUMNS}
    child: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _CHILD_COLUMNS}
    owner: dict[str, list[int]] = {t: [] for t in _CHILD_COLUMNS}
    now = _now()  # (not stored: the writer's time is)
    for n, (rec, raw, digest) in enumerate(items):
        key = record_key(rec, digest)
        _record_row(cols, rec, key, digest, source, ingest_id, now, raw)
        before = {t: len(rows) for t, rows in child.items()}
        _child_rows(child, rec, key)
        for t, rows in child.items():
            owner[t].extend([n] * (len(rows) - before[t]))
    del cols["ingested_at"]
    records = pa.table(
        {
            k: pa.array(v, type=pa.binary()) if k == "raw" else _arrow_column("records", k, v)
            for k, v in cols.items()
        }
    )
    tables = {}
    for t, rows in child.items():
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(_CHILD_COLUMNS[t])
        data = {
            c: _arrow_column(t, c, list(v)) for c, v in zip(_CHILD_COLUMNS[t], columns, strict=True)
        }
        data["_rec"] = pa.array(owner[t], type=pa.int32())
        tables[t] = pa.table(data)
    return records, tables


#: the label columns a reader of a trial wants (not the key, not the run's input hash)
_LABEL_READ_COLUMNS = tuple(c for c in LABEL_TABLE_COLUMNS if c not in ("trial_id", "input_hash"))


#: label and evidence rows a :class:`LabelStaging` holds before inserting them: one
#: INSERT of 20 units' Arrow tables (1,000 trials, ~13,000 evidence rows each) cost
#: a third of the CPU of 20 INSERTs (DuckDB's cost per statement); ~15 MB held
STAGE_ROWS = 200_000


class LabelStaging:
    """Labels written in batches, published all or nothing (see
    :meth:`Store.label_staging`): :meth:`add` appends rows to temporary
    tables, :meth:`publish` replaces the stored labels with them in one
    transaction. Evidence keeps the order it was added in."""

    def __init__(self, store: Store) -> None:
        self.store = store
        con = store.con
        con.execute("CREATE OR REPLACE TEMP TABLE _stage_labels AS SELECT * FROM labels LIMIT 0")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _stage_evidence AS SELECT * FROM label_evidence LIMIT 0"
        )
        self.n_labels = 0
        self._labels: list[pa.Table] = []
        self._evidence: list[pa.Table] = []
        self._buffered = 0

    def add(
        self, labels: Sequence[Mapping[str, Any]], evidence: Sequence[Mapping[str, Any]]
    ) -> None:
        """Append ``labels`` rows (the :data:`LABEL_TABLE_COLUMNS`) and ``evidence``
        rows (the :data:`EVIDENCE_COLUMNS`) to the staging tables."""
        self.add_tables(
            *label_tables(
                {c: [r[c] for r in labels] for c in LABEL_TABLE_COLUMNS},
                {c: [r[c] for r in evidence] for c in EVIDENCE_COLUMNS},
            )
        )

    def add_tables(self, labels: pa.Table, evidence: pa.Table) -> None:
        """Append the Arrow tables of :func:`label_tables` to the staging tables
        (held until about :data:`STAGE_ROWS` rows have come, then inserted at once)."""
        self._labels.append(labels)
        self._evidence.append(evidence)
        self._buffered += labels.num_rows + evidence.num_rows
        self.n_labels += labels.num_rows
        if self._buffered >= STAGE_ROWS:
            self._insert()

    def _insert(self) -> None:
        if not self._labels:
            return
        labels, evidence = pa.concat_tables(self._labels), pa.concat_tables(self._evidence)
        self._labels, self._evidence, self._buffered = [], [], 0
        con = self.store.con
        for name, table, target in (
            ("_new_labels", labels, "_stage_labels"),
            ("_new_evidence", evidence, "_stage_evidence"),
        ):
            con.register(name, table)
            try:
                con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {name}")
            finally:
                with contextlib.suppress(duckdb.Error):  # inside a failed outer transaction
                    con.unregister(name)

    def publish(self, *, partial: bool = False, drop: Iterable[str] = ()) -> None:
        """Replace every stored label with the staged ones, or with ``partial``
        only those of the staged trials (and the trials in ``drop`` lose
        theirs); all or nothing."""
        self._insert()
        with self.store.transaction() as con:
            if partial:
                gone = "SELECT trial_id FROM _stage_labels UNION ALL SELECT unnest(?::VARCHAR[])"
                dropped = [list(drop)]
                con.execute(f"DELETE FROM labels WHERE trial_id IN ({gone})", dropped)
                con.execute(f"DELETE FROM label_evidence WHERE trial_id IN ({gone})", dropped)
                con.execute("INSERT INTO labels BY NAME SELECT * FROM _stage_labels")
            else:
                # a new table rather than DELETE + INSERT: replacing every key of the
                # primary-key index row by row cost 3.6 s of the commit at 100,000
                # trials, filling an empty one 0.2 s
                con.execute(_TYPED_LABELS_DDL.format(name="_labels_new"))
                con.execute("INSERT INTO _labels_new BY NAME SELECT * FROM _stage_labels")
                con.execute("DROP TABLE labels")
                con.execute("ALTER TABLE _labels_new RENAME TO labels")
                con.execute("DELETE FROM label_evidence")
            con.execute("INSERT INTO label_evidence BY NAME SELECT * FROM _stage_evidence")

    def close(self) -> None:
        """Drop the staging tables."""
        for name in ("_stage_labels", "_stage_evidence"):
            with contextlib.suppress(duckdb.Error):  # inside a failed outer transaction
                self.store.con.execute(f"DROP TABLE IF EXISTS {name}")


_LABEL_ARROW: dict[str, pa.DataType] = {
    **{c: pa.string() for c in (*LABEL_TABLE_COLUMNS, *EVIDENCE_COLUMNS)},
    **{c: pa.list_(pa.string()) for c in LABEL_LIST_COLUMNS},
    "is_cell_therapy": pa.bool_(),
    "classified_at": pa.timestamp("us"),
    "start": pa.int32(),
    "end": pa.int32(),
}


def label_tables(
    labels: Mapping[str, Sequence[Any]], evidence: Mapping[str, Sequence[Any]]
) -> tuple[pa.Table, pa.Table]:
    """Labels (a column of values for each of :data:`LABEL_TABLE_COLUMNS`) and
    evidence (each of :data:`EVIDENCE_COLUMNS`) as Arrow tables of the stored
    types, for :meth:`LabelStaging.add_tables` (worker processes build them)."""
    return (
        pa.table({c: pa.array(labels[c], type=_LABEL_ARROW[c]) for c in LABEL_TABLE_COLUMNS}),
        pa.table({c: pa.array(evidence[c], type=_LABEL_ARROW[c]) for c in EVIDENCE_COLUMNS}),
    )


def label_text(value: Any) -> Any:
    """A label value for people and spreadsheets: a list ``;``-joined (as the
    labels file writes it), anything else unchanged."""
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    if hasattr(value, "tolist") and not isinstance(value, str):
        items = value.tolist()
        if isinstance(items, list):
            return ";".join(str(v) for v in items)
    return value


_CONDITION_LISTS = {"mesh": "mesh_terms", "mesh_ancestor": "mesh_ancestors", "keyword": "keywords"}


def _text_record(
    rid: str | None,
    channel: str | None,
    fmt: str | None,
    registry: str | None,
    title: str | None,
    otitle: str | None,
    acr: str | None,
    summ: str | None,
    desc: str | None,
) -> ParsedRecord:
    """A record holding only the texts a classifier reads (NULLs as "")."""
    return ParsedRecord(
        channel=channel or "",
        source_format=fmt or "",
        record_id=rid or "",
        registry=registry or "",
        raw={},
        title=title or "",
        official_title=otitle or "",
        acronym=acr or "",
        brief_summary=summ or "",
        detailed_description=desc or "",
    )


#: the list columns of :meth:`Store.text_table`: child table, struct fields, order in a record
_TEXT_TABLE_CHILDREN: dict[str, tuple[str, tuple[str, ...], str]] = {
    "conditions": ("record_conditions", ("condition", "kind"), "rowid"),
    "interventions": (
        "record_interventions",
        ("type", "name", "description", "other_names", "arm_labels"),
        "idx",
    ),
    "arms": ("record_arms", ("label", "type", "description", "intervention_names"), "idx"),
}


def _child_lists(rows: pa.Table, keys: pa.ChunkedArray) -> pa.Array:
    """``rows`` (a child table's ``record_key`` and fields, ordered by record and
    position) as a list of structs for each of ``keys`` (null: no rows) — what
    ``list(struct_pack(...) ORDER BY ...) GROUP BY record_key`` and a left join
    give, at a fraction of DuckDB's cost for a sorted list aggregate."""
    fields = rows.drop_columns(["record_key"])
    structs = pa.StructArray.from_arrays(
        [c.combine_chunks() for c in fields.columns], fields=list(fields.schema)
    )
    runs = pc.run_end_encode(rows.column("record_key").combine_chunks())  # one per record
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), runs.run_ends.cast(pa.int32())])
    grouped = pa.ListArray.from_arrays(offsets, structs, type=pa.list_(pa.field("l", structs.type)))
    return grouped.take(pc.index_in(keys, value_set=runs.values))


def records_from_text_table(table: pa.Table) -> dict[str, list[ParsedRecord]]:
    """Each trial's records (primary first) from a :meth:`Store.text_table` (or a
    slice of one that keeps whole trials): the records :meth:`Store.text_records`
    returns. A pure function of the table, so worker processes can run it."""
    by_trial: dict[str, list[ParsedRecord]] = {}
    cols = [table.column(n).to_pylist() for n in _TEXT_TABLE_COLUMNS]
    for tid, rid, channel, fmt, registry, title, otitle, acr, summ, desc, conds, ivs, arms in zip(
        *cols, strict=True
    ):
        rec = _text_record(rid, channel, fmt, registry, title, otitle, acr, summ, desc)
        for c in conds or ():
            if c["condition"]:
                getattr(rec, _CONDITION_LISTS.get(c["kind"], "conditions")).append(c["condition"])
        rec.interventions = [
            Intervention(
                iv["type"] or "",
                iv["name"] or "",
                iv["description"] or "",
                list(iv["other_names"] or []),
                list(iv["arm_labels"] or []),
            )
            for iv in ivs or ()
        ]
        rec.arms = [
            Arm(
                a["label"] or "",
                a["type"] or "",
                a["description"] or "",
                list(a["intervention_names"] or []),
            )
            for a in arms or ()
        ]
        by_trial.setdefault(tid, []).append(rec)
    return by_trial


_TEXT_TABLE_COLUMNS = (
    "trial_id",
    "record_id",
    "channel",
    "source_format",
    "registry",
    "title",
    "official_title",
    "acronym",
    "brief_summary",
    "detailed_description",
    "conditions",
    "interventions",
    "arms",
)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _plain(v: Any) -> Any:
    """JSON-friendly values out of pandas/numpy/duckdb types."""
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, pd.Timestamp):
        return v.date().isoformat() if v == v.normalize() else v.isoformat()
    if v is pd.NaT:
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "tolist"):
        return v.tolist()
    return v
