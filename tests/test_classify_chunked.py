"""``classify_store`` reads, classifies and stages the store chunk by chunk:
small chunks (about 80 of them, boundaries anywhere) give exactly the labels
and evidence (in stored order) of one chunk, on the real reference store."""

from __future__ import annotations

import shutil
from pathlib import Path

import celltrials
from celltrials.labelling import classify_store

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


def test_small_chunks_give_the_labels_of_one_chunk(full_store_path: Path, tmp_path: Path) -> None:
    one, many = tmp_path / "one.duckdb", tmp_path / "many.duckdb"
    shutil.copy(full_store_path, one)
    shutil.copy(full_store_path, many)
    with celltrials.open(one) as store:
        n_trials = store.con.execute(
            "SELECT count(DISTINCT trial_id) FROM trial_records"
        ).fetchone()[0]  # type: ignore[index]
        summary_one = classify_store(store, jobs=1, chunk_size=10**9)
        evidence_one = store.label_evidence()
    with celltrials.open(many) as store:
        summary_many = classify_store(store, jobs=1, chunk_size=97)
        assert store.label_evidence() == evidence_one
        again = classify_store(store, jobs=1, chunk_size=89, only_changed=True)
    assert n_trials > 97 * 50  # ~80 chunks (chunks of 7: ~1,200 reads, 1.5 min of the suite)
    assert summary_one["classified"] == summary_many["classified"] == n_trials
    assert again["classified"] == 0 and again["skipped_unchanged"] == n_trials
    for key in ("cell_therapy_trials", "cell_types"):
        assert summary_one[key] == summary_many[key]
    with celltrials.open(tmp_path / "cmp.duckdb") as cmp:
        cmp.con.execute(f"ATTACH '{one}' AS one (READ_ONLY)")
        cmp.con.execute(f"ATTACH '{many}' AS many (READ_ONLY)")
        n_ev = cmp.con.execute("SELECT count(*) FROM one.label_evidence").fetchone()[0]  # type: ignore[index]
        assert n_ev > 0
        assert _except_both_ways(cmp.con, _LABELS) == (0, 0)
        assert _except_both_ways(cmp.con, _EVIDENCE) == (0, 0)
