"""The ``celltrials`` click group and what every command shares.

Command modules (``celltrials.commands.*``) import the group from here and
register themselves on it; ``celltrials.cli`` imports them all and runs it.
"""

from __future__ import annotations

import json
from typing import Any

import click

import celltrials
from celltrials import __version__
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
@click.option("--db", envvar="CELLTRIALS_DB", default=None, help="DuckDB store (default ./celltrials.duckdb, env CELLTRIALS_DB).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notices.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, db: str | None, quiet: bool, debug: bool) -> None:
    """celltrials: cell-therapy clinical-trial intelligence."""
    ctx.obj = Context(db, quiet, debug)
