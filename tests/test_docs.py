"""The documentation keeps up with the command line: every command (and
subcommand) has help text and is named in README.md, as sqlite-utils' test_docs."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from celltrials.cli import cli

pytestmark = pytest.mark.unit

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        full = f"{prefix}{name}"
        out.append((full, cmd))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, f"{full} "))
    return out


COMMANDS = _commands(cli)


def test_the_cli_has_commands() -> None:
    assert {"ingest", "classify", "report", "meta"} <= {name for name, _ in COMMANDS}


@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_has_help(name: str, cmd: click.Command) -> None:
    assert (cmd.help or "").strip(), f"`celltrials {name}` has no help text"
    for param in cmd.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), (
                f"`celltrials {name}` option {param.opts} has no help"
            )


@pytest.mark.parametrize("name", [n for n, _ in COMMANDS])
def test_every_command_is_in_the_readme(name: str) -> None:
    assert re.search(rf"celltrials {re.escape(name)}\b", README), (
        f"README.md never shows `celltrials {name}`"
    )
