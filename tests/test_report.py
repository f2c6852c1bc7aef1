"""The landscape report (issue 4) on the real registry data in ../shared/data.

Every number the HTML shows carries ``data-count-id``; the tests recompute
each one with their own pandas/SQL over the store's raw tables and views
(``trials``, ``countries``, ``labels``, ``ingests``, ``trial_records``) and
compare, and check that each count opens exactly the trials behind it.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date
from os.path import commonpath
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

import celltrials
from celltrials.analysis import landscape as L
from celltrials.cli import cli
from celltrials.errors import AnalysisError, ConfigError
from celltrials.ingest import ingest_paths
from celltrials.report.build import ReportResult, build_report
from tests.conftest import DATA, MSC_CSV
from tests.conftest_report import (
    classified_store_path,
    decode_list,
    default_report,
    number,
    parse_page,
)

IMMUNE = {
    "car_t",
    "car_nk",
    "tcr_t",
    "til",
    "nk",
    "cik",
    "dc",
    "treg",
    "virus_specific_t",
    "gamma_delta_t",
    "macrophage",
    "other_immune",
}
STEM = {
    "msc",
    "hsc",
    "ipsc_derived",
    "esc_derived",
    "mononuclear_cells",
    "neural_stem",
    "other_stem",
}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, full_store_path: Path) -> Path:
    return classified_store_path(tmp_path_factory, full_store_path)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, store_path: Path) -> ReportResult:
    return default_report(tmp_path_factory, store_path)


# ------------------------------------------------------- independent expectations
def _split(v: Any) -> list[str]:
    """A multi-valued label (a list in the store, ``;``-joined text in the catalog) as a sorted set."""
    if v is None or (isinstance(v, float) and v != v):
        return []
    items = str(v).split(";") if isinstance(v, str) else v
    return sorted({str(x).strip() for x in items if x is not None and str(x).strip()})


class Expected:
    """count id → (number, trial ids) computed with pandas from raw store tables."""

    def __init__(self) -> None:
        self.n: dict[str, int] = {}
        self.ids: dict[str, set[str]] = {}

    def add(self, cid: str, ids: Iterable[str], n: int | None = None) -> None:
        s = set(ids)
        self.ids[cid] = s
        self.n[cid] = len(s) if n is None else n

    def group(self, prefix: str, pairs: Iterable[tuple[Any, str]]) -> None:
        acc: dict[str, set[str]] = defaultdict(set)
        for key, tid in pairs:
            acc[f"{prefix}:{key}"].add(tid)
        for cid, s in acc.items():
            self.add(cid, s)


def expected_numbers(store_path: Path) -> tuple[Expected, pd.DataFrame, date]:
    with celltrials.open(store_path, read_only=True) as store:
        return _expected_numbers(store.con)


def _expected_numbers(con: Any) -> tuple[Expected, pd.DataFrame, date]:  # noqa: C901 - the independent computation of every report number
    labels = con.execute("SELECT * FROM labels").df()
    all_trials = con.execute("SELECT * FROM trials").df()
    dd = pd.Timestamp(all_trials["last_update"].max()).date()
    ct_ids = set(labels.loc[labels["is_cell_therapy"] == True, "trial_id"])  # noqa: E712
    t = all_trials[all_trials["trial_id"].isin(ct_ids)].merge(labels, on="trial_id", how="left")
    for c in ("cell_type", "msc_source", "product_form", "therapeutic_area", "targets"):
        t[c] = t[c].map(_split)
    t["fams"] = t["cell_type"].map(
        lambda cts: (
            sorted(
                {"immune" if c in IMMUNE else "stem_stromal" if c in STEM else "other" for c in cts}
            )
            or ["unassigned"]
        )
    )
    t["start"] = pd.to_datetime(t["start_date"])
    t["year"] = t["start"].dt.year
    t["dated"] = t["start"].notna() & (t["start"] <= pd.Timestamp(dd))
    t["phase_"] = t["phase"].fillna("UNKNOWN")
    e = Expected()
    rows = t.to_dict("records")

    # headline
    e.add("headline:trials", t["trial_id"])
    has_n = t[t["enrollment"].notna()]
    e.add("headline:patients_total", has_n["trial_id"], int(has_n["enrollment"].sum()))
    for key, kind in (
        ("patients_actual", "ACTUAL"),
        ("patients_anticipated", "ESTIMATED"),
        ("patients_type_not_stated", "UNKNOWN"),
    ):
        sub = has_n[has_n["enrollment_type"].fillna("UNKNOWN") == kind]
        e.add(f"headline:{key}", sub["trial_id"], int(sub["enrollment"].sum()))
    e.add("headline:trials_without_enrollment", t.loc[t["enrollment"].isna(), "trial_id"])
    countries = con.execute(
        "SELECT trial_id, country FROM countries WHERE country IS NOT NULL"
    ).df()
    countries = countries[countries["trial_id"].isin(ct_ids)]
    e.add("headline:countries", countries["trial_id"], countries["country"].nunique())
    e.add("headline:registries", t.loc[t["registry"].notna(), "trial_id"], t["registry"].nunique())
    dated = t[t["dated"]]
    y0, y1 = int(dated["year"].min()), int(dated["year"].max())
    e.add("headline:first_start_year", dated.loc[dated["year"] == y0, "trial_id"], y0)
    e.add("headline:last_start_year", dated.loc[dated["year"] == y1, "trial_id"], y1)
    e.add("headline:start_date_missing", t.loc[t["start"].isna(), "trial_id"])
    e.add("headline:start_after_data_date", t.loc[t["start"] > pd.Timestamp(dd), "trial_id"])
    e.add("headline:merged_trials", t.loc[t["n_records"] > 1, "trial_id"])

    # sections
    e.group("registries", ((r["registry"], r["trial_id"]) for r in rows if r["registry"]))
    e.group(
        "immune_by_cell_type",
        ((c, r["trial_id"]) for r in rows for c in r["cell_type"] if c in IMMUNE),
    )
    e.group(
        "stem_by_cell_type", ((c, r["trial_id"]) for r in rows for c in r["cell_type"] if c in STEM)
    )
    e.group(
        "stem_by_indication",
        (
            (r["indication_group"] or "not_classified", r["trial_id"])
            for r in rows
            if "stem_stromal" in r["fams"]
        ),
    )
    msc = [r for r in rows if "msc" in r["cell_type"]]
    e.group(
        "msc_by_source",
        ((s, r["trial_id"]) for r in msc for s in (r["msc_source"] or ["unspecified"])),
    )
    e.group(
        "start_year_by_family",
        ((f"{int(r['year'])}|{f}", r["trial_id"]) for r in rows if r["dated"] for f in r["fams"]),
    )
    e.group(
        "phase_by_family", ((f"{r['phase_']}|{f}", r["trial_id"]) for r in rows for f in r["fams"])
    )
    e.group(
        "status_by_family",
        ((f"{r['status'] or 'UNKNOWN'}|{f}", r["trial_id"]) for r in rows for f in r["fams"]),
    )
    e.group(
        "stopped_reasons",
        (
            (
                f"{r['status']}|{(r['why_stopped'] or '').strip() or '(no reason given)'}",
                r["trial_id"],
            )
            for r in rows
            if r["status"] in ("TERMINATED", "WITHDRAWN", "SUSPENDED")
        ),
    )
    e.group("countries", zip(countries["country"], countries["trial_id"], strict=True))
    # spellings of one sponsor (same lead_sponsor_key) count under their most common spelling
    spelled = [r for r in rows if isinstance(r["lead_sponsor"], str) and r["lead_sponsor"].strip()]
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for r in spelled:
        spellings[r["lead_sponsor_key"]][r["lead_sponsor"]] += 1
    shown_as = {k: min(c, key=lambda name: (-c[name], name)) for k, c in spellings.items()}
    e.group("sponsors", ((shown_as[r["lead_sponsor_key"]], r["trial_id"]) for r in spelled))
    e.group("sponsor_classes", ((r["sponsor_class"] or "unknown", r["trial_id"]) for r in rows))
    e.group(
        "msc_source_by_area",
        (
            (f"{s}|{a}", r["trial_id"])
            for r in msc
            for s in (r["msc_source"] or ["unspecified"])
            for a in (r["therapeutic_area"] or ["not_classified"])
        ),
    )
    cart = [r for r in rows if "car_t" in r["cell_type"]]
    e.group(
        "car_t_targets_by_area",
        (
            (f"{g}|{a}", r["trial_id"])
            for r in cart
            for g in (r["targets"] or ["unspecified"])
            for a in (r["therapeutic_area"] or ["not_classified"])
        ),
    )
    e.group(
        "product_form_by_year",
        (
            (f"{int(r['year'])}|{p}", r["trial_id"])
            for r in rows
            if r["dated"]
            for p in r["product_form"]
        ),
    )

    # funnel: celltrials.analysis.funnel's definitions, recomputed here
    p2 = {"PHASE1_PHASE2", "PHASE2", "PHASE2_PHASE3", "PHASE3", "PHASE4"}
    p3 = {"PHASE2_PHASE3", "PHASE3", "PHASE4"}
    fun: list[tuple[str, str]] = []
    for r in rows:
        for c in r["cell_type"]:
            for s in (r["msc_source"] or ["unspecified"]) if c == "msc" else [""]:
                key = f"funnel:{c}|{s}"
                fun.append((f"{key}|registered", r["trial_id"]))
                if r["phase_"] in p2:
                    fun.append((f"{key}|reached_phase2", r["trial_id"]))
                if r["phase_"] in p3:
                    fun.append((f"{key}|reached_phase3", r["trial_id"]))
                if r["status"] in ("TERMINATED", "WITHDRAWN"):
                    fun.append((f"{key}|stopped", r["trial_id"]))
    acc: dict[str, set[str]] = defaultdict(set)
    for cid, tid in fun:
        acc[cid].add(tid)
    for cid, s in acc.items():
        e.add(cid, s)
    # approved products: active substances (products.csv's `substance`), the stage = those named by a
    # trial of the group (product_links), the rest apart; time to approval from the first naming trial's start
    catalog = pd.read_csv(REPO / "src/celltrials/taxonomy/products.csv", dtype=str).fillna("")
    sub_of = dict(zip(catalog["product"], catalog["substance"], strict=True))
    group_subs: dict[str, set[str]] = defaultdict(set)
    first_approval: dict[str, pd.Timestamp] = {}
    for r in catalog.to_dict("records"):
        for c in _split(r["cell_type"]):
            for s in (_split(r["msc_source"]) or ["unspecified"]) if c == "msc" else [""]:
                group_subs[f"funnel:{c}|{s}"].add(r["substance"])
        if r["approval_date"]:
            d = pd.Timestamp(
                r["approval_date"] if len(r["approval_date"]) == 10 else r["approval_date"] + "-01"
            )
            first_approval[r["substance"]] = min(first_approval.get(r["substance"], d), d)
    links = con.execute("SELECT DISTINCT trial_id, product FROM product_links").df()
    starts = dict(zip(t["trial_id"], t["start"], strict=True))
    named: dict[str, set[str]] = defaultdict(set)
    for tid, prod in links.itertuples(index=False):
        if tid in starts:
            named[sub_of[prod]].add(tid)
    for sub, tids in named.items():
        e.add(f"funnel_products:{sub}", tids)
    before = set()
    for sub, tids in named.items():
        dated = [starts[x] for x in tids if pd.notna(starts[x])]
        if dated and sub in first_approval and first_approval[sub] < min(dated):
            before.add(sub)
    for cid in [c for c in e.n if c.startswith("funnel:") and c.endswith("|registered")]:
        group = cid.removesuffix("|registered")
        for stage in ("reached_phase2", "reached_phase3", "stopped"):
            if f"{group}|{stage}" not in e.n:
                e.add(f"{group}|{stage}", ())
        subs = group_subs.get(group, set())
        members = e.ids[cid]
        with_trials = {x for x in subs if named[x] & members}
        e.add(
            f"{group}|approved_products",
            {x for s in with_trials for x in named[s] & members},
            len(with_trials),
        )
        e.n[f"{group}|approved_no_trials"] = len(subs - with_trials)
        e.n[f"{group}|approved_before_first_trial"] = len(with_trials & before)
        for sub in subs:  # every catalog product of a group shown is listed, with or without trials
            if f"funnel_products:{sub}" not in e.n:
                e.add(f"funnel_products:{sub}", ())

    # methods
    ing = con.execute("SELECT source, sum(n_records) AS n FROM ingests GROUP BY source").df()
    root = Path(commonpath([str(Path(s).parent) for s in ing["source"]]))
    for r in ing.to_dict("records"):
        rel = str(Path(r["source"]).relative_to(root))
        e.n[f"snapshots:{rel}|records_read"] = int(r["n"])
        e.add(f"snapshots:{rel}|trials", t.loc[t["source"] == r["source"], "trial_id"])
    e.add(
        "exclusions:classified as not cell therapy",
        labels.loc[labels["is_cell_therapy"].eq(False), "trial_id"],
    )
    unlabelled = set(all_trials["trial_id"]) - set(labels["trial_id"])
    if unlabelled:
        e.add("exclusions:not classified", unlabelled)
    e.add("unclassified_fields:no cell type", (r["trial_id"] for r in rows if not r["cell_type"]))
    e.add(
        "unclassified_fields:no indication group",
        (r["trial_id"] for r in rows if not r["indication_group"]),
    )
    e.add(
        "unclassified_fields:MSC without a stated source",
        (r["trial_id"] for r in msc if not r["msc_source"] or "unspecified" in r["msc_source"]),
    )
    e.add(
        "unclassified_fields:CAR-T without a recognised target",
        (r["trial_id"] for r in cart if not r["targets"]),
    )
    e.add("unclassified_fields:no start date", t.loc[t["start"].isna(), "trial_id"])
    tr = con.execute("SELECT trial_id, n_records FROM trial_records").df()
    merged = tr[tr["n_records"] > 1]
    e.n["methods:merged_trials_store"] = merged["trial_id"].nunique()
    e.n["methods:merged_records_store"] = len(merged)
    return e, t, dd


@pytest.fixture(scope="module")
def expected(store_path: Path) -> tuple[Expected, pd.DataFrame, date]:
    return expected_numbers(store_path)


# ---------------------------------------------------------------------- tests
def test_every_number_in_the_html_equals_an_independent_query(
    report: ReportResult, expected: Any
) -> None:
    e, t, _ = expected
    page, data = parse_page(report.html)
    assert len(page.counts) > 300  # the real data fill every section
    seen: dict[str, int] = {}
    for cid, text in page.counts:
        assert cid in e.n, f"{cid} is shown but the test computed no such number"
        assert number(text) == e.n[cid], f"{cid}: page shows {text}, expected {e.n[cid]}"
        seen[cid] = number(text)
    # every number the page has in its data blob is the one it shows
    assert data["counts"] == seen
    assert len(t) == seen["headline:trials"] > 3000


@pytest.mark.parametrize(
    "section",
    [
        "registries",
        "immune_by_cell_type",
        "stem_by_cell_type",
        "stem_by_indication",
        "msc_by_source",
        "start_year_by_family",
        "phase_by_family",
        "status_by_family",
        "stopped_reasons",
        "countries",
        "sponsor_classes",
        "msc_source_by_area",
        "product_form_by_year",
        "headline",
        "unclassified_fields",
        "exclusions",
    ],
)
def test_complete_sections_show_every_expected_count(
    report: ReportResult, expected: Any, section: str
) -> None:
    """Sections shown in full: no expected count is missing from the page."""
    e, _, _ = expected
    page, _ = parse_page(report.html)
    shown = {cid for cid, _ in page.counts if cid.startswith(section + ":")}
    want = {
        cid
        for cid, n in e.n.items()
        if cid.startswith(section + ":") and (n or section in ("headline", "unclassified_fields"))
    }
    assert shown == want


def test_top_n_sections_show_the_top_rows(report: ReportResult, expected: Any) -> None:
    e, _, _ = expected
    page, _ = parse_page(report.html)
    shown = [cid for cid, _ in page.counts if cid.startswith("sponsors:")]
    ranked = sorted((k for k in e.n if k.startswith("sponsors:")), key=lambda k: (-e.n[k], k))
    assert shown == ranked[:25]
    cart_shown = {
        cid.split(":", 1)[1].split("|")[0]
        for cid, _ in page.counts
        if cid.startswith("car_t_targets_by_area:")
    }
    totals: dict[str, int] = defaultdict(int)
    for k, n in e.n.items():
        if k.startswith("car_t_targets_by_area:"):
            totals[k.split(":", 1)[1].split("|")[0]] += n
    top = [
        *sorted((g for g in totals if g != "unspecified"), key=lambda g: (-totals[g], g))[:15],
        "unspecified",
    ]
    assert cart_shown == set(top)
    # every cell of the shown targets is shown
    want = {
        k
        for k in e.n
        if k.startswith("car_t_targets_by_area:") and k.split(":", 1)[1].split("|")[0] in top
    }
    assert {cid for cid, _ in page.counts if cid.startswith("car_t_targets_by_area:")} == want


def test_every_count_opens_exactly_its_trials(report: ReportResult, expected: Any) -> None:
    e, _, _ = expected
    page, data = parse_page(report.html)
    checked = 0
    for cid, _ in page.counts:
        if cid in data["lists"]:
            got = decode_list(data, cid)
            assert len(got) == len(set(got))
            assert set(got) == e.ids[cid], cid
            checked += 1
    assert checked > 300
    # each listed trial links to its registry record
    by_id = {row[0]: row for row in data["trials"]}
    nct = next(r for r in data["trials"] if r[0].startswith("NCT"))
    assert "clinicaltrials.gov" in nct[2].lower()
    assert all(row[2].startswith("http") for row in by_id.values())


def test_funnel_figure_draws_every_stage_its_title_names(report: ReportResult) -> None:
    _, data = parse_page(report.html)
    html = report.html.read_text(encoding="utf-8")
    title = re.search(r'data-chart="funnel" role="img" aria-label="([^"]+)"', html)
    assert title is not None
    stages = [x.strip() for x in title.group(1).split(":", 1)[1].split("→")]
    assert stages == ["trials", "phase 2", "phase 3", "approved products"]
    traces = data["charts"]["funnel"]["data"]
    assert len(traces) == len(stages)
    for stage, tr in zip(stages, traces, strict=True):
        assert stage in tr["name"] and any(tr["y"]), (stage, tr["name"])
    svg = (report.out_dir / "figures" / "funnel.svg").read_text(encoding="utf-8")
    for tr in traces:
        assert tr["name"] in svg
    # no product x regulator rows: remestemcel-L is one product of bone-marrow MSC
    assert data["counts"]["funnel:msc|bone_marrow|approved_products"] >= 1
    assert "remestemcel-L (Ryoncil, Prochymal)" in html


def test_charts_draw_the_table_numbers(report: ReportResult) -> None:
    page, data = parse_page(report.html)
    assert set(page.charts) == set(data["charts"])
    assert len(page.charts) >= 14
    for name, fig in data["charts"].items():
        n_points = 0
        for tr in fig["data"]:
            if tr["type"] == "heatmap":
                for zrow, idrow in zip(tr["z"], tr["customdata"], strict=True):
                    for z, cid in zip(zrow, idrow, strict=True):
                        if cid is not None:
                            assert z == data["counts"][cid], (name, cid)
                            n_points += 1
            else:
                values = tr["x"] if tr.get("orientation") == "h" else tr["y"]
                for v, cid in zip(values, tr["customdata"], strict=True):
                    if cid is not None:
                        assert v == data["counts"][cid], (name, cid)
                        n_points += 1
        assert n_points > 0, name


def test_partial_year_and_snapshot_dates(report: ReportResult, expected: Any) -> None:
    _e, _t, dd = expected
    assert dd == date(2026, 8, 21)  # the CAR-T snapshot's latest update
    page, _data = parse_page(report.html)
    html = report.html.read_text(encoding="utf-8")
    assert f"data as of <strong>{dd.isoformat()}</strong>" in html
    assert f"{dd.year} (partial: Immune cells" in html
    sy = report.sections["start_year_by_family"]
    assert set(sy.loc[sy["partial"], "year"]) == {dd.year}
    assert sy["year"].max() == dd.year
    # the headline states each source's window (snapshot date), per source with trials here
    with celltrials.open(report_store_path(report), read_only=True) as store:
        snap = _snapshots(store.con)
        shown_sources = {
            r[0]
            for r in store.con.execute("""
            SELECT DISTINCT source FROM trials WHERE trial_id IN (SELECT trial_id FROM labels WHERE is_cell_therapy)
            """).fetchall()
        }
        ingested = [
            r[0] for r in store.con.execute("SELECT DISTINCT source FROM ingests").fetchall()
        ]
    root = Path(commonpath([str(Path(s).parent) for s in ingested]))
    want = {str(Path(src).relative_to(root)): snap[src].isoformat() for src in shown_sources}
    shown = {
        cid.split(":", 1)[1]: re.search(r"(\d{4}-\d{2}-\d{2})\s*$", text).group(1)  # type: ignore[union-attr]
        for cid, text in page.dates
        if cid.startswith("window:")
    }
    assert shown == want
    assert want["ctgov-classic-csv/msc_mesenchymal_stem_or_stromal.csv"] == "2022-10-05"


def _snapshots(con: Any) -> dict[str, date]:
    """Snapshot date per source file: the later of the latest registry update
    among its records and the export stamp the file states (ICTRP's "Export
    date", kept verbatim in each record's raw JSON)."""
    from datetime import datetime

    out: dict[str, date] = {}
    for src, upd, stamps in con.execute("""
            SELECT source, max(last_update), list(DISTINCT raw_json(raw)->>'$.export_date')
            FROM records GROUP BY source""").fetchall():
        days = [upd] if upd else []
        for st in stamps or []:
            if not st:
                continue
            for fmt in ("%m/%d/%Y %I:%M:%S %p", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
                try:
                    days.append(datetime.strptime(st, fmt).date())
                    break
                except ValueError:
                    pass
            else:
                raise AssertionError(f"unreadable export stamp {st!r} in {src}")
        if days:
            out[src] = max(days)
    return out


def _expected_marks(t: pd.DataFrame, key: str, snap: dict[str, date]) -> dict[tuple[str, int], str]:
    """(series, year) -> 'partial' / 'not_covered' for a per-year chart, by the rule
    stated in the report: sources (of the trials' primary records) supplying
    >= 10 % of a series' charted trials mark the years after their snapshot
    year (not covered) and their snapshot year (partial)."""
    dated = t[t["dated"]]
    years = range(int(dated["year"].min()), int(dated["year"].max()) + 1)
    rows = [(v, r["source"], r["trial_id"]) for r in dated.to_dict("records") for v in r[key]]
    df = pd.DataFrame(rows, columns=["series", "source", "trial_id"]).drop_duplicates()
    out: dict[tuple[str, int], str] = {}
    for series, g in df.groupby("series"):
        share = g.groupby("source")["trial_id"].nunique() / len(g)
        for y in years:
            ended = sum(v for src, v in share.items() if src in snap and snap[src].year < y)
            ending = sum(v for src, v in share.items() if src in snap and snap[src].year == y)
            if ended >= 0.10:
                out[(series, y)] = "not_covered"
            elif ended + ending >= 0.10 and ending > 0:
                out[(series, y)] = "partial"
    return out


@pytest.mark.parametrize(
    ("chart", "key"), [("start_year_by_family", "fams"), ("product_form_by_year", "product_form")]
)
def test_year_charts_mark_the_years_their_sources_do_not_cover(
    report: ReportResult, expected: Any, chart: str, key: str
) -> None:
    _e, t, _dd = expected
    with celltrials.open(report_store_path(report), read_only=True) as store:
        snap = _snapshots(store.con)
    want = _expected_marks(t, key, snap)
    # the MSC classic CSV export ends 2022-10-05: stem/stromal trials after 2022 are not covered
    assert next(d for src, d in snap.items() if Path(src).name == MSC_CSV.name) == date(2022, 10, 5)
    if chart == "start_year_by_family":
        assert want[("stem_stromal", 2022)] == "partial"
        assert all(want[("stem_stromal", y)] == "not_covered" for y in range(2023, 2027))
        assert want[("immune", 2026)] == "partial" and ("immune", 2022) not in want
    _, data = parse_page(report.html)
    fig = data["charts"][chart]
    names = {L.label(series): series for series, _ in want}
    got: dict[tuple[str, int], str] = {}
    for tr in fig["data"]:
        shapes = tr["marker"].get("pattern", {}).get("shape", [""] * len(tr["x"]))
        for x, shape in zip(tr["x"], shapes, strict=True):
            if shape:
                got[(names.get(tr["name"], tr["name"]), int(x))] = {
                    "/": "partial",
                    "x": "not_covered",
                }[shape]
        if "opacity" in tr["marker"]:  # faded exactly where not covered
            assert [o < 1 for o in tr["marker"]["opacity"]] == [s == "x" for s in shapes]
    # a mark for every series drawn (series without bars in a year still count in the note)
    drawn = {L.label(str(c)) for c in {s for s, _ in want}} & {tr["name"] for tr in fig["data"]}
    assert dict(got.items()) == {k: v for k, v in want.items() if L.label(k[0]) in drawn}
    # the reason is on the chart: boundary lines at each material snapshot, the note names the windows
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert any(tx.startswith("data end 2022-10-05") for tx in texts)
    html = report.html.read_text(encoding="utf-8")
    svg = (report.out_dir / "figures" / f"{chart}.svg").read_text(encoding="utf-8")
    assert "data end 2022-10-05" in svg and "year not covered by the data" in svg
    assert "msc_mesenchymal_stem_or_stromal.csv" in html and "2023–2026 not covered" in html
    cov = pd.read_csv(report.out_dir / "tables" / "year_coverage.csv")
    cov = cov[(cov["chart"] == chart) & (cov["status"] != "covered")]
    assert {(r.series, int(r.year)): r.status for r in cov.itertuples()} == want


def report_store_path(report: ReportResult) -> Path:
    from tests import conftest_report

    return Path(conftest_report._CACHE["store"])


def test_methods_name_sources_version_and_taxonomy(report: ReportResult) -> None:
    html = report.html.read_text(encoding="utf-8")
    assert (
        "ClinicalTrials.gov" in html
        and "WHO International Clinical Trials Registry Platform" in html
    )
    assert f"celltrials {celltrials.__version__}" in html
    with celltrials.open(report_store_path(report), read_only=True) as store:
        version = store.con.execute("SELECT DISTINCT taxonomy_version FROM labels").fetchall()
    assert len(version) == 1 and version[0][0] in html
    assert "FROM trials t LEFT JOIN _landscape_labels l" in html


def test_self_contained_offline_html(report: ReportResult) -> None:
    page, _ = parse_page(report.html)
    assert page.external == []  # no CDN, no external script/style/image
    html = report.html.read_text(encoding="utf-8")
    assert html.count("Plotly.newPlot") == 1  # one render loop; plotly.js inlined once
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']https?:", html)
    assert html.count("</html>") == 1


def test_output_files(report: ReportResult) -> None:
    out = report.out_dir
    svgs = sorted(p.stem for p in (out / "figures").glob("*.svg"))
    pngs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert svgs == pngs and len(svgs) >= 14
    for p in (out / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    for p in (out / "figures").glob("*.svg"):
        assert "<svg" in p.read_text(encoding="utf-8")[:2000]
    # one CSV per table, one sheet per table (plus 'about'); CSV counts = the section frames
    names = {p.stem for p in (out / "tables").glob("*.csv")}
    assert {
        "headline",
        "countries",
        "sponsors",
        "start_year_by_family",
        "snapshots",
        "exclusions",
        "trials",
    } <= names
    wb = load_workbook(report.xlsx, read_only=True)
    assert set(wb.sheetnames) == (names - {"trials"}) | {"about"}
    for name in ("countries", "immune_by_cell_type", "phase_by_family"):
        with (out / "tables" / f"{name}.csv").open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        df = report.sections[name]
        assert [int(r["n_trials"]) for r in rows] == df["n_trials"].tolist()
        assert [len(r["trial_ids"].split(";")) for r in rows] == df["n_trials"].tolist()
        sheet = list(wb[name].iter_rows(values_only=True))
        assert list(sheet[0]) == list(df.columns)
        assert [r[list(df.columns).index("n_trials")] for r in sheet[1:]] == df["n_trials"].tolist()
    wb.close()


def test_filters_combine(store_path: Path, tmp_path: Path) -> None:
    filters = L.make_filters(
        country=["china"], start_year="2019-2024", cell_type=["immune"], phase=["1", "1/2"]
    )
    with celltrials.open(store_path, read_only=True) as store:
        res = build_report(store, tmp_path / "r", filters)
        got = set(L.select_trials(store.con, filters)["trial_id"])
        want = {
            r[0]
            for r in store.con.execute("""
            SELECT t.trial_id FROM trials t JOIN labels l USING (trial_id)
            WHERE l.is_cell_therapy
              AND t.trial_id IN (SELECT trial_id FROM countries WHERE country = 'China')
              AND year(t.start_date) BETWEEN 2019 AND 2024
              AND t.phase IN ('PHASE1', 'PHASE1_PHASE2')
              AND list_has_any(l.cell_type, ['car_t', 'car_nk', 'tcr_t', 'til', 'nk', 'cik', 'dc', 'treg', 'virus_specific_t', 'gamma_delta_t', 'macrophage', 'other_immune'])
        """).fetchall()
        }
        everything = set(L.select_trials(store.con, L.Filters())["trial_id"])
    assert got == want and 100 < len(want) < 2000
    _page, data = parse_page(res.html)
    assert data["counts"]["headline:trials"] == len(want)
    assert set(decode_list(data, "headline:trials")) == want
    html = res.html.read_text(encoding="utf-8")
    assert "country: China" in html and "start year: 2019–2024" in html  # as the store spells it
    # trials outside the filters are listed as excluded, with the count
    assert data["counts"]["exclusions:outside the filters"] == len(everything - got)


def test_progress_callback(store_path: Path, tmp_path: Path) -> None:
    from celltrials.progress import ProgressEvent

    events: list[ProgressEvent] = []
    with celltrials.open(store_path, read_only=True) as store:
        build_report(
            store,
            tmp_path / "p",
            L.make_filters(cell_type=["car_nk"]),
            progress=events.append,
            figures=False,
        )
    assert {e.stage for e in events} == {"report"}
    assert [e.item for e in events] == [
        "select",
        "sections",
        "tables",
        "workbook",
        "html",
        "figures",
        "done",
    ]
    assert [e.index for e in events] == list(range(7)) and {e.total for e in events} == {6}


def test_title_registry_status_indication_filters(store_path: Path) -> None:
    with celltrials.open(store_path, read_only=True) as store:
        con = store.con
        got = set(
            L.select_trials(
                con,
                L.make_filters(
                    title="cd19",
                    registry=["CTGOV"],
                    status=["recruiting"],
                    indication_group=["oncology"],
                ),
            )["trial_id"]
        )
        want = {
            r[0]
            for r in con.execute("""
            SELECT trial_id FROM trials JOIN labels USING (trial_id)
            WHERE is_cell_therapy AND title ILIKE '%cd19%' AND registry = 'ctgov' AND status = 'RECRUITING'
              AND indication_group = 'oncology'""").fetchall()
        }
    assert got == want and len(want) > 20


def test_bad_filters_raise_with_hints(store_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        L.make_filters(cell_type=["car-x"])
    assert "car_t" in exc.value.hint
    with pytest.raises(ConfigError):
        L.parse_year_range("2024-2019")
    assert L.parse_year_range("2019-") == (2019, None)
    assert L.parse_year_range("2020") == (2020, 2020)
    with celltrials.open(store_path, read_only=True) as store, pytest.raises(AnalysisError) as exc2:
        build_report(
            store, tmp_path / "none", L.make_filters(title="no trial has this title xyzzy")
        )
    assert "Loosen" in exc2.value.hint


def test_rebuild_into_the_same_folder_drops_stale_files(
    report: ReportResult, store_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "same"
    shutil.copytree(report.out_dir, out)  # an earlier run of the default report into `out`
    (out / "figures" / "my-notes.png").write_bytes(b"mine")
    first = report
    assert (out / "figures" / "msc_by_source.svg").is_file()
    with celltrials.open(store_path, read_only=True) as store:
        second = build_report(
            store, out, L.make_filters(cell_type=["car_nk"], country=["China"]), jobs=0
        )
    assert len(second.figures) < len(first.figures)
    assert sorted((out / "figures").glob("*.svg")) == sorted(
        p for p in second.figures if p.suffix == ".svg"
    )
    assert (out / "figures" / "my-notes.png").read_bytes() == b"mine"  # not ours: kept


def test_unclassified_store(tmp_path: Path) -> None:
    path = tmp_path / "u.duckdb"
    with celltrials.open(path) as store:
        ingest_paths(store, [MSC_CSV])
    with celltrials.open(path, read_only=True) as store:
        with pytest.raises(AnalysisError) as exc:
            build_report(store, tmp_path / "r1", L.Filters())
        assert "classify" in exc.value.hint
        res = build_report(store, tmp_path / "r2", L.Filters(scope="all"), figures=False)
        n = store.con.execute("SELECT count(*) FROM trials").fetchall()[0][0]
    assert res.n_trials == n > 1000
    html = res.html.read_text(encoding="utf-8")
    assert "no classifier labels yet" in html
    assert res.figures == []


def test_cli_report(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    runner = CliRunner()
    r = runner.invoke(
        cli,
        [
            "--db",
            str(store_path),
            "--quiet",
            "report",
            "--out",
            str(out),
            "--country",
            "China",
            "--start-year",
            "2019-2024",
            "--no-figures",
        ],
    )
    assert r.exit_code == 0, r.output
    assert r.output == ""  # --quiet: nothing drawn
    assert (out / "report.html").is_file() and (out / "report.xlsx").is_file()
    r = runner.invoke(
        cli,
        [
            "--db",
            str(store_path),
            "report",
            "--out",
            str(tmp_path / "j"),
            "--json",
            "--cell-type",
            "msc",
            "--no-figures",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    with celltrials.open(store_path, read_only=True) as store:
        n_msc = store.con.execute(
            "SELECT count(*) FROM labels WHERE is_cell_therapy AND list_contains(cell_type, 'msc')"
        ).fetchall()[0][0]
    assert res["n_trials"] == n_msc
    assert res["filters"]["cell_type"] == "msc"


def test_cli_error_message_and_hint(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from celltrials.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            [
                "--db",
                str(store_path),
                "report",
                "--out",
                str(tmp_path / "x"),
                "--indication-group",
                "cancer",
            ]
        )
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "unknown indication group 'cancer'" in err and "Hint: Use one of: oncology" in err
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "--db",
                str(store_path),
                "report",
                "--out",
                str(tmp_path / "y"),
                "--title",
                "xyzzy-no-such-title",
            ]
        )
    assert exc.value.code == 1
    assert "no trial matches the filters" in capsys.readouterr().err


def test_data_dir_is_read_in_place() -> None:
    assert DATA.is_dir() and not (REPO / "data").exists()
