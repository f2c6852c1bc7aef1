"""The vectorised paths of celltrials.safety (regex accept of plain http(s)
URLs, Arrow scans of text columns, the report's Arrow CSV writer) give the
same answers as the per-value rules they stand in for.

The expected values come from the rules written out here with the standard
library (urlsplit, str.lstrip/startswith), not from the code under test."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest

from celltrials.report.workbook import write_csv
from celltrials.safety import FORMULA_PREFIXES, safe_frame, safe_url, safe_urls

pytestmark = pytest.mark.unit

XLSX_ILLEGAL = {chr(c) for c in [*range(9), 11, 12, *range(14, 32)]}


def reference_url(value: object) -> str:
    """The documented rule: an absolute http(s) URL with a host, no space or
    control character anywhere, that urlsplit can read."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if not text or any(ord(c) <= 0x20 or c == "\x7f" for c in text):
        return ""
    try:
        parts = urlsplit(text)
    except ValueError:
        return ""
    return text if parts.scheme.lower() in ("http", "https") and parts.netloc else ""


def test_safe_url_matches_the_rule_on_odd_urls() -> None:
    cases = [
        "https://clinicaltrials.gov/study/NCT04315987",
        "HTTP://EXAMPLE.ORG",
        "hTtPs://x.org/a?b=c#d",
        "  https://x.org/padded  ",
        "\u3000https://x.org/ideographic-space\u3000",
        "http://[::1]/ipv6",
        "http://[::1/broken-ipv6",
        "http://x]/",
        "http://user@host.org:8080/p",
        "http://host.org:99999/port-out-of-range",
        "http://é.example/unicode-host",
        "http://x.org/é/unicode-path",
        "http://x.org\\@evil.example/",
        "http:///no-host",
        "http://?q",
        "http://#f",
        "https:/one-slash",
        "ftp://x.org/",
        "javascript:alert(1)",
        "http://x.org/a b",
        "http://x.org/\tb",
        "http://x.org/\x7f",
        "java\tscript://x.org",
        "",
        None,
        42,
    ]
    # every short combination of the characters that matter to the accept pattern
    alphabet = ["h", "/", "[", "]", "?", "#", "@", ":", ".", "\\", "é", " ", "\x00"]
    for prefix in ("http://", "https://", "HTTP://", "http:"):
        for n in range(4):
            cases += [prefix + "".join(p) for p in itertools.product(alphabet, repeat=n)]
    for u in cases:
        assert safe_url(u) == reference_url(u), repr(u)
    # the column form: Arrow's regex pass for text (with None), one by one for the rest
    cases += [
        "httpſ://x.org/long-s",  # folds to 's' under Python's re.IGNORECASE
        "http://\u212a.org/kelvin-sign",
        "https://x.org/trailing-newline\n",
        "https://x.org/\x1c",
    ]
    text = [u for u in cases if u is None or isinstance(u, str)]
    assert safe_urls(text) == [reference_url(u) for u in text]
    assert safe_urls(cases) == [reference_url(u) for u in cases]


def _cases() -> list[str | None]:
    starts = ["", " ", "  ", *FORMULA_PREFIXES, "'", "a", "\x00", "\x0b", "\n"]
    return [a + b + "x" for a in starts for b in starts] + ["", None]


def test_safe_frame_arrow_text_columns_match_the_rule() -> None:
    values = _cases()
    for dtype in ("str", "string", object):
        df = pd.DataFrame({"t": pd.Series(values, dtype=dtype)})
        for xlsx in (False, True):
            got = safe_frame(df, xlsx=xlsx)["t"].tolist()
            for v, g in zip(values, got, strict=True):
                if not isinstance(v, str):
                    assert not isinstance(g, str) or g == v
                    continue
                want = "".join("\ufffd" if c in XLSX_ILLEGAL else c for c in v) if xlsx else v
                if want.lstrip(" ").startswith(FORMULA_PREFIXES):
                    want = "'" + want
                assert g == want, (dtype, xlsx, repr(v), repr(g))


def test_report_csv_writer_quotes_formula_cells(tmp_path: Path) -> None:
    values = [v for v in _cases() if v is not None]
    df = pd.DataFrame(
        {
            "arrow_text": pd.Series(values, dtype="str"),
            "object_text": pd.Series(values, dtype=object),
            "n": range(len(values)),
            "=name": ["x"] * len(values),
        }
    )
    path = tmp_path / "t.csv"
    write_csv(df, path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["arrow_text", "object_text", "n", "'=name"]
    for v, row in zip(values, rows[1:], strict=True):
        want = "'" + v if v.lstrip(" ").startswith(FORMULA_PREFIXES) else v
        assert row[0] == want and row[1] == want, repr(v)
