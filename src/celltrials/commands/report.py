"""``celltrials report``: the landscape report (HTML, figures, tables, workbook)."""

from __future__ import annotations

import click

from celltrials.analysis.landscape import make_filters
from celltrials.commands.base import Context, cli, echo_json, pass_ctx, progress_display
from celltrials.report.build import build_report


@cli.command(context_settings={"max_content_width": 100})
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for report.html, report.xlsx, figures/ and tables/ (created if missing).",
)
@click.option(
    "--country",
    multiple=True,
    metavar="NAME",
    help="Trials in this country (repeatable; any of them).",
)
@click.option(
    "--registry",
    multiple=True,
    metavar="NAME",
    help="Primary record's registry, e.g. ctgov, chictr (repeatable).",
)
@click.option(
    "--start-year",
    default=None,
    metavar="FROM-TO",
    help="Start year or range, e.g. 2019-2024, 2020, 2019-.",
)
@click.option(
    "--status",
    multiple=True,
    metavar="STATUS",
    help="Overall status, e.g. recruiting, terminated (repeatable).",
)
@click.option(
    "--phase",
    multiple=True,
    metavar="PHASE",
    help="Phase, e.g. 1, 2, 1/2, PHASE3, NOT_APPLICABLE (repeatable).",
)
@click.option(
    "--cell-type",
    multiple=True,
    metavar="TYPE",
    help="Taxonomy cell type (car_t, msc, …) or family (immune, stem_stromal, other); repeatable.",
)
@click.option(
    "--indication-group",
    multiple=True,
    metavar="GROUP",
    help="oncology, degenerative, immune_mediated or other (repeatable).",
)
@click.option(
    "--title", default=None, metavar="TEXT", help="Title contains TEXT (case-insensitive)."
)
@click.option(
    "--all-trials",
    is_flag=True,
    help="Report on every trial of the store, not only those classified as cell therapy.",
)
@click.option("--no-figures", is_flag=True, help="Skip the Matplotlib SVG/PNG figures.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result (paths, counts, timings) as JSON."
)
@pass_ctx
def report(
    ctx: Context,
    out_dir: str,
    country: tuple[str, ...],
    registry: tuple[str, ...],
    start_year: str | None,
    status: tuple[str, ...],
    phase: tuple[str, ...],
    cell_type: tuple[str, ...],
    indication_group: tuple[str, ...],
    title: str | None,
    all_trials: bool,
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

    filters = make_filters(
        country=country,
        registry=registry,
        start_year=start_year,
        status=status,
        phase=phase,
        cell_type=cell_type,
        indication_group=indication_group,
        title=title,
        scope="all" if all_trials else "cell_therapy",
    )
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
