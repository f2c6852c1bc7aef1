"""Registry text is untrusted: one place that makes it safe for each output.

* **Spreadsheets** (CSV and XLSX, every writer): a cell that starts with
  ``= + - @``, a tab or a carriage return would be read by Excel / LibreOffice
  as a formula (CSV/formula injection). Following OWASP's CSV-injection
  guidance, such a cell is prefixed with a single quote so it is read as
  text. The full-width forms (``＝ ＋ － ＠``) are treated the same, since
  some spreadsheet locales fold them. XLSX cannot hold XML-illegal control
  characters (NUL, …); they are replaced by U+FFFD.
* **Links**: only ``http://`` and ``https://`` URLs are ever rendered as
  links (``javascript:``, ``data:``, ``file:`` … are dropped).
* **Terminal**: registry text printed through rich is escaped, so
  ``[industry]`` is shown as written and never read as a style tag, and
  control characters (ESC sequences) are never sent to the terminal.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rich.markup import escape

#: first characters that make a spreadsheet cell a formula (OWASP), plus full-width forms
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")

#: characters an XLSX (XML 1.0) cell cannot hold; openpyxl raises IllegalCharacterError on them
_XLSX_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

_SAFE_SCHEMES = ("http", "https")

#: an http(s) URL urlsplit reads as is: ASCII host without brackets, no space or control
#: character anywhere (the common case, accepted without splitting; see safe_url); the
#: scheme's letters spelt out in ASCII (re.IGNORECASE would also take "httpſ")
_PLAIN_HTTP_URL = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://[\x21\x22\x24-\x2e\x30-\x3e\x40-\x5a\x5c\x5e-\x7e]+(?:[/?#][\x21-\x7e]*)?"
)
_URL_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def is_formula_like(value: object) -> bool:
    """True for a string a spreadsheet would evaluate (leading spaces ignored)."""
    return isinstance(value, str) and value.lstrip(" ").startswith(FORMULA_PREFIXES)


def safe_cell(value: Any) -> Any:
    """A spreadsheet-safe version of one cell value (non-strings unchanged)."""
    if isinstance(value, str) and is_formula_like(value):
        return "'" + value
    return value


def safe_xlsx_cell(value: Any) -> Any:
    """:func:`safe_cell` plus removal of characters XLSX cannot store."""
    if isinstance(value, str):
        if _XLSX_ILLEGAL.search(value):
            value = _XLSX_ILLEGAL.sub("\ufffd", value)
        return safe_cell(value)
    return value


#: a text cell that :func:`is_formula_like` flags, as one regex (Python and Arrow's RE2)
FORMULA_START = "^ *[=+\\-@\\t\\r\uff1d\uff0b\uff0d\uff20]"


def _safe_seq(values: Any, cell: Any) -> list[Any]:
    return [cell(v) for v in values]


def _safe_text_column(s: pd.Series, cell: Any, xlsx: bool) -> list[Any] | None:
    """:func:`_safe_seq` of an Arrow-backed text column, finding the cells to
    change with Arrow's regex kernels (one pass in C++ instead of a Python call
    per cell); None when the column is not Arrow-backed."""
    try:
        arr = pa.array(s.array)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return None
    hit = pc.match_substring_regex(arr, FORMULA_START)
    if xlsx:
        hit = pc.or_(hit, pc.match_substring_regex(arr, _XLSX_ILLEGAL.pattern))
    values = s.tolist()
    for i in np.flatnonzero(hit.fill_null(False).to_numpy(zero_copy_only=False)).tolist():
        values[i] = cell(values[i])
    return values


def safe_frame(df: pd.DataFrame, *, xlsx: bool = False) -> pd.DataFrame:
    """A copy of ``df`` whose text cells (and column names) are spreadsheet-safe."""
    cell = safe_xlsx_cell if xlsx else safe_cell
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            fast = None if s.dtype == object else _safe_text_column(s, cell, xlsx)
            values = fast if fast is not None else _safe_seq(s.tolist(), cell)
            out[col] = pd.Series(values, index=s.index, dtype=object)
    out.columns = [cell(c) if isinstance(c, str) else c for c in out.columns]
    return out


def safe_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row (``csv.DictWriter``) with spreadsheet-safe values."""
    return {k: safe_cell(v) for k, v in row.items()}


def safe_url(value: object) -> str:
    """``value`` if it is an absolute http(s) URL with a host, else ``""``.

    Control characters and whitespace inside the URL (which browsers strip
    before reading the scheme, e.g. ``java\\tscript:``) make it unsafe too.
    """
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if _PLAIN_HTTP_URL.fullmatch(text):
        return text
    if not text or _URL_SPACE_OR_CONTROL.search(text):
        return ""
    try:
        parts = urlsplit(text)
    except ValueError:
        return ""
    if parts.scheme.lower() not in _SAFE_SCHEMES or not parts.netloc:
        return ""
    return text


#: _PLAIN_HTTP_URL for Arrow's RE2 (ASCII classes, the scheme's letters spelt out: the
#: same matches in both engines; Python's re.IGNORECASE would also take "httpſ")
_PLAIN_HTTP_URL_RE2 = "^" + _PLAIN_HTTP_URL.pattern + "$"


def safe_urls(values: list[Any]) -> list[str]:
    """:func:`safe_url` of every value; plain http(s) URLs (nearly all of a
    registry's) are recognised by one Arrow regex pass, the rest one by one."""
    try:
        arr = pa.array(values, type=pa.string(), from_pandas=True)
        plain = pc.match_substring_regex(arr, _PLAIN_HTTP_URL_RE2).fill_null(False)
        ok = plain.to_numpy(zero_copy_only=False).tolist()
    except (pa.ArrowException, TypeError, ValueError):  # values that are not all text
        return [safe_url(v) for v in values]
    return [v if hit else safe_url(v) for v, hit in zip(values, ok, strict=True)]


#: C0/C1 control characters other than tab and newline: ESC starts terminal escape
#: sequences (colours, window titles, OSC 8 links), which registry text must not send
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(value: object) -> str:
    """Text for a terminal: control characters (ESC, BEL, …) shown as U+FFFD."""
    text = "" if value is None else str(value)
    return _TERMINAL_CONTROLS.sub("\ufffd", text) if _TERMINAL_CONTROLS.search(text) else text


def escape_markup(value: object) -> str:
    """Text for rich's console: ``[...]`` shown literally, never parsed as
    markup, and no terminal control characters."""

    return escape(terminal_safe(value))


__all__ = [
    "FORMULA_PREFIXES",
    "FORMULA_START",
    "escape_markup",
    "is_formula_like",
    "safe_cell",
    "safe_frame",
    "safe_row",
    "safe_url",
    "safe_urls",
    "safe_xlsx_cell",
    "terminal_safe",
]
