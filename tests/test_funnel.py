"""The development funnel, checked against an independent pandas computation on real trials."""

from __future__ import annotations

import csv
import itertools
import math
import re
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

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


def _expected(rows: list[dict[str, str]]) -> pd.DataFrame:
    """Independent computation from the raw export strings."""
    recs = []
    for r in rows:
        phases = [int(d) for d in re.findall(r"Phase (\d)", r["Phases"])]
        top = max(phases, default=0)
        for fam in _cell_types(r["Title"]):
            recs.append(
                {
                    "family": fam,
                    "msc_source": (_source(r["Title"] + " " + r["Interventions"]) or "unspecified")
                    if fam == "msc"
                    else "",
                    "p2": top >= 2,
                    "p3": top >= 3,
                    "stop": r["Status"] in ("Terminated", "Withdrawn"),
                }
            )
    df = pd.DataFrame(recs)
    exp = df.groupby(["family", "msc_source"]).agg(
        registered=("p2", "size"),
        reached_phase2=("p2", "sum"),
        reached_phase3=("p3", "sum"),
        stopped=("stop", "sum"),
    )
    with DEFAULT_CATALOG.open(encoding="utf-8", newline="") as f:
        cat = list(csv.DictReader(f))
    exp["approved_products"] = [
        len(
            {
                c["product"]
                for c in cat
                if c["cell_type"] == fam and (fam != "msc" or c["msc_source"] == src)
            }
        )
        for fam, src in exp.index
    ]
    return exp.reset_index()


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    rs = _rows()
    assert len(rs) == 1389
    return rs


def test_funnel_counts_equal_independent_computation(rows: list[dict[str, str]]) -> None:
    got = funnel_frame(_input(rows))
    exp = _expected(rows)
    cols = [
        "family",
        "msc_source",
        "registered",
        "reached_phase2",
        "reached_phase3",
        "stopped",
        "approved_products",
    ]
    pd.testing.assert_frame_equal(
        got[cols].reset_index(drop=True),
        exp[cols].sort_values(["family", "msc_source"]).reset_index(drop=True),
        check_dtype=False,
    )
    assert (got["share_stopped"] == got["stopped"] / got["registered"]).all()
    assert set(got["family"]) == {"msc", "mononuclear_cells"}
    mono = got[got["family"] == "mononuclear_cells"].iloc[0]
    assert mono["msc_source"] == "" and mono["approved_product_names"] == "AutoStem; Queencell"
    bm = got[(got["family"] == "msc") & (got["msc_source"] == "bone_marrow")].iloc[0]
    assert {"Prochymal", "Ryoncil", "Temcell HS Inj."} <= set(
        bm["approved_product_names"].split("; ")
    )


def test_years_to_approval_for_remestemcel(rows: list[dict[str, str]]) -> None:
    linked = [r for r in rows if _mentions_remestemcel(r)]
    assert len(linked) >= 15
    links = pd.DataFrame(
        [
            {"trial_id": r["NCT Number"], "product": p}
            for r in linked
            for p in ("Prochymal", "Ryoncil")
        ]
    )
    first = min(linked, key=lambda r: datetime.strptime(r["First Posted"], "%B %d, %Y"))
    first_day = datetime.strptime(first["First Posted"], "%B %d, %Y")
    expected = {
        "Prochymal": round((datetime(2012, 5, 17) - first_day).days / 365.25, 2),
        "Ryoncil": round((datetime(2024, 12, 18) - first_day).days / 365.25, 2),
    }
    yta = years_to_approval(_input(rows), links).set_index("product")
    assert yta.loc["Prochymal", "first_trial_id"] == first["NCT Number"]
    assert yta.loc["Prochymal", "years"] == expected["Prochymal"]
    assert yta.loc["Ryoncil", "years"] == expected["Ryoncil"]
    assert yta.loc["Ryoncil", "n_linked_trials"] == len(linked)

    got = funnel_frame(_input(rows), links=links)
    bm = got[(got["family"] == "msc") & (got["msc_source"] == "bone_marrow")].iloc[0]
    assert bm["linked_products"] == 2
    assert math.isclose(
        bm["median_years_to_approval"], (expected["Prochymal"] + expected["Ryoncil"]) / 2
    )
    others = got[got["msc_source"] != "bone_marrow"]
    assert (others["linked_products"] == 0).all() and others[
        "median_years_to_approval"
    ].isna().all()


