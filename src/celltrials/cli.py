"""The ``celltrials`` command line: a thin click layer over the library.

Each command parses its arguments, calls one library function and renders
the result; ``--json`` prints exactly what the library returned. Commands
live in ``celltrials.commands`` (one module per area) and register on the
group in ``celltrials.commands.base``, which imports a command's module when
it is run (``COMMAND_MODULES``).
"""

from __future__ import annotations

import os
import sys

import click
import duckdb

from celltrials.commands.base import Context, cli, echo_json, load_all_commands, pass_ctx
from celltrials.errors import CelltrialsError, StoreError

__all__ = ["Context", "cli", "echo_json", "load_all_commands", "main", "pass_ctx"]


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(
        os.environ.get("CELLTRIALS_DEBUG")
    )
    try:
        cli.main(args=argv, prog_name="celltrials", standalone_mode=False)
    except (
        click.exceptions.Abort
    ):  # click's form of Ctrl-C (KeyboardInterrupt) and of an aborted prompt
        _interrupted()
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CelltrialsError as exc:
        if debug:
            raise
        if _was_interrupted(exc):  # Ctrl-C inside a step that reports its own errors
            _interrupted()
        _fail(exc)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        _interrupted()
    except Exception as exc:  # the last line of defence: no traceback without --debug
        if debug:
            raise
        if _was_interrupted(exc):  # Ctrl-C while DuckDB was working
            _interrupted()
        _fail(_as_user_error(exc))
    sys.exit(0)


def _was_interrupted(exc: BaseException) -> bool:
    """Whether Ctrl-C is behind ``exc``: DuckDB turns SIGINT inside a query into
    InterruptException (or a RuntimeError "Query interrupted"), and a step may
    report that as its own error."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt | duckdb.InterruptException):
            return True
        if isinstance(cur, RuntimeError) and str(cur).startswith("Query interrupted"):
            return True  # DuckDB's Arrow/pandas paths raise a plain RuntimeError
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _interrupted() -> None:
    click.echo(
        "\nInterrupted. The store keeps everything committed before Ctrl-C (ingest: every file "
        "finished; fetch: every page) and nothing half-written; rerun the command to continue.",
        err=True,
    )
    sys.exit(130)


def _fail(exc: CelltrialsError) -> None:
    click.secho(f"Error: {exc.message}", fg="red", err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)
    sys.exit(1)


def _as_user_error(exc: BaseException) -> CelltrialsError:
    """One error path for faults that escaped the library's own checks:
    the store (DuckDB), the file system, memory, anything else."""
    if isinstance(exc, duckdb.Error):
        first = str(exc).splitlines()[0] if str(exc) else ""
        if (
            isinstance(
                exc,
                duckdb.IOException
                | duckdb.InternalException
                | duckdb.FatalException
                | duckdb.SerializationException,
            )
            or "Corrupt" in first
        ):
            return StoreError(
                f"the store failed: {first or type(exc).__name__}",
                hint="Check free disk space. If the store file is damaged or truncated, move it aside and rebuild "
                "it with `celltrials ingest` (--db chooses another file).",
            )
        return StoreError(
            f"the store failed: {type(exc).__name__}: {first}",
            hint="This is likely a bug in celltrials; rerun with --debug and report the traceback.",
        )
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return CelltrialsError(
            f"{where}{exc.strerror or exc}",
            hint="Check that the path exists and is readable/writable and that the disk is not full.",
        )
    if isinstance(exc, MemoryError | RecursionError):
        return CelltrialsError(
            f"out of resources: {type(exc).__name__}",
            hint="The input is too large or too deeply nested; rerun with --debug for details.",
        )
    return CelltrialsError(
        f"unexpected {type(exc).__name__}: {exc}",
        hint="This is a bug in celltrials; rerun with --debug and report the traceback.",
    )
