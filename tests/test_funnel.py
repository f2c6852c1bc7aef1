"""The development funnel, checked against an independent pandas computation on real trials."""

from __future__ import annotations

import csv
import itertools
import re
import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import celltrials
from celltrials.analysis.funnel import funnel, funnel_frame, years_to_approval
from celltrials.errors import AnalysisError
from celltrials.ingest import ingest_paths
from celltrials.products import DEFAULT_CATALOG, link_products

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MSC_CSV = DATA / "ctgov-classic-csv" / "msc_mesenchymal_stem_or_stromal.csv"

# the classic export's phase spellings -> API v2 (written out here, not taken from the package)
PHASE_API = {
    "Early Phase 1": "EARLY_PHASE1",
    "Phase 1": "PHASE1",
    "Phase 1|Phase 2": "PHASE1_PHASE2",
    "Phase 2": "PHASE2",
    "Phase 2|Phase 3": "PHASE2_PHASE3",
    "Phase 3": "PHASE3",
    "Phase 4": "PHASE4",
    "Not Applicable": "NOT_APPLICABLE",
    "": "UNKNOWN",
}


def _rows() -> list[dict[str, str]]:
    with MSC_CSV.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _source(text: str) -> str:
    t = text.lower()
    if "prochymal" in t or "remestemcel" in t:  # bone-marrow MSCs
        return "bone_marrow"
    if "umbilical" in t or "wharton" in t:
        return "umbilical_cord"
    if "adipose" in t:
        return "adipose"
    if "bone marrow" in t:
        return "bone_marrow"
    return ""


def _cell_types(title: str) -> list[str]:
    return ["msc", "mononuclear_cells"] if "mononuclear" in title.lower() else ["msc"]


def _input(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": [r["NCT Number"] for r in rows],
            "cell_type": [";".join(_cell_types(r["Title"])) for r in rows],
            "msc_source": [_source(r["Title"] + " " + r["Interventions"]) for r in rows],
            "phase": [PHASE_API[r["Phases"]] for r in rows],
            "status": [r["Status"].upper().replace(", ", "_").replace(" ", "_") for r in rows],
            "start_date": [r["Start Date"] for r in rows],
            "registration_date": [r["First Posted"] for r in rows],
        }
    )


def _mentions_remestemcel(r: dict[str, str]) -> bool:
    toks = re.findall(r"[a-z0-9]+", (r["Title"] + " | " + r["Interventions"]).lower())
    return "prochymal" in toks or any(
        a == "remestemcel" and b == "l" for a, b in itertools.pairwise(toks)
    )


