"""The dashboard's in-memory facet/word index (celltrials.serve.index) gives
exactly the answers of the SQL it replaces, on the real registry data.

For every filter combination below (multi-valued facets, year ranges,
case-insensitive names, the search box, title, sorts, pages past the end,
empty results, plus seeded random combinations of real facet values) the
trial list, the facet counts, the overview and the count are compared with
the SQL path (:mod:`celltrials.serve.queries` without an index). The search
index is compared with a plain Python substring scan of the search texts,
and facet counts with the test's own SQL over the store's tables.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from celltrials.analysis import landscape as ls
from celltrials.serve import queries as Q
from celltrials.serve.index import FacetIndex
from celltrials.store import Store
from tests.conftest_report import classified_store_path


@pytest.fixture(scope="module")
def snap(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path
) -> Iterator[tuple[duckdb.DuckDBPyConnection, FacetIndex]]:
    """The classified real-data store prepared as the server prepares a snapshot."""
    path = classified_store_path(tmp_path_factory, full_store_path)
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH '{path}' AS store (READ_ONLY)")
    con.execute("USE store")
    info = Q.prepare(con)
    for name, table in info["shadows"]["main"].items():  # as the server's cursors see the store
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {table}")
    yield con, info["index"]
    con.close()


COMBOS: list[list[tuple[str, str]]] = [
    [],
    [("all_trials", "1")],
    [("country", "China")],
    [("country", "china"), ("country", "UNITED STATES")],
    [("cell_type", "car_t"), ("country", "China"), ("start_year", "2020-2024")],
    [("cell_type", "immune"), ("phase", "1"), ("phase", "1/2"), ("registry", "CTGOV")],
    [("cell_type", "msc"), ("msc_source", "umbilical_cord"), ("msc_source", "unspecified")],
    [("indication_group", "oncology"), ("target", "cd19"), ("target", "BCMA")],
    [("therapeutic_area", "musculoskeletal"), ("therapeutic_area", "not_classified")],
    [("therapeutic_area", "not_classified"), ("all_trials", "1")],
    [("sponsor_class", "industry"), ("status", "recruiting"), ("status", "completed")],
    [("study_type", "INTERVENTIONAL"), ("origin", "allogeneic"), ("origin", "autologous")],
    [("product", "kymriah"), ("all_trials", "1")],
    [("product_form", "extracellular_vesicles")],
    [("start_year", "2015-")],
    [("start_year", "-2010"), ("all_trials", "1")],
    [("start_year", "2021")],
    [("title", "CD19"), ("status", "recruiting")],
    [("q", "Wharton")],
    [("q", "cord blood"), ("cell_type", "msc")],
    [("q", "car-t lymphoma"), ("sort", "-start_date"), ("page", "2")],
    [("q", "(autologous"), ("sort", "-last_update")],
    [("q", "e")],  # a one-letter word: answered by the text scan
    [("q", "nct0"), ("all_trials", "1"), ("per_page", "200"), ("page", "3")],
    [("q", "zzzqqqxxy")],  # nothing
    [("country", "Atlantis")],  # nothing
    [("cell_type", "nk"), ("registry", "ctgov"), ("sort", "phase")],
    [("sort", "title"), ("page", "3")],
    [("sort", "-enrollment"), ("all_trials", "1"), ("per_page", "7")],
    [("sort", "-phase"), ("page", "999")],  # past the end: the last page
    [("sort", "start_date"), ("phase", "2/3"), ("all_trials", "1")],
]


def _random_combos(index: FacetIndex, n: int, seed: int = 13) -> list[list[tuple[str, str]]]:
    """Seeded random selections of real facet values (1–3 facets, 1–2 values)."""
    rnd = random.Random(seed)
    values: dict[str, list[str]] = {}
    for name, (col, multi) in Q.FACETS.items():
        vocab = index.multi[col].vocab if multi else index.single[col].vocab
        if name == "phase":
            continue  # phase values are written 1, 1/2, … in URLs (covered above)
        values[name] = sorted(vocab)
    out = []
    for _ in range(n):
        combo: list[tuple[str, str]] = []
        for name in rnd.sample(sorted(values), rnd.randint(1, 3)):
            combo += [(name, v) for v in rnd.sample(values[name], min(2, rnd.randint(1, 2)))]
        if rnd.random() < 0.3:
            combo.append(("all_trials", "1"))
        if rnd.random() < 0.3:
            lo = rnd.randint(2000, 2022)
            combo.append(("start_year", f"{lo}-{lo + rnd.randint(0, 5)}"))
        out.append(combo)
    return out


def _same(con: duckdb.DuckDBPyConnection, index: FacetIndex, combo: list[tuple[str, str]]) -> None:
    q = Q.parse_query(combo)
    sql_page = Q.trial_page(con, q)
    assert Q.trial_page(con, q, index=index) == sql_page, combo
    assert Q.count(con, q, index=index) == Q.count(con, q) == sql_page["count"], combo
    assert Q.facets(con, q, index=index) == Q.facets(con, q), combo
    assert Q.overview(con, q, index=index) == Q.overview(con, q), combo


@pytest.mark.parametrize(
    "combo", COMBOS, ids=lambda c: "&".join(f"{k}={v}" for k, v in c) or "none"
)
def test_index_answers_equal_the_sql(
    snap: tuple[duckdb.DuckDBPyConnection, FacetIndex], combo: list[tuple[str, str]]
) -> None:
    con, index = snap
    _same(con, index, combo)


def test_index_answers_equal_the_sql_on_random_selections(
    snap: tuple[duckdb.DuckDBPyConnection, FacetIndex],
) -> None:
    con, index = snap
    counts = []
    for combo in _random_combos(index, 40):
        _same(con, index, combo)
        counts.append(Q.count(con, Q.parse_query(combo)))
    assert sum(c == 0 for c in counts) >= 3 and sum(c > 10 for c in counts) >= 10  # both kinds


def test_the_combinations_are_not_trivial(
    snap: tuple[duckdb.DuckDBPyConnection, FacetIndex],
) -> None:
    con, index = snap
    n = {str(c): Q.count(con, Q.parse_query(c), index=index) for c in COMBOS}
    assert n[str([("country", "Atlantis")])] == 0 and n[str([("q", "zzzqqqxxy")])] == 0
    assert n[str([("q", "Wharton")])] > 5
    assert n[str([("cell_type", "car_t"), ("country", "China"), ("start_year", "2020-2024")])] > 50
    assert (
        n[str([("therapeutic_area", "musculoskeletal"), ("therapeutic_area", "not_classified")])]
        > 10
    )


@pytest.mark.parametrize(
    "word",
    ["wharton", "cord", "cd19", "car-t", "(autologous", "nct0", "e", "mesenchymal", "é", "zzzqqq"],
)
def test_word_index_equals_a_substring_scan(
    snap: tuple[duckdb.DuckDBPyConnection, FacetIndex], word: str
) -> None:
    """The word index finds exactly the trials whose search text contains the
    word anywhere (also inside a longer word), as a Python scan does."""
    con, index = snap
    texts = [r[0] for r in con.execute(f"SELECT search FROM {Q.ST} ORDER BY rowid").fetchall()]
    expected = {i for i, t in enumerate(texts) if word in t}
    rows = index.word_rows(word)
    if rows is None:  # too common a word: the server scans instead
        assert len(expected) > len(texts) // 2
    else:
        assert set(rows.tolist()) == expected


def test_facet_counts_equal_the_tests_own_sql(
    snap: tuple[duckdb.DuckDBPyConnection, FacetIndex],
) -> None:
    """Countries and MSC sources of MSC trials in China or India, counted from
    the store's tables (labels through the label view)."""
    con, index = snap
    ls.ensure_label_view(con)
    q = Q.parse_query([("cell_type", "msc"), ("country", "China"), ("country", "India")])
    got = Q.facets(con, q, index=index)
    msc = """SELECT trial_id FROM _landscape_labels WHERE is_cell_therapy AND list_contains(cell_type, 'msc')"""
    in_ci = "SELECT trial_id FROM countries WHERE lower(country) IN ('china', 'india')"
    countries = dict(
        con.execute(
            f"SELECT country, count(DISTINCT trial_id) FROM countries WHERE trial_id IN ({msc}) "
            "AND country IS NOT NULL GROUP BY 1"
        ).fetchall()
    )
    shown = {v["value"]: v["n"] for v in got["country"]}  # the top 40; its own filter left out
    assert shown.items() <= countries.items() and len(shown) == min(40, len(countries))
    assert shown["China"] == countries["China"] and shown["India"] == countries["India"]
    assert min(shown.values()) >= max(n for c, n in countries.items() if c not in shown)
    sources: Counter[str] = Counter()
    for (srcs,) in con.execute(
        f"SELECT msc_source FROM _landscape_labels WHERE trial_id IN ({msc}) AND trial_id IN ({in_ci})"
    ).fetchall():
        for s in srcs or ["unspecified"]:
            sources[s] += 1
    assert {v["value"]: v["n"] for v in got["msc_source"]} == dict(sources)
    assert sum(sources.values()) > 50


