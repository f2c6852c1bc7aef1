"""Build the landscape report: one self-contained HTML file, figures, tables.

:func:`build_report` writes into ``out_dir``::

    report.html        one file, opens offline (plotly.js inline), interactive;
                       every count opens the list of its trials with registry links
    report-lists.js    only for large reports: the trial table and lists behind
                       the counts, loaded on the first click (keep it beside report.html)
    report.xlsx        one sheet per table
    tables/*.csv       the table behind every figure (trial ids in ``trial_ids``)
    figures/*.svg/png  publication figures (Matplotlib, Okabe–Ito palette)

Every number of the HTML carries ``data-count-id="SECTION:KEY"`` and the page
embeds ``<script id="report-data" type="application/json">`` with ``counts``
(count id → number), ``lists`` (count id → its trials), the section tables and
the charts, so a reader (or a test) can check each number against the store.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from os.path import commonpath
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

import celltrials
from celltrials.analysis import coverage as C
from celltrials.analysis import funnel as F
from celltrials.analysis import landscape as L
from celltrials.analysis.coverage import source_windows
from celltrials.errors import AnalysisError, ConfigError, StoreError
from celltrials.progress import Progress, ProgressEvent
from celltrials.quality import check
from celltrials.report.figures import (
    COLORS,
    GREY,
    Chart,
    Series,
    draw_matplotlib,
    palette,
    prepare_matplotlib,
    to_plotly,
)
from celltrials.safety import safe_frame, safe_xlsx_cell

TOP_N = 20
TOP_SPONSORS_TABLE = 25
TOP_TARGETS = 15
XLSX_CELL_LIMIT = 32_000


@dataclass
class ReportResult:
    out_dir: Path
    html: Path
    xlsx: Path
    figures: list[Path]
    tables: list[Path]
    n_trials: int
    data_date: date | None
    filters: dict[str, str]
    sections: dict[str, pd.DataFrame] = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "html": str(self.html),
            "xlsx": str(self.xlsx),
            "figures": [str(p) for p in self.figures],
            "tables": [str(p) for p in self.tables],
            "n_trials": self.n_trials,
            "data_date": self.data_date.isoformat() if self.data_date else None,
            "filters": self.filters,
            "timings": self.timings,
        }


# ------------------------------------------------------------------ views
@dataclass
class Cell:
    text: str
    count_id: str | None = None
    num: bool = False
    href: str | None = None
    cls: str = ""
    #: the count opens its trial list in the page
    listed: bool = False


@dataclass
class TableView:
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    note: str = ""


@dataclass
class SectionView:
    name: str
    title: str
    description: str
    chart: Chart | None
    table: TableView
    csv: str = ""


@dataclass
class Chapter:
    id: str
    title: str
    intro: str
    sections: list[SectionView] = field(default_factory=list)
    notice: str = ""


def _rows(df: pd.DataFrame) -> Iterator[Any]:
    """A frame's rows as named tuples (typed loosely: columns vary by section)."""
    it: Iterator[Any] = df.itertuples(index=False)
    return it


def _quality_summary(con: Any) -> dict[str, Any] | None:
    """The store-wide `celltrials check` totals for the methods section
    (None for a store written before raw values were kept beside canonical ones)."""

    try:
        return check(con).summary()
    except (duckdb.Error, StoreError):
        return None


def _fmt(n: Any) -> str:
    return f"{int(n):,}"


def _cid(section: str, *keys: Any) -> str:
    return f"{section}:" + "|".join(str(k) for k in keys)


class _Counts:
    """Collects count id → (number, trial ids) for the page."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lists: dict[str, list[str]] = {}

    def add(self, cid: str, n: int, trial_ids: Iterable[str] | None) -> str:
        self.counts[cid] = int(n)
        if trial_ids is not None:
            self.lists[cid] = list(trial_ids)
        return cid

    def cell(self, cid: str, n: int, trial_ids: Iterable[str] | None) -> Cell:
        self.add(cid, n, trial_ids)
        return Cell(_fmt(n), count_id=cid, num=True, listed=trial_ids is not None)


def _one_d(
    counts: _Counts,
    name: str,
    df: pd.DataFrame,
    key: str,
    *,
    title: str,
    description: str,
    key_header: str,
    kind: str = "hbar",
    top: int | None = None,
    color: str = "#0072B2",
    note: str = "",
) -> SectionView:
    rows: list[list[Cell]] = []
    cats, vals, ids = [], [], []
    for i, r in enumerate(_rows(df)):
        k = getattr(r, key)
        cid = _cid(name, k)
        cell = counts.cell(cid, r.n_trials, r.trial_ids)
        rows.append([Cell(L.label(k)), cell])
        if top is None or i < top:
            cats.append(L.label(k))
            vals.append(int(r.n_trials))
            ids.append(cid)
    chart = Chart(
        id=name,
        title=title,
        kind=kind,
        categories=cats,
        series=[Series("trials", vals, list(ids), color=color)],
        note=note,
        x_title="trials" if kind == "hbar" else "",
        y_title="" if kind == "hbar" else "trials",
    )
    return SectionView(name, title, description, chart, TableView([key_header, "trials"], rows))


def _pivot(
    counts: _Counts,
    name: str,
    df: pd.DataFrame,
    key: str,
    col: str,
    *,
    key_order: list[Any],
    col_order: list[str],
    key_text: Callable[[Any], str] = L.label,
    colors: dict[str, str] | None = None,
) -> tuple[TableView, list[Series], list[str]]:
    lookup = {(getattr(r, key), getattr(r, col)): r for r in _rows(df)}
    cols = [c for c in col_order if any(k[1] == c for k in lookup)]
    rows: list[list[Cell]] = []
    series = {
        c: Series(L.label(c), [], [], color=(colors or {}).get(c, palette(i)))
        for i, c in enumerate(cols)
    }
    for k in key_order:
        row = [Cell(key_text(k))]
        for c in cols:
            r = lookup.get((k, c))
            if r is None:
                row.append(Cell("–", num=True, cls="zero"))
                series[c].values.append(0)
                series[c].count_ids.append(None)
            else:
                cid = _cid(name, k, c)
                row.append(counts.cell(cid, r.n_trials, r.trial_ids))
                series[c].values.append(int(r.n_trials))
                series[c].count_ids.append(cid)
        rows.append(row)
    return TableView(["", *(L.label(c) for c in cols)], rows), list(series.values()), cols


def _heatmap(
    counts: _Counts,
    name: str,
    df: pd.DataFrame,
    row_key: str,
    col_key: str,
    *,
    title: str,
    description: str,
    row_order: list[str],
    col_order: list[str],
    row_header: str,
    x_title: str,
    y_title: str,
) -> SectionView:
    present_cols = set(df[col_key]) if len(df) else set()
    cols = [c for c in col_order if c in present_cols] + sorted(present_cols - set(col_order))
    table, _, _ = _pivot(counts, name, df, row_key, col_key, key_order=row_order, col_order=cols)
    table.columns[0] = row_header
    lookup = {(getattr(r, row_key), getattr(r, col_key)): r for r in _rows(df)}
    z = [
        [int(lookup[(rk, c)].n_trials) if (rk, c) in lookup else 0 for c in cols]
        for rk in row_order
    ]
    z_ids = [[_cid(name, rk, c) if (rk, c) in lookup else None for c in cols] for rk in row_order]
    chart = Chart(
        id=name,
        title=title,
        kind="heatmap",
        categories=[L.label(c) for c in cols],
        rows=[L.label(r) for r in row_order],
        z=z,
        z_ids=z_ids,
        x_title=x_title,
        y_title=y_title,
    )
    return SectionView(name, title, description, chart, table)


# ------------------------------------------------------------ coverage marks
#: per-year charts and the selection column of their series
YEAR_CHARTS = {"start_year_by_family": "families", "product_form_by_year": "product_form"}


def _year_coverage(
    sel: pd.DataFrame, dd: date | None, windows: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coverage marks (:func:`celltrials.analysis.coverage.year_coverage`) of
    every per-year chart, over the trials those charts count (dated, starting
    by the data date), and each series' sources."""

    start = pd.to_datetime(sel["start_date"])
    keep = start.notna() & (start <= pd.Timestamp(dd) if dd else start.notna())
    dated = sel[keep]
    years = (
        list(range(int(start[keep].dt.year.min()), int(start[keep].dt.year.max()) + 1))
        if keep.any()
        else []
    )
    marks, sources = [], []
    for chart, key in YEAR_CHARTS.items():
        marks.append(C.year_coverage(dated, key, windows, years).assign(chart=chart))
        sources.append(C.series_sources(dated, key, windows).assign(chart=chart))
    return pd.concat(marks, ignore_index=True), pd.concat(sources, ignore_index=True)


