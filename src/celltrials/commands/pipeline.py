"""``celltrials run``: the main job in one command."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from celltrials.commands.base import Context, cli, echo_json, pass_ctx, progress_display
from celltrials.pipeline import run_pipeline
from celltrials.safety import escape_markup as esc


@cli.command()
@click.argument("paths", nargs=-1)
@click.option("--out", default="celltrials-report", show_default=True, help="Report folder.")
@click.option(
    "--skip-bad", is_flag=True, help="Ingest good records of files that contain bad ones."
)
@click.option(
    "--base-url",
    envvar="CELLTRIALS_CTGOV_URL",
    default=None,
    help="ClinicalTrials.gov API v2 base URL (online mode).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@pass_ctx
def run(
    ctx: Context,
    paths: tuple[str, ...],
    out: str,
    skip_bad: bool,
    base_url: str | None,
    as_json: bool,
) -> None:
    """Ingest PATHS (or, with none, fetch the cell-therapy preset live), classify, and write the report."""

    console = Console(stderr=True)
    show = not ctx.quiet and not as_json
    with ctx.open_store() as store:
        if show:
            console.print(f"[bold]celltrials[/bold] → store {esc(store.path)}")
        with progress_display(show, console) as progress:
            result = run_pipeline(
                store, list(paths), out, skip_bad=skip_bad, base_url=base_url, progress=progress
            )
    data = result.to_dict()
    if as_json:
        echo_json(data)
    elif not ctx.quiet:
        if result.ingest:
            console.print(
                f"ingested {result.ingest.n_records:,} records ({result.ingest.n_new:,} new) from {len(result.ingest.files)} files"
            )
            for f in result.ingest.findings:
                console.print(
                    f"  {'skipped' if f.severity == 'notice' else '[red]bad[/red]'} {esc(f)}",
                    highlight=False,
                )
        for step, summary in result.steps.items():
            if not isinstance(summary, dict):
                summary = summary.to_dict() if hasattr(summary, "to_dict") else {"": summary}
            parts = (
                f"{k.replace('_', ' ')} {v:,}"
                if isinstance(v, int) and not isinstance(v, bool)
                else f"{k.replace('_', ' ')} {v}"
                for k, v in summary.items()
                if not isinstance(v, list | dict)
            )
            console.print(esc(f"{step}: {', '.join(parts)}"), highlight=False)
        if result.report_path:
            console.print(f"report: [bold]{esc(result.report_path)}[/bold]")
    if result.ingest and not result.ingest.clean:
        sys.exit(1)
