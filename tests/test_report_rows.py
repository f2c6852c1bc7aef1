"""The report encodes its trial lists from the rows the sections counted them
in (landscape.TrialIds): the same page lists as looking every id up in the
trial table, on the real classified store."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import celltrials
from celltrials.analysis import landscape as L
from celltrials.report.render import encode_lists
from celltrials.report.sections import Counts, build_chapters, compute_sections
from tests.conftest_report import classified_store_path

pytestmark = pytest.mark.data


def test_lists_from_rows_equal_lists_looked_up(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path
) -> None:
    path = classified_store_path(tmp_path_factory, full_store_path)
    with celltrials.open(path, read_only=True) as store:
        con = store.con
        L.ensure_label_view(con)
        filters = L.Filters(scope="all")
        sel = L.select_trials(con, filters)
        data = compute_sections(con, sel, filters)
        counts = Counts()
        build_chapters(
            counts,
            data.tables,
            data.data_date,
            True,
            data.funnel,
            data.funnel_ids,
            data.funnel_error,
        )
        # the trial ids as the store has them, read independently of the report
        ids_in_store = {r[0] for r in con.execute("SELECT trial_id FROM trials").fetchall()}
    index = pd.Index(sel["trial_id"].astype(str).tolist(), dtype=object)
    rows = [v for v in counts.lists.values() if isinstance(v, L.TrialIds)]
    assert len(rows) > 30  # the big sections' lists come with their rows
    selection = rows[0].selection
    for v in rows:
        assert v.selection is selection
        assert [index[i] for i in v.positions] == list(v)  # each row is the id's row
        assert set(v) <= ids_in_store
    # the queries leave a list's ids in any order: every list comes out sorted, once each
    for v in counts.lists.values():
        assert list(v) == sorted(set(v))
    plain = {k: list(v) for k, v in counts.lists.items()}  # looked up by id
    fast = encode_lists(counts.lists, index, selection)
    slow = encode_lists(plain, index)
    assert fast.keys() == slow.keys()
    assert all(fast[k].tolist() == slow[k].tolist() for k in slow)
    # a list changed after it was counted is looked up again, not read from stale rows
    big = max(rows, key=len)
    key = next(k for k, v in counts.lists.items() if v is big)
    dropped = big.pop()
    changed = encode_lists(counts.lists, index, selection)[key]
    assert changed.tolist() == encode_lists({key: list(big)}, index)[key].tolist()
    assert dropped not in big
    # another trial table (here: one trial fewer) is never read through the rows
    other = index.delete(0)
    assert {k: v.tolist() for k, v in encode_lists(counts.lists, other, selection).items()} == {
        k: v.tolist() for k, v in encode_lists(dict(counts.lists.items()), other).items()
    }
    # copies and pickles are plain lists
    for clone in (copy.copy(rows[0]), copy.deepcopy(rows[0]), pickle.loads(pickle.dumps(rows[0]))):
        assert type(clone) is list and clone == list(rows[0])


def test_id_lists_sorted_in_an_unsorted_selection(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path
) -> None:
    """A selection frame in any row order (here: reversed): the lists still come
    out in trial-id order, each id with its own row of that frame."""
    path = classified_store_path(tmp_path_factory, full_store_path)
    with celltrials.open(path, read_only=True) as store:
        ids = [r[0] for r in store.con.execute("SELECT trial_id FROM trials").fetchall()]
    import random

    shuffled = [ids[::-3], ids[1::2], [], ids[::-1], ids[5:6]]
    column = pa.array([*shuffled, None], type=pa.list_(pa.string()))
    permuted = sorted(ids)
    random.Random(11).shuffle(permuted)
    # reversed (a permutation that is its own inverse) and shuffled frames
    for order in (sorted(ids, reverse=True), permuted):
        frame = pd.DataFrame({"trial_id": order})
        sel = L.Selection(frame)
        got = L.id_lists(column, sel)
        assert [list(v) for v in got] == [*(sorted(x) for x in shuffled), []]
        for v in got:
            if isinstance(v, L.TrialIds):
                assert [frame["trial_id"][i] for i in v.positions] == list(v)
        assert any(isinstance(v, L.TrialIds) for v in got)  # the rows path ran
    # fewer ids than trials: looked up as text, still sorted
    few = L.id_lists(pa.array([ids[:4][::-1]], type=pa.list_(pa.string())), sel)
    assert few == [sorted(ids[:4])]


def test_selection_frame_converts_label_lists_as_pandas_does(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path
) -> None:
    """select_trials converts each distinct label list once (landscape.frame_of);
    the frame is the one Arrow's own to_pandas makes, cell by cell."""
    import numpy as np

    path = classified_store_path(tmp_path_factory, full_store_path)
    with celltrials.open(path, read_only=True) as store:
        L.ensure_label_view(store.con)
        sel = L.select_trials(store.con, L.Filters(scope="all"))
        table = store.con.sql(L.selection_sql(L.Filters(scope="all"))[0]).to_arrow_table()
    expected = table.to_pandas()
    assert len(table) > 1000  # enough rows for the distinct-list path
    assert list(sel.columns) == list(expected.columns)
    lists = [
        c for c in expected.columns if len(expected) and isinstance(expected[c][0], np.ndarray)
    ]
    assert {"cell_type", "families", "therapeutic_area"} <= set(lists)
    for c in expected.columns:
        assert sel[c].dtype == expected[c].dtype, c
        if c in lists:
            assert [list(v) for v in sel[c]] == [list(v) for v in expected[c]], c
            assert all(v.dtype == object for v in sel[c])
        else:
            pd.testing.assert_series_equal(sel[c], expected[c], check_names=True)


