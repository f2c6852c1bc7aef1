"""Store's per-trial reads (``label_rows``, ``label_evidence``, ``text_records``
for a few trials: filtered by trial id before any join) return exactly the
rows the same calls return for every trial, on the classified real-data store."""

from __future__ import annotations

from pathlib import Path

import pytest

import celltrials
from tests.conftest_report import classified_store_path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, full_store_path: Path) -> Path:
    return classified_store_path(tmp_path_factory, full_store_path)


def _sample(store: celltrials.Store) -> list[str]:
    """Trials of several shapes: merged from several records, with evidence,
    without, and a random spread."""
    con = store.con
    many = [
        r[0]
        for r in con.execute(
            "SELECT trial_id FROM trial_records GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 5"
        ).fetchall()
    ]
    spread = [
        r[0]
        for r in con.execute(
            "SELECT trial_id FROM labels USING SAMPLE 20 ROWS (reservoir, 11)"
        ).fetchall()
    ]
    bare = [
        r[0]
        for r in con.execute(
            "SELECT trial_id FROM labels WHERE trial_id NOT IN (SELECT trial_id FROM label_evidence) "
            "ORDER BY 1 LIMIT 3"
        ).fetchall()
    ]
    assert len(many) == 5 and len(spread) == 20
    return sorted(set(many + spread + bare))


def test_label_rows_of_one_trial_equal_its_row_of_every_trial(store_path: Path) -> None:
    with celltrials.open(store_path, read_only=True) as store:
        every = {r["trial_id"]: r for r in store.label_rows()}
        ids = _sample(store)
        for tid in ids:
            assert store.label_rows([tid]) == [every[tid]], tid
            assert store.label_rows(trial_ids=iter([tid, tid])) == [every[tid]], tid
        assert store.label_rows(ids) == [every[t] for t in ids]
        assert store.label_rows(["NO-SUCH-TRIAL"]) == []
        assert store.label_rows([]) == []
        assert all(every[t]["primary_record_id"] for t in ids)


def test_evidence_and_texts_of_one_trial_equal_those_of_every_trial(store_path: Path) -> None:
    with celltrials.open(store_path, read_only=True) as store:
        ids = _sample(store)
        evidence = store.label_evidence()
        texts = store.text_records()
        for tid in ids:
            assert store.label_evidence(tid) == ({tid: evidence[tid]} if tid in evidence else {})
            one = store.text_records([tid])
            assert list(one) == [tid]
            assert one[tid] == texts[tid], tid
        several = store.text_records(ids)
        assert list(several) == ids and all(several[t] == texts[t] for t in ids)
        assert store.text_records(["NO-SUCH-TRIAL"]) == {}
        assert store.text_records([]) == {}