class _YearMarks:
    """The coverage marks of one per-year chart, applied to its series, its
    table's year labels, its note and its boundary lines."""

    def __init__(self, secs: dict[str, pd.DataFrame], chart: str, years: list[int]) -> None:
        marks = secs.get("year_coverage")
        sources = secs.get("year_coverage_sources")
        self.chart, self.years = chart, years
        self.marks = marks[marks["chart"] == chart] if marks is not None else pd.DataFrame()
        self.sources = sources[sources["chart"] == chart] if sources is not None else pd.DataFrame()
        self.status = {(r.series, int(r.year)): r for r in _rows(self.marks)}

    def year_text(self, y: Any) -> str:
        parts = []
        for status, word in (("partial", "partial"), ("not_covered", "not covered")):
            names = [
                L.label(r.series)
                for (s, yy), r in self.status.items()
                if yy == y and r.status == status
            ]
            if names:
                parts.append(f"{word}: {', '.join(names)}")
        return f"{y} ({'; '.join(parts)})" if parts else str(y)

    def apply(self, series: list[Series], cols: list[str]) -> None:
        for s, col in zip(series, cols, strict=True):
            rs = [self.status.get((col, y)) for y in self.years]
            s.hatched = [r is not None and r.status == "partial" for r in rs]
            s.faded = [r is not None and r.status == "not_covered" for r in rs]
            s.notes = [
                ""
                if r is None or r.status == "covered"
                else f"<br>{'covered in part' if r.status == 'partial' else 'NOT COVERED'}: sources of "
                f"{100 * (r.ended_share + (r.ending_share if r.status == 'partial' else 0)):.0f} % of "
                f"these trials {'end in' if r.status == 'partial' else 'ended before'} {r.year}"
                for r in rs
            ]

    def note(self) -> str:

        if not len(self.marks):
            return ""
        lines = C.describe(self.marks, self.sources, L.label)
        if not lines:
            return ""
        return (
            "Each source holds trials only up to its snapshot date. Hatched: a source with at least "
            f"{C.MATERIAL_SHARE:.0%} of that series' trials ends during the year; crossed and faded: such "
            "sources ended before it, so the bar is an undercount, not a trend. "
            + "; ".join(lines)
            + "."
        )

    def vlines(self) -> list[dict[str, Any]]:

        if not len(self.sources) or not self.years:
            return []
        src = self.sources[
            (self.sources["share"] >= C.MATERIAL_SHARE) & self.sources["snapshot_date"].notna()
        ]
        by_day: dict[date, list[str]] = {}
        order = {c: i for i, c in enumerate([*L.FAMILIES, *L.PRODUCT_FORMS])}
        for r in _rows(src):
            d = r.snapshot_date
            if self.years[0] <= d.year <= self.years[-1] and r.series not in by_day.setdefault(
                d, []
            ):
                by_day[d].append(r.series)
        out = []
        for d, series in sorted(by_day.items()):
            frac = (d.timetuple().tm_yday - 1) / (366 if d.year % 4 == 0 else 365)
            names = ", ".join(
                L.label(x) for x in sorted(series, key=lambda x: order.get(x, len(order)))
            )
            text = f"data end {d.isoformat()}: {names}"
            out.append(
                {
                    "x": self.years.index(d.year) - 0.5 + frac,
                    "text": text if len(text) <= 52 else text[:51] + "…",
                }
            )
        return out


# ---------------------------------------------------------------- sections
def _headline_cards(counts: _Counts, hl: pd.DataFrame) -> list[dict[str, Any]]:
    by = {r.metric: r for r in _rows(hl)}

    def num(metric: str) -> dict[str, Any]:
        r = by[metric]
        v = r.value
        cid = _cid("headline", metric)
        if v is None or v is pd.NA:
            return {"text": "—", "count_id": None}
        counts.add(cid, int(v), r.trial_ids)
        return {"text": str(int(v)) if "year" in metric else _fmt(v), "count_id": cid}

    return [
        {
            "label": "Trials",
            "main": num("trials"),
            "sub": [("of them merged from several records", num("merged_trials"))],
        },
        {
            "label": "Patients (sum of enrollment)",
            "main": num("patients_total"),
            "sub": [
                ("actual", num("patients_actual")),
                ("anticipated", num("patients_anticipated")),
                ("type not stated by registry", num("patients_type_not_stated")),
                ("trials without enrollment", num("trials_without_enrollment")),
            ],
        },
        {"label": "Countries", "main": num("countries"), "sub": []},
        {"label": "Registries", "main": num("registries"), "sub": []},
        {"label": "First start year", "main": num("first_start_year"), "sub": []},
        {
            "label": "Last start year (to data date)",
            "main": num("last_start_year"),
            "sub": [
                ("start after data date (planned)", num("start_after_data_date")),
                ("no start date", num("start_date_missing")),
            ],
        },
    ]


