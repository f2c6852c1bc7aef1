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

This module runs the build (:func:`build_report`: steps, progress, timings,
the figure workers); :mod:`celltrials.report.sections` computes the numbers,
:mod:`celltrials.report.render` writes the page and
:mod:`celltrials.report.workbook` the CSV tables and the workbook.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

import celltrials
from celltrials import procpool
from celltrials.analysis import landscape as L
from celltrials.errors import AnalysisError, ConfigError
from celltrials.progress import Progress, ProgressEvent
from celltrials.report.figures import Chart, draw_matplotlib, prepare_matplotlib
from celltrials.report.render import LISTS_FILE, read_lists_file, write_html
from celltrials.report.sections import (
    Counts,
    build_chapters,
    compute_sections,
    headline_cards,
    methods,
)
from celltrials.report.workbook import about_rows, csv_frames, write_csv_files, write_xlsx
from celltrials.runtime import gc_paused
from celltrials.store import Store

__all__ = ["LISTS_FILE", "ReportResult", "build_report", "read_lists_file"]


@dataclass
class ReportResult:
    """What :func:`build_report` wrote, and the section tables it counted
    (``sections``: each count's trials in ``trial_ids``, a sequence of ids
    (:class:`~celltrials.analysis.landscape.TrialRows`) that makes the text when read)."""

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


# ---------------------------------------------------------------- the build
def build_report(
    store: Store | duckdb.DuckDBPyConnection,
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
    con = store.con if isinstance(store, Store) else store
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
    # millions of trial ids in lists and frames, none in a reference cycle: the cyclic
    # collector would only rescan them (~10 % of the build's CPU at 500,000 trials)
    try:
        # (the data date read once: the selection, the sections and the methods ask for it)
        with gc_paused(), L.holding_data_date(con):
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
    with L.lazy_id_lists():  # the page and the CSV files read the lists' rows, not their text
        data = compute_sections(con, sel, filters)
    secs, dd = data.tables, data.data_date
    timings["sections"] = time.perf_counter() - t

    counts = Counts()
    cards = headline_cards(counts, secs["headline"])
    chapters = build_chapters(
        counts, secs, dd, labelled, data.funnel, data.funnel_ids, data.funnel_error
    )
    charts = [s.chart for ch in chapters for s in ch.sections if s.chart is not None]
    if drawing:  # (before the methods chapter's queries: the workers wait for nothing else)
        drawing.start([c for c in charts if not c.empty])
    meth = methods(con, counts, data, filters)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    # tables/*.csv
    t = step(2, "writing tables")
    trials_list = L.trial_list(con, sel)
    frames = csv_frames({**secs, "trials": trials_list})
    # Arrow writes the CSV files (GIL released) while this thread writes the workbook and page
    csv_pool = ThreadPoolExecutor(max_workers=1)
    csv_job = csv_pool.submit(write_csv_files, out / "tables", frames)
    csv_pool.shutdown(wait=False)
    timings["tables"] = time.perf_counter() - t

    about = about_rows(
        generated=generated,
        data_date=dd,
        n_trials=len(sel),
        filters=meth.filters,
        taxonomy_version=meth.taxonomy_version,
    )
    t = step(3, "writing report.xlsx")
    xlsx = out / "report.xlsx"
    write_xlsx(xlsx, {k: v for k, v in frames.items() if k != "trials"}, about)
    timings["workbook"] = time.perf_counter() - t

    t = step(4, "writing report.html")
    html = out / "report.html"
    write_html(
        out,
        html,
        counts=counts,
        charts=charts,
        trials=trials_list,
        context={
            "title": "Cell-therapy clinical-trial landscape",
            "version": celltrials.__version__,
            "generated": generated,
            "data_date": dd.isoformat() if dd else None,
            "partial_year": dd.year if dd else None,
            "n_trials": len(sel),
            "cards": cards,
            "chapters": chapters,
            "charts_empty": {c.id for c in charts if c.empty},
            **meth.context(),
            "labelled": labelled,
            "python": platform.python_version(),
        },
    )
    timings["html"] = time.perf_counter() - t

    t = step(5, "finishing figures")
    table_paths = csv_job.result()
    timings["tables_wait"] = time.perf_counter() - t
    t = time.perf_counter()
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
        out, html, xlsx, fig_paths, table_paths, len(sel), dd, meth.filters, secs, timings
    )


class _Drawing:
    """Matplotlib figures drawn by worker processes (:func:`celltrials.procpool.executor`:
    ``forkserver`` processes, so the store's DuckDB threads are never forked, each
    ending itself when this process is killed).
    The workers start importing Matplotlib as soon as the report starts; the
    charts are handed to them slowest first (:meth:`start`) while this process
    writes the tables and the HTML; then this process draws, from the other end
    of the list, every chart no worker has started yet (a cancelled future).
    A chart whose worker failed is drawn here too, and so is every chart when
    the pool broke before they were handed out (a worker killed, or one that
    could not start: a script without ``if __name__ == "__main__":`` runs itself
    again in each worker, up to here): a broken worker costs time, never
    figures. ``jobs`` = 0 draws everything here."""

    def __init__(self, out_dir: Path, jobs: int | None) -> None:
        cpus = os.cpu_count() or 1
        n = jobs if jobs is not None else min(3, cpus - 1)
        self.out_dir = out_dir
        self.charts: list[Chart] = []
        self.futures: list[Future[list[Path]]] = []
        self.pool: ProcessPoolExecutor | None = None
        if n > 0:
            self.pool = procpool.executor(n, initializer=prepare_matplotlib)
            for _ in range(n):  # start the workers (and their Matplotlib import) now
                self.pool.submit(os.getpid)

    def start(self, charts: list[Chart]) -> None:
        """Hand the charts to the workers (slowest first: workers start on
        those, this process takes the quick ones at the end)."""
        self.charts = sorted(
            charts, key=lambda c: -(len(c.categories) * max(1, len(c.series)) + 10 * len(c.rows))
        )
        if self.pool is not None:
            try:
                self.futures = [
                    self.pool.submit(draw_matplotlib, c, self.out_dir) for c in self.charts
                ]
            except BrokenProcessPool:  # a worker ended, or could not start: all drawn here
                self.futures = []
                self.close()

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
