"""The store owns its schema: every migration is listed in store.py and a
store opened for writing has every table without importing other modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import celltrials
from celltrials.ingest import ingest_paths
from celltrials.store import MIGRATIONS
from tests.conftest import PROCHYMAL_CSV, REPO

pytestmark = pytest.mark.data

_PROBE = """
import json, sys, celltrials
with celltrials.open(sys.argv[1]) as s:
    tables = sorted(r[0] for r in s.con.execute("SELECT table_name FROM information_schema.tables").fetchall())
    versions = [r[0] for r in s.con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
print(json.dumps(tables))
print(json.dumps(versions))
print(json.dumps(sorted(m for m in sys.modules if m in ("celltrials.classify", "celltrials.sync", "celltrials.products"))))
"""


def test_a_new_store_has_every_table_without_importing_other_modules(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "s.duckdb")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    tables = json.loads(out[0])
    assert {
        "records",
        "trial_records",
        "ingests",
        "labels",
        "label_evidence",
        "sync_queries",
        "sync_runs",
        "product_links",
    } <= set(tables)
    assert json.loads(out[1]) == [m.version for m in MIGRATIONS] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert json.loads(out[2]) == []
    assert len({m.name for m in MIGRATIONS}) == len(MIGRATIONS)


def test_a_store_from_before_the_ingest_file_stat_migration_is_upgraded(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
    )
    for m in MIGRATIONS:
        if m.name == "ingest_file_stat":
            break
        m.apply(con)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [m.version, m.name])
    con.close()
    with celltrials.open(db) as store:
        assert store.schema_version() == MIGRATIONS[-1].version == 8
        cols = {r[0] for r in store.con.execute("DESCRIBE ingests").fetchall()}
        assert {"source_size", "source_mtime_ns"} <= cols
        assert ingest_paths(store, [PROCHYMAL_CSV]).n_new == 14
        assert ingest_paths(store, [PROCHYMAL_CSV]).files[0].skipped_unchanged
