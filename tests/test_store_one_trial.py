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


#: the classifier's input as DuckDB's own sorted list aggregates and left joins
#: (what Store.text_table assembles in Arrow from flat, sorted child rows)
_TEXT_TABLE_SQL = """
    WITH tr AS (SELECT trial_id, record_key, is_primary FROM trial_records {where}),
    c AS (SELECT record_key, list(struct_pack(condition := condition, kind := kind) ORDER BY rowid)
                 AS conditions
          FROM record_conditions GROUP BY record_key),
    i AS (SELECT record_key,
                 list(struct_pack(type := type, name := name, description := description,
                                  other_names := other_names, arm_labels := arm_labels)
                      ORDER BY idx) AS interventions
          FROM record_interventions GROUP BY record_key),
    a AS (SELECT record_key,
                 list(struct_pack(label := label, type := type, description := description,
                                  intervention_names := intervention_names) ORDER BY idx) AS arms
          FROM record_arms GROUP BY record_key)
    SELECT tr.trial_id, r.record_id, r.channel, r.source_format, r.registry,
           r.title, r.official_title, r.acronym, r.brief_summary, r.detailed_description,
           c.conditions, i.interventions, a.arms
    FROM tr JOIN records r USING (record_key)
         LEFT JOIN c USING (record_key) LEFT JOIN i USING (record_key) LEFT JOIN a USING (record_key)
    ORDER BY tr.trial_id, tr.is_primary DESC, r.record_key"""


def test_text_table_equals_the_sql_aggregates(store_path: Path) -> None:
    with celltrials.open(store_path, read_only=True) as store:
        ids = store.sorted_trial_ids()
        ranges = [None, (ids[0], ids[99]), (ids[len(ids) // 2], ids[-1]), ("~", "~~")]
        for between in ranges:
            where, params = (
                ("WHERE trial_id BETWEEN ? AND ?", list(between)) if between else ("", [])
            )
            want = store.con.sql(
                _TEXT_TABLE_SQL.format(where=where), params=params
            ).to_arrow_table()
            got = store.text_table(between)
            assert got.schema.equals(want.schema)
            assert got.equals(want), between
        # the real records have conditions, interventions and arms, and records without them
        full = store.text_table()
        for name in ("conditions", "interventions", "arms"):
            assert 0 < full.column(name).null_count < full.num_rows
