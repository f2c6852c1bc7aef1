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

import numpy as np
import pandas as pd

from celltrials.quality import CoverageWindow, coverage_windows

#: a source that supplied at least this share of a series' trials marks the years after its snapshot
MATERIAL_SHARE = 0.10

STATUSES = ("covered", "partial", "not_covered")


def source_windows(con: Any, windows: list[CoverageWindow] | None = None) -> pd.DataFrame:
    """One row per ingested source file: source, format, registries,
    n_records, snapshot_date (a :class:`datetime.date`, or None when no
    record of the file is dated). ``windows``: the store's
    :func:`~celltrials.quality.coverage_windows` when the caller has them."""
    c = getattr(con, "con", con)
    rows: list[dict[str, Any]] = []
    if windows is None:
        windows = coverage_windows(c)
    for w in windows:  # the export dates too, not only the records' own
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


def _series_rows(trials: pd.DataFrame, key: str) -> pd.DataFrame:
    """(series, source, trial_id) for every value of ``key``: a text value is
    one series, a list gives one per non-empty item (None and NaN: none)."""
    vals = trials[key].tolist()
    srcs = [str(x) for x in trials["source"].tolist()]
    tids = trials["trial_id"].tolist()
    if all(isinstance(v, list | np.ndarray) for v in vals):  # label lists: the usual case
        lens = np.fromiter(map(len, vals), dtype=np.int64, count=len(vals))
        at = np.repeat(np.arange(len(vals)), lens)
        flat = [x for v in vals for x in v]
        keep = [x is not None and str(x) != "" for x in flat]
        series = [str(x) for x, k in zip(flat, keep, strict=True) if k]
        at = at[np.asarray(keep, dtype=bool)] if len(flat) else at
        src_arr = np.asarray(srcs, dtype=object)
        tid_arr = np.asarray(tids, dtype=object)
        return pd.DataFrame(
            {"series": series, "source": src_arr[at], "trial_id": tid_arr[at]},
            columns=["series", "source", "trial_id"],
        )
    rows = [(x, src, tid) for tid, src, v in zip(tids, srcs, vals, strict=True) for x in _values(v)]
    return pd.DataFrame(rows, columns=["series", "source", "trial_id"])


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
    df = _series_rows(trials, key)  # nunique counts a trial once per series and source
    out = df.groupby(["series", "source"])["trial_id"].nunique().rename("n_trials").reset_index()
    return sources_frame(out, windows)


def sources_frame(counts: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """:func:`series_sources` from its counts (columns series, source,
    n_trials: distinct trials per series and source, however counted)."""
    snap = dict(zip(windows["source"], windows["snapshot_date"], strict=True))
    out = counts.copy()
    out["share"] = out["n_trials"] / out.groupby("series")["n_trials"].transform("sum")
    out["snapshot_date"] = [snap.get(s) for s in out["source"]]
    return out.sort_values(
        ["series", "n_trials", "source"], ascending=[True, False, True]
    ).reset_index(drop=True)


def year_coverage(
    trials: pd.DataFrame,
    key: str,
    windows: pd.DataFrame,
    years: Iterable[int],
    sources: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per series and year: ``status`` (``covered``/``partial``/``not_covered``,
    see the module docstring), ``ended_share`` (share of the series' trials
    from sources that ended before the year), ``ending_share`` (from sources
    ending during it) and the file names of those sources (``ended``,
    ``ending``). ``trials`` are the trials the chart counts; ``sources`` their
    :func:`series_sources`, when the caller has it."""
    src = series_sources(trials, key, windows) if sources is None else sources
    rows = []
    for series, g in src.groupby("series", sort=True):
        dated = g[g["snapshot_date"].notna()]
        ends = np.array([d.year for d in dated["snapshot_date"]], dtype=np.int64)
        shares = dated["share"].reset_index(drop=True)
        names = [Path(s).name for s in dated["source"]]
        for y in years:
            m_ended, m_ending = ends < y, ends == y
            e = float(shares[m_ended].sum()) if m_ended.any() else 0.0
            p = float(shares[m_ending].sum()) if m_ending.any() else 0.0
            status = (
                "not_covered"
                if e >= MATERIAL_SHARE
                else "partial"
                if e + p >= MATERIAL_SHARE and m_ending.any()
                else "covered"
            )
            rows.append(
                {
                    "series": series,
                    "year": int(y),
                    "status": status,
                    "ended_share": e,
                    "ending_share": p,
                    "ended": [n for n, m in zip(names, m_ended, strict=True) if m],
                    "ending": [n for n, m in zip(names, m_ending, strict=True) if m],
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
            one = len(small) == 1
            why += (
                f"; {len(small)} smaller source{'' if one else 's'} "
                f"({100 * small['share'].sum():.0f} % {'of the trials' if one else 'together'}) "
                f"also end{'s' if one else ''} by then"
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