def test_a_page_is_the_sorted_selection(snap: tuple[duckdb.DuckDBPyConnection, FacetIndex]) -> None:
    """Pages of a sort, joined, are the whole selection in that order (no trial twice or lost)."""
    con, index = snap
    base = [
        ("cell_type", "msc"),
        ("country", "China"),
        ("sort", "-start_date"),
        ("per_page", "200"),
    ]
    first = Q.trial_page(con, Q.parse_query(base), index=index)
    ids: list[str] = []
    for p in range(1, first["pages"] + 1):
        ids += [
            t["trial_id"]
            for t in Q.trial_page(con, Q.parse_query([*base, ("page", str(p))]), index=index)[
                "trials"
            ]
        ]
    rows = con.execute(
        f"SELECT trial_id FROM {Q.ST} WHERE is_cell_therapy AND list_contains(cell_type, 'msc') "
        "AND list_contains(countries_lower, 'china') ORDER BY start_date DESC NULLS LAST, trial_id"
    ).fetchall()
    assert ids == [r[0] for r in rows] and len(ids) > 200


def test_words_of_q_split_like_the_sql(snap: tuple[duckdb.DuckDBPyConnection, FacetIndex]) -> None:
    """Tabs, non-breaking spaces and repeated spaces separate words as in the SQL path."""
    con, index = snap
    for q in ("cord\tblood", "cord\u00a0blood", "  cord   blood "):
        assert [w for w in re.split(r"\s+", q.lower()) if w] == ["cord", "blood"]
        _same(con, index, [("q", q)])
    assert isinstance(index.word_rows("cord"), np.ndarray)


