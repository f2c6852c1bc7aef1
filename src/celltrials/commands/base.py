"""The ``celltrials`` click group and what every command shares.

Command modules (``celltrials.commands.*``) import the group from here and
register themselves on it. The group imports a command's module when the
command is asked for (:data:`COMMAND_MODULES`), so ``celltrials stats`` does not
import what ``report`` or ``meta`` need (pandas, SciPy, Matplotlib: seconds of
start-up); ``celltrials --help`` lists every command and so imports them all.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

import celltrials
from celltrials import __version__
from celltrials.progress import Progress, ProgressEvent, logger

if TYPE_CHECKING:
    from celltrials.analysis.landscape import Filters
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


@dataclass(frozen=True)
class FilterOptions:
    """The report filter options as given on the command line
    (:func:`report_filter_options`); :meth:`filters` validates them."""

    country: tuple[str, ...]
    registry: tuple[str, ...]
    start_year: str | None
    status: tuple[str, ...]
    phase: tuple[str, ...]
    cell_type: tuple[str, ...]
    indication_group: tuple[str, ...]
    title: str | None
    all_trials: bool

    def filters(self) -> Filters:
        """The report's :class:`~celltrials.analysis.landscape.Filters`
        (raises :class:`~celltrials.errors.ConfigError` on a bad value)."""
        # (the analysis needs pandas: imported by the commands that filter trials only)
        from celltrials.analysis.landscape import make_filters  # noqa: PLC0415

        return make_filters(
            country=self.country,
            registry=self.registry,
            start_year=self.start_year,
            status=self.status,
            phase=self.phase,
            cell_type=self.cell_type,
            indication_group=self.indication_group,
            title=self.title,
            scope="all" if self.all_trials else "cell_therapy",
        )


#: each report filter option: its flag, click settings, the help of a command
#: that is all about the report's trials, and the short help used after a
#: condition (``report_filter_options(when="With --from-store")``)
_FILTER_OPTIONS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "--country",
        {"multiple": True, "metavar": "NAME"},
        "Trials in this country (repeatable; any of them).",
        "report filter (repeatable).",
    ),
    (
        "--registry",
        {"multiple": True, "metavar": "NAME"},
        "Primary record's registry, e.g. ctgov, chictr (repeatable).",
        "report filter (repeatable).",
    ),
    (
        "--start-year",
        {"default": None, "metavar": "FROM-TO"},
        "Start year or range, e.g. 2019-2024, 2020, 2019-.",
        "report filter.",
    ),
    (
        "--status",
        {"multiple": True, "metavar": "STATUS"},
        "Overall status, e.g. recruiting, terminated (repeatable).",
        "report filter (repeatable).",
    ),
    (
        "--phase",
        {"multiple": True, "metavar": "PHASE"},
        "Phase, e.g. 1, 2, 1/2, PHASE3, NOT_APPLICABLE (repeatable).",
        "report filter (repeatable).",
    ),
    (
        "--cell-type",
        {"multiple": True, "metavar": "TYPE"},
        "Taxonomy cell type (car_t, msc, …) or family (immune, stem_stromal, other); repeatable.",
        "report filter, e.g. msc (repeatable).",
    ),
    (
        "--indication-group",
        {"multiple": True, "metavar": "GROUP"},
        "oncology, degenerative, immune_mediated or other (repeatable).",
        "report filter (repeatable).",
    ),
    (
        "--title",
        {"default": None, "metavar": "TEXT"},
        "Title contains TEXT (case-insensitive).",
        "title contains TEXT.",
    ),
    (
        "--all-trials",
        {"is_flag": True},
        "Report on every trial of the store, not only those classified as cell therapy.",
        "every trial, not only those classified as cell therapy.",
    ),
]


def report_filter_options(
    when: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the report's filter options (``--country`` … ``--all-trials``) to a
    command, which receives them as one ``filter_options: FilterOptions``
    argument. With ``when`` each option's help starts with it (``"With
    --from-store: report filter (repeatable)."``)."""
    names = [f.name for f in fields(FilterOptions)]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            given = FilterOptions(**{n: kwargs.pop(n) for n in names})
            return f(*args, filter_options=given, **kwargs)

        # click lists a command's options in decorator order, top first
        for flag, settings, full, short in reversed(_FILTER_OPTIONS):
            command = click.option(flag, help=f"{when}: {short}" if when else full, **settings)(
                command
            )
        return command

    return decorate


#: each command's module in ``celltrials.commands`` (tests/test_cli.py checks that
#: the modules register exactly these)
COMMAND_MODULES = {
    "ingest": "core",
    "stats": "core",
    "show": "core",
    "dups": "core",
    "export": "core",
    "classify": "classify",
    "labels": "classify",
    "evaluate": "classify",
    "explain": "classify",
    "meta": "meta",
    "meta-template": "meta",
    "results": "meta",
    "run": "pipeline",
    "products": "products",
    "check": "quality",
    "report": "report",
    "serve": "serve",
    "changes": "serve",
    "fetch": "sync",
    "update": "sync",
    "sync-status": "sync",
}


class LazyGroup(click.Group):
    """A group whose commands are registered by their modules, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            command_module(COMMAND_MODULES[cmd_name])
        return super().get_command(ctx, cmd_name)


def command_module(name: str) -> ModuleType:
    """``celltrials.commands.<name>``, imported: its commands are then registered."""
    # (a static import per module, not importlib by name: tests/test_layers.py reads them)
    match name:
        case "classify":
            from celltrials.commands import classify  # noqa: PLC0415

            return classify
        case "core":
            from celltrials.commands import core  # noqa: PLC0415

            return core
        case "meta":
            from celltrials.commands import meta  # noqa: PLC0415

            return meta
        case "pipeline":
            from celltrials.commands import pipeline  # noqa: PLC0415

            return pipeline
        case "products":
            from celltrials.commands import products  # noqa: PLC0415

            return products
        case "quality":
            from celltrials.commands import quality  # noqa: PLC0415

            return quality
        case "report":
            from celltrials.commands import report  # noqa: PLC0415

            return report
        case "serve":
            from celltrials.commands import serve  # noqa: PLC0415

            return serve
        case "sync":
            from celltrials.commands import sync  # noqa: PLC0415

            return sync
    raise ValueError(f"no command module {name!r}")


def load_all_commands() -> None:
    """Import every command module (their commands are then in ``cli.commands``)."""
    for module in sorted(set(COMMAND_MODULES.values())):
        command_module(module)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