def _family_sections(
    counts: _Counts, secs: dict[str, pd.DataFrame], dd: date | None
) -> list[Chapter]:
    out: list[Chapter] = []
    fam_order = list(L.FAMILIES)

    # (3) start year
    sy = secs["start_year_by_family"]
    if len(sy):
        years = list(range(int(sy["year"].min()), int(sy["year"].max()) + 1))
    else:
        years = []
    marks = _YearMarks(secs, "start_year_by_family", years)
    table, series, cols = _pivot(
        counts,
        "start_year_by_family",
        sy,
        "year",
        "family",
        key_order=years,
        col_order=fam_order,
        key_text=marks.year_text,
        colors=COLORS,
    )
    marks.apply(series, cols)
    note = marks.note()
    chart = Chart(
        "start_year_by_family",
        "Trials per start year by cell-type family",
        "stacked",
        [str(y) for y in years],
        series,
        y_title="trials",
        note=note,
        vlines=marks.vlines(),
    )
    table.note = note
    out.append(
        Chapter(
            "time",
            "Trials over time",
            "",
            [
                SectionView(
                    "start_year_by_family",
                    "Trials per start year by cell-type family",
                    "Year of the registry start date. Trials starting after the data date and trials without a start "
                    "date are left out (see the headline). A trial with cell types of two families counts in both.",
                    chart,
                    table,
                )
            ],
        )
    )

    # (4) phase and status
    ph = secs["phase_by_family"]
    ph_keys = [p for p in L.PHASES if p in set(ph["phase"])] + sorted(
        set(ph["phase"]) - set(L.PHASES)
    )
    t_ph, s_ph, _ = _pivot(
        counts,
        "phase_by_family",
        ph,
        "phase",
        "family",
        key_order=ph_keys,
        col_order=fam_order,
        colors=COLORS,
    )
    st = secs["status_by_family"]
    st_keys = [s for s in L.STATUS_ORDER if s in set(st["status"])] + sorted(
        set(st["status"]) - set(L.STATUS_ORDER)
    )
    t_st, s_st, _ = _pivot(
        counts,
        "status_by_family",
        st,
        "status",
        "family",
        key_order=st_keys,
        col_order=fam_order,
        colors=COLORS,
    )
    sr = secs["stopped_reasons"]
    sr_rows = []
    for r in _rows(sr):
        sr_rows.append(
            [
                Cell(L.label(r.status)),
                Cell(r.reason),
                counts.cell(_cid("stopped_reasons", r.status, r.reason), r.n_trials, r.trial_ids),
            ]
        )
    out.append(
        Chapter(
            "phase_status",
            "Phase and status",
            "",
            [
                SectionView(
                    "phase_by_family",
                    "Phase by cell-type family",
                    "Registry phase as normalised by celltrials (combined phases such as 1/2 kept apart).",
                    Chart(
                        "phase_by_family",
                        "Trials by phase and cell-type family",
                        "grouped",
                        [L.label(p) for p in ph_keys],
                        s_ph,
                        y_title="trials",
                    ),
                    t_ph,
                ),
                SectionView(
                    "status_by_family",
                    "Status by cell-type family",
                    "Overall recruitment status of the primary record.",
                    Chart(
                        "status_by_family",
                        "Trials by status and cell-type family",
                        "hstacked",
                        [L.label(s) for s in st_keys],
                        s_st,
                        x_title="trials",
                    ),
                    t_st,
                ),
                SectionView(
                    "stopped_reasons",
                    "Why trials stopped",
                    "Terminated, withdrawn and suspended trials by the reason stated in the record "
                    "(ClinicalTrials.gov 'why stopped'); ICTRP exports and CSV exports carry none.",
                    None,
                    TableView(["status", "stated reason", "trials"], sr_rows),
                ),
            ],
        )
    )
    return out


