"""Shared fixtures: paths to the real registry exports and a store built from them."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import zstandard

import celltrials
from celltrials.ingest import ingest_paths
from celltrials.store import Store

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
GOLD = SHARED / "gold"
TESTDATA = Path(__file__).resolve().parent / "data"

MSC_CSV = DATA / "ctgov-classic-csv" / "msc_mesenchymal_stem_or_stromal.csv"
PROCHYMAL_CSV = DATA / "ctgov-classic-csv" / "msc_prochymal.csv"
GENERAL_JSON = DATA / "ctgov-v2-json" / "ctg-studies-50-general.json"
AACT_DIR = DATA / "ctgov-v2-json" / "aact-fixtures"
CAR_JSON = DATA / "ctgov-v2-json" / "reconstructed" / "car_cell_therapy_2026-08-22.json"
CAR2_JSON = DATA / "ctgov-v2-json" / "reconstructed" / "car_cell_therapy_part2_2026-08-22.json"
ICTRP_CSV = DATA / "ictrp" / "ictrp_covid19_1135_trials.csv"
ICTRP_XML = DATA / "ictrp" / "ictrp_results_18mar2020.xml"
ICTRP_XLSX = DATA / "ictrp" / "ictrp_covid19_web_7jul2020.xlsx"


@lru_cache(maxsize=2)
def ictrp_xlsx_rows(data_only: bool = False) -> tuple[tuple[Any, ...], ...]:
    """Every row of the ICTRP XLSX export (the header first) as openpyxl reads
    it, once per test process: a read takes seconds, and several tests compare
    with it. ``data_only``: formula cells as their cached values."""
    wb = openpyxl.load_workbook(ICTRP_XLSX, read_only=True, data_only=data_only)
    try:
        return tuple(wb.worksheets[0].iter_rows(values_only=True))
    finally:
        wb.close()


#: modules that build their cases from the shared exports while being collected;
#: without ../shared they are not collected (every other data test then fails
#: with the message below, so a run without the data cannot pass unnoticed)
collect_ignore = [] if DATA.is_dir() else ["test_bad_input.py", "test_fuzz.py"]


def stored_json(raw: bytes) -> Any:
    """A stored ``records.raw`` read back as the format documents it (one zstd
    frame of the record's JSON), with zstandard itself rather than celltrials."""
    return json.loads(zstandard.ZstdDecompressor().decompress(raw))


def open_and_kill(path: Path, version: int) -> None:
    """Open the store at ``path`` for writing (so it migrates) in another
    process that checks its schema version and dies at once (``os._exit``, no
    checkpoint): the migration is left in the write-ahead log."""
    code = (
        "import os, sys, celltrials\n"
        "s = celltrials.open(sys.argv[1])\n"
        f"assert s.schema_version() == {version}\n"
        "os._exit(9)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=False)
    assert res.returncode == 9
    assert path.with_name(path.name + ".wal").exists()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test not marked ``unit`` reads ../shared and is marked ``data``.

    Opting in to ``unit`` (rather than out of ``data``) keeps a new test that
    reads the shared exports from slipping into ``pytest -m "not data"``; an
    explicit ``data`` mark on a test wins over a module-wide ``unit``.
    """
    for item in items:
        if item.get_closest_marker("unit") is None or item.get_closest_marker("data") is not None:
            item.add_marker(pytest.mark.data)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("data") is not None and not DATA.is_dir():
        pytest.fail(
            f"the shared registry data is missing: expected {DATA} "
            '(clone beside ../shared, or run only `pytest -m "not data"`)',
            pytrace=False,
        )


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """A file built once per test run and shared by the pytest-xdist workers;
    each worker gets a private copy (a DuckDB file is never opened by two
    processes). ``build(path)`` writes the file at ``path``."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    master = shared / name
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker builds, the others wait
        if not master.is_file():
            partial = shared / f"{name}.partial"
            partial.unlink(missing_ok=True)
            build(partial)
            partial.rename(master)
    mine = tmp_path_factory.mktemp(Path(name).stem) / name
    shutil.copy(master, mine)
    return mine


def _ingest_reference_data(path: Path) -> None:
    with celltrials.open(path) as store:
        report = ingest_paths(store, [DATA])
        assert report.clean, [str(f) for f in report.findings]


@pytest.fixture(scope="session")
def full_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with every file in ../shared/data ingested (built once per run)."""
    return built_once(tmp_path_factory, "full.duckdb", _ingest_reference_data)


@pytest.fixture()
def full_store(full_store_path: Path, tmp_path: Path) -> Iterator[Store]:
    """A private, writable copy of the full store."""
    copy = tmp_path / "copy.duckdb"
    shutil.copy(full_store_path, copy)
    with celltrials.open(copy) as store:
        yield store


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    with celltrials.open(tmp_path / "t.duckdb") as s:
        yield s
