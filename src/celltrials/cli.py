"""The ``celltrials`` command line: a thin click layer over the library.

Each command parses its arguments, calls one library function and renders
the result; ``--json`` prints exactly what the library returned.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from celltrials import __version__
from celltrials.errors import CelltrialsError


class Context:
    def __init__(self, db: str | None, quiet: bool, debug: bool) -> None:
        self.db = db
        self.quiet = quiet
        self.debug = debug

    def open_store(self, read_only: bool = False) -> Any:
        import celltrials

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


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("CELLTRIALS_DEBUG"))
    try:
        cli.main(args=argv, prog_name="celltrials", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CelltrialsError as exc:
        if debug:
            raise
        _fail(exc)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("\nInterrupted. Files are ingested one transaction each: the store keeps every file "
                   "finished before Ctrl-C and nothing of the one in progress; rerun to continue.", err=True)
        sys.exit(130)
    except Exception as exc:  # the last line of defence: no traceback without --debug
        if debug:
            raise
        _fail(_as_user_error(exc))
    sys.exit(0)


def _fail(exc: CelltrialsError) -> None:
    click.secho(f"Error: {exc.message}", fg="red", err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)
    sys.exit(1)


def _as_user_error(exc: BaseException) -> CelltrialsError:
    """One error path for faults that escaped the library's own checks:
    the store (DuckDB), the file system, memory, anything else."""
    import duckdb

    from celltrials.errors import StoreError

    if isinstance(exc, duckdb.Error):
        return StoreError(
            f"the store failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="If the store file is damaged or truncated, move it aside and rebuild it with "
                 "`celltrials ingest`; check free disk space (--db chooses another file).")
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return CelltrialsError(f"{where}{exc.strerror or exc}",
                               hint="Check that the path exists and is readable/writable and that the disk is not full.")
    if isinstance(exc, MemoryError | RecursionError):
        return CelltrialsError(f"out of resources: {type(exc).__name__}",
                               hint="The input is too large or too deeply nested; rerun with --debug for details.")
    return CelltrialsError(f"unexpected {type(exc).__name__}: {exc}",
                           hint="This is a bug in celltrials; rerun with --debug and report the traceback.")


# Commands live in the modules below (one per area) and register themselves
# on ``cli`` when imported; keeping them apart keeps this file small.
_COMMAND_MODULES = [
    "celltrials.commands.core",
    "celltrials.commands.pipeline",
    "celltrials.commands.meta",
    "celltrials.commands.products",
    "celltrials.commands.sync",
    "celltrials.commands.report",
    "celltrials.commands.classify",
]


def _load_commands(modules: list[str], register: Callable[[str], Any]) -> None:
    for name in modules:
        register(name)


def _import(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


_load_commands(_COMMAND_MODULES, _import)