def _build_chapters(
    counts: _Counts,
    secs: dict[str, pd.DataFrame],
    dd: date | None,
    labelled: bool,
    funnel: pd.DataFrame | None,
    funnel_ids: dict[str, list[str]],
    funnel_error: str,
) -> list[Chapter]:
    chapters: list[Chapter] = []
    not_labelled = (
        ""
        if labelled
        else "The store has no classifier labels yet (run `celltrials classify`): this section is empty."
    )
    # (1) registries (headline cards are rendered separately)
    reg = _one_d(
        counts,
        "registries",
        secs["registries"],
        "registry",
        title="Trials by registry",
        description="Registry of each trial's primary record (the record shown for a trial "
        "registered in several registries).",
        key_header="registry",
        color="#56B4E9",
    )
    for row in reg.table.rows:
        row[0].text = row[0].text.upper() if len(row[0].text) <= 6 else row[0].text
    reg.chart.categories = [c.upper() if len(c) <= 6 else c for c in reg.chart.categories]  # type: ignore[union-attr]
    chapters.append(Chapter("registries", "Registries", "", [reg]))

    # (2) cell types
    chapters.append(
        Chapter(
            "cell_types",
            "Cell types and indications",
            "",
            [
                _one_d(
                    counts,
                    "immune_by_cell_type",
                    secs["immune_by_cell_type"],
                    "cell_type",
                    title="Immune-cell trials by cell type",
                    key_header="cell type",
                    color=COLORS["immune"],
                    description="A trial with several immune cell types counts under each.",
                ),
                _one_d(
                    counts,
                    "stem_by_indication",
                    secs["stem_by_indication"],
                    "indication_group",
                    title="Stem/stromal-cell trials by indication group",
                    key_header="indication group",
                    kind="bar",
                    color=COLORS["stem_stromal"],
                    description="Indication group of trials with at least one stem/stromal cell type.",
                ),
                _one_d(
                    counts,
                    "stem_by_cell_type",
                    secs["stem_by_cell_type"],
                    "cell_type",
                    title="Stem/stromal-cell trials by cell type",
                    key_header="cell type",
                    color=COLORS["stem_stromal"],
                    description="A trial with several stem/stromal cell types counts under each.",
                ),
                _one_d(
                    counts,
                    "msc_by_source",
                    secs["msc_by_source"],
                    "msc_source",
                    title="MSC trials by tissue source",
                    key_header="MSC source",
                    color="#CC79A7",
                    description="MSC trials by tissue source; an MSC trial naming no source is 'Unspecified'; "
                    "one naming several counts under each.",
                ),
            ],
            notice=not_labelled,
        )
    )
    chapters.extend(_family_sections(counts, secs, dd))

    # (5) countries and sponsors
    cn = _one_d(
        counts,
        "countries",
        secs["countries"],
        "country",
        title=f"Top {TOP_N} countries",
        key_header="country",
        top=TOP_N,
        color="#009E73",
        description="Countries named by the record; a multinational trial counts in each country.",
    )
    sp = secs["sponsors"]
    top = sp.head(TOP_N)
    classes = ["industry", "academic_other", "government", "unknown"]
    present = [c for c in classes if c in set(top["sponsor_class"])]
    sp_series = [
        Series(
            L.label(c),
            [int(r.n_trials) if r.sponsor_class == c else 0 for r in _rows(top)],
            [
                _cid("sponsors", r.lead_sponsor) if r.sponsor_class == c else None
                for r in _rows(top)
            ],
            color=COLORS.get(c, GREY),
        )
        for c in present
    ]
    sp_rows = []
    for r in _rows(sp.head(TOP_SPONSORS_TABLE)):
        sp_rows.append(
            [
                Cell(r.lead_sponsor),
                Cell(L.label(r.sponsor_class)),
                counts.cell(_cid("sponsors", r.lead_sponsor), r.n_trials, r.trial_ids),
            ]
        )
    sp_table = TableView(
        ["lead sponsor", "class", "trials"],
        sp_rows,
        note=f"Top {TOP_SPONSORS_TABLE} of {len(sp):,} lead sponsors; all in tables/sponsors.csv.",
    )
    sp_view = SectionView(
        "sponsors",
        f"Top {TOP_N} lead sponsors",
        "Lead sponsor, coloured by class; spellings of one sponsor (case, accents, punctuation, "
        "repaired encoding) count together under the most common one (all in tables/sponsors.csv).",
        Chart(
            "sponsors",
            f"Top {TOP_N} lead sponsors",
            "hstacked",
            [str(r.lead_sponsor) for r in _rows(top)],
            sp_series,
            x_title="trials",
        ),
        sp_table,
    )
    sc = _one_d(
        counts,
        "sponsor_classes",
        secs["sponsor_classes"],
        "sponsor_class",
        title="Lead sponsor class",
        key_header="sponsor class",
        kind="bar",
        description="Industry versus academic/other and government lead sponsors.",
    )
    assert sc.chart is not None
    sc.chart.series[0].point_colors = [
        COLORS.get(str(k), GREY) for k in secs["sponsor_classes"]["sponsor_class"]
    ]
    chapters.append(Chapter("geography", "Countries and sponsors", "", [cn, sp_view, sc]))

    # (6) heatmaps
    ms = secs["msc_source_by_area"]
    ms_rows = [s for s in L.MSC_SOURCES if s in set(ms["msc_source"])]
    ct = secs["car_t_targets_by_area"]
    tot = (
        ct.groupby("target")["n_trials"].sum().sort_values(ascending=False, kind="stable")
        if len(ct)
        else pd.Series(dtype=int)
    )
    named = sorted(
        (t for t in tot.index if t != "unspecified"), key=lambda t: (-int(tot[t]), str(t))
    )
    top_targets = named[:TOP_TARGETS] + (["unspecified"] if "unspecified" in tot.index else [])
    ct_top = ct[ct["target"].isin(top_targets)]
    area_order = [*L.THERAPEUTIC_AREAS, "not_classified"]
    chapters.append(
        Chapter(
            "heatmaps",
            "Sources, targets and therapeutic areas",
            "",
            [
                _heatmap(
                    counts,
                    "msc_source_by_area",
                    ms,
                    "msc_source",
                    "therapeutic_area",
                    title="MSC source × therapeutic area",
                    row_order=ms_rows,
                    col_order=area_order,
                    row_header="MSC source",
                    x_title="therapeutic area",
                    y_title="MSC source",
                    description="MSC trials; a trial counts in every (source, area) pair it carries.",
                ),
                _heatmap(
                    counts,
                    "car_t_targets_by_area",
                    ct_top,
                    "target",
                    "therapeutic_area",
                    title=f"CAR-T targets × therapeutic area (top {TOP_TARGETS} targets)",
                    row_order=top_targets,
                    col_order=area_order,
                    row_header="target",
                    x_title="therapeutic area",
                    y_title="CAR-T target",
                    description="CAR-T trials by target antigen; multi-target products count under each target; "
                    "'Unspecified': no target recognised. All targets in tables/car_t_targets_by_area.csv.",
                ),
            ],
            notice=not_labelled,
        )
    )

    # (7) product forms
    pf = secs["product_form_by_year"]
    years = list(range(int(pf["year"].min()), int(pf["year"].max()) + 1)) if len(pf) else []
    pf_marks = _YearMarks(secs, "product_form_by_year", years)
    t_pf, s_pf, pf_cols = _pivot(
        counts,
        "product_form_by_year",
        pf,
        "year",
        "product_form",
        key_order=years,
        col_order=list(L.PRODUCT_FORMS),
        colors=COLORS,
        key_text=pf_marks.year_text,
    )
    pf_marks.apply(s_pf, pf_cols)
    t_pf.note = pf_marks.note()
    chapters.append(
        Chapter(
            "product_forms",
            "Product forms over time",
            "",
            [
                SectionView(
                    "product_form_by_year",
                    "Product forms per start year",
                    "Cells, extracellular vesicles, secretome, gene-modified and composite products by start year "
                    "(a trial testing two forms counts under both; years the sources do not cover are marked).",
                    Chart(
                        "product_form_by_year",
                        "Product forms per start year",
                        "stacked",
                        [str(y) for y in years],
                        s_pf,
                        y_title="trials",
                        note=t_pf.note,
                        vlines=pf_marks.vlines(),
                    ),
                    t_pf,
                )
            ],
            notice=not_labelled,
        )
    )

    # funnel
    if funnel is not None and len(funnel):
        chapters.append(_funnel_chapter(counts, funnel, funnel_ids, secs.get("funnel_products")))
    else:
        chapters.append(
            Chapter(
                "funnel",
                "Development funnel",
                "",
                [],
                notice=funnel_error or "No funnel: no labelled trials.",
            )
        )
    return chapters


FUNNEL_STAGES = ("registered", "reached_phase2", "reached_phase3", "stopped")
FUNNEL_TOP = 12


def _funnel_input(sel: pd.DataFrame) -> pd.DataFrame:
    return sel[
        [
            "trial_id",
            "cell_type",
            "msc_source",
            "phase",
            "status",
            "start_date",
            "registration_date",
        ]
    ]


