"""Coverage windows of per-year charts: which years the data can speak for.

Every source file of a store is a snapshot: it holds the trials its registry
search returned up to its *snapshot date* (the latest registry update among
its records, or the export date the file states when
:func:`celltrials.quality.coverage_windows` knows it). A per-year chart that
mixes sources can show a fall that is only a snapshot ending: the classic
ClinicalTrials.gov CSV export of MSC trials ends on 2022-10-05, so
stem-cell trials after 2022 are simply not in it.

For a chart whose bars are series (a cell-type family, a product form),
:func:`year_coverage` marks, per series and year:

* ``not_covered`` — sources whose snapshot ended in an earlier year supplied
  at least :data:`MATERIAL_SHARE` of the series' trials in the chart (summed
  over all ended sources);
* ``partial`` — not the above, but counting the sources whose snapshot ends
  *during* that year reaches the share (the year is covered only to the
  snapshot date);
* ``covered`` otherwise.

A series' trials are attributed to the source of each trial's primary record
(the record the report shows). Sources without any dated record have no
known end and never mark a year.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from celltrials.quality import coverage_windows

#: a source that supplied at least this share of a series' trials marks the years after its snapshot
MATERIAL_SHARE = 0.10

STATUSES = ("covered", "partial", "not_covered")


def source_windows(con: Any) -> pd.DataFrame:
    """One row per ingested source file: source, format, registries,
    n_records, snapshot_date (a :class:`datetime.date`, or None when no
    record of the file is dated)."""
    c = getattr(con, "con", con)
    rows: list[dict[str, Any]] = []
    for w in coverage_windows(c):  # the export dates too, not only the records' own
        rows.append(
            {
                "source": w.source,
                "format": w.format,
                "registries": ", ".join(w.registries),
                "n_records": int(w.n_records),
                "snapshot_date": w.snapshot_date,
            }
        )
    return pd.DataFrame(
        rows, columns=["source", "format", "registries", "n_records", "snapshot_date"]
    )


def _values(v: Any) -> list[str]:
    if v is None or (isinstance(v, float) and v != v):
        return []
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v if x is not None and str(x) != ""]


def series_sources(trials: pd.DataFrame, key: str, windows: pd.DataFrame) -> pd.DataFrame:
    """Per series and source: the number of the series' trials whose primary
    record comes from that source, its share of the series, and the source's
    snapshot date. ``trials`` has columns trial_id, source and ``key`` (a
    value or a list of values per trial)."""
    snap = dict(zip(windows["source"], windows["snapshot_date"], strict=True))
    rows = [
        (s, str(src), tid)
        for tid, src, vals in zip(trials["trial_id"], trials["source"], trials[key], strict=True)
        for s in _values(vals)
    ]
    df = pd.DataFrame(rows, columns=["series", "source", "trial_id"]).drop_duplicates()
    out = df.groupby(["series", "source"])["trial_id"].nunique().rename("n_trials").reset_index()
    out["share"] = out["n_trials"] / out.groupby("series")["n_trials"].transform("sum")
    out["snapshot_date"] = [snap.get(s) for s in out["source"]]
    return out.sort_values(
        ["series", "n_trials", "source"], ascending=[True, False, True]
    ).reset_index(drop=True)


def year_coverage(
    trials: pd.DataFrame, key: str, windows: pd.DataFrame, years: Iterable[int]
) -> pd.DataFrame:
    """Per series and year: ``status`` (``covered``/``partial``/``not_covered``,
    see the module docstring), ``ended_share`` (share of the series' trials
    from sources that ended before the year), ``ending_share`` (from sources
    ending during it) and the file names of those sources (``ended``,
    ``ending``). ``trials`` are the trials the chart counts."""
    src = series_sources(trials, key, windows)
    rows = []
    for series, g in src.groupby("series", sort=True):
        dated = g[g["snapshot_date"].notna()]
        for y in years:
            ends = [d.year for d in dated["snapshot_date"]]
            ended = dated[[e < y for e in ends]]
            ending = dated[[e == y for e in ends]]
            e, p = float(ended["share"].sum()), float(ending["share"].sum())
            status = (
                "not_covered"
                if e >= MATERIAL_SHARE
                else "partial"
                if e + p >= MATERIAL_SHARE and len(ending)
                else "covered"
            )
            rows.append(
                {
                    "series": series,
                    "year": int(y),
                    "status": status,
                    "ended_share": e,
                    "ending_share": p,
                    "ended": [Path(s).name for s in ended["source"]],
                    "ending": [Path(s).name for s in ending["source"]],
                }
            )
    return pd.DataFrame(
        rows, columns=["series", "year", "status", "ended_share", "ending_share", "ended", "ending"]
    )


def material_windows(trials: pd.DataFrame, key: str, windows: pd.DataFrame) -> pd.DataFrame:
    """The sources that can mark a series' years (share ≥ :data:`MATERIAL_SHARE`
    and a known snapshot date), per series: series, source, n_trials, share,
    snapshot_date."""
    src = series_sources(trials, key, windows)
    return src[(src["share"] >= MATERIAL_SHARE) & src["snapshot_date"].notna()].reset_index(
        drop=True
    )


def describe(marks: pd.DataFrame, sources: pd.DataFrame, label: Any = str) -> list[str]:
    """One sentence per series with marked years, naming the sources that
    end, their share of the series' trials and their snapshot dates, e.g.
    "Stem/stromal cells: 2022 partial, 2023–2026 not covered (snapshot ends:
    msc_mesenchymal_stem_or_stromal.csv, 96 % of its trials, 2022-10-05)".
    ``marks`` is :func:`year_coverage`, ``sources`` :func:`series_sources`;
    ``label`` turns series codes into names."""
    out = []
    for series, g in marks.groupby("series", sort=False):
        partial = [int(y) for y, s in zip(g["year"], g["status"], strict=True) if s == "partial"]
        gone = [int(y) for y, s in zip(g["year"], g["status"], strict=True) if s == "not_covered"]
        if not partial and not gone:
            continue
        parts = []
        if partial:
            parts.append(f"{_years(partial)} partial")
        if gone:
            parts.append(f"{_years(gone)} not covered")
        names: set[str] = set()
        for ended, ending, status in zip(g["ended"], g["ending"], g["status"], strict=True):
            if status != "covered":
                names.update([*ended, *ending])
        mine = sources[(sources["series"] == series)]
        src = mine[[Path(str(x)).name in names for x in mine["source"]]]
        src = src.sort_values(["snapshot_date", "share"], ascending=[True, False])
        big = src[src["share"] >= MATERIAL_SHARE]
        small = src[src["share"] < MATERIAL_SHARE]
        why = "; ".join(
            f"{Path(str(name)).name} ({100 * float(share):.0f} % of its trials) ends {_day(d)}"
            for name, share, d in zip(
                big["source"], big["share"], big["snapshot_date"], strict=True
            )
        )
        if len(small):
            why += (
                f"; {len(small)} smaller source{'s' if len(small) > 1 else ''} "
                f"({100 * small['share'].sum():.0f} % together) also end by then"
            )
        out.append(f"{label(series)}: {', '.join(parts)} — {why}")
    return out


def _day(d: Any) -> str:
    return d.isoformat() if isinstance(d, date) else "unknown"


def _years(ys: list[int]) -> str:
    """2019, 2021–2026 for a sorted list of years."""
    runs: list[list[int]] = []
    for y in sorted(ys):
        if runs and y == runs[-1][-1] + 1:
            runs[-1].append(y)
        else:
            runs.append([y])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in runs)
