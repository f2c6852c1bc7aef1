"""The report's sections: the numbers, tables and trial-id lists of every
chapter, computed from the store, ready to render.

:func:`compute_sections` runs every section of
:mod:`celltrials.analysis.landscape` (plus the coverage marks and the
development funnel) over the report's trials; :func:`headline_cards`,
:func:`build_chapters` and :func:`methods` turn them into views
(:class:`Chapter`, :class:`SectionView`, :class:`TableView`, :class:`Cell`)
while :class:`Counts` collects every number shown with the trials behind it
(count id ``SECTION:KEY`` → number, trial ids). Nothing here writes a file or
knows HTML: :mod:`celltrials.report.render` draws the views,
:mod:`celltrials.report.workbook` writes the tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date
from os.path import commonpath
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from celltrials.analysis import coverage as C
from celltrials.analysis import funnel as F
from celltrials.analysis import landscape as L
from celltrials.analysis.coverage import source_windows
from celltrials.errors import StoreError
from celltrials.products import load_catalog
from celltrials.quality import CoverageWindow, check, coverage_windows
from celltrials.report.figures import COLORS, GREY, Chart, Series, palette

TOP_N = 20
TOP_SPONSORS_TABLE = 25
TOP_TARGETS = 15


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


def frame_rows(df: pd.DataFrame) -> Iterator[Any]:
    """A frame's rows as named tuples (typed loosely: columns vary by section)."""
    it: Iterator[Any] = df.itertuples(index=False)
    return it


def quality_summary(con: Any, windows: list[CoverageWindow] | None = None) -> dict[str, Any] | None:
    """The store-wide `celltrials check` totals for the methods section
    (None for a store written before raw values were kept beside canonical ones).
    ``windows``: the store's coverage windows, when already read."""

    try:
        return check(con, windows=windows).summary()
    except (duckdb.Error, StoreError):
        return None


def fmt_count(n: Any) -> str:
    return f"{int(n):,}"


def cid_for(section: str, *keys: Any) -> str:
    return f"{section}:" + "|".join(str(k) for k in keys)


class Counts:
    """Collects count id → (number, trial ids) for the page."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lists: dict[str, list[str]] = {}

    def add(self, cid: str, n: int, trial_ids: Iterable[str] | None) -> str:
        self.counts[cid] = int(n)
        if trial_ids is not None:  # the section's own list when it knows its rows
            self.lists[cid] = (
                trial_ids  # type: ignore[assignment]  # a Sequence[str] that knows its rows
                if L.listed_selection(trial_ids) is not None
                else list(trial_ids)
            )
        return cid

    def cell(self, cid: str, n: int, trial_ids: Iterable[str] | None) -> Cell:
        self.add(cid, n, trial_ids)
        return Cell(fmt_count(n), count_id=cid, num=True, listed=trial_ids is not None)


def _one_d(
    counts: Counts,
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
    for i, r in enumerate(frame_rows(df)):
        k = getattr(r, key)
        cid = cid_for(name, k)
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
    counts: Counts,
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
    lookup = {(getattr(r, key), getattr(r, col)): r for r in frame_rows(df)}
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
                cid = cid_for(name, k, c)
                row.append(counts.cell(cid, r.n_trials, r.trial_ids))
                series[c].values.append(int(r.n_trials))
                series[c].count_ids.append(cid)
        rows.append(row)
    return TableView(["", *(L.label(c) for c in cols)], rows), list(series.values()), cols


def _heatmap(
    counts: Counts,
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
    lookup = {(getattr(r, row_key), getattr(r, col_key)): r for r in frame_rows(df)}
    z = [
        [int(lookup[(rk, c)].n_trials) if (rk, c) in lookup else 0 for c in cols]
        for rk in row_order
    ]
    z_ids = [
        [cid_for(name, rk, c) if (rk, c) in lookup else None for c in cols] for rk in row_order
    ]
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


def year_coverage(
    sel: pd.DataFrame, dd: date | None, windows: pd.DataFrame, con: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coverage marks (:func:`celltrials.analysis.coverage.year_coverage`) of
    every per-year chart, over the trials those charts count (dated, starting
    by the data date), and each series' sources. With ``con`` (the store
    ``sel`` was selected from) the store counts the trials per series and source."""

    if con is not None:
        years, per_key = _dated_series_sources(con, sel, dd, windows)
    else:
        start = pd.to_datetime(sel["start_date"])
        keep = start.notna() & (start <= pd.Timestamp(dd) if dd else start.notna())
        dated = sel.loc[keep, ["trial_id", "source", *YEAR_CHARTS.values()]]
        years = (
            list(range(int(start[keep].dt.year.min()), int(start[keep].dt.year.max()) + 1))
            if keep.any()
            else []
        )
        per_key = {key: C.series_sources(dated, key, windows) for key in YEAR_CHARTS.values()}
    marks, sources = [], []
    for chart, key in YEAR_CHARTS.items():
        src = per_key[key]
        marks.append(C.year_coverage(sel.iloc[:0], key, windows, years, src).assign(chart=chart))
        sources.append(src.assign(chart=chart))
    return pd.concat(marks, ignore_index=True), pd.concat(sources, ignore_index=True)