def _funnel(
    sel: pd.DataFrame, con: Any
) -> tuple[pd.DataFrame | None, dict[str, list[str]], str, pd.DataFrame | None]:
    """The development funnel of :mod:`celltrials.analysis.funnel` over the
    report's trials, the trial ids behind each stage count, and the table of
    approved products (one row per active substance)."""
    inp = _funnel_input(sel)
    if not inp["cell_type"].map(len).any():
        return None, {}, "No funnel: the report's trials carry no cell-type labels.", None
    try:
        links = con.execute("SELECT trial_id, product FROM product_links").df()
    except Exception:  # no product_links table: no product is linked to trials
        links = None
    fr = F.funnel_frame(inp, links=links)
    products = F.product_table(inp, links=links)
    # the trials behind each stage count, by the funnel module's own definitions
    stages = {
        "registered": "true",
        "reached_phase2": f"phase IN ({L._in(sorted(F.REACHED_PHASE2))})",
        "reached_phase3": f"phase IN ({L._in(sorted(F.REACHED_PHASE3))})",
        "stopped": f"status IN ({L._in(sorted(F.STOPPED))})",
    }
    cols = ", ".join(
        f"coalesce(list(DISTINCT trial_id ORDER BY trial_id) FILTER (WHERE {w}), []) AS {k}"
        for k, w in stages.items()
    )
    with L._selected(con, sel):
        df = con.execute(f"""
            WITH f AS (SELECT trial_id, phase, coalesce(status, '') AS status, unnest(cell_type) AS family,
                              msc_source FROM _sel),
                 g AS (SELECT trial_id, phase, status, family,
                              unnest(CASE WHEN family <> 'msc' THEN [''] WHEN len(msc_source) = 0
                                          THEN ['unspecified'] ELSE msc_source END) AS msc_source FROM f)
            SELECT family, msc_source, {cols} FROM g GROUP BY ALL""").df()
    ids: dict[str, list[str]] = {}
    for r in _rows(df):
        key = _cid("funnel", r.family, r.msc_source)
        for k in stages:
            ids[f"{key}|{k}"] = list(getattr(r, k))
    for r in _rows(fr):  # the group's trials that name its approved products
        ids[_cid("funnel", r.family, r.msc_source) + "|approved_products"] = list(
            r.approved_trial_ids
        )
    return fr, ids, "", products


def _years_text(r: Any) -> str:
    if r.approved_before_first_trial:
        return f"approved {r.years_before:.1f} years before its first registered trial started"
    if r.years is not None and r.years == r.years:
        return f"{r.years:.1f}"
    if not r.n_trials:
        return "no registered trial in this report"
    return "unknown (no approval date or no trial start date)"


def _funnel_chapter(
    counts: _Counts,
    fr: pd.DataFrame,
    ids: dict[str, list[str]],
    products: pd.DataFrame | None = None,
) -> Chapter:
    rows = []
    fr = fr.sort_values(
        ["registered", "family", "msc_source"], ascending=[False, True, True], kind="stable"
    )

    def group_text(fam: str, src: str) -> str:
        return L.label(fam) + (f" · {L.label(src)}" if src else "")

    for r in _rows(fr):
        base = _cid("funnel", r.family, r.msc_source)
        row = [Cell(group_text(r.family, r.msc_source))]
        for stage in FUNNEL_STAGES:
            cid = f"{base}|{stage}"
            row.append(counts.cell(cid, getattr(r, stage), ids.get(cid, [])))
        cid = f"{base}|approved_products"
        counts.add(cid, int(r.approved_products), ids.get(cid, []))
        row.append(Cell(_fmt(r.approved_products), count_id=cid, num=True, listed=True))
        row.append(Cell(str(r.approved_product_names or "")))
        med = r.median_years_to_approval
        row.append(Cell(f"{med:.1f} (n = {r.n_with_years})" if med == med else "–", num=True))
        cid = f"{base}|approved_before_first_trial"
        counts.add(cid, int(r.approved_before_first_trial), None)
        row.append(Cell(_fmt(r.approved_before_first_trial), count_id=cid, num=True))
        cid = f"{base}|approved_no_trials"
        counts.add(cid, int(r.approved_no_trials), None)
        row.append(Cell(_fmt(r.approved_no_trials), count_id=cid, num=True))
        row.append(Cell(str(r.approved_no_trials_names or "")))
        rows.append(row)
    top = fr.head(FUNNEL_TOP)
    cats = [group_text(r.family, r.msc_source) for r in _rows(top)]
    series = []
    for stage, name in (
        ("registered", "registered trials"),
        ("reached_phase2", "reached phase 2"),
        ("reached_phase3", "reached phase 3"),
        ("approved_products", "approved products (with registered trials)"),
    ):
        series.append(
            Series(
                name,
                [int(v) for v in top[stage]],
                [f"{_cid('funnel', r.family, r.msc_source)}|{stage}" for r in _rows(top)],
                color=COLORS[stage],
            )
        )
    table = TableView(
        [
            "cell type · MSC source",
            "registered",
            "reached phase 2",
            "reached phase 3",
            "terminated/withdrawn",
            "approved products with registered trials here",
            "those products (brands)",
            "median years, first trial start → first approval (n)",
            "approved before their first registered trial",
            "approved, no registered trial here",
            "those products (brands)",
        ],
        rows,
        note="A product is an active substance: brands, code names and regulators are approvals of "
        "it (Prochymal and Ryoncil are one product, remestemcel-L). The approved stage counts "
        "the group's catalog products named by at least one of its registered trials (click to "
        "list those trials); the group's other catalog products were approved without a "
        "registered trial in this report and are shown apart. Years to approval run from the "
        "start of the earliest registered trial naming the product to its first approval by any "
        "regulator; products approved before that trial started are counted apart, not as "
        "negative years.",
    )
    sections = [
        SectionView(
            "funnel",
            "From registered trials to approved products",
            "Per cell type (and MSC source): trials, trials that reached phase 2 (phase 1/2 counts) and phase 3, "
            "and approved products (active substances in the celltrials catalog) that at least one of those trials "
            "names (celltrials.analysis.funnel).",
            Chart(
                "funnel",
                "Development funnel: trials → phase 2 → phase 3 → approved products",
                "grouped",
                cats,
                series,
                y_title="trials; approved products (log scale)",
                log_scale=True,
                note=f"The {len(cats)} cell types with most trials. The last bar of each group counts approved "
                "products (active substances) named by its trials, the others count trials; log scale. "
                "Approved products without a registered trial here are listed in the table.",
            ),
            table,
        )
    ]
    if products is not None and len(products):
        prow = []
        for r in _rows(products):
            cid = _cid("funnel_products", r.substance)
            prow.append(
                [
                    Cell(str(r.substance)),
                    Cell(str(r.products)),
                    Cell(group_text(r.family, r.msc_source)),
                    Cell(str(r.regulators)),
                    Cell(str(r.first_approval) or "–"),
                    counts.cell(cid, r.n_trials, r.trial_ids),
                    Cell(_day(r.first_trial_start) or "–"),
                    Cell(_years_text(r)),
                ]
            )
        sections.append(
            SectionView(
                "funnel_products",
                "Approved products and time to approval",
                "Every catalog product (active substance) of the cell types above: its brands and regulators, the "
                "report's trials that name it, and the years from the start of the first of them to the first "
                "approval.",
                None,
                TableView(
                    [
                        "product (active substance)",
                        "brands",
                        "cell type · MSC source",
                        "regulators",
                        "first approval",
                        "trials naming it",
                        "first trial start",
                        "years to approval",
                    ],
                    prow,
                ),
            )
        )
    return Chapter("funnel", "Development funnel", "", sections)


