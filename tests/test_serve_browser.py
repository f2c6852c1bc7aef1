"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright; ``scripts/ensure_chromium.sh`` installs it) against a real
uvicorn server on the classified real-data store: pages render with no
console errors and nothing fetched from elsewhere, filters round-trip through
the URL, clicking a count or a bar lists the same trials, the evidence
highlight is visible, the keyboard works, and nothing overflows at 390 px."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from celltrials.serve.app import ServeConfig, create_app
from tests.chromium import ARGS, CHROMIUM
from tests.conftest_report import classified_store_path

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed"
)
uvicorn = pytest.importorskip("uvicorn")
if not CHROMIUM.exists():  # pragma: no cover - CI runs scripts/ensure_chromium.sh first
    pytest.skip(
        "Debian chromium is not installed at /usr/bin/chromium; run scripts/ensure_chromium.sh",
        allow_module_level=True,
    )

PAGES = [
    "/",
    "/trials",
    "/trials?cell_type=msc&country=China",
    "/trials/NCT04315987",
    "/products",
    "/products/Kymriah",
    "/changes?since=2020-01-01",
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, full_store_path: Path) -> Iterator[str]:
    path = tmp_path_factory.mktemp("serve-browser") / "store.duckdb"
    shutil.copy(classified_store_path(tmp_path_factory, full_store_path), path)  # products linked
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(ServeConfig(str(path), allowed_hosts=("127.0.0.1", "localhost")))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Tab:
    """A page with its console errors and any request outside the dashboard."""

    def __init__(self, browser: Any, base: str, width: int = 1280, height: int = 900) -> None:
        self.base = base
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on(
            "console",
            lambda m: self.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

        def route(r: Any) -> None:
            if r.request.url.startswith((base, "data:", "blob:", "about:")):
                r.continue_()
            else:
                self.foreign.append(r.request.url)
                r.abort()

        self.page.route("**/*", route)

    def open(self, path: str) -> Any:
        self.page.goto(self.base + path)
        if urlsplit(path).path == "/":
            self.page.wait_for_function(
                "document.querySelectorAll('.plot').length > 0 && "
                "document.querySelectorAll('.plot[data-drawn]').length === document.querySelectorAll('.plot').length",
                timeout=60_000,
            )
        return self.page

    def count(self) -> int:
        return int(self.page.locator("[data-count=list]").inner_text().replace(",", ""))

    def close(self) -> None:
        self.page.close()


@pytest.fixture()
def tab(browser: Any, base_url: str) -> Iterator[Tab]:
    t = Tab(browser, base_url)
    yield t
    t.close()


def api_count(base: str, query: str) -> int:
    return int(httpx.get(f"{base}/api/trials?{query}", timeout=60).json()["count"])


def test_pages_render_without_console_errors(tab: Tab) -> None:
    for path in PAGES:
        page = tab.open(path)
        assert page.locator("main h1").count() == 1, path
        assert "Traceback" not in page.content()
    assert tab.errors == [] and tab.foreign == []


def test_every_overview_chart_draws_its_bars(tab: Tab) -> None:
    page = tab.open("/?country=China")
    bars = page.evaluate("""() => Array.from(document.querySelectorAll('.plot')).map(el => ({
        id: el.id, points: (el.data || []).reduce((n, t) => n + (t.x || []).length, 0),
        drawn: el.querySelectorAll('.bars path').length }))""")
    assert len(bars) == 8
    for b in bars:
        assert b["points"] > 0 and b["drawn"] >= 1, b
    assert tab.errors == []


def test_filters_round_trip_through_the_url(tab: Tab) -> None:
    page = tab.open("/trials")
    total = tab.count()
    with page.expect_navigation():
        page.locator("fieldset[data-facet=cell_type] input[value=car_t]").check()
    assert dict(parse_qsl(urlsplit(page.url).query)) == {"cell_type": "car_t"}
    n_car = tab.count()
    assert n_car == api_count(tab.base, "cell_type=car_t") < total
    with page.expect_navigation():
        page.locator("fieldset[data-facet=country] input[value=China]").check()
    q = parse_qsl(urlsplit(page.url).query)
    assert sorted(q) == [("cell_type", "car_t"), ("country", "China")]
    n_both = tab.count()
    assert n_both == api_count(tab.base, "cell_type=car_t&country=China") < n_car
    page.reload()  # the URL alone restores the view
    assert page.locator("fieldset[data-facet=cell_type] input[value=car_t]").is_checked()
    assert page.locator("fieldset[data-facet=country] input[value=China]").is_checked()
    assert tab.count() == n_both
    with page.expect_navigation():
        page.locator("select[name=sort]").select_option("-start_date")
    assert ("sort", "-start_date") in parse_qsl(urlsplit(page.url).query)
    dates = [d for d in page.locator(".trial .meta").all_inner_texts() if "start " in d]
    starts = [d.split("start ")[1][:10] for d in dates]
    assert starts == sorted(starts, reverse=True) and len(starts) > 10
    assert tab.errors == []


def test_clicking_a_count_reaches_the_same_trials(tab: Tab) -> None:
    page = tab.open("/?country=China")
    link = page.locator("a[data-count-link='immune_by_cell_type:car_t']")
    n = int(link.inner_text().replace(",", ""))
    with page.expect_navigation():
        link.click()
    assert urlsplit(page.url).path == "/trials"
    assert sorted(parse_qsl(urlsplit(page.url).query)) == [
        ("cell_type", "car_t"),
        ("country", "China"),
    ]
    assert tab.count() == n
    assert tab.errors == []


def test_clicking_a_bar_reaches_the_same_trials(tab: Tab) -> None:
    page = tab.open("/")
    # the longest bar of the MSC-source chart (a real mouse click on the drawn bar)
    target = page.evaluate("""() => { const el = document.getElementById('plot-msc_by_source');
        const t = el.data[0]; let i = 0; t.x.forEach((v, k) => { if (v > t.x[i]) i = k; });
        return {i: i, n: t.x[i], url: t.customdata[i]}; }""")
    bar = page.locator("#plot-msc_by_source .bars path").nth(target["i"])
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)  # plotly's drag layer takes the pointer; it maps the position to the bar
    with page.expect_navigation():
        page.mouse.click(x, y)
    assert page.url == tab.base + target["url"]
    assert tab.count() == target["n"]
    assert tab.errors == []