def _dated_series_sources(
    con: Any, sel: pd.DataFrame, dd: date | None, windows: pd.DataFrame
) -> tuple[list[int], dict[str, pd.DataFrame]]:
    """The start years of the dated trials of ``sel`` (starting by the data
    date) and, per per-year chart key, :func:`celltrials.analysis.coverage.series_sources`
    of them, counted in the store."""
    cond = "start_date IS NOT NULL" + (" AND start_date <= ?" if dd else "")
    params: list[Any] = [dd] if dd else []
    per_key: dict[str, pd.DataFrame] = {}
    with L._selected(con, sel):
        y0, y1 = con.execute(
            f"SELECT min(year(start_date)), max(year(start_date)) FROM _sel WHERE {cond}", params
        ).fetchall()[0]
        years = list(range(int(y0), int(y1) + 1)) if y0 is not None else []
        for key in YEAR_CHARTS.values():
            rows = con.execute(
                f"""
                WITH k AS (SELECT trial_id, coalesce(source, 'None') AS source,
                                  unnest({key})::VARCHAR AS series FROM _sel WHERE {cond})
                SELECT series, source, count(DISTINCT trial_id) FROM k
                WHERE series IS NOT NULL AND series <> '' GROUP BY ALL""",
                params,
            ).fetchall()
            counts = pd.DataFrame(rows, columns=["series", "source", "n_trials"])
            counts["n_trials"] = counts["n_trials"].astype("int64")
            per_key[key] = C.sources_frame(counts, windows)
    return years, per_key


