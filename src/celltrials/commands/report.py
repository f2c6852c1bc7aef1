"""``celltrials report``: the landscape report (HTML, figures, tables, workbook)."""

from __future__ import annotations

import click

from celltrials.commands.base import (
    Context,
    FilterOptions,
    cli,
    echo_json,
    pass_ctx,
    progress_display,
    report_filter_options,
)
from celltrials.report.build import build_report


@cli.command(context_settings={"max_content_width": 100})
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for report.html, report.xlsx, figures/ and tables/ (created if missing).",
)
@report_filter_options()
@click.option("--no-figures", is_flag=True, help="Skip the Matplotlib SVG/PNG figures.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result (paths, counts, timings) as JSON."
)
@pass_ctx
def report(
    ctx: Context,
    out_dir: str,
    filter_options: FilterOptions,
    no_figures: bool,
    as_json: bool,
) -> None:
    """Write the cell-therapy trial landscape report of the store into --out.

    One self-contained report.html (opens offline; click any count or bar to
    list its trials with registry links), figures/*.svg and *.png,
    tables/*.csv (the table behind each figure, with the trial ids of every
    count) and report.xlsx (one sheet per table). Filters combine with AND;
    repeated values of one filter with OR.
    """

    filters = filter_options.filters()
    store = ctx.open_store(read_only=True)
    try:
        with progress_display(not ctx.quiet and not as_json) as progress:
            result = build_report(
                store, out_dir, filters, progress=progress, figures=not no_figures
            )
    finally:
        store.close()
    if as_json:
        echo_json(result.to_dict())
        return
    if not ctx.quiet:
        click.echo(
            f"{result.n_trials:,} trials"
            + (f", data as of {result.data_date.isoformat()}" if result.data_date else "")
            + f": {result.html}"
        )
        click.echo(
            f"  {len(result.figures)} figure files in {result.out_dir / 'figures'}, "
            f"{len(result.tables)} tables in {result.out_dir / 'tables'}, workbook {result.xlsx}"
        )