# ------------------------------------------------------------------ outputs
def _csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """List columns (trial ids) joined with ';' for CSV and Excel."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype != object or not len(out):
            continue
        first = next((v for v in out[c] if v is not None), None)
        if isinstance(first, list | np.ndarray):
            out[c] = [
                ";".join(map(str, v)) if isinstance(v, list | np.ndarray) else v for v in out[c]
            ]
    return out


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """CSV through Arrow's writer (C++; about 20× pandas on long id lists)."""

    df = safe_frame(df)  # registry text: no cell may start a formula
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):  # an odd mixed column: pandas copes
        df.to_csv(path, index=False)
        return
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))


def _write_xlsx(path: Path, tables: dict[str, pd.DataFrame], about: list[tuple[str, str]]) -> None:
    from openpyxl import Workbook  # noqa: PLC0415 - heavy optional dependency, imported on first use
    from openpyxl.cell import WriteOnlyCell  # noqa: PLC0415 - heavy optional dependency, imported on first use
    from openpyxl.styles import Font  # noqa: PLC0415 - heavy optional dependency, imported on first use

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("about")
    for key, text in about:
        ws.append([safe_xlsx_cell(key), safe_xlsx_cell(text)])
    for name, df in tables.items():
        ws = wb.create_sheet(name[:31])
        header = []
        for c in df.columns:
            cell = WriteOnlyCell(ws, value=safe_xlsx_cell(str(c)))
            cell.font = Font(bold=True)
            header.append(cell)
        ws.append(header)
        for row in _rows(df):
            vals: list[Any] = []
            v: Any
            for v in row:
                if isinstance(v, str) and len(v) > XLSX_CELL_LIMIT:
                    v = v[:XLSX_CELL_LIMIT] + f"… (truncated; full list in tables/{name}.csv)"
                elif v is None or (isinstance(v, float) and v != v) or v is pd.NaT or v is pd.NA:
                    v = None
                elif isinstance(v, pd.Timestamp):
                    v = v.to_pydatetime()
                elif isinstance(v, np.generic):
                    v = v.item()
                vals.append(safe_xlsx_cell(v))
            ws.append(vals)
    wb.save(path)


def _json_for_script(obj: Any) -> str:
    """JSON safe inside a <script> element."""
    s = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _encode_lists(lists: dict[str, list[str]], trial_ids: pd.Index) -> dict[str, np.ndarray]:
    """Trial lists as delta-encoded positions in the page's (sorted) trial table."""
    keys = list(lists)
    lengths = np.fromiter((len(lists[k]) for k in keys), dtype=np.int64, count=len(keys))
    flat = [t for k in keys for t in lists[k]]
    pos = (
        trial_ids.get_indexer(pd.Index(flat, dtype=object)) if flat else np.zeros(0, dtype=np.int64)
    )
    out: dict[str, np.ndarray] = {}
    start = 0
    for k, n in zip(keys, lengths.tolist(), strict=True):
        idx = pos[start : start + n]
        start += n
        idx = np.sort(idx[idx >= 0])
        out[k] = np.diff(idx, prepend=0) if idx.size else np.zeros(0, dtype=np.int64)
    return out


#: the trial table and the trial lists behind the counts stay inside
#: report.html up to this size; above it they go to LISTS_FILE beside it,
#: loaded by the page on the first click (a <script> element, so it works
#: offline from the folder) — report.html stays small at any number of trials
INLINE_LISTS_MAX_BYTES = 8 << 20
LISTS_FILE = "report-lists.js"


def _place_lists(out: Path, page_data: dict[str, Any], lists: dict[str, Any]) -> None:
    text = _json_for_script(lists)
    side = out / LISTS_FILE
    if len(text) <= INLINE_LISTS_MAX_BYTES:
        page_data.update(lists)
        side.unlink(missing_ok=True)
        return
    page_data["lists_src"] = LISTS_FILE
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(f"window.celltrialsLists({text});\n", encoding="utf-8")
    tmp.replace(side)


def read_lists_file(path: Path) -> dict[str, Any]:
    """The ``trials`` and ``lists`` of a report's side file (for checks and tests)."""
    text = path.read_text(encoding="utf-8").strip()
    prefix, suffix = "window.celltrialsLists(", ");"
    if not (text.startswith(prefix) and text.endswith(suffix)):
        raise ValueError(f"{path} is not a celltrials report lists file")
    return dict(orjson.loads(text[len(prefix) : -len(suffix)]))


def _relative_sources(paths: list[str]) -> tuple[str, dict[str, str]]:
    real = [p for p in paths if p]
    if not real:
        return "", {}
    try:
        root = (
            commonpath([str(Path(p).parent) for p in real])
            if len(real) > 1
            else str(Path(real[0]).parent)
        )
    except ValueError:
        return "", {p: p for p in real}
    return root, {p: (str(Path(p).relative_to(root)) if root else p) for p in real}


# ---------------------------------------------------------------- the build
def build_report(
    store: Any,
    out_dir: str | Path,
    filters: L.Filters | None = None,
    progress: Progress | None = None,
    *,
    figures: bool = True,
    jobs: int | None = None,
) -> ReportResult:
    """Write the landscape report of the trials matching ``filters`` into ``out_dir``.

    ``store`` is a :class:`celltrials.store.Store` (or a DuckDB connection).
    ``figures=False`` skips the Matplotlib SVG/PNG files; ``jobs`` worker
    subprocesses draw them while the tables and the HTML are written, then
    this process helps (default: CPUs − 1, at most 3; 0: all drawn here).
    Raises :class:`AnalysisError` when no trial matches the filters.
    """
    con = getattr(store, "con", store)
    filters = filters or L.Filters()
    out = Path(out_dir)
    timings: dict[str, float] = {}
    steps = ["select", "sections", "tables", "workbook", "html", "figures"]
    t_all = time.perf_counter()

    def step(i: int, msg: str = "") -> float:
        if progress:
            progress(
                ProgressEvent(
                    "report", "step", steps[i], done=i, total=len(steps), index=i, message=msg
                )
            )
        return time.perf_counter()

    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "tables").mkdir(exist_ok=True)
        (out / "figures").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report to {out}: {exc.strerror}",
            hint="Pass --out a folder you can write to.",
        ) from None

    drawing = _Drawing(out / "figures", jobs) if figures else None  # workers start importing now
    try:
        return _build(con, out, filters, progress, drawing, steps, step, timings, t_all)
    finally:
        if drawing:
            drawing.close()