class _YearMarks:
    """The coverage marks of one per-year chart, applied to its series, its
    table's year labels, its note and its boundary lines."""

    def __init__(self, secs: dict[str, pd.DataFrame], chart: str, years: list[int]) -> None:
        marks = secs.get("year_coverage")
        sources = secs.get("year_coverage_sources")
        self.chart, self.years = chart, years
        self.marks = marks[marks["chart"] == chart] if marks is not None else pd.DataFrame()
        self.sources = sources[sources["chart"] == chart] if sources is not None else pd.DataFrame()
        self.status = {(r.series, int(r.year)): r for r in frame_rows(self.marks)}

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
        for r in frame_rows(src):
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
def headline_cards(counts: Counts, hl: pd.DataFrame) -> list[dict[str, Any]]:
    by = {r.metric: r for r in frame_rows(hl)}

    def num(metric: str) -> dict[str, Any]:
        r = by[metric]
        v = r.value
        cid = cid_for("headline", metric)
        if v is None or v is pd.NA:
            return {"text": "—", "count_id": None}
        counts.add(cid, int(v), r.trial_ids)
        return {"text": str(int(v)) if "year" in metric else fmt_count(v), "count_id": cid}

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
    counts: Counts, secs: dict[str, pd.DataFrame], dd: date | None
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
    for r in frame_rows(sr):
        sr_rows.append(
            [
                Cell(L.label(r.status)),
                Cell(r.reason),
                counts.cell(
                    cid_for("stopped_reasons", r.status, r.reason), r.n_trials, r.trial_ids
                ),
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


def build_chapters(
    counts: Counts,
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
            [int(r.n_trials) if r.sponsor_class == c else 0 for r in frame_rows(top)],
            [
                cid_for("sponsors", r.lead_sponsor) if r.sponsor_class == c else None
                for r in frame_rows(top)
            ],
            color=COLORS.get(c, GREY),
        )
        for c in present
    ]
    sp_rows = []
    for r in frame_rows(sp.head(TOP_SPONSORS_TABLE)):
        sp_rows.append(
            [
                Cell(r.lead_sponsor),
                Cell(L.label(r.sponsor_class)),
                counts.cell(cid_for("sponsors", r.lead_sponsor), r.n_trials, r.trial_ids),
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
            [str(r.lead_sponsor) for r in frame_rows(top)],
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


def funnel_frames(sel: pd.DataFrame, con: Any) -> tuple[pd.DataFrame, pd.DataFrame] | str:
    """The funnel table and the approved-products table of the report's
    trials ``sel`` (pandas work, beside one read of ``product_links``
    through ``con``: any connection to the store), or why there is no funnel."""
    inp = _funnel_input(sel)
    labelled = pd.Series(
        np.fromiter(map(len, inp["cell_type"].to_numpy(dtype=object)), np.int64, len(inp)) > 0,
        index=inp.index,
    )
    if not labelled.any():
        return "No funnel: the report's trials carry no cell-type labels."
    try:
        links = con.execute("SELECT trial_id, product FROM product_links").df()
    except Exception:  # no product_links table: no product is linked to trials
        links = None
    # a trial with no cell type and no product link adds nothing to any stage or product
    if links is not None:
        labelled |= inp["trial_id"].isin(links["trial_id"])
    inp = inp[labelled].copy()
    inp["start_date"] = F._dates(inp["start_date"])  # parsed once, not per funnel function
    exploded = F.explode_labels(inp)
    catalog = load_catalog()  # (read and validated once, not by each function)
    years = F.years_to_approval(inp, links, catalog)
    fr = F.funnel_frame(inp, catalog=catalog, links=links, exploded=exploded, years=years)
    products = F.product_table(inp, catalog=catalog, links=links, exploded=exploded, years=years)
    return fr, products


def funnel_data(
    sel: pd.DataFrame, con: Any, frames: tuple[pd.DataFrame, pd.DataFrame] | str | None = None
) -> tuple[pd.DataFrame | None, dict[str, list[str]], str, pd.DataFrame | None]:
    """The development funnel of :mod:`celltrials.analysis.funnel` over the
    report's trials, the trial ids behind each stage count, and the table of
    approved products (one row per active substance). ``frames``:
    :func:`funnel_frames` of ``sel``, when already computed."""
    got = funnel_frames(sel, con) if frames is None else frames
    if isinstance(got, str):
        return None, {}, got, None
    fr, products = got
    # the trials behind each stage count, by the funnel module's own definitions
    stages = {
        "registered": "true",
        "reached_phase2": f"phase IN ({L._in(sorted(F.REACHED_PHASE2))})",
        "reached_phase3": f"phase IN ({L._in(sorted(F.REACHED_PHASE3))})",
        "stopped": f"status IN ({L._in(sorted(F.STOPPED))})",
    }
    cols = ", ".join(
        f"coalesce(list(DISTINCT {L.SEL_ROW}) FILTER (WHERE {w}), []) AS {k}"
        for k, w in stages.items()
    )
    with L._selected(con, sel):
        table = con.sql(f"""
            WITH f AS (SELECT sel_row, phase, coalesce(status, '') AS status, unnest(cell_type) AS family,
                              msc_source FROM _sel),
                 g AS (SELECT sel_row, phase, status, family,
                              unnest(CASE WHEN family <> 'msc' THEN [''] WHEN len(msc_source) = 0
                                          THEN ['unspecified'] ELSE msc_source END) AS msc_source FROM f)
            SELECT family, msc_source, {cols} FROM g GROUP BY ALL""").to_arrow_table()
    # the lists as rows of the selection (no new string per id)
    ids_of = {k: L.id_lists(table.column(k), L.selection_of(con, sel)) for k in stages}
    ids: dict[str, list[str]] = {}
    for i, (family, msc_source) in enumerate(
        zip(table.column("family").to_pylist(), table.column("msc_source").to_pylist(), strict=True)
    ):
        key = cid_for("funnel", family, msc_source)
        for k in stages:
            ids[f"{key}|{k}"] = ids_of[k][i]
    for r in frame_rows(fr):  # the group's trials that name its approved products
        ids[cid_for("funnel", r.family, r.msc_source) + "|approved_products"] = list(
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
    counts: Counts,
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

    for r in frame_rows(fr):
        base = cid_for("funnel", r.family, r.msc_source)
        row = [Cell(group_text(r.family, r.msc_source))]
        for stage in FUNNEL_STAGES:
            cid = f"{base}|{stage}"
            row.append(counts.cell(cid, getattr(r, stage), ids.get(cid, [])))
        cid = f"{base}|approved_products"
        counts.add(cid, int(r.approved_products), ids.get(cid, []))
        row.append(Cell(fmt_count(r.approved_products), count_id=cid, num=True, listed=True))
        row.append(Cell(str(r.approved_product_names or "")))
        med = r.median_years_to_approval
        row.append(Cell(f"{med:.1f} (n = {r.n_with_years})" if med == med else "–", num=True))
        cid = f"{base}|approved_before_first_trial"
        counts.add(cid, int(r.approved_before_first_trial), None)
        row.append(Cell(fmt_count(r.approved_before_first_trial), count_id=cid, num=True))
        cid = f"{base}|approved_no_trials"
        counts.add(cid, int(r.approved_no_trials), None)
        row.append(Cell(fmt_count(r.approved_no_trials), count_id=cid, num=True))
        row.append(Cell(str(r.approved_no_trials_names or "")))
        rows.append(row)
    top = fr.head(FUNNEL_TOP)
    cats = [group_text(r.family, r.msc_source) for r in frame_rows(top)]
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
                [f"{cid_for('funnel', r.family, r.msc_source)}|{stage}" for r in frame_rows(top)],
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
        for r in frame_rows(products):
            cid = cid_for("funnel_products", r.substance)
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


# ------------------------------------------------------------ the whole set
@dataclass
class SectionData:
    """Every section table of a report (by name, as written to tables/*.csv)
    and what the chapters need beside them."""

    tables: dict[str, pd.DataFrame]
    data_date: date | None
    windows: pd.DataFrame
    funnel: pd.DataFrame | None
    funnel_ids: dict[str, list[str]]
    funnel_error: str
    #: :func:`celltrials.quality.coverage_windows` of the store (read once per report)
    coverage: list[CoverageWindow] | None = None
    #: :func:`quality_summary` of the store, when already computed (``has_quality``)
    quality: dict[str, Any] | None = None
    has_quality: bool = False


class StoreWide:
    """The store-wide parts of a report, which do not depend on its trials:
    the coverage windows (every source's date ranges and export stamps)
    and the data-quality audit of the methods chapter. They run in
    DuckDB on a connection of their own, in a thread, from the moment this is
    made until :meth:`result`; :meth:`close` (always call it) waits for the
    thread, interrupting its query when the result was never needed. (Started
    before the selection instead of beside the sections, it cost a 500k-trial
    report 1.5 CPU-s more, both competing for DuckDB's threads.)"""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._cursor = con.cursor()
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending = self._pool.submit(self._run)

    def _run(self) -> tuple[list[CoverageWindow], dict[str, Any] | None]:
        windows = coverage_windows(self._cursor)
        return windows, quality_summary(self._cursor, windows)

    def result(self) -> tuple[list[CoverageWindow], dict[str, Any] | None]:
        return self._pending.result()

    def close(self) -> None:
        if not self._pending.done():  # the report failed before it needed them
            self._pending.cancel()
            self._cursor.interrupt()
        wait([self._pending])
        self._pool.shutdown(wait=True)
        self._cursor.close()


def compute_sections(
    con: duckdb.DuckDBPyConnection,
    sel: pd.DataFrame,
    filters: L.Filters,
    store_wide: StoreWide | None = None,
) -> SectionData:
    """Every section of the report over the selected trials ``sel``: the
    landscape sections, the exclusions, the coverage marks of the per-year
    charts and the development funnel. ``store_wide``: the store-wide parts,
    when already started (else they run beside the sections)."""
    own = store_wide is None
    running = StoreWide(con) if store_wide is None else store_wide
    # the funnel's pandas work runs in a thread while DuckDB computes the sections here
    # (the GIL is released during a query); its read of product_links on its own connection
    cursor = con.cursor()
    pool = ThreadPoolExecutor(max_workers=1)
    frames = pool.submit(funnel_frames, sel, cursor)
    try:
        with L.holding_data_date(con) as dd:  # read once, not once per section
            secs: dict[str, pd.DataFrame] = {name: fn(con, sel) for name, fn in L.SECTIONS.items()}
        secs["exclusions"] = L.exclusions(con, filters)
        fr, funnel_ids, funnel_error, funnel_products = funnel_data(sel, con, frames.result())
        coverage, quality = running.result()
    finally:
        frames.cancel()
        wait([frames])
        pool.shutdown(wait=True)
        cursor.close()
        if own:
            running.close()

    windows = source_windows(con, coverage)
    secs["year_coverage"], secs["year_coverage_sources"] = year_coverage(sel, dd, windows, con)
    if fr is not None:
        f_tab = fr.copy()
        f_tab["trial_ids"] = [
            funnel_ids.get(cid_for("funnel", r.family, r.msc_source) + "|registered", [])
            for r in frame_rows(fr)
        ]
        secs["funnel"] = f_tab
    if funnel_products is not None:
        secs["funnel_products"] = funnel_products
    return SectionData(
        secs, dd, windows, fr, funnel_ids, funnel_error, coverage, quality, has_quality=True
    )


@dataclass
class Methods:
    """The methods chapter: sources and their coverage windows, exclusions,
    label gaps, merges, the data-quality audit and the selection itself."""

    sources: TableView
    windows: list[dict[str, Any]]
    exclusions: TableView
    gaps: TableView
    merged: dict[str, int]
    quality: dict[str, Any] | None
    sql: str
    params: list[Any]
    filters: dict[str, str]
    taxonomy_version: str | None
    registries_present: list[str]

    def context(self) -> dict[str, Any]:
        """The template variables of the methods chapter."""
        return {
            "filters": self.filters,
            "sources": self.sources,
            "windows": self.windows,
            "exclusions": self.exclusions,
            "gaps": self.gaps,
            "merged": self.merged,
            "quality": self.quality,
            "sql": self.sql,
            "params": self.params,
            "taxonomy_version": self.taxonomy_version,
            "registries_present": self.registries_present,
        }


def methods(
    con: duckdb.DuckDBPyConnection, counts: Counts, data: SectionData, filters: L.Filters
) -> Methods:
    """The methods chapter's tables and numbers (their counts added to ``counts``)."""
    secs = data.tables
    snap = secs["snapshots"]
    root, rel = _relative_sources([str(s) for s in snap["source"]])
    src_rows = []
    for r in frame_rows(snap):
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
                    cid_for("snapshots", key, "records_read"), int(r.n_records_read or 0), None
                ),
                Cell(_day(r.latest_update) or "—"),
                counts.cell(cid_for("snapshots", key, "trials"), r.n_trials, r.trial_ids),
            ]
        )
    # trials left out are not in the page's trial table: their lists are in tables/exclusions.csv
    exc_rows = [
        [Cell(r.reason), counts.cell(cid_for("exclusions", r.reason), r.n_trials, None)]
        for r in frame_rows(secs["exclusions"])
    ]
    gap_rows = [
        [Cell(r.gap), counts.cell(cid_for("unclassified_fields", r.gap), r.n_trials, r.trial_ids)]
        for r in frame_rows(secs["unclassified_fields"])
    ]
    merged = con.execute("""
        SELECT count(DISTINCT trial_id) AS trials, count(*) AS records
        FROM trial_records WHERE n_records > 1""").fetchall()[0]
    counts.add("methods:merged_trials_store", int(merged[0]), None)
    counts.add("methods:merged_records_store", int(merged[1]), None)
    quality = data.quality if data.has_quality else quality_summary(con, data.coverage)
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
    return Methods(
        sources=TableView(
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
        windows=_coverage_windows(snap, data.windows, rel),
        exclusions=TableView(
            ["reason", "trials"],
            exc_rows,
            note="The trial ids of each reason are in tables/exclusions.csv.",
        ),
        gaps=TableView(["label gap", "trials"], gap_rows),
        merged={"trials": int(merged[0]), "records": int(merged[1])},
        quality=quality,
        sql=sql,
        params=params,
        filters=described,
        taxonomy_version=L.taxonomy_version(con),
        registries_present=sorted({str(x) for x in secs["registries"]["registry"]}),
    )


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
    for r in frame_rows(windows):
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
