"""One progress protocol: the library emits ProgressEvent values, the CLI draws them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

import celltrials
from celltrials.commands.base import progress_display
from celltrials.ingest import ingest_paths
from celltrials.progress import ProgressEvent

pytestmark = pytest.mark.unit

WEBSITE_CSV = Path(__file__).parent / "data" / "ctgov_website_export.csv"


def test_ingest_reports_files_and_records(tmp_path: Path) -> None:
    notes = tmp_path / "in"
    notes.mkdir()
    (notes / "README.md").write_text("not data")
    (notes / "export.csv").write_bytes(WEBSITE_CSV.read_bytes())
    events: list[ProgressEvent] = []
    with celltrials.open(tmp_path / "t.duckdb") as store:
        report = ingest_paths(store, [notes], progress=events.append)
    assert {e.stage for e in events} == {"ingest"}
    kinds = [e.kind for e in events]
    assert kinds[0] == "skipped" and kinds[1] == "file_start" and kinds[-1] == "file_done"
    done = events[-1]
    assert (done.done, done.total, done.index) == (1, 1, 1)
    assert done.n == report.n_records == sum(e.n for e in events if e.kind == "records")


def test_display_escapes_registry_text_and_is_silent_when_disabled() -> None:
    with progress_display(False) as cb:
        assert cb is None
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200, color_system=None)
    with progress_display(True, console) as cb:
        assert cb is not None
        cb(
            ProgressEvent(
                "ingest", "skipped", "/x/[bold]notes.csv", message="not a [industry] export"
            )
        )
        cb(
            ProgressEvent(
                "sync",
                "retry",
                "https://example.test/studies",
                done=1,
                total=6,
                message="HTTP 503; retrying in 1.0 s",
            )
        )
        cb(ProgressEvent("classify", "trials", done=5, total=10))
    out = buf.getvalue()
    assert "[bold]notes.csv" in out and "not a [industry] export" in out
    assert "HTTP 503; retrying in 1.0 s" in out