def test_funnel_from_store(rows: list[dict[str, str]]) -> None:
    store = celltrials.open(":memory:")
    ingest_paths(store, [MSC_CSV])
    with pytest.raises(AnalysisError, match="labels"):
        funnel(store)  # not classified yet
    labels = _input(rows)[["trial_id", "cell_type", "msc_source"]]
    store.con.register("_labels", labels)
    store.con.execute(
        "INSERT INTO labels (trial_id, is_cell_therapy, cell_type, msc_source) "
        "SELECT trial_id, true, cell_type, msc_source FROM _labels"
    )
    links = link_products(store)
    assert set(links["product"]) >= {"Prochymal", "Ryoncil", "Cartistem"}
    got = funnel(store)
    exp = _expected(rows)
    cols = [
        "family",
        "msc_source",
        "registered",
        "reached_phase2",
        "reached_phase3",
        "stopped",
        "approved_products",
    ]
    pd.testing.assert_frame_equal(
        got[cols].reset_index(drop=True),
        exp[cols].sort_values(["family", "msc_source"]).reset_index(drop=True),
        check_dtype=False,
    )
    # products of a group named in the store's trials, via product_links
    linked = set(links["product"])
    for _, row in got.iterrows():
        names = set(filter(None, row["approved_product_names"].split("; ")))
        assert row["linked_products"] == len(names & linked)


@pytest.mark.unit
def test_funnel_input_errors() -> None:
    with pytest.raises(AnalysisError, match="lacks column"):
        funnel_frame(pd.DataFrame({"trial_id": ["NCT1"], "phase": ["PHASE1"]}))
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


def test_funnel_on_classifier_labels() -> None:
    """End to end: ingest, classify (the project's classifier), link, funnel;
    counts re-derived with plain pandas from the stored tables."""
    from celltrials.classify import classify_store

    store = celltrials.open(":memory:")
    ingest_paths(store, [MSC_CSV])
    classify_store(store)
    link_products(store)
    got = funnel(store)

    lab = store.query("SELECT trial_id, is_cell_therapy, cell_type, msc_source FROM labels")
    tr = store.query("SELECT trial_id, phase, status FROM trials")
    df = lab[lab["is_cell_therapy"]].merge(tr, on="trial_id")
    recs = []
    for r in df.to_dict("records"):
        for fam in [c for c in (r["cell_type"] or "").split(";") if c]:
            srcs = [x for x in (r["msc_source"] or "").split(";") if x] or ["unspecified"]
            for src in srcs if fam == "msc" else [""]:
                recs.append({**r, "family": fam, "msc_source": src})
    exp = pd.DataFrame(recs).drop_duplicates(["family", "msc_source", "trial_id"])
    exp["p2"] = exp["phase"].map(
        lambda p: p in {"PHASE1_PHASE2", "PHASE2", "PHASE2_PHASE3", "PHASE3", "PHASE4"}
    )
    exp["p3"] = exp["phase"].map(lambda p: p in {"PHASE2_PHASE3", "PHASE3", "PHASE4"})
    exp["stop"] = exp["status"].map(lambda s: s in {"TERMINATED", "WITHDRAWN"})
    agg = (
        exp.groupby(["family", "msc_source"])
        .agg(
            registered=("trial_id", "size"),
            reached_phase2=("p2", "sum"),
            reached_phase3=("p3", "sum"),
            stopped=("stop", "sum"),
        )
        .reset_index()
    )
    cols = ["family", "msc_source", "registered", "reached_phase2", "reached_phase3", "stopped"]
    pd.testing.assert_frame_equal(got[cols], agg[cols], check_dtype=False)
    msc = got[got["family"] == "msc"]
    assert msc["registered"].sum() > 1000
    bm = msc[msc["msc_source"] == "bone_marrow"].iloc[0]
    assert bm["linked_products"] >= 2 and bm["approved_products"] >= 9