def test_answers_are_plain_json_values(snap: tuple[duckdb.DuckDBPyConnection, FacetIndex]) -> None:
    con, index = snap
    page = Q.trial_page(con, Q.parse_query([("all_trials", "1")]), index=index)
    for t in page["trials"]:
        for v in t.values():
            assert v is None or isinstance(v, str | int | float | bool | list), (type(v), v)
    ov: dict[str, Any] = Q.overview(con, Q.parse_query([]), index=index)
    assert all(isinstance(v, int) or v is None for v in ov["headline"].values())


@pytest.mark.parametrize(
    "since,until,combo",
    [
        ("2020-01-01", None, []),
        ("2015-06-01", "2020-03-31", [("country", "China")]),
        ("2004", None, [("all_trials", "1")]),
        ("2019-01-01", None, [("cell_type", "car_t"), ("q", "lymphoma")]),
        ("2021-01-01", "2021-12-31", [("cell_type", "msc"), ("phase", "2")]),
        ("2030-01-01", None, []),  # nothing yet
        (None, None, [("status", "recruiting")]),  # default: 30 days before the data date
    ],
)
def test_changes_from_the_index_equal_the_library(
    snap: tuple[duckdb.DuckDBPyConnection, FacetIndex],
    since: str | None,
    until: str | None,
    combo: list[tuple[str, str]],
) -> None:
    """The changes page from the index equals celltrials.changes.changes over
    the report's selection (the SQL path), counts and listed rows."""
    con, index = snap
    q = Q.parse_query(combo)
    for limit in (5, 500, 100_000):
        got = Q.changes_page(con, q, since, until, limit, index=index)
        want = Q.changes_page(con, q, since, until, limit)
        assert got["counts"] == want["counts"] and got["total"] == want["total"]
        key = ("date", "kind", "trial_id", "record_id")
        # rows tied on the listed order's key may come in any order from SQL
        assert [tuple(r[k] for k in key) for r in got["changes"]] == [
            tuple(r[k] for k in key) for r in want["changes"]
        ]
        if limit == 100_000:
            assert sorted(map(repr, got["changes"])) == sorted(map(repr, want["changes"]))
            assert len(got["changes"]) == got["total"]


def test_trial_detail_with_the_index_equals_without(
    snap: tuple[duckdb.DuckDBPyConnection, FacetIndex],
) -> None:
    con, index = snap
    ids = [
        r[0]
        for r in con.execute(
            f"SELECT trial_id FROM {Q.ST} USING SAMPLE 15 ROWS (reservoir, 7)"
        ).fetchall()
    ]
    for tid in [*ids, "NCT04315987"]:
        assert Q.trial_detail(con, tid, index=index) == Q.trial_detail(con, tid), tid
    assert Q.trial_detail(con, "NO-SUCH-ID", index=index) is None


def test_one_trials_labels_by_look_up_equal_the_stores(
    snap: tuple[duckdb.DuckDBPyConnection, FacetIndex],
) -> None:
    """The dashboard's one-trial label_rows (point look-ups) returns what
    Store.label_rows returns (one query over every trial)."""
    con, _ = snap
    ids = [
        r[0]
        for r in con.execute(
            "SELECT trial_id FROM labels USING SAMPLE 10 ROWS (reservoir, 3)"
        ).fetchall()
    ]
    mine = Q._SnapshotStore(con, "")
    theirs = Store(con, "")
    for tid in [*ids, "NO-SUCH-ID"]:
        assert mine.label_rows([tid]) == theirs.label_rows([tid]), tid
    assert mine.label_rows(ids[:3]) == theirs.label_rows(ids[:3])
    assert len(mine.label_rows(ids[:1])) == 1
