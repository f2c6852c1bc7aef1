"""``celltrials check``: the data-quality audit (thin layer over :mod:`celltrials.quality`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from celltrials.commands.base import Context, cli, echo_json, pass_ctx
from celltrials.quality import CheckReport
from celltrials.quality import check as run_check

#: unmapped values listed per field in the terminal (all of them with --json)
_SHOW = 10


@cli.command()
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the audit as JSON (exactly what celltrials.quality.check returns).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 when any raw value maps to nothing (reviewed unmappable values excepted).",
)
@pass_ctx
def check(ctx: Context, as_json: bool, strict: bool) -> None:
    """Data-quality audit: per source file and field, how many raw values map
    to the canonical vocabulary, the ones that do not (with an example record),
    text repairs, each source's coverage window, records without dates or ids."""

    with ctx.open_store(read_only=True) as store:
        report = run_check(store)
    if as_json:
        echo_json(report.to_dict())
    else:
        _print(report, Console())
    if strict and not report.ok:
        click.echo(f"check --strict: {report.n_unmapped} raw value(s) map to nothing", err=True)
        sys.exit(1)


def _print(report: object, console: Console) -> None:

    assert isinstance(report, CheckReport)
    console.print(
        Text(
            f"{report.n_records:,} record versions from {len(report.sources)} sources; "
            f"{report.n_unmapped:,} unmapped values, {report.n_reviewed:,} reviewed as unmappable, "
            f"{report.n_repairs:,} text values repaired."
        )
    )
    fields = Table(title="Raw values mapped to the canonical vocabulary (mapped/values)")
    fields.add_column("source")
    for c in ("study type", "phase", "status", "country", "repairs"):
        fields.add_column(c, justify="right")
    for s in report.sources:
        cells: list[Text | str] = [Text(Path(s.source).name)]
        for f in s.fields:
            cell = Text(f"{f.n_mapped:,}/{f.n_values:,}")
            if f.n_reviewed:
                cell.append(f" +{f.n_reviewed} reviewed", style="yellow")
            if f.n_unmapped:
                cell.append(f" {f.n_unmapped} unmapped", style="bold red")
            cells.append(cell)
        cells.append(f"{sum(r.count for r in s.repairs):,}")
        fields.add_row(*cells)
    console.print(fields)
    for s in report.sources:
        for f in s.fields:
            if not f.unmapped:
                continue
            console.print(Text(f"unmapped {f.field} in {Path(s.source).name}:", style="red"))
            for u in f.unmapped[:_SHOW]:
                console.print(Text(f"  {u.raw!r} × {u.count} (e.g. {u.example_record_id})"))
            if len(f.unmapped) > _SHOW:
                console.print(Text(f"  … and {len(f.unmapped) - _SHOW} more (use --json for all)"))
    cov = Table(title="Coverage windows")
    for c in ("source", "records", "registered", "started", "last update", "snapshot"):
        cov.add_column(c, justify="right" if c == "records" else "left")

    def span(a: object, b: object) -> str:
        return f"{a or '–'}…{b or '–'}"

    for s in report.sources:
        w = s.coverage
        cov.add_row(
            Text(Path(s.source).name),
            f"{w.n_records:,}",
            span(w.registration_first, w.registration_last),
            span(w.start_first, w.start_last),
            span(w.last_update_first, w.last_update_last),
            str(w.snapshot_date or "–"),
        )
    console.print(cov)
    gaps = Table(title="Records without dates or ids; lead-sponsor spellings → sponsors")
    for c in (
        "source",
        "no start",
        "no registration",
        "no update",
        "no date",
        "no id",
        "odd start",
        "sponsors",
    ):
        gaps.add_column(c, justify="left" if c == "source" else "right")
    for s in report.sources:
        gaps.add_row(
            Text(Path(s.source).name),
            str(s.n_without_start_date),
            str(s.n_without_registration_date),
            str(s.n_without_last_update),
            str(s.n_without_any_date),
            str(s.n_without_ids),
            str(s.n_start_implausible),
            f"{s.n_sponsor_spellings:,} → {s.n_sponsors:,}",
        )
    console.print(gaps)
