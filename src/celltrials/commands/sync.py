"""Live registry commands: ``fetch``, ``update``, ``sync-status``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from celltrials import sync
from celltrials.commands.base import Context, cli, echo_json, pass_ctx, progress_display
from celltrials.errors import ConfigError
from celltrials.progress import Progress
from celltrials.store import Store
from celltrials.sync import DEFAULT_BACKOFF, DEFAULT_MAX_RETRIES, DEFAULT_RATE, DEFAULT_TIMEOUT

_STATUSES = (
    "ACTIVE_NOT_RECRUITING",
    "COMPLETED",
    "ENROLLING_BY_INVITATION",
    "NOT_YET_RECRUITING",
    "RECRUITING",
    "SUSPENDED",
    "TERMINATED",
    "WITHDRAWN",
    "AVAILABLE",
    "NO_LONGER_AVAILABLE",
    "TEMPORARILY_NOT_AVAILABLE",
    "APPROVED_FOR_MARKETING",
    "WITHHELD",
    "UNKNOWN",
)


def _client_options(f: Callable[..., Any]) -> Callable[..., Any]:

    opts = [
        click.option(
            "--rate",
            default=DEFAULT_RATE,
            show_default=True,
            type=float,
            metavar="PER_MIN",
            help="Most requests per minute (0 = no limit, for a local mirror). "
            "ClinicalTrials.gov is commonly quoted at ~50/min per IP.",
        ),
        click.option(
            "--timeout",
            default=DEFAULT_TIMEOUT,
            show_default=True,
            type=float,
            metavar="SECONDS",
            help="Connect/read timeout per request.",
        ),
        click.option(
            "--max-retries",
            default=DEFAULT_MAX_RETRIES,
            show_default=True,
            type=click.IntRange(0),
            help="Retries on 429, 5xx, timeouts and broken connections before giving up.",
        ),
        click.option(
            "--backoff",
            default=DEFAULT_BACKOFF,
            show_default=True,
            type=float,
            metavar="SECONDS",
            help="Base of the exponential backoff (full jitter); Retry-After wins.",
        ),
        click.option(
            "--page-size",
            default=1000,
            show_default=True,
            type=click.IntRange(1, 1000),
            help="Studies per page (the API's maximum is 1000).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the library's result as JSON."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@contextmanager
def _reporter(quiet: bool, as_json: bool) -> Iterator[tuple[Progress | None, Progress | None]]:
    """The progress callback for pages and studies and the one for retries (None when quiet)."""
    with progress_display(not quiet and not as_json) as draw:
        yield draw, draw


def _run(ctx: Context, as_json: bool, work: Callable[[Store, Any], Any]) -> Any:
    store = ctx.open_store()
    try:
        with _reporter(ctx.quiet, as_json) as (on_event, on_retry):
            try:
                return work(store, (on_event, on_retry))
            except KeyboardInterrupt:
                click.echo(
                    "Interrupted; every committed page is kept. Rerun the same command to resume.",
                    err=True,
                )
                sys.exit(130)
    finally:
        store.close()


def _summary(result: Any, quiet: bool) -> None:
    if quiet:
        return
    for r in result.runs:
        resumed = f", resumed at page {r.resumed_from_page}" if r.resumed else ""
        restarted = " (saved token refused; restarted)" if r.restarted else ""
        click.echo(
            f"{r.name}: {r.status}, {r.pages_done} pages, {r.studies_seen} studies "
            f"({r.n_new} new versions) this run{resumed}{restarted}"
        )
    for s in result.studies:
        click.echo(f"{s['nct_id']}: {'new version stored' if s['new'] else 'unchanged'}")


@cli.command(context_settings={"max_content_width": 100})
@click.option("--cond", default=None, help="Conditions (query.cond, Essie syntax).")
@click.option("--intr", default=None, help="Interventions (query.intr).")
@click.option("--term", default=None, help="Other terms (query.term).")
@click.option(
    "--advanced", default=None, help="Essie filter (filter.advanced), e.g. AREA[Phase]PHASE3."
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help=f"Overall status filter (filter.overallStatus; repeat or comma-join): {', '.join(_STATUSES)}.",
)
@click.option(
    "--preset",
    default=None,
    help="A maintained query from taxonomy/presets.yaml, e.g. cell-therapy.",
)
@click.option(
    "--name", default="", help="A name for the saved query (default: made from its parameters)."
)
@click.option(
    "--id",
    "ids",
    multiple=True,
    metavar="NCT",
    help="Refresh these studies only (/studies/{nctId}; repeat or comma-join).",
)
@click.option(
    "--base-url",
    envvar="CELLTRIALS_CTGOV_URL",
    default=None,
    help="API base URL (default https://clinicaltrials.gov/api/v2, env CELLTRIALS_CTGOV_URL).",
)
@_client_options
@pass_ctx
def fetch(
    ctx: Context,
    cond: str | None,
    intr: str | None,
    term: str | None,
    advanced: str | None,
    statuses: tuple[str, ...],
    preset: str | None,
    name: str,
    ids: tuple[str, ...],
    base_url: str | None,
    rate: float,
    timeout: float,
    max_retries: int,
    backoff: float,
    page_size: int,
    as_json: bool,
) -> None:
    """Download studies from ClinicalTrials.gov into the store.

    Pages of up to 1000 studies are parsed like files and committed one page
    per transaction together with the checkpoint; rerunning the same command
    after an interruption (Ctrl-C, network loss, kill) resumes from the last
    committed page. The query is saved for `celltrials update`.
    """

    status_list = [s for v in statuses for s in v.split(",") if s.strip()]
    bad = [s for s in status_list if s.strip().upper() not in _STATUSES]
    if bad:
        raise ConfigError(
            f"unknown --status {', '.join(bad)}", hint=f"One of: {', '.join(_STATUSES)}."
        )
    url = base_url or sync.DEFAULT_BASE_URL

    def work(store: Store, cbs: Any) -> Any:
        on_event, on_retry = cbs
        client = sync.CtgovClient(
            url,
            rate=rate,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            on_retry=on_retry,
        )
        with client:
            if ids:
                if cond or intr or term or advanced or status_list or preset:
                    raise ConfigError("--id cannot be combined with query options")
                return sync.fetch_ids(store, ids, client=client, progress=on_event)
            query: Any
            if preset:
                if cond or intr or term:
                    raise ConfigError(
                        "--preset cannot be combined with --cond/--intr/--term",
                        hint="Add filters with --advanced or --status.",
                    )
                p = sync.get_preset(preset)
                query = [
                    q.with_filters(advanced=advanced, status=status_list) for q in p.as_queries()
                ]
            else:
                query = sync.Query.build(
                    cond=cond,
                    intr=intr,
                    term=term,
                    advanced=advanced,
                    status=status_list,
                    name=name,
                )
            return sync.fetch(store, query, client=client, page_size=page_size, progress=on_event)

    result = _run(ctx, as_json, work)
    if as_json:
        echo_json(result.to_dict())
    else:
        _summary(result, ctx.quiet)


@cli.command(context_settings={"max_content_width": 100})
@_client_options
@pass_ctx
def update(
    ctx: Context,
    rate: float,
    timeout: float,
    max_retries: int,
    backoff: float,
    page_size: int,
    as_json: bool,
) -> None:
    """Rerun every saved query for studies updated since its last complete sync.

    Adds AREA[LastUpdatePostDate]RANGE[<start date of the last complete
    sync>,MAX] to filter.advanced; new versions of studies are stored next to
    the old ones (history). Each query uses the base URL it was saved with.
    """

    def work(store: Store, cbs: Any) -> Any:
        on_event, on_retry = cbs
        client = sync.CtgovClient(
            sync.DEFAULT_BASE_URL,
            rate=rate,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            on_retry=on_retry,
        )
        with client:
            return sync.update(store, client=client, page_size=page_size, progress=on_event)

    result = _run(ctx, as_json, work)
    if as_json:
        echo_json(result.to_dict())
    elif not result.runs and not ctx.quiet:
        click.echo("No saved queries; run `celltrials fetch` first.")
    else:
        _summary(result, ctx.quiet)


@cli.command("sync-status", context_settings={"max_content_width": 100})
@click.option("--json", "as_json", is_flag=True, help="Print the library's result as JSON.")
@pass_ctx
def sync_status(ctx: Context, as_json: bool) -> None:
    """Saved queries: last complete sync, pages done, studies seen."""

    store = ctx.open_store()
    try:
        rows = sync.sync_status(store)
    finally:
        store.close()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No saved queries; run `celltrials fetch` first.")
        return

    t = Table("query", "last complete sync", "last run", "pages", "studies seen", "total")
    for r in rows:
        run = r["last_run"] or {}
        where = "" if r["base_url"] == sync.DEFAULT_BASE_URL else f"\n[dim]{r['base_url']}[/dim]"
        last = (r["last_complete_sync"] or "never")[:16].replace("T", " ")
        t.add_row(
            f"{r['name']} [dim]({r['query_id']})[/dim]{where}",
            last,
            f"{run.get('kind', '')} {run.get('status', '')}".strip(),
            str(run.get("pages_done", "")),
            str(run.get("studies_seen", "")),
            str(run.get("total_count") or ""),
        )
    Console().print(t)