def _build(
    con: Any,
    out: Path,
    filters: L.Filters,
    progress: Progress | None,
    drawing: _Drawing | None,
    steps: list[str],
    step: Callable[..., float],
    timings: dict[str, float],
    t_all: float,
) -> ReportResult:
    t = step(0, "selecting trials")
    labelled = L.ensure_label_view(con)
    if filters.scope == "cell_therapy" and not labelled:
        raise AnalysisError(
            "the store has no classifier labels, so no trial is known to be cell therapy",
            hint="Run `celltrials classify` first, or report on every trial with --all-trials.",
        )
    sel = L.select_trials(con, filters)
    if sel.empty:
        raise AnalysisError(
            "no trial matches the filters",
            hint="Loosen the filters (see `celltrials report --help`); filters combine with AND.",
        )
    timings["select"] = time.perf_counter() - t

    t = step(1, "computing sections")
    secs: dict[str, pd.DataFrame] = {name: fn(con, sel) for name, fn in L.SECTIONS.items()}
    secs["exclusions"] = L.exclusions(con, filters)
    dd = L.data_date(con)

    windows = source_windows(con)
    secs["year_coverage"], secs["year_coverage_sources"] = _year_coverage(sel, dd, windows)
    fr, funnel_ids, funnel_error, funnel_products = _funnel(sel, con)
    if fr is not None:
        f_tab = fr.copy()
        f_tab["trial_ids"] = [
            funnel_ids.get(_cid("funnel", r.family, r.msc_source) + "|registered", [])
            for r in _rows(fr)
        ]
        secs["funnel"] = f_tab
    if funnel_products is not None:
        secs["funnel_products"] = funnel_products
    timings["sections"] = time.perf_counter() - t

    counts = _Counts()
    cards = _headline_cards(counts, secs["headline"])
    chapters = _build_chapters(counts, secs, dd, labelled, fr, funnel_ids, funnel_error)

    # methods numbers
    snap = secs["snapshots"]
    root, rel = _relative_sources([str(s) for s in snap["source"]])
    src_rows = []
    for r in _rows(snap):
        key = rel.get(str(r.source), str(r.source))
        src_rows.append(
            [
                Cell(key),
                Cell(str(r.format)),
                Cell(str(r.registries) if isinstance(r.registries, str) else "—"),
                Cell(
                    r.last_ingested.strftime("%Y-%m-%d %H:%M") if pd.notna(r.last_ingested) else "—"
                ),
                counts.cell(
                    _cid("snapshots", key, "records_read"), int(r.n_records_read or 0), None
                ),
                Cell(_day(r.latest_update) or "—"),
                counts.cell(_cid("snapshots", key, "trials"), r.n_trials, r.trial_ids),
            ]
        )
    # trials left out are not in the page's trial table: their lists are in tables/exclusions.csv
    exc_rows = [
        [Cell(r.reason), counts.cell(_cid("exclusions", r.reason), r.n_trials, None)]
        for r in _rows(secs["exclusions"])
    ]
    gap_rows = [
        [Cell(r.gap), counts.cell(_cid("unclassified_fields", r.gap), r.n_trials, r.trial_ids)]
        for r in _rows(secs["unclassified_fields"])
    ]
    merged = con.execute("""
        SELECT count(DISTINCT trial_id) AS trials, count(*) AS records
        FROM trial_records WHERE n_records > 1""").fetchall()[0]
    counts.add("methods:merged_trials_store", int(merged[0]), None)
    counts.add("methods:merged_records_store", int(merged[1]), None)
    quality = _quality_summary(con)
    sql, params = L.selection_sql(filters)
    described = filters.describe()
    if filters.country:  # as the store spells them
        names = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT country FROM countries WHERE lower(country) IN (SELECT lower(unnest(?::VARCHAR[]))) "
                "ORDER BY 1",
                [list(filters.country)],
            ).fetchall()
        ]
        described["country"] = ", ".join(names) or described["country"]
    tax_version = L.taxonomy_version(con)
    registries_present = sorted({str(x) for x in secs["registries"]["registry"]})
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    charts = [s.chart for ch in chapters for s in ch.sections if s.chart is not None]
    if drawing:
        drawing.start([c for c in charts if not c.empty])

    # tables/*.csv
    t = step(2, "writing tables")
    table_paths: list[Path] = []
    csv_frames: dict[str, pd.DataFrame] = {}
    trials_list = L.trial_list(con, sel)
    for name, df in [*secs.items(), ("trials", trials_list)]:
        frame = _csv_frame(df)
        csv_frames[name] = frame
        p = out / "tables" / f"{name}.csv"
        _write_csv(frame, p)
        table_paths.append(p)
    timings["tables"] = time.perf_counter() - t

    about = [
        ("report", "celltrials landscape report"),
        ("celltrials version", celltrials.__version__),
        ("generated", generated),
        ("data as of (latest registry update)", dd.isoformat() if dd else "unknown"),
        ("trials", str(len(sel))),
        ("filters", "; ".join(f"{k}: {v}" for k, v in described.items())),
        ("taxonomy version", tax_version or "unknown"),
        (
            "data sources",
            "ClinicalTrials.gov; WHO International Clinical Trials Registry Platform (ICTRP) and its source registers",
        ),
        (
            "trial_ids",
            "each count's trials, ';'-separated (long lists truncated here; complete in tables/*.csv)",
        ),
        (
            "trials",
            "the list of the report's trials (id, registry, title, status, phase, start, link) is tables/trials.csv",
        ),
    ]
    t = step(3, "writing report.xlsx")
    xlsx = out / "report.xlsx"
    _write_xlsx(xlsx, {k: v for k, v in csv_frames.items() if k != "trials"}, about)
    timings["workbook"] = time.perf_counter() - t

    t = step(4, "writing report.html")
    html = out / "report.html"
    tl = trials_list
    starts = pd.to_datetime(tl["start_date"], errors="coerce").dt.strftime("%Y-%m-%d").fillna("")
    trial_rows = list(
        zip(
            tl["trial_id"].astype(str).tolist(),
            tl["title"].fillna("").astype(str).tolist(),
            tl["url"].astype(str).tolist(),
            tl["registry"].fillna("").astype(str).tolist(),
            [L.label(x) for x in tl["status"].tolist()],
            [L.label(x) for x in tl["phase"].tolist()],
            starts.tolist(),
            strict=True,
        )
    )
    trial_index = pd.Index(tl["trial_id"].astype(str).tolist(), dtype=object)
    page_data: dict[str, Any] = {
        "version": celltrials.__version__,
        "counts": counts.counts,
        "charts": {c.id: to_plotly(c) for c in charts if not c.empty},
    }
    _place_lists(
        out, page_data, {"trials": trial_rows, "lists": _encode_lists(counts.lists, trial_index)}
    )
    _render_html(
        html,
        {
            "title": "Cell-therapy clinical-trial landscape",
            "version": celltrials.__version__,
            "generated": generated,
            "data_date": dd.isoformat() if dd else None,
            "partial_year": dd.year if dd else None,
            "n_trials": len(sel),
            "filters": described,
            "cards": cards,
            "chapters": chapters,
            "charts_empty": {c.id for c in charts if c.empty},
            "sources": TableView(
                [
                    "file",
                    "format",
                    "registries",
                    "ingested",
                    "records read",
                    "latest registry update",
                    "trials in report",
                ],
                src_rows,
                note=f"Paths relative to {root}." if root else "",
            ),
            "windows": _coverage_windows(snap, windows, rel),
            "exclusions": TableView(
                ["reason", "trials"],
                exc_rows,
                note="The trial ids of each reason are in tables/exclusions.csv.",
            ),
            "gaps": TableView(["label gap", "trials"], gap_rows),
            "merged": {"trials": int(merged[0]), "records": int(merged[1])},
            "quality": quality,
            "sql": sql,
            "params": params,
            "taxonomy_version": tax_version,
            "registries_present": registries_present,
            "labelled": labelled,
            "python": platform.python_version(),
            "page_data": _json_for_script(page_data),
        },
    )
    timings["html"] = time.perf_counter() - t

    t = step(5, "finishing figures")
    fig_paths = drawing.result() if drawing else []
    timings["figures_wait"] = time.perf_counter() - t
    _remove_stale(out, {p.name for p in fig_paths}, {p.name for p in table_paths})
    timings["total"] = time.perf_counter() - t_all
    if progress:
        progress(
            ProgressEvent(
                "report",
                "done",
                "done",
                done=len(steps),
                total=len(steps),
                index=len(steps),
                message=str(html),
            )
        )
    return ReportResult(
        out, html, xlsx, fig_paths, table_paths, len(sel), dd, described, secs, timings
    )


