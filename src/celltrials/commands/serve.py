"""``celltrials serve`` (the local dashboard) and ``celltrials changes``."""

from __future__ import annotations

import ipaddress
import os

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from celltrials.changes import changes as find_changes
from celltrials.commands.base import Context, cli, echo_json, pass_ctx
from celltrials.errors import ConfigError
from celltrials.serve.app import ServeConfig, create_app, new_token
from celltrials.store import DEFAULT_DB

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command(context_settings={"max_content_width": 100})
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback needs --allow-remote and a token.",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on.",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --host (anyone who can reach it and has the token can read the store).",
)
@click.option(
    "--token",
    envvar="CELLTRIALS_SERVE_TOKEN",
    default=None,
    help="Access token (env CELLTRIALS_SERVE_TOKEN); generated and printed if --allow-remote without one.",
)
@click.option(
    "--snapshot-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder for the dashboard's private copy of the store (default: a temporary folder).",
)
@click.option(
    "--check-every",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds between checks whether the store changed.",
)
@pass_ctx
def serve(
    ctx: Context,
    host: str,
    port: int,
    allow_remote: bool,
    token: str | None,
    snapshot_dir: str | None,
    check_every: float,
) -> None:
    """Serve a read-only web dashboard of the store on http://HOST:PORT/.

    Pages: / (overview), /trials (faceted search, export), /trials/ID,
    /products, /products/NAME, /changes?since=DATE; the same paths under
    /api/ return JSON. The dashboard reads a private snapshot copy of the
    store and refreshes it when the store changes, so `celltrials ingest`,
    `classify` and `update` can run meanwhile.
    """
    import uvicorn  # noqa: PLC0415 - heavy optional dependency, imported on first use

    db = ctx.db or os.environ.get("CELLTRIALS_DB") or DEFAULT_DB
    remote = not _is_loopback(host)
    if remote and not allow_remote:
        raise ConfigError(
            f"--host {host} would serve the store beyond this machine",
            hint="Add --allow-remote (a token is then required), or use --host 127.0.0.1.",
        )
    if remote and not token:
        token = new_token()
    allowed: tuple[str, ...] = ("*",) if remote else (*LOOPBACK, host)
    app = create_app(
        ServeConfig(
            db,
            token=token,
            allowed_hosts=allowed,
            snapshot_dir=snapshot_dir,
            check_every=check_every,
        )
    )
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if not ctx.quiet:
        click.echo(f"celltrials dashboard of {db} (read-only snapshot) on {url}")
        if remote:
            click.echo(
                f"Serving beyond loopback: open {url}?token={token} (the token is required; "
                "anyone with it can read the store). Traffic is plain HTTP."
            )
        click.echo("Press Ctrl-C to stop.")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning" if ctx.quiet else "info",
        server_header=False,
        proxy_headers=False,
    )


@cli.command(context_settings={"max_content_width": 100})
@click.option("--since", required=True, metavar="DATE", help="YYYY-MM-DD (or YYYY-MM, YYYY).")
@click.option("--until", default=None, metavar="DATE", help="Up to this date (inclusive).")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(0),
    help="Rows to print (0 = all); counts are always complete.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print everything as JSON (what the library returns)."
)
@pass_ctx
def changes(ctx: Context, since: str, until: str | None, limit: int, as_json: bool) -> None:
    """What changed since DATE, from the stored record versions: new trials,
    status and phase changes, results posted, enrollment changes."""

    store = ctx.open_store(read_only=True)
    try:
        result = find_changes(store, since, until)
    finally:
        store.close()
    if as_json:
        echo_json(result)
        return
    console = Console(highlight=False)
    counts = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in result["counts"].items())
    console.print(
        f"Changes since {result['since']}"
        + (f" until {result['until']}" if result["until"] else "")
        + f": {counts}"
    )
    rows = result["changes"] if limit == 0 else result["changes"][:limit]
    if rows:
        table = Table()
        for col in ("date", "change", "trial", "before", "after", "title"):
            table.add_column(col)
        for c in rows:
            table.add_row(
                *(
                    escape(str(v)) if v is not None else ""
                    for v in (
                        c["date"],
                        c["kind"],
                        c["trial_id"],
                        c["old"],
                        c["new"],
                        (c["title"] or "")[:60],
                    )
                )
            )
        console.print(table)
    if len(rows) < result["total"]:
        console.print(f"{len(rows):,} of {result['total']:,} shown; --limit 0 or --json for all.")
