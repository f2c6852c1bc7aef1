"""The report's tables as files: ``tables/*.csv`` and ``report.xlsx``.

Every section table (and the list of the report's trials) is written as CSV
through Arrow, list columns (trial ids) joined with ``;``, and as one sheet of
the workbook (long cells truncated there; complete in the CSV). Registry text
is untrusted: no cell may start a formula (:mod:`celltrials.safety`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zipfile import ZIP_DEFLATED, ZipFile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

import celltrials
from celltrials.analysis import landscape as L
from celltrials.report.sections import frame_rows
from celltrials.safety import FORMULA_START, safe_cell, safe_frame, safe_xlsx_cell

__all__ = [
    "XLSX_CELL_LIMIT",
    "about_rows",
    "csv_frame",
    "csv_frames",
    "write_csv",
    "write_csv_files",
    "write_tables",
    "write_xlsx",
]

XLSX_CELL_LIMIT = 32_000
#: a cell holding a list of trial ids (joined with ';' for CSV and Excel)
_ID_LISTS = (list, np.ndarray, L.TrialRows)


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """List columns (trial ids) joined with ';' for CSV and Excel."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype != object or not len(out):
            continue
        first = next((v for v in out[c] if v is not None), None)
        if isinstance(first, _ID_LISTS):
            joined = _joined_rows(out[c].tolist())
            out[c] = (
                joined
                if joined is not None
                else [_joined(v) if isinstance(v, _ID_LISTS) else v for v in out[c]]
            )
    return out


def _joined_rows(values: list[Any]) -> list[str] | None:
    """``;``-joined lists of trial ids that all know their rows in one selection
    (:class:`~celltrials.analysis.landscape.TrialIds`), joined by Arrow from the
    selection's ids: millions of ids at 500,000 trials, and none made a Python
    string again. None for any other column."""
    sel = L.listed_selection(values[0]) if values else None
    if sel is None:
        return None
    known = [r for v in values if (r := L.listed_rows(v, sel)) is not None]
    if len(known) < len(values):
        return None
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    offsets = pa.array(np.concatenate(([0], np.cumsum(lengths))), type=pa.int64())
    rows = np.concatenate(known).astype(np.int64)
    lists = pa.LargeListArray.from_arrays(offsets, sel.arrow.take(pa.array(rows)))
    joined: list[str] = pc.binary_join(lists, ";").to_pylist()
    return joined


def _joined(values: Any) -> str:
    try:
        return ";".join(values)  # trial ids: text already
    except TypeError:
        return ";".join(map(str, values))


def _safe_table(df: pd.DataFrame) -> pa.Table:
    """``df`` as an Arrow table with :func:`celltrials.safety.safe_frame`'s
    changes made by Arrow kernels: a text cell that would start a formula gets
    a leading quote (column names too). Raises on a column Arrow cannot type."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    columns = []
    for col in table.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            hit = pc.match_substring_regex(col, FORMULA_START)
            if pc.any(hit).as_py():
                col = pc.if_else(hit, pc.binary_join_element_wise("'", col, ""), col)
        columns.append(col)
    names = [
        safe_cell(n) if isinstance(c, str) else n
        for n, c in zip(table.column_names, df.columns, strict=True)
    ]
    return pa.Table.from_arrays(columns, names=names)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """CSV through Arrow's writer (C++; about 20× pandas on long id lists).
    Registry text: no cell may start a formula (:mod:`celltrials.safety`)."""

    try:
        table = _safe_table(df)
    except (pa.ArrowException, TypeError, ValueError):  # an odd mixed column: pandas copes
        df = safe_frame(df)
        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError):
            df.to_csv(path, index=False)
            return
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))


def write_xlsx(path: Path, tables: dict[str, pd.DataFrame], about: list[tuple[str, str]]) -> None:
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
        for row in frame_rows(df):
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
    _save_fast(wb, path)


def _save_fast(wb: Any, path: Path) -> None:
    """``wb.save(path)`` with zlib level 1 instead of the default 6: the
    sheets' trial-id cells compress about 3× faster, into a file a little
    larger; the sheets are the same."""
    from openpyxl.writer.excel import ExcelWriter  # noqa: PLC0415 - heavy optional dependency, imported on first use

    if wb.write_only and not wb.worksheets:
        wb.create_sheet()
    archive = ZipFile(path, "w", ZIP_DEFLATED, allowZip64=True, compresslevel=1)
    wb.properties.modified = datetime.now(tz=UTC).replace(tzinfo=None)
    ExcelWriter(wb, archive).save()


def write_tables(
    folder: Path, tables: dict[str, pd.DataFrame]
) -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """Write ``folder/NAME.csv`` for every table; the CSV-ready frames (lists
    joined) by name, for the workbook, and the paths written."""
    frames = csv_frames(tables)
    return frames, write_csv_files(folder, frames)


def csv_frames(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """:func:`csv_frame` of every table, by name."""
    return {name: csv_frame(df) for name, df in tables.items()}


def write_csv_files(folder: Path, frames: dict[str, pd.DataFrame]) -> list[Path]:
    """Write ``folder/NAME.csv`` for every CSV-ready frame; the paths written.
    (Arrow does the work with the GIL released: the report runs this in a
    thread while it writes the workbook and the page.)"""
    paths: list[Path] = []
    for name, frame in frames.items():
        p = folder / f"{name}.csv"
        write_csv(frame, p)
        paths.append(p)
    return paths


def about_rows(
    *,
    generated: str,
    data_date: date | None,
    n_trials: int,
    filters: dict[str, str],
    taxonomy_version: str | None,
) -> list[tuple[str, str]]:
    """The workbook's ``about`` sheet: what the report is and how it was made."""
    return [
        ("report", "celltrials landscape report"),
        ("celltrials version", celltrials.__version__),
        ("generated", generated),
        ("data as of (latest registry update)", data_date.isoformat() if data_date else "unknown"),
        ("trials", str(n_trials)),
        ("filters", "; ".join(f"{k}: {v}" for k, v in filters.items())),
        ("taxonomy version", taxonomy_version or "unknown"),
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
