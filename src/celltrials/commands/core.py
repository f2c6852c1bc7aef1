"""Core commands: ingest, stats, show, dups, export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from celltrials.commands.base import Context, cli, echo_json, pass_ctx, progress_display
from celltrials.errors import ConfigError
from celltrials.ingest import IngestAborted, IngestReport, ingest_paths
from celltrials.safety import escape_markup as esc
from celltrials.summary import duplicate_groups, store_stats


def _console() -> Console:
    return Console(stderr=True)


def _print_report(report: IngestReport, console: Console) -> None:
    table = Table(title="Ingest", show_lines=False)
    for col in ("file", "format", "records", "new", "unchanged", "bad"):
        table.add_column(col, justify="right" if col not in ("file", "format") else "left")
    for fr in report.files:
        table.add_row(
            esc(Path(fr.path).name),
            fr.format,
            str(fr.n_records),
            str(fr.n_new),
            str(fr.n_unchanged),
            str(fr.n_bad),
        )
    console.print(table)
    notices = [f for f in report.findings if f.severity == "notice"]
    errors = [f for f in report.findings if f.severity == "error"]
    for f in notices:
        console.print(f"[dim]skipped {esc(f)}[/dim]")
    if errors:
        console.print(f"[red]{len(errors)} bad record(s) or file(s) not ingested:[/red]")
        for f in errors[:200]:
            console.print(f"  [red]•[/red] {esc(f)}", highlight=False)
        if len(errors) > 200:
            console.print(f"  … and {len(errors) - 200} more (use --json for all)")


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Ingest the good records of a file and list the bad ones (default: stop, store unchanged for that file).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Read files again even when their content was ingested before (default: skip them).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the ingest report as JSON.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Processes parsing a large ClinicalTrials.gov JSON/NDJSON file, or many smaller ones ahead of the writer (default: all cores; 1: no workers). What is stored does not depend on it.",
)
@pass_ctx
def ingest(
    ctx: Context,
    paths: tuple[str, ...],
    skip_bad: bool,
    force: bool,
    as_json: bool,
    jobs: int | None,
) -> None:
    """Ingest registry exports: files, folders (recursively), globs, zips.

    Formats are recognised by content: ClinicalTrials.gov API v2 JSON
    (study, array, API page, NDJSON, zip), ClinicalTrials.gov CSV (classic and
    current), WHO ICTRP CSV/XML/XLSX. A file whose content was ingested
    cleanly before is skipped (--force reads it again). Exit code 0 only
    when every record went in.
    """
    console = _console()
    store = ctx.open_store()
    show = not ctx.quiet and not as_json and console.is_terminal
    try:
        with progress_display(show, console) as progress:
            report = ingest_paths(
                store, list(paths), skip_bad=skip_bad, force=force, progress=progress, jobs=jobs
            )
    except IngestAborted as exc:
        if as_json:
            echo_json(exc.report.to_dict())
        elif not ctx.quiet:
            _print_report(exc.report, console)
        raise
    finally:
        store.close()
    if as_json:
        echo_json(report.to_dict())
    elif not ctx.quiet:
        _print_report(report, console)
    if not report.clean:
        sys.exit(1)


@cli.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print the counts as JSON (what the library returns)."
)
@pass_ctx
def stats(ctx: Context, as_json: bool) -> None:
    """Records vs trials by registry and source, and merged duplicates."""

    with ctx.open_store(read_only=True) as store:
        result = store_stats(store)
    if as_json:
        echo_json(result)
        return
    console = Console()
    console.print(
        f"[bold]{result['trials']:,}[/bold] trials from [bold]{result['records']:,}[/bold] records "
        f"({result['record_versions']:,} versions kept); {result['merged_trials']:,} trials merge "
        f"{result['records_merged_away'] + result['merged_trials']:,} records."
    )
    t = Table(title="By registry")
    for c in ("registry", "records", "trials"):
        t.add_column(c, justify="left" if c == "registry" else "right")
    for r in result["by_registry"]:
        t.add_row(esc(r["registry"]), f"{r['records']:,}", f"{r['trials']:,}")
    console.print(t)
    t = Table(title="By source")
    for c in ("source", "format", "records", "current"):
        t.add_column(c, justify="left" if c in ("source", "format") else "right")
    for r in result["by_source"]:
        t.add_row(
            esc(r["source"]), esc(r["format"]), f"{r['records']:,}", f"{r['current_records']:,}"
        )
    console.print(t)


@cli.command()
@click.argument("trial_id")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the trial as JSON (what the library returns)."
)
@click.option("--raw", is_flag=True, help="Also print each source record verbatim.")
@pass_ctx
def show(ctx: Context, trial_id: str, as_json: bool, raw: bool) -> None:
    """A trial: its normalised fields, all its ids and every source record."""

    with ctx.open_store(read_only=True) as store:
        trial = store.trial(trial_id)
        if trial is None:
            raise ConfigError(
                f"no trial with id {trial_id!r} in {store.path}",
                hint="Ids of any registry work, e.g. NCT04293692 or ChiCTR2000029580.",
            )
        if raw:
            trial["raw_records"] = {
                r["record_key"]: store.raw_record(r["record_key"]) for r in trial["records"]
            }
    if as_json:
        echo_json(trial)
        return
    _render_trial(trial)
    for key, rec in (trial.get("raw_records") or {}).items():
        click.echo(f"\n# raw record {key}")
        click.echo(json.dumps(rec, indent=2, ensure_ascii=False, default=str))


def _render_trial(t: dict[str, Any]) -> None:
    console = Console()
    console.print(f"[bold]{esc(t['trial_id'])}[/bold]  {esc(t['title'])}", highlight=False)
    if t.get("official_title") and t["official_title"] != t["title"]:
        console.print(f"[dim]{esc(t['official_title'])}[/dim]", highlight=False)
    rows = [
        ("ids", ", ".join(i["id_raw"] for i in t["ids"])),
        ("status", f"{t['status']}" + (f" — {t['why_stopped']}" if t.get("why_stopped") else "")),
        ("phase", t["phase"]),
        ("study type", t.get("study_type") or ""),
        ("start", t.get("start_date") or ""),
        ("enrollment", f"{t.get('enrollment')} ({t.get('enrollment_type')})"),
        ("sponsor", f"{t.get('lead_sponsor')} [{t.get('sponsor_class')}]"),
        ("countries", ", ".join(c["country"] for c in t["countries"])),
        (
            "conditions",
            "; ".join(c["condition"] for c in t["conditions"] if c["kind"] == "condition"),
        ),
        (
            "interventions",
            "; ".join(
                (f"{i['type']}: " if i["type"] else "") + i["name"] for i in t["interventions"]
            ),
        ),
        ("url", t.get("url") or ""),
    ]
    labels = t.get("labels") or {}
    if labels.get("classified_at"):
        rows.append(
            (
                "labels",
                ", ".join(
                    f"{k} {v}"
                    for k, v in labels.items()
                    if k
                    in (
                        "cell_type",
                        "msc_source",
                        "origin",
                        "product_form",
                        "indication_group",
                        "therapeutic_area",
                    )
                    and v
                ),
            )
        )
    table = Table(show_header=False, box=None)
    table.add_column(style="bold cyan")
    table.add_column()
    for k, v in rows:
        table.add_row(k, esc(v))
    console.print(table)
    rt = Table(title="Source records")
    for c in ("record", "registry", "format", "source", "last update", "current", "primary"):
        rt.add_column(c)
    for r in t["records"]:
        rt.add_row(
            esc(r["record_id"]),
            esc(r["registry"]),
            esc(r["source_format"]),
            esc(f"{r['source']}#{r['position']}"),
            str(r["last_update"] or ""),
            "yes" if r["is_current"] else "old",
            "yes" if r["is_primary"] else "",
        )
    console.print(rt)


@cli.command()
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="Show at most this many merged trials.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the merged trials as JSON.")
@pass_ctx
def dups(ctx: Context, limit: int | None, as_json: bool) -> None:
    """Trials merged from several records, and the shared ids that merged them."""

    with ctx.open_store(read_only=True) as store:
        groups = duplicate_groups(store, limit)
    if as_json:
        echo_json(groups)
        return
    console = Console()
    table = Table(title=f"{len(groups)} merged trials")
    for c in ("trial", "records", "why"):
        table.add_column(c)
    for g in groups:
        recs = "\n".join(
            f"{'*' if r['is_primary'] else ' '} {r['record_id']} ({r['channel']}, {r['format']})"
            for r in g["records"]
        )
        table.add_row(esc(g["trial_id"]), esc(recs), esc(g["reason"]))
    console.print(table)
    console.print("[dim]* = primary record[/dim]")


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet", "xlsx"]),
    default="csv",
    show_default=True,
    help="File format of the export.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Output file (default trials.FORMAT); its folder is created.",
)
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@pass_ctx
def export(ctx: Context, fmt: str, out: str | None, force: bool) -> None:
    """One row per trial: primary id, all merged ids, normalised fields (and labels).

    Text cells of csv/xlsx are neutralised against formula injection
    (a leading = + - @ tab or CR gets a ' in front)."""
    # (pandas: imported by this command only, not by every command of this module)
    from celltrials.export import export_trials  # noqa: PLC0415

    with ctx.open_store(read_only=True) as store:
        path = export_trials(store, fmt, out or f"trials.{fmt}", force=force)
    if not ctx.quiet:
        click.echo(f"wrote {path}", err=True)