@settings(max_examples=80, deadline=None)
@given(
    kinds=st.lists(
        st.lists(st.sampled_from(["", " ", "msc", "nk", "car_t", "a\x1fb", "é"]), max_size=4),
        min_size=1,
        max_size=6,
    ),
    picks=st.lists(st.integers(0, 11), min_size=1, max_size=40),
    n_rows=st.integers(1000, 1400),
    offset=st.integers(0, 3),
    long_lists=st.booleans(),
)
def test_label_lists_are_the_lists_arrow_converts(
    kinds: list[list[str]], picks: list[int], n_rows: int, offset: int, long_lists: bool
) -> None:
    """landscape._label_lists reads each distinct list once (as integer keys, or as
    text when a large vocabulary's long lists would not fit an integer): every row
    must still come out as Arrow's own to_pandas gives it, item by item and in order
    ([] and [""] apart), also from a sliced array of several chunks."""
    import numpy as np

    # lists that differ only in order, length or a blank item, beside hypothesis' own
    fixed = [[], [""], ["msc", "nk"], ["nk", "msc"], ["msc", "msc"], ["nk"]]
    if long_lists:  # 40 values, 20 in a list: 20 base-41 digits need 108 bits
        vocab = [f"target_{i}" for i in range(40)]
        fixed += [vocab[:20], vocab[20:], vocab[19::-1]]
    kinds = fixed + kinds
    # (enough rows for the distinct-list path: the picks, cycled)
    rows = [kinds[picks[i % len(picks)] % len(kinds)] for i in range(n_rows)]
    full = pa.array([["x"]] * offset + rows, type=pa.list_(pa.string()))
    half = (offset + len(rows)) // 2
    column = pa.chunked_array([full.slice(offset, half - offset), full.slice(half)])
    got = L._label_lists(column)
    expected = column.to_pandas()
    if got is None:  # (converted row by row instead: many distinct lists, or text keys
        # that an item holding their separator would make ambiguous)
        assert len({tuple(r) for r in rows}) > len(rows) // 4 or (
            long_lists and any("\x1f" in x for r in rows for x in r)
        )
        return
    assert [list(v) for v in got] == [list(v) for v in expected] == rows
    assert all(isinstance(v, np.ndarray) and v.dtype == object for v in got)


def _countries_by_text(con: Any) -> dict[str, list[str]]:
    """Each country's trials, read independently by text from the store's countries view."""
    return {
        country: sorted(ids)
        for country, ids in con.execute(
            "SELECT country, list(DISTINCT trial_id) FROM countries GROUP BY country"
        ).fetchall()
    }


def test_lists_of_a_reordered_copy_of_the_selection(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path
) -> None:
    """The section queries list keys of the selection (landscape.SEL_ROW), read back
    through the frame select_trials made: a reordered copy of that frame (which
    pandas gives the same mark) still gets each count's own trials."""
    path = classified_store_path(tmp_path_factory, full_store_path)
    with celltrials.open(path, read_only=True) as store:
        con = store.con
        L.ensure_label_view(con)
        sel = L.select_trials(con, L.Filters(scope="all"))
        shuffled = sel.sample(frac=1.0, random_state=7)
        assert shuffled.attrs == sel.attrs
        got = L.countries(con, shuffled)
        want = _countries_by_text(con)
        phases = L.phase_by_family(con, shuffled)
        phase_ids = {
            (p, f): sorted(ids)
            for p, f, ids in con.execute(
                "SELECT phase, family, list(DISTINCT trial_id) FROM "
                "(SELECT trial_id, phase, unnest(families) AS family FROM _sel) GROUP BY ALL"
            ).fetchall()
        }
    assert {r.country: list(r.trial_ids) for r in got.itertuples()} == want
    assert {(r.phase, r.family): list(r.trial_ids) for r in phases.itertuples()} == phase_ids


