"""report.html in real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright; ``scripts/ensure_chromium.sh`` installs it): every chart draws
data, nothing is fetched from the network, no console errors, and clicking a
bar, a heatmap cell or a table count lists exactly the trials behind it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright_api

from celltrials.report.build import ReportResult
from tests.chromium import ARGS, CHROMIUM
from tests.conftest_report import classified_store_path, decode_list, default_report, parse_page


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, full_store_path: Path) -> ReportResult:
    return default_report(
        tmp_path_factory, classified_store_path(tmp_path_factory, full_store_path)
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A page of report.html with its console errors and non-file requests."""

    def __init__(self, browser: Any, html: Path, width: int = 1400, height: int = 900) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.remote: list[str] = []
        self.page.on(
            "console",
            lambda m: self.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

        def route(r: Any) -> None:
            url = r.request.url
            if url.startswith(("file:", "data:", "blob:", "about:")):
                r.continue_()
            else:
                self.remote.append(url)
                r.abort()

        self.page.route("**/*", route)
        self.page.goto(html.as_uri())
        self.page.wait_for_function(
            "document.querySelectorAll('div.chart').length > 0 && "
            "document.querySelectorAll('div.chart[data-rendered]').length === document.querySelectorAll('div.chart').length",
            timeout=120_000,
        )

    def close(self) -> None:
        self.page.close()


@pytest.fixture(scope="module")
def page(browser: Any, report: ReportResult) -> Iterator[Page]:
    p = Page(browser, report.html)
    yield p
    p.close()


def test_every_chart_draws_its_data(page: Page, report: ReportResult) -> None:
    charts = page.page.evaluate("""() => Array.from(document.querySelectorAll('div.chart')).map(div => ({
        id: div.dataset.chart,
        svg: div.querySelectorAll('.main-svg').length,
        bars: Array.from(div.querySelectorAll('g.point path')).filter(p => {
            const b = p.getBBox(); return b.width > 0 && b.height > 0; }).length,
        heat: div.querySelectorAll('.hm image').length,
        width: div.getBoundingClientRect().width,
        height: div.getBoundingClientRect().height,
    }))""")
    _, data = parse_page(report.html)
    assert {c["id"] for c in charts} == set(data["charts"])
    for c in charts:
        assert c["svg"] >= 1, c
        assert c["bars"] > 0 or c["heat"] > 0, c
        assert c["width"] > 300 and c["height"] > 100, c
    # every bar of a bar chart is drawn: one path per non-zero value
    for c in charts:
        fig = data["charts"][c["id"]]
        if fig["data"][0]["type"] == "bar":
            nonzero = sum(
                1
                for tr in fig["data"]
                for v in (tr["x"] if tr.get("orientation") == "h" else tr["y"])
                if v
            )
            assert c["bars"] == nonzero, c["id"]


def test_offline_and_no_console_errors(page: Page) -> None:
    assert page.remote == []
    assert page.errors == []
    assert page.page.evaluate("typeof Plotly") == "object"


def test_rendered_numbers_equal_the_page_data(page: Page) -> None:
    """What a reader sees: every count element, as rendered, shows the number
    the page's data (cross-checked in test_report.py) holds for it."""
    bad = page.page.evaluate("""() => {
        const data = JSON.parse(document.getElementById('report-data').textContent);
        const out = [];
        for (const el of document.querySelectorAll('[data-count-id]')) {
            const n = Number(el.textContent.trim().replace(/,/g, ''));
            if (n !== data.counts[el.dataset.countId]) out.push([el.dataset.countId, el.textContent]);
        }
        const cards = Array.from(document.querySelectorAll('.card .big')).map(e => e.innerText.trim());
        return {bad: out, n: document.querySelectorAll('[data-count-id]').length, cards: cards};
    }""")
    assert bad["bad"] == [] and bad["n"] > 300
    assert all(c and c != "—" for c in bad["cards"])  # the headline numbers are visible


def _click_center(page: Any, locator: Any) -> None:
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def _dialog_ids(page: Any) -> list[str]:
    page.wait_for_selector("dialog#trial-list[open]")
    return page.eval_on_selector_all(
        "#tl-items li > a:first-child", "els => els.map(e => e.textContent)"
    )


def _close(page: Any) -> None:
    page.click("#tl-close")
    page.wait_for_selector("dialog#trial-list:not([open])", state="attached")


def test_clicking_a_bar_lists_its_trials(page: Page, report: ReportResult) -> None:
    _, data = parse_page(report.html)
    p = page.page
    fig = data["charts"]["immune_by_cell_type"]
    cid = fig["data"][0]["customdata"][0]  # the biggest bar: CAR-T
    want = decode_list(data, cid)
    _click_center(p, p.locator("#chart-immune_by_cell_type g.point path").first)
    shown = _dialog_ids(p)
    assert p.get_attribute("dialog#trial-list", "data-count-id") == cid
    assert f"{len(want):,} trials" in p.inner_text("#tl-sub")
    assert shown == want[:500] and len(want) > 500
    p.click("#tl-more")
    assert p.eval_on_selector_all("#tl-items li", "els => els.length") == len(want)
    # each entry links to its registry record
    first = data["trials"][[t[0] for t in data["trials"]].index(want[0])]
    assert p.get_attribute("#tl-items li > a", "href") == first[2]
    p.fill("#tl-filter", want[1])
    assert _dialog_ids(p) == [want[1]]
    _close(p)


def test_clicking_a_heatmap_cell_lists_its_trials(page: Page, report: ReportResult) -> None:
    _, data = parse_page(report.html)
    p = page.page
    tr = data["charts"]["msc_source_by_area"]["data"][0]
    # the largest cell
    best = max(
        ((z, i, j) for i, row in enumerate(tr["z"]) for j, z in enumerate(row) if z),
        key=lambda x: x[0],
    )
    _, i, j = best
    cid = tr["customdata"][i][j]
    div = p.locator("#chart-msc_source_by_area")
    div.scroll_into_view_if_needed()
    # the centre of cell (i, j) in page pixels, from plotly's own axes
    xy = p.evaluate(
        """([i, j]) => {
        const gd = document.getElementById('chart-msc_source_by_area');
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        return [r.left + xa._offset + xa.l2p(j), r.top + ya._offset + ya.l2p(i)];
    }""",
        [i, j],
    )
    p.mouse.click(xy[0], xy[1])
    shown = _dialog_ids(p)
    assert p.get_attribute("dialog#trial-list", "data-count-id") == cid
    assert shown == decode_list(data, cid)[:500]
    _close(p)


def test_clicking_a_table_count_lists_its_trials(page: Page, report: ReportResult) -> None:
    _, data = parse_page(report.html)
    p = page.page
    p.click("details[data-table='countries'] > summary")
    btn = p.locator("details[data-table='countries'] button.count").nth(2)
    cid = btn.get_attribute("data-count-id")
    btn.click()
    want = decode_list(data, cid)
    assert _dialog_ids(p) == want[:500]
    assert p.inner_text("#tl-title").startswith("Top 20 countries")
    _close(p)
    # a headline number
    p.click("button.count[data-count-id='headline:start_date_missing']")
    assert _dialog_ids(p) == decode_list(data, "headline:start_date_missing")[:500]
    _close(p)


@pytest.mark.parametrize("width", [1400, 1024, 800, 390])
def test_layout_fits_the_viewport(
    browser: Any, report: ReportResult, width: int, tmp_path: Path
) -> None:
    pg = Page(browser, report.html, width=width, height=900)
    try:
        overflow = pg.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"page is {overflow}px wider than a {width}px viewport"
        # charts fit in their panels
        worst = pg.page.evaluate("""() => Math.max(...Array.from(document.querySelectorAll('div.chart')).map(d =>
            d.querySelector('.main-svg').getBoundingClientRect().right - d.closest('.panel').getBoundingClientRect().right))""")
        assert worst <= 1
        shot = tmp_path / f"report_{width}.png"
        pg.page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert pg.errors == [] and pg.remote == []
    finally:
        pg.close()


def test_playwright_drives_debians_chromium(browser: Any) -> None:
    # scripts/ensure_chromium.sh installs Debian's package; Playwright must not
    # fall back to a browser build of its own (none can be downloaded here).
    printed = subprocess.run(
        [str(CHROMIUM), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert browser.version and browser.version in printed