def _start(text: str) -> datetime | None:
    for fmt in ("%B %d, %Y", "%B %Y"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    return None


def _catalog() -> list[dict[str, str]]:
    with DEFAULT_CATALOG.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _day(text: str) -> datetime:
    return datetime.strptime(text if len(text) == 10 else text + "-01", "%Y-%m-%d")


def _catalog_products() -> tuple[
    dict[tuple[str, str], set[str]], dict[str, str], dict[str, datetime]
]:
    """From products.csv with the csv module: the substances of each
    (cell_type, msc_source) group, the substance of each brand, and each
    substance's first approval (a YYYY-MM date is its first day)."""
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    sub_of: dict[str, str] = {}
    first: dict[str, datetime] = {}
    for c in _catalog():
        sub = c["substance"]
        sub_of[c["product"]] = sub
        groups[(c["cell_type"], c["msc_source"] if c["cell_type"] == "msc" else "")].add(sub)
        if c["approval_date"]:
            d = _day(c["approval_date"])
            first[sub] = min(first.get(sub, d), d)
    return groups, sub_of, first


def _expected(
    recs: list[dict[str, Any]], links: list[tuple[str, str]] | None = None
) -> pd.DataFrame:
    """The funnel from per-trial dicts (trial_id, cell_types, sources, phase,
    status, start) and trial -> brand links, computed with plain Python."""
    groups, sub_of, first_approval = _catalog_products()
    named: dict[str, set[str]] = defaultdict(set)  # substance -> trials naming it
    for tid, brand in links or []:
        named[sub_of[brand]].add(tid)
    first_start: dict[str, datetime] = {}
    starts = {r["trial_id"]: r["start"] for r in recs}
    for sub, tids in named.items():
        dated = [starts[t] for t in tids if t in starts and starts[t] is not None]
        if dated:
            first_start[sub] = min(dated)
    members: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        for fam in r["cell_types"]:
            for src in (r["sources"] or ["unspecified"]) if fam == "msc" else [""]:
                members[(fam, src)].append(r)
    out = []
    for (fam, src), rs in members.items():
        ids = {r["trial_id"] for r in rs}
        top = {r["trial_id"]: r["top_phase"] for r in rs}
        subs = groups.get((fam, src), set())
        with_trials = {s for s in subs if named[s] & ids}
        years, before = [], []
        for sub in with_trials:
            if sub in first_start and sub in first_approval:
                gap = (first_approval[sub] - first_start[sub]).days / 365.25
                (before if gap < 0 else years).append(round(gap, 2))
        out.append(
            {
                "family": fam,
                "msc_source": src,
                "registered": len(ids),
                "reached_phase2": sum(1 for v in top.values() if v >= 2),
                "reached_phase3": sum(1 for v in top.values() if v >= 3),
                "stopped": len({r["trial_id"] for r in rs if r["stopped"]}),
                "approved_products": len(with_trials),
                "approved_no_trials": len(subs - with_trials),
                "catalog_products": len(subs),
                "n_with_years": len(years),
                "median_years_to_approval": statistics.median(years) if years else float("nan"),
                "approved_before_first_trial": len(before),
                "approved_trial_ids": sorted({t for s in with_trials for t in named[s] & ids}),
            }
        )
    return pd.DataFrame(out).sort_values(["family", "msc_source"]).reset_index(drop=True)


def _raw_recs(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [
        {
            "trial_id": r["NCT Number"],
            "cell_types": _cell_types(r["Title"]),
            "sources": [s for s in [_source(r["Title"] + " " + r["Interventions"])] if s],
            "top_phase": max((int(d) for d in re.findall(r"Phase (\d)", r["Phases"])), default=0),
            "stopped": r["Status"] in ("Terminated", "Withdrawn"),
            "start": _start(r["Start Date"]),
        }
        for r in rows
    ]


COLS = [
    "family",
    "msc_source",
    "registered",
    "reached_phase2",
    "reached_phase3",
    "stopped",
    "approved_products",
    "approved_no_trials",
    "catalog_products",
    "n_with_years",
    "median_years_to_approval",
    "approved_before_first_trial",
    "approved_trial_ids",
]


def _check(got: pd.DataFrame, exp: pd.DataFrame) -> None:
    got = got.assign(approved_trial_ids=got["approved_trial_ids"].map(list))
    pd.testing.assert_frame_equal(
        got[COLS].reset_index(drop=True), exp[COLS], check_dtype=False, check_exact=False
    )
    # no stage has more products than trials behind it, and no duration is negative
    assert (got["approved_products"] <= got["approved_trial_ids"].map(len)).all()
    assert (got["approved_products"] + got["approved_no_trials"] == got["catalog_products"]).all()
    assert not (got["median_years_to_approval"] < 0).any()


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    rs = _rows()
    assert len(rs) == 1389
    return rs


def test_funnel_counts_equal_independent_computation(rows: list[dict[str, str]]) -> None:
    got = funnel_frame(_input(rows))  # no links: no product is known to have registered trials
    exp = _expected(_raw_recs(rows))
    _check(got, exp)
    assert (got["approved_products"] == 0).all()
    assert (got["share_stopped"] == got["stopped"] / got["registered"]).all()
    assert set(got["family"]) == {"msc", "mononuclear_cells"}
    mono = got[got["family"] == "mononuclear_cells"].iloc[0]
    assert mono["msc_source"] == "" and mono["approved_no_trials_names"] == "AutoStem; Queencell"
    bm = got[(got["family"] == "msc") & (got["msc_source"] == "bone_marrow")].iloc[0]
    # remestemcel-L (Prochymal, Ryoncil) is one product
    assert "remestemcel-L (Ryoncil, Prochymal)" in bm["approved_no_trials_names"].split("; ")
    assert "Prochymal" not in bm["approved_no_trials_names"].split("; ")


def test_remestemcel_is_one_product_with_one_time_to_approval(rows: list[dict[str, str]]) -> None:
    linked = [r for r in rows if _mentions_remestemcel(r)]
    assert len(linked) >= 15
    links = [(r["NCT Number"], p) for r in linked for p in ("Prochymal", "Ryoncil")]
    link_df = pd.DataFrame(links, columns=["trial_id", "product"])
    first = min(
        (r for r in linked if _start(r["Start Date"])), key=lambda r: _start(r["Start Date"])
    )
    # first approval of remestemcel-L by any regulator: Health Canada, 17 May 2012
    expected_years = round((datetime(2012, 5, 17) - _start(first["Start Date"])).days / 365.25, 2)

    yta = years_to_approval(_input(rows), link_df).set_index("substance")
    assert list(yta.index) == ["remestemcel-L"]
    rem = yta.loc["remestemcel-L"]
    assert rem["first_trial_id"] == first["NCT Number"]
    assert rem["years"] == expected_years > 0 and not rem["approved_before_first_trial"]
    assert rem["n_linked_trials"] == len(linked)

    got = funnel_frame(_input(rows), links=link_df)
    _check(got, _expected(_raw_recs(rows), links))
    stage = got[got["approved_products"] > 0]
    assert set(stage["approved_product_names"]) == {"remestemcel-L (Ryoncil, Prochymal)"}
    assert (stage["approved_products"] == 1).all()


def test_approved_before_first_registered_trial_is_shown_apart() -> None:
    """Hearticellgram-AMI was approved in July 2011; a trial starting in 2013
    that names it gives no negative duration but an 'approved before' count."""
    trials = pd.DataFrame(
        {
            "trial_id": ["T1", "T2"],
            "cell_type": ["msc", "msc"],
            "msc_source": ["bone_marrow", "bone_marrow"],
            "phase": ["PHASE2", "PHASE3"],
            "status": ["COMPLETED", "COMPLETED"],
            "start_date": ["2013-09-01", "2005-04-27"],
        }
    )
    links = pd.DataFrame({"trial_id": ["T1", "T2"], "product": ["Hearticellgram-AMI", "Ryoncil"]})
    yta = years_to_approval(trials, links).set_index("substance")
    hc = yta.loc["Hearticellgram-AMI"]
    assert hc["approved_before_first_trial"] and pd.isna(hc["years"])
    assert hc["years_before"] == round(
        (datetime(2013, 9, 1) - datetime(2011, 7, 1)).days / 365.25, 2
    )
    got = funnel_frame(trials, links=links).iloc[0]
    assert got["approved_products"] == 2 and got["approved_before_first_trial"] == 1
    assert got["approved_before_first_trial_names"] == "Hearticellgram-AMI"
    assert got["n_with_years"] == 1
    assert got["median_years_to_approval"] == round(
        (datetime(2012, 5, 17) - datetime(2005, 4, 27)).days / 365.25, 2
    )


def test_funnel_from_store(rows: list[dict[str, str]]) -> None:
    store = celltrials.open(":memory:")
    ingest_paths(store, [MSC_CSV])
    with pytest.raises(AnalysisError, match="labels"):
        funnel(store)  # not classified yet
    labels = _input(rows)[["trial_id", "cell_type", "msc_source"]]
    store.con.register("_labels", labels)
    store.con.execute(
        "INSERT INTO labels (trial_id, is_cell_therapy, cell_type, msc_source) "
        "SELECT trial_id, true, string_split(cell_type, ';'), string_split(msc_source, ';') FROM _labels"
    )
    links = link_products(store)
    assert set(links["product"]) >= {"Prochymal", "Ryoncil", "Cartistem"}
    got = funnel(store)
    pairs = list(links[["trial_id", "product"]].itertuples(index=False, name=None))
    _check(got, _expected(_raw_recs(rows), pairs))


@pytest.mark.unit
def test_funnel_input_errors() -> None:
    with pytest.raises(AnalysisError, match="lacks column"):
        funnel_frame(pd.DataFrame({"trial_id": ["NCT1"], "phase": ["PHASE1"]}))
    for cols in ({"trial_id": ["NCT1"]}, {"start_date": ["2020-01-01"]}):
        with pytest.raises(AnalysisError, match="lacks column"):
            years_to_approval(pd.DataFrame(cols), None)
    df = pd.DataFrame(
        {
            "trial_id": ["A", "B"],
            "cell_type": [["car_t"], None],
            "msc_source": [None, None],
            "phase": ["PHASE2", "PHASE3"],
            "status": ["WITHDRAWN", "COMPLETED"],
            "start_date": ["2020-01-01", None],
        }
    )
    got = funnel_frame(df)  # list-valued cell_type; a trial without cell type is left out
    assert got[["family", "registered", "reached_phase2", "stopped"]].to_dict("records") == [
        {"family": "car_t", "registered": 1, "reached_phase2": 1, "stopped": 1}
    ]
    with pytest.raises(AnalysisError, match="cannot group"):
        funnel_frame(df, by=("sponsor",))


def test_funnel_on_the_classified_reference_store(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path
) -> None:
    """All of ../shared/data, classified and linked: the funnel re-derived with
    plain pandas from the stored labels, trials, product links and products.csv."""
    from tests.conftest_report import classified_store_path

    with celltrials.open(
        classified_store_path(tmp_path_factory, full_store_path), read_only=True
    ) as store:
        got = funnel(store)
        lab = store.query("SELECT trial_id, is_cell_therapy, cell_type, msc_source FROM labels")
        tr = store.query("SELECT trial_id, phase, status, start_date FROM trials")
        links = store.query("SELECT trial_id, product FROM product_links")
    df = lab[lab["is_cell_therapy"]].merge(tr, on="trial_id")
    recs = [
        {
            "trial_id": r["trial_id"],
            "cell_types": [c for c in (r["cell_type"] if r["cell_type"] is not None else []) if c],
            "sources": [x for x in (r["msc_source"] if r["msc_source"] is not None else []) if x],
            "top_phase": max((int(d) for d in re.findall(r"\d", r["phase"] or "")), default=0),
            "stopped": r["status"] in ("TERMINATED", "WITHDRAWN"),
            "start": None
            if pd.isna(r["start_date"])
            else pd.Timestamp(r["start_date"]).to_pydatetime(),
        }
        for r in df.to_dict("records")
    ]
    pairs = list(links.itertuples(index=False, name=None))
    _check(got, _expected(recs, pairs))
    by = got.set_index(["family", "msc_source"])
    # remestemcel-L is one product; CAR-T counts products, not product x regulator rows
    assert (
        "remestemcel-L (Ryoncil, Prochymal)"
        in by.loc[("msc", "bone_marrow"), "approved_product_names"]
    )
    assert by.loc[("car_t", ""), "approved_products"] >= 10
    assert "Yescarta" not in by.loc[("car_t", ""), "approved_product_names"].split("; ")
    # products sit in the cell-type group the classifier gives the trials naming them: every product
    # named by a classified cell-therapy trial reaches the approved stage of its own catalog group
    _, sub_of, _ = _catalog_products()
    typed = {r["trial_id"] for r in recs if r["cell_types"]}
    named = {sub_of[p] for tid, p in pairs if tid in typed}
    at_stage = {
        s.split(" (")[0] for names in got["approved_product_names"] for s in names.split("; ") if s
    }
    assert named == at_stage, named ^ at_stage
    # groups whose catalog products outnumber their trials say so: the products stand apart
    for key in [("somatic_other", ""), ("hsc", "")]:
        row = by.loc[key]
        assert row["approved_products"] <= len(row["approved_trial_ids"]) <= row["registered"]
        assert row["approved_no_trials"] == row["catalog_products"] - row["approved_products"] > 0


@pytest.mark.unit
@pytest.mark.parametrize(
    ("cell_type", "msc_source", "expected"),
    [
        # list values (the store's labels), in the list's order
        (
            ["msc", "car_t"],
            ["umbilical_cord", "bone_marrow"],
            [("msc", "umbilical_cord"), ("msc", "bone_marrow"), ("car_t", "")],
        ),
        # ';'-joined text (a CSV of labels), blanks and padding dropped
        ("msc; ;nk", " adipose ;", [("msc", "adipose"), ("nk", "")]),
        # MSC without a stated source; missing and empty values
        (["msc", " "], [], [("msc", "unspecified")]),
        (None, ["bone_marrow"], []),
        ([], None, []),
        (["nk", None], "x", [("nk", "")]),
        # one (family, source) per trial however often it is named
        (["msc", "msc"], ["adipose", "adipose"], [("msc", "adipose")]),
        # missing items as pandas reads them (NaN, pd.NA) are no values; arrays are lists
        (["nk", float("nan"), pd.NA], np.array(["x"], dtype=object), [("nk", "")]),
        (np.array(["msc"], dtype=object), [pd.NA], [("msc", "unspecified")]),
    ],
)
def test_explode_labels_rows(
    cell_type: Any, msc_source: Any, expected: list[tuple[str, str]]
) -> None:
    from celltrials.analysis.funnel import explode_labels

    df = pd.DataFrame(
        {
            "trial_id": ["T1", "T0"],
            "cell_type": [cell_type, ["car_t"]],
            "msc_source": [msc_source, None],
            "phase": [None, "PHASE1"],
            "status": [None, "RECRUITING"],
            "start_date": ["2020-02-03", None],
        },
        index=[7, 7],  # any index: rows are exploded by position
    )
    got = explode_labels(df)
    assert list(got[["trial_id", "family", "msc_source"]].itertuples(index=False, name=None)) == [
        *(("T1", f, s) for f, s in expected),
        ("T0", "car_t", ""),
    ]
    assert list(got.index) == list(range(len(got)))
    if expected:
        first = got.iloc[0]
        assert (first["phase"], first["status"]) == ("UNKNOWN", "")
        assert first["start_date"] == pd.Timestamp("2020-02-03")
    assert pd.isna(got.iloc[-1]["start_date"])


_FAMILIES = st.lists(st.sampled_from(["msc", "nk", "car_t", " ", ""]), max_size=3)


@pytest.mark.unit
@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), _FAMILIES, st.lists(st.sampled_from(["adipose", "x"]))),
        max_size=12,
    )
)
def test_explode_labels_reads_shared_lists_as_per_row_values(
    rows: list[tuple[int, list[str], list[str]]],
) -> None:
    """A store's label lists are shared objects (one per distinct list, see
    ``landscape.frame_of``) and explode_labels reads each object once: the rows
    must still be each row's own values, as a plain per-row loop gives them."""
    from celltrials.analysis.funnel import explode_labels

    shared = [["msc", "nk"], ["car_t"], [], ["msc"]]  # the same objects in many rows
    cell_types = [shared[k] if k < 3 else fams for k, fams, _ in rows]
    sources = [srcs for _, _, srcs in rows]
    df = pd.DataFrame(
        {
            "trial_id": [f"T{i}" for i in range(len(rows))],
            "cell_type": pd.Series(cell_types, dtype=object),
            "msc_source": pd.Series(sources, dtype=object),
            "phase": "PHASE2",
            "status": "",
            "start_date": None,
        }
    )
    expected = []
    for i, (fams, srcs) in enumerate(zip(cell_types, sources, strict=True)):
        seen = []
        for f in (f.strip() for f in fams):
            if not f:
                continue
            for s in (srcs or ["unspecified"]) if f == "msc" else [""]:
                if (f, s) not in seen:
                    seen.append((f, s))
        expected += [(f"T{i}", f, s) for f, s in seen]
    got = explode_labels(df)
    assert list(got[["trial_id", "family", "msc_source"]].itertuples(index=False, name=None)) == (
        expected
    )


@pytest.mark.unit
def test_store_dates_parse_as_their_text() -> None:
    """Dates as the store returns them (``datetime.date``) take a shortcut; they
    must come out as the same timestamps, and of the same type, as their text."""
    from datetime import date

    from celltrials.analysis.funnel import _dates

    days = [date(2019, 12, 31), None, date(2024, 2, 29)]
    text = pd.Series(["2019-12-31", None, "2024-02-29"], dtype=object)
    pd.testing.assert_series_equal(_dates(pd.Series(days, dtype=object)), _dates(text))
