"""``classify_store`` reads, classifies and stages the store chunk by chunk:
small chunks (about 80 of them, boundaries anywhere) give exactly the labels
and evidence (in stored order) of the default run (the session's classified
store: default chunks, two workers, equal to one chunk on one core by
test_classify_parallel), on the real reference store."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import celltrials
from celltrials.labelling import _units, classify_store
from tests.conftest_report import classified_store_path

_LABELS = "SELECT * EXCLUDE (classified_at) FROM {db}.labels"
# evidence with its stored position: readers get it in that order
_EVIDENCE = "SELECT row_number() OVER () AS pos, * FROM {db}.label_evidence"


def _except_both_ways(con: object, sql: str) -> tuple[int, int]:
    a, b = sql.format(db="one"), sql.format(db="many")
    out = con.execute(  # type: ignore[attr-defined]
        f"SELECT (SELECT count(*) FROM ({a} EXCEPT ALL {b})), "
        f"(SELECT count(*) FROM ({b} EXCEPT ALL {a}))"
    ).fetchone()
    return int(out[0]), int(out[1])


def test_small_chunks_give_the_labels_of_one_chunk(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path, tmp_path: Path
) -> None:
    one = classified_store_path(tmp_path_factory, full_store_path)
    many = tmp_path / "many.duckdb"
    shutil.copy(full_store_path, many)
    with celltrials.open(one, read_only=True) as store:
        n_trials = store.con.execute(
            "SELECT count(DISTINCT trial_id) FROM trial_records"
        ).fetchone()[0]  # type: ignore[index]
        n_cell_therapy = store.n_cell_therapy_trials()
        by_type = dict(
            store.con.execute(
                "SELECT ct, count(*) FROM (SELECT unnest(cell_type) AS ct FROM labels) GROUP BY ct"
            ).fetchall()
        )
        evidence_one = store.label_evidence()
    with celltrials.open(many) as store:
        summary_many = classify_store(store, jobs=1, chunk_size=97)
        assert store.label_evidence() == evidence_one
        again = classify_store(store, jobs=1, chunk_size=89, only_changed=True)
        # two workers (this process compiles no taxonomy): the same version, and
        # every trial's input hash matches the one stored
        again_2 = classify_store(store, jobs=2, only_changed=True)
    assert n_trials > 97 * 50  # ~80 chunks (chunks of 7: ~1,200 reads, 1.5 min of the suite)
    assert summary_many["classified"] == n_trials
    assert again["classified"] == 0 and again["skipped_unchanged"] == n_trials
    assert again_2["classified"] == 0 and again_2["skipped_unchanged"] == n_trials
    assert again_2["taxonomy_version"] == summary_many["taxonomy_version"]
    assert summary_many["cell_therapy_trials"] == n_cell_therapy > 3000
    assert summary_many["cell_types"] == by_type
    with celltrials.open(tmp_path / "cmp.duckdb") as cmp:
        cmp.con.execute(f"ATTACH '{one}' AS one (READ_ONLY)")
        cmp.con.execute(f"ATTACH '{many}' AS many (READ_ONLY)")
        n_ev = cmp.con.execute("SELECT count(*) FROM one.label_evidence").fetchone()[0]  # type: ignore[index]
        assert n_ev > 0
        assert _except_both_ways(cmp.con, _LABELS) == (0, 0)
        assert _except_both_ways(cmp.con, _EVIDENCE) == (0, 0)


@settings(max_examples=300, deadline=None)
@given(
    tids=st.lists(st.sampled_from(["NCT01", "NCT02", "ChiCTR3", "ISRCTN4", "x"]), max_size=40),
    size=st.integers(1, 9),
)
def test_units_are_whole_trials_in_order(tids: list[str], size: int) -> None:
    """A worker's unit is ``size`` whole trials (the last one fewer), the rows in
    their order: the trials as runs of equal ids, taken ``size`` at a time."""
    rows = sorted(tids)  # (text_table orders rows by trial id)
    table = pa.table({"trial_id": rows, "row": list(range(len(rows)))})
    trials = [
        [r for r, _ in run] for _, run in itertools.groupby(enumerate(rows), key=lambda x: x[1])
    ]
    want = [list(itertools.chain(*trials[k : k + size])) for k in range(0, len(trials), size)]
    assert [u.column("row").to_pylist() for u in _units(table, size)] == want