def test_evidence_highlight_is_visible(tab: Tab) -> None:
    page = tab.open("/trials/NCT04315987")
    marks = page.locator("mark.evidence-hit")
    assert marks.count() > 0
    first = marks.first
    first.scroll_into_view_if_needed()
    assert first.is_visible()
    box = first.bounding_box()
    assert box and box["width"] > 5 and box["height"] > 5
    bg = first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert bg not in ("rgba(0, 0, 0, 0)", "transparent", "rgb(255, 255, 255)")
    assert first.inner_text().strip() != ""
    assert tab.errors == []


def test_keyboard_navigation(tab: Tab) -> None:
    page = tab.open("/trials")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.locator("body").click(position={"x": 5, "y": 400})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("wharton")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert ("q", "wharton") in parse_qsl(urlsplit(page.url).query)
    assert tab.count() == api_count(tab.base, "q=wharton")
    # Tab reaches the first trial link; Enter opens it
    first = page.locator(".trial a.title").first
    href = first.get_attribute("href")
    for _ in range(400):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('title')"):
            break
    assert page.evaluate("document.activeElement.getAttribute('href')") == href
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert urlsplit(page.url).path == href
    # facet checkboxes work from the keyboard too
    page = tab.open("/trials")
    box = page.locator("fieldset[data-facet=phase] input").first
    box.focus()
    with page.expect_navigation():
        page.keyboard.press("Space")
    assert "phase=" in page.url
    assert tab.errors == []


def test_layout_holds_at_390px(browser: Any, base_url: str, tmp_path: Path) -> None:
    t = Tab(browser, base_url, width=390, height=844)
    try:
        for i, path in enumerate(PAGES):
            page = t.open(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
            page.screenshot(path=str(tmp_path / f"narrow-{i}.png"), full_page=True)
        page = t.open("/trials?cell_type=car_t")
        assert page.locator(".facet-box").get_attribute("open") is None  # folded on a phone
        assert page.locator(".trial").first.is_visible()
        assert t.errors == [] and t.foreign == []
    finally:
        t.close()
