"""A large report keeps its trial table and lists beside report.html
(report-lists.js), loaded on the first click — offline, in real Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import celltrials
from celltrials.analysis.landscape import Filters
from celltrials.report import render as report_render
from celltrials.report.build import LISTS_FILE, ReportResult, build_report, read_lists_file
from tests.conftest_report import classified_store_path, decode_list, parse_page
from tests.test_report_browser import Page, _close, _dialog_ids, browser  # noqa: F401  (fixture)

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def side_report(tmp_path_factory: pytest.TempPathFactory, full_store_path: Path) -> ReportResult:
    store_path = classified_store_path(tmp_path_factory, full_store_path)
    out = tmp_path_factory.mktemp("report-side")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_render, "INLINE_LISTS_MAX_BYTES", 0)  # as if the report were large
        with celltrials.open(store_path, read_only=True) as store:
            return build_report(store, out, Filters(), figures=False)


def test_lists_beside_the_page_equal_the_inline_ones(
    tmp_path: Path,
    side_report: ReportResult,
    full_store_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    page, _ = parse_page(side_report.html)
    embedded = json.loads(page.scripts["report-data"])
    assert (
        "lists" not in embedded and "trials" not in embedded and embedded["lists_src"] == LISTS_FILE
    )
    side = read_lists_file(side_report.html.parent / LISTS_FILE)
    assert len(side["trials"]) == side_report.n_trials
    # the same report at the default threshold (small: all inline), into a folder holding the large one
    out = tmp_path / "again"
    shutil.copytree(side_report.html.parent, out)
    with celltrials.open(
        classified_store_path(tmp_path_factory, full_store_path), read_only=True
    ) as store:
        res = build_report(store, out, Filters(), figures=False)
    page2, _ = parse_page(res.html)
    inline = json.loads(page2.scripts["report-data"])
    assert (
        "lists_src" not in inline and not (out / LISTS_FILE).exists()
    )  # the stale side file is gone
    assert inline["trials"] == side["trials"] and inline["lists"] == side["lists"]
    assert len(side["lists"]) > 300
    assert {k: v for k, v in inline.items() if k not in ("trials", "lists")} == {
        k: v for k, v in embedded.items() if k != "lists_src"
    }


def test_clicking_a_count_loads_the_lists_offline(
    browser: object,  # noqa: F811 - the browser fixture imported above
    side_report: ReportResult,
) -> None:
    _, data = parse_page(side_report.html)
    pg = Page(browser, side_report.html)
    try:
        p = pg.page
        assert (
            p.evaluate(
                "Boolean(JSON.parse(document.getElementById('report-data').textContent).lists)"
            )
            is False
        )
        p.click("details[data-table='countries'] > summary")
        btn = p.locator("details[data-table='countries'] button.count").nth(1)
        cid = btn.get_attribute("data-count-id")
        assert cid
        btn.click()
        assert _dialog_ids(p) == decode_list(data, cid)[:500]
        _close(p)
        p.click(
            "button.count[data-count-id='headline:start_date_missing']"
        )  # a second list: already loaded
        assert _dialog_ids(p) == decode_list(data, "headline:start_date_missing")[:500]
        _close(p)
        assert pg.errors == [] and pg.remote == []
    finally:
        pg.close()


def test_page_without_its_lists_file_says_where_they_are(
    browser: object,  # noqa: F811 - the browser fixture imported above
    side_report: ReportResult,
    tmp_path: Path,
) -> None:
    alone = tmp_path / "report.html"
    shutil.copy(side_report.html, alone)
    pg = Page(browser, alone)
    try:
        p = pg.page
        p.click("button.count[data-count-id='headline:start_date_missing']")
        p.wait_for_selector("dialog#trial-list[open]")
        assert p.inner_text("#tl-title") == "Trial lists not found"
        assert LISTS_FILE in p.inner_text("#tl-sub")
        assert pg.remote == [] and not [e for e in pg.errors if "pageerror" in e]
    finally:
        pg.close()
