"""The report build's shortcuts at scale keep their meaning: the data date
read once for the sections is the store's, and a report that fails early
leaves no thread of its own behind.

The data date is checked against the latest registry update read from the
store's records table directly (max over every primary record), not from
:func:`celltrials.analysis.landscape.data_date`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import celltrials
from celltrials.analysis import landscape as L
from celltrials.errors import AnalysisError
from celltrials.report.build import build_report

pytestmark = pytest.mark.data


def test_held_data_date_is_the_stores_and_only_for_its_connection(full_store_path: Path) -> None:
    with celltrials.open(full_store_path, read_only=True) as store:
        con = store.con
        (latest,) = con.execute(
            "SELECT max(r.last_update) FROM records r JOIN trial_records tr USING (record_key) "
            "WHERE tr.is_primary"
        ).fetchone() or (None,)
        assert latest is not None
        with L.holding_data_date(con) as dd:
            assert dd == latest
            assert L.data_date(con) is dd  # the held value, not a new read
            other = con.cursor()
            try:
                assert L.data_date(other) == latest  # another connection reads its own
            finally:
                other.close()
        assert L.data_date(con) == latest  # read again once the block is left


def test_a_report_that_fails_early_leaves_no_thread(full_store_path: Path, tmp_path: Path) -> None:
    before = {t.ident for t in threading.enumerate()}
    with (
        celltrials.open(full_store_path, read_only=True) as store,
        pytest.raises(AnalysisError, match="no trial matches the filters"),
    ):
        build_report(
            store,
            tmp_path / "out",
            L.Filters(scope="all", title="no title has this text in it 0x5f3759df"),
            figures=False,
        )
    # every thread the build started has finished
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        if not left:
            break
        time.sleep(0.05)
    assert not left, left
