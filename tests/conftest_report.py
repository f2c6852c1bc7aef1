"""Shared set-up of the report tests (imported by test_report*.py; not a conftest).

The classified store and the default report are built once per test session
(shared by the pytest-xdist workers; the cache below keeps each worker's
handle) from the session's ingest of ../shared/data.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import celltrials
from celltrials.analysis.landscape import Filters
from celltrials.labelling import classify_store
from celltrials.products import link_products
from celltrials.report.build import ReportResult, build_report, read_lists_file
from tests.conftest import built_once

_CACHE: dict[str, Any] = {}


def _classify_and_link(source: Path) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        shutil.copy(source, path)
        store = celltrials.open(path)
        try:
            summary = classify_store(store, jobs=2)  # two workers: see test_classify_parallel
            assert summary["classified"] == summary["trials"] > 8000
            link_products(store)
        finally:
            store.close()

    return build


def classified_store_path(tmp_path_factory: pytest.TempPathFactory, full_store_path: Path) -> Path:
    """The full real-data store, classified by celltrials.classify (on two
    worker processes) and linked to the product catalog, as `celltrials run`
    leaves it (read it read-only)."""
    if "store" not in _CACHE:
        _CACHE["store"] = built_once(
            tmp_path_factory, "classified.duckdb", _classify_and_link(full_store_path)
        )
    return Path(_CACHE["store"])


def default_report(tmp_path_factory: pytest.TempPathFactory, store_path: Path) -> ReportResult:
    """The report of all cell-therapy trials of the classified store, built
    once per test run: the first worker builds it, the others read its folder
    (read-only: no test writes into it) and its pickled result."""
    if "report" not in _CACHE:
        base = tmp_path_factory.getbasetemp()
        shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
        out, done = shared / "default-report", shared / "default-report.pickle"
        with (shared / "default-report.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker builds, the others wait
            if not done.is_file():
                shutil.rmtree(out, ignore_errors=True)
                with celltrials.open(store_path, read_only=True) as store:
                    result = build_report(store, out, Filters())
                partial = done.with_suffix(".partial")
                partial.write_bytes(pickle.dumps(result))
                partial.rename(done)
        _CACHE["report"] = pickle.loads(done.read_bytes())
    report: ReportResult = _CACHE["report"]
    return report


class PageParser(HTMLParser):
    """Collects what the tests read from report.html: the text of every
    element carrying ``data-count-id`` / ``data-date-id``, the embedded JSON
    and the chart containers."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.counts: list[tuple[str, str]] = []
        self.dates: list[tuple[str, str]] = []
        self.charts: list[str] = []
        self.scripts: dict[str, str] = {}
        self.external: list[str] = []
        self._open: list[tuple[str, str, str, list[str]]] = []  # (tag, kind, id, text parts)
        self._script_id: str | None = None
        self._script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("script", "link", "img", "iframe") and (
            a.get("src") or (tag == "link" and a.get("href"))
        ):
            self.external.append(a.get("src") or a.get("href", ""))
        if tag == "script":
            self._in_script = True
            self._script_id = a.get("id")
            self._script_text = []
            return
        if "data-count-id" in a:
            self._open.append((tag, "count", a["data-count-id"], []))
        elif "data-date-id" in a:
            self._open.append((tag, "date", a["data-date-id"], []))
        if tag == "div" and "data-chart" in a:
            self.charts.append(a["data-chart"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            if self._script_id:
                self.scripts[self._script_id] = "".join(self._script_text)
            self._in_script = False
            self._script_id = None
            return
        if self._open and self._open[-1][0] == tag:
            _, kind, cid, parts = self._open.pop()
            text = "".join(parts).strip()
            (self.counts if kind == "count" else self.dates).append((cid, text))
            for other in self._open:
                other[3].append(text)

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self._script_text.append(data)
        elif self._open:
            self._open[-1][3].append(data)


def parse_page(html: Path) -> tuple[PageParser, dict[str, Any]]:
    p = PageParser()
    p.feed(html.read_text(encoding="utf-8"))
    p.close()
    data = json.loads(p.scripts["report-data"])
    if "lists_src" in data:  # a large report: trial table and lists beside the page
        data.update(read_lists_file(html.parent / data["lists_src"]))
    return p, data


def number(text: str) -> int:
    assert re.fullmatch(r"-?[\d,]+", text), f"not a number: {text!r}"
    return int(text.replace(",", ""))


def decode_list(page_data: dict[str, Any], cid: str) -> list[str]:
    """The trial ids a count id opens in the page (delta-encoded positions)."""
    pos, out = 0, []
    for d in page_data["lists"][cid]:
        pos += d
        out.append(page_data["trials"][pos][0])
    return out