class _Drawing:
    """Matplotlib figures drawn by a :class:`~concurrent.futures.ProcessPoolExecutor`
    (``forkserver`` processes: the store's DuckDB threads are never forked).
    The workers start importing Matplotlib as soon as the report starts; the
    charts are handed to them slowest first (:meth:`start`) while this process
    writes the tables and the HTML; then this process draws, from the other end
    of the list, every chart no worker has started yet (a cancelled future).
    A chart whose worker failed is drawn here too, so a broken worker costs
    time, never figures. ``jobs`` = 0 draws everything here."""

    def __init__(self, out_dir: Path, jobs: int | None) -> None:
        cpus = os.cpu_count() or 1
        n = jobs if jobs is not None else min(3, cpus - 1)
        self.out_dir = out_dir
        self.charts: list[Chart] = []
        self.futures: list[Future[list[Path]]] = []
        self.pool: ProcessPoolExecutor | None = None
        if n > 0:
            self.pool = ProcessPoolExecutor(
                max_workers=n,
                mp_context=mp.get_context("forkserver"),
                initializer=prepare_matplotlib,
            )
            for _ in range(n):  # start the workers (and their Matplotlib import) now
                self.pool.submit(os.getpid)

    def start(self, charts: list[Chart]) -> None:
        """Hand the charts to the workers (slowest first: workers start on
        those, this process takes the quick ones at the end)."""
        self.charts = sorted(
            charts, key=lambda c: -(len(c.categories) * max(1, len(c.series)) + 10 * len(c.rows))
        )
        if self.pool is not None:
            self.futures = [self.pool.submit(draw_matplotlib, c, self.out_dir) for c in self.charts]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def result(self) -> list[Path]:
        try:
            if not self.futures:
                return sorted(p for c in self.charts for p in draw_matplotlib(c, self.out_dir))
            for c, fut in reversed(list(zip(self.charts, self.futures, strict=True))):
                if fut.cancel():  # no worker has started it
                    draw_matplotlib(c, self.out_dir)
            paths: list[Path] = []
            for c, fut in zip(self.charts, self.futures, strict=True):
                want = [self.out_dir / f"{c.id}.svg", self.out_dir / f"{c.id}.png"]
                if not fut.cancelled() and fut.exception() is not None:
                    want = draw_matplotlib(c, self.out_dir)  # the worker failed on it
                paths.extend(want)
        finally:
            self.close()
        return sorted(paths)


#: every file name a report can write under figures/ and tables/
_KNOWN_STEMS = {
    *L.SECTIONS,
    "exclusions",
    "funnel",
    "funnel_products",
    "trials",
    "year_coverage",
    "year_coverage_sources",
}


def _remove_stale(out: Path, figures: set[str], tables: set[str]) -> None:
    """Remove report files of an earlier run into the same folder that this
    run did not write (e.g. the figure of a section now empty); other files
    are left alone."""
    for folder, written, exts in (
        (out / "figures", figures, (".svg", ".png")),
        (out / "tables", tables, (".csv",)),
    ):
        for stem in _KNOWN_STEMS:
            for ext in exts:
                p = folder / f"{stem}{ext}"
                if p.name not in written and p.is_file():
                    p.unlink()


def _day(v: Any) -> str:
    """``YYYY-MM-DD`` of a date/Timestamp; empty for missing."""
    if v is None or v is pd.NaT or (isinstance(v, float) and v != v):
        return ""
    try:
        if pd.isna(v):
            return ""
    except (TypeError, ValueError):
        pass
    return v.strftime("%Y-%m-%d") if hasattr(v, "strftime") else str(v)[:10]


def _coverage_windows(
    snap: pd.DataFrame, windows: pd.DataFrame, rel: dict[str, str]
) -> list[dict[str, Any]]:
    """The coverage window of every source with trials in the report (snapshot
    date: :func:`celltrials.analysis.coverage.source_windows`), earliest end first."""
    n = dict(zip(snap["source"], snap["n_trials"], strict=True))
    out = []
    for r in _rows(windows):
        if not n.get(r.source):
            continue
        out.append(
            {
                "file": rel.get(str(r.source), str(r.source)),
                "format": str(r.format),
                "registries": str(r.registries or ""),
                "date": _day(r.snapshot_date) or "unknown",
                "n_trials": int(n[r.source]),
            }
        )
    return sorted(out, key=lambda w: (w["date"], w["file"]))


_FORMAT_NAMES = {
    "ctgov_json": "ClinicalTrials.gov API v2 JSON",
    "ctgov_csv": "ClinicalTrials.gov CSV export",
    "ctgov_csv_classic": "ClinicalTrials.gov classic CSV export",
    "ictrp_csv": "WHO ICTRP CSV export",
    "ictrp_xml": "WHO ICTRP XML export",
    "ictrp_xlsx": "WHO ICTRP Excel export",
}


def _render_html(path: Path, ctx: dict[str, Any]) -> None:
    from plotly.offline import get_plotlyjs  # noqa: PLC0415 - heavy optional dependency, imported on first use

    env = Environment(
        loader=PackageLoader("celltrials.report", "templates"),
        autoescape=select_autoescape(["html", "j2", "html.j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["label"] = L.label
    env.filters["fmt"] = _fmt
    env.globals["format_name"] = lambda f: _FORMAT_NAMES.get(f, f)
    tpl = env.get_template("report.html.j2")
    plotly_js = get_plotlyjs()
    if "</script" in plotly_js.lower():  # never expected; keeps the inline script well-formed
        plotly_js = plotly_js.replace("</script", "<\\/script")
    ctx = {**ctx, "plotly_js": Markup(plotly_js), "page_data": Markup(ctx["page_data"])}
    with path.open("w", encoding="utf-8") as fh:
        for chunk in tpl.generate(**ctx):
            fh.write(chunk)