def test_csv_lists_joined_from_rows_equal_lists_joined_as_text(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path
) -> None:
    """A section's trial lists in tables/*.csv: joined by Arrow from the selection's
    ids when they know their rows, the same text as joining the ids themselves."""
    from celltrials.report.workbook import csv_frame

    path = classified_store_path(tmp_path_factory, full_store_path)
    with celltrials.open(path, read_only=True) as store:
        L.ensure_label_view(store.con)
        sel = L.select_trials(store.con, L.Filters(scope="all"))
        frames = [L.countries(store.con, sel), L.phase_by_family(store.con, sel)]
    for df in frames:
        assert all(isinstance(v, L.TrialIds) for v in df["trial_ids"])
        plain = df.assign(trial_ids=[list(v) for v in df["trial_ids"]])
        got, want = csv_frame(df), csv_frame(plain)
        assert got["trial_ids"].tolist() == [";".join(v) for v in plain["trial_ids"]]
        pd.testing.assert_frame_equal(got, want)


def test_lazy_lists_are_the_trials_read_independently(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path
) -> None:
    """Inside lazy_id_lists (how the report computes its sections) a section's lists
    are TrialRows: rows of the selection whose text is made only when read. Read,
    compared, pickled or joined for CSV, they are the trials an independent query
    of the store's views lists under each count."""
    from celltrials.report.workbook import csv_frame

    path = classified_store_path(tmp_path_factory, full_store_path)
    with celltrials.open(path, read_only=True) as store:
        con = store.con
        L.ensure_label_view(con)
        sel = L.select_trials(con, L.Filters(scope="all"))
        with L.lazy_id_lists():
            got = L.countries(con, sel)
            head = L.headline(con, sel)
        eager = L.countries(con, sel)
        eager_head = L.headline(con, sel)
        want = _countries_by_text(con)
    # the headline's lists too (its own query, not id_lists): rows, the same trials
    assert all(isinstance(v, L.TrialRows) for v in head["trial_ids"])
    assert [list(v) for v in head["trial_ids"]] == [list(v) for v in eager_head["trial_ids"]]
    assert head["trial_ids"][0] == sorted(sel["trial_id"].astype(str))  # "trials": every one
    lists = got["trial_ids"].tolist()
    assert lists and all(isinstance(v, L.TrialRows) for v in lists)
    assert not any(isinstance(v, L.TrialRows) for v in eager["trial_ids"])
    assert {r.country: list(r.trial_ids) for r in got.itertuples()} == want
    for country, v in zip(got["country"], lists, strict=True):
        assert v == want[country] and len(v) == len(want[country])
        assert v[0] == want[country][0] and v[-1:] == want[country][-1:]
        assert pickle.loads(pickle.dumps(v)) == want[country]
        assert type(pickle.loads(pickle.dumps(v))) is list
    assert csv_frame(got)["trial_ids"].tolist() == [";".join(want[c]) for c in got["country"]]
    # the page's lists: from the rows, the same positions as looking each id up
    counts = {f"c{i}": v for i, v in enumerate(lists)}
    index = pd.Index(sel["trial_id"].astype(str).tolist(), dtype=object)
    by_rows = encode_lists(counts, index, L.selection_of(con, sel))  # type: ignore[arg-type]
    by_text = encode_lists({k: list(v) for k, v in counts.items()}, index)
    assert by_rows.keys() == by_text.keys()
    assert all((by_rows[k] == by_text[k]).all() for k in by_rows)


_ITEM = st.one_of(
    st.none(), st.sampled_from(["", " ", "  ", "msc", "car_t", " nk", "nk", "Ä", "\tx"])
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(_ITEM, max_size=5)), min_size=1, max_size=12))
def test_label_view_lists_drop_blanks_and_repeats_and_sort(
    lists: list[list[str | None] | None],
) -> None:
    """The label view's multi-value columns: no NULL or blank item (DuckDB's trim:
    spaces), each item once, sorted; a missing list is empty. Lists of one item take
    a shorter path in SQL than longer ones: both give what Python computes."""
    import duckdb

    con = duckdb.connect()
    cols = ", ".join(f"{c} VARCHAR[]" for c in L._MULTI)
    con.execute(
        f"CREATE TABLE labels (trial_id VARCHAR, is_cell_therapy BOOLEAN, {cols}, "
        "origin VARCHAR, indication_group VARCHAR)"
    )
    con.executemany(
        "INSERT INTO labels VALUES (?, true, ?, ?, ?, ?, ?, NULL, NULL)",
        [[f"T{i}", *[v] * len(L._MULTI)] for i, v in enumerate(lists)],
    )
    assert L.ensure_label_view(con)
    got = con.execute(
        f"SELECT trial_id, {', '.join(L._MULTI)} FROM {L.LABEL_VIEW} ORDER BY trial_id"
    ).fetchall()
    want = {
        f"T{i}": sorted({x for x in (v or []) if x is not None and x.strip(" ")})
        for i, v in enumerate(lists)
    }
    assert {r[0]: r[1] for r in got} == want
    assert all(r[1:] == (r[1],) * len(L._MULTI) for r in got)
