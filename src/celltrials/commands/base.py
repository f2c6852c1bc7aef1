"""The ``celltrials`` click group and what every command shares.

Command modules (``celltrials.commands.*``) import the group from here and
register themselves on it; ``celltrials.cli`` imports them all and runs it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

import celltrials
from celltrials import __version__
from celltrials.progress import Progress, ProgressEvent, logger
from celltrials.store import Store


class Context:
    def __init__(self, db: str | None, quiet: bool, debug: bool) -> None:
        self.db = db
        self.quiet = quiet
        self.debug = debug

    def open_store(self, read_only: bool = False) -> Store:
        return celltrials.open(self.db, read_only=read_only)


pass_ctx = click.make_pass_decorator(Context)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="celltrials")
@click.option(
    "--db",
    envvar="CELLTRIALS_DB",
    default=None,
    help="DuckDB store (default ./celltrials.duckdb, env CELLTRIALS_DB).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notices.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors and debug log lines.")
@click.option(
    "--verbose", "-v", is_flag=True, help="Log what the library does (files, requests) on stderr."
)
@click.pass_context
def cli(ctx: click.Context, db: str | None, quiet: bool, debug: bool, verbose: bool) -> None:
    """celltrials: cell-therapy clinical-trial intelligence."""
    if debug or verbose:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
    ctx.obj = Context(db, quiet, debug)


#: the unit each stage's bar counts and what its events' ``n`` add up to
_UNITS = {
    "ingest": ("files", "records"),
    "sync": ("studies", "pages"),
    "classify": ("trials", ""),
    "report": ("steps", ""),
    "pipeline": ("", ""),
}
_NOTICES = {"skipped", "restart", "retry"}


@contextmanager
def progress_display(enabled: bool, console: Console | None = None) -> Iterator[Progress | None]:
    """Draw the library's :class:`ProgressEvent` values with rich on stderr.

    Yields the callback to hand to a library function, or ``None`` when
    ``enabled`` is false (``--quiet``, ``--json``). One bar per stage (per
    query for sync); notices (skipped files, retries, restarts) are printed
    above the bars with registry text escaped.
    """
    if not enabled:
        yield None
        return
    console = console or Console(stderr=True)
    bars = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}
    counts: dict[str, int] = {}

    def draw(ev: ProgressEvent) -> None:
        if ev.kind in _NOTICES:
            what = Path(ev.item).name if ev.stage == "ingest" else ev.item
            bars.console.print(
                f"[yellow]{escape(ev.kind)}[/yellow] {escape(what)}: {escape(ev.message)}",
                highlight=False,
            )
            return
        if ev.stage == "pipeline":  # the pipeline's stages are headings above the bars
            bars.console.print(f"[bold]{escape(ev.item)}[/bold]", highlight=False)
            return
        key = f"sync:{ev.item}" if ev.stage == "sync" and ev.kind != "study" else ev.stage
        unit, extra_unit = _UNITS.get(ev.stage, ("", ""))
        if key not in tasks:
            tasks[key] = bars.add_task(ev.stage, total=ev.total, extra="")
            counts[key] = 0
        if ev.stage == "sync":
            counts[key] = max(counts[key], ev.index)
        else:
            counts[key] += ev.n if ev.kind != "file_done" else 0
        label = ev.stage if ev.stage != "sync" or ev.kind == "study" else ev.item
        if ev.stage == "ingest" and ev.item:
            label = f"ingest {Path(ev.item).name}"
        elif ev.stage == "report" and ev.item:
            label = f"report: {ev.item}"
        extra = f"{counts[key]:,} {extra_unit}" if extra_unit else unit
        bars.update(
            tasks[key], completed=ev.done, total=ev.total, description=escape(label), extra=extra
        )

    with bars:
        yield draw
