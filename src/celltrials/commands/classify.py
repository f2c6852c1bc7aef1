"""Classification commands: classify, labels, evaluate, explain (issue 7)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from celltrials.classify import LABEL_COLUMNS
from celltrials.commands.base import Context, cli, echo_json, pass_ctx, progress_display
from celltrials.labelling import (
    classify_store,
    evaluate_store,
    evaluate_store_many,
    explain_trial,
    labels_rows,
    unknown_products,
)
from celltrials.outputs import ensure_dir, write_atomic
from celltrials.safety import safe_row, terminal_safe


@cli.command("classify")
@click.option(
    "--changed-only",
    is_flag=True,
    help="Only trials whose text or taxonomy version changed since the last run.",
)
@click.option(
    "--unknown-products",
    is_flag=True,
    help="Do not label: list intervention names of cell-therapy trials that match no product synonym or code name, with counts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: all cores for a large store; 1: no workers). Labels do not depend on it.",
)
@pass_ctx
def classify_cmd(
    ctx: Context, changed_only: bool, unknown_products: bool, as_json: bool, jobs: int | None
) -> None:
    """Label every trial in the store (cell type, MSC source, origin, form, indication)."""

    if unknown_products:
        _print_unknown_products(ctx, as_json)
        return
    console = Console(stderr=True)
    with (
        ctx.open_store() as store,
        progress_display(not ctx.quiet and not as_json, console) as progress,
    ):
        summary = classify_store(store, only_changed=changed_only, progress=progress, jobs=jobs)
    if as_json:
        echo_json(summary)
        return
    if ctx.quiet:
        return
    out = Console()
    out.print(
        f"Classified [bold]{summary['classified']:,}[/bold] of {summary['trials']:,} trials "
        f"({summary['skipped_unchanged']:,} unchanged) in {summary['seconds']} s; "
        f"[bold]{summary['cell_therapy_trials']:,}[/bold] cell-therapy trials "
        f"(taxonomy {summary['taxonomy_version']}; classifier {summary['engine']})."
    )
    if summary["cell_types"]:
        t = Table(title="Cell types (trials classified in this run)")
        t.add_column("cell_type")
        t.add_column("trials", justify="right")
        for k, v in summary["cell_types"].items():
            t.add_row(k, f"{v:,}")
        out.print(t)


def _print_unknown_products(ctx: Context, as_json: bool) -> None:

    with ctx.open_store(read_only=True) as store:
        rows = unknown_products(store)
    if as_json:
        echo_json(rows)
        return
    out = Console()
    t = Table(
        title=f"{len(rows):,} intervention names of cell-therapy trials that name no known product"
    )
    t.add_column("intervention name")
    t.add_column("trials", justify="right")
    t.add_column("e.g.")
    for r in rows:
        t.add_row(Text(r["name"]), str(r["trials"]), Text(", ".join(r["example_ids"])))
    out.print(t)
    out.print("Add the products you can identify, with a source, to taxonomy/code_names.csv.")


@cli.command("labels")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV file to write (default: stdout).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@pass_ctx
def labels_cmd(ctx: Context, out_path: str | None, as_json: bool) -> None:
    """Write the labels file: one row per trial id (primary and every merged secondary id)."""

    with ctx.open_store(read_only=True) as store:
        rows = labels_rows(store)
    if as_json:
        echo_json(rows)
        return

    rows = [safe_row(r) for r in rows]  # registry ids are untrusted text: no live formulas
    if out_path:

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
                w.writeheader()
                w.writerows(rows)

        ensure_dir(Path(out_path).parent)
        write_atomic(out_path, write)
        if not ctx.quiet:
            click.echo(f"Wrote {len(rows):,} rows to {out_path}", err=True)
    else:
        w = csv.DictWriter(sys.stdout, fieldnames=LABEL_COLUMNS)
        w.writeheader()
        w.writerows(rows)


@cli.command("evaluate")
@click.option(
    "--gold",
    "gold_paths",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    multiple=True,
    help="Gold labels CSV (columns of `celltrials labels`); repeat for several files (each and together are scored).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option(
    "--max-disagreements", default=50, show_default=True, help="How many disagreements to print."
)
@pass_ctx
def evaluate_cmd(
    ctx: Context, gold_paths: tuple[str, ...], as_json: bool, max_disagreements: int
) -> None:
    """Compare the store's labels with gold files: accuracy, per-value P/R/F1, macro-F1, disagreements.

    With several --gold files each is scored, then all together against the quality targets."""

    with ctx.open_store(read_only=True) as store:
        result = (
            evaluate_store(store, gold_paths[0])
            if len(gold_paths) == 1
            else evaluate_store_many(store, gold_paths)
        )
    if as_json:
        echo_json(result)
        return
    if len(gold_paths) == 1:
        _print_evaluation(result, max_disagreements)
        return
    out = Console()
    for name, res in result["files"].items():
        out.print(Text(f"== {name}", style="bold"))
        _print_evaluation(res, max_disagreements)
    out.print(Text("== all gold files together", style="bold"))
    _print_evaluation(result["combined"], 0)
    t = Table(title="Quality targets (all gold files together)")
    for c in ("field", "measure", "value", "target", "met"):
        t.add_column(c, justify="left" if c in ("field", "measure") else "right")
    for chk in result["targets"]:
        t.add_row(
            chk["field"],
            chk["measure"],
            f"{chk['value']:.3f}",
            f"{chk['target']:.2f}",
            Text("yes", style="green") if chk["met"] else Text("no", style="red"),
        )
    out.print(t)


def _print_evaluation(result: dict[str, Any], max_disagreements: int) -> None:
    out = Console()
    ict = result["is_cell_therapy"]
    out.print(
        f"Gold rows: {result['n_gold']}, matched: {result['n_matched']}"
        + (f", missing: {', '.join(result['missing'])}" if result["missing"] else "")
    )
    out.print(
        f"is_cell_therapy: accuracy {ict['accuracy']:.3f}, precision {ict['precision']:.3f}, "
        f"recall {ict['recall']:.3f}, [bold]F1 {ict['f1']:.3f}[/bold]"
    )
    t = Table(title="Per field")
    for c in ("field", "accuracy", "n", "macro-F1"):
        t.add_column(c, justify="left" if c == "field" else "right")
    for field, acc in result["accuracy"].items():
        mf = result["macro_f1"].get(field)
        t.add_row(field, f"{acc['accuracy']:.3f}", str(acc["n"]), "" if mf is None else f"{mf:.3f}")
    out.print(t)
    t = Table(title="Per value")
    for c in ("field", "value", "precision", "recall", "F1", "support"):
        t.add_column(c, justify="left" if c in ("field", "value") else "right")
    for field, vals in result["per_value"].items():
        for v, m in vals.items():
            t.add_row(
                field,
                v,
                f"{m['precision']:.3f}",
                f"{m['recall']:.3f}",
                f"{m['f1']:.3f}",
                str(m["support"]),
            )
    out.print(t)
    dis = result["disagreements"]
    out.print(
        f"[bold]{len(dis)} disagreement(s)[/bold]"
        + (f" (first {max_disagreements})" if len(dis) > max_disagreements else "")
    )
    for d in dis[:max_disagreements]:
        line = Text()
        line.append(f"{d['registry_id']} ", style="bold")
        line.append(f"{d['field']}: ")
        line.append(d["predicted"] or "∅", style="red")
        line.append(" vs gold ")
        line.append(d["gold"] or "∅", style="green")
        if d.get("note"):
            line.append(f"  ({d['note']})", style="dim")
        out.print(line)
        for e in d["evidence"][:4]:
            out.print(
                Text(
                    terminal_safe(f"    {e['value']} ← {e['source_field']}: “{e['text']}”"),
                    style="dim",
                )
            )


@cli.command("explain")
@click.argument("trial_id")
@click.option("--json", "as_json", is_flag=True, help="Print labels and evidence as JSON.")
@pass_ctx
def explain_cmd(ctx: Context, trial_id: str, as_json: bool) -> None:
    """Why a trial got its labels: each label with the registry text it rests on, highlighted."""

    with ctx.open_store(read_only=True) as store:
        result = explain_trial(store, trial_id)
    if as_json:
        echo_json(result)
        return
    out = Console()
    labels = result["labels"]
    out.print(Text(terminal_safe(f"{result['trial_id']}  {result['title']}"), style="bold"))
    out.print(
        Text(
            f"taxonomy {labels['taxonomy_version']}, classified {labels['classified_at']}",
            style="dim",
        )
    )
    t = Table(show_header=True)
    t.add_column("field")
    t.add_column("label")
    for k in (
        "is_cell_therapy",
        "cell_type",
        "msc_source",
        "origin",
        "product_form",
        "indication_group",
        "therapeutic_area",
        "targets",
        "dose",
        "route",
        "combinations",
        "manufacturing",
    ):
        t.add_row(k, str(labels.get(k) or "–"))
    out.print(t)
    by_field: dict[str, list[dict[str, Any]]] = {}
    for e in result["evidence"]:
        by_field.setdefault(e["field"], []).append(e)
    if not by_field:
        out.print("No evidence: nothing in the titles or interventions names a cell product.")
    for field, evs in by_field.items():
        out.print(Text(field, style="bold underline"))
        for e in evs:
            line = Text("  ")
            line.append(f"{e['value']}", style="bold cyan")
            line.append(f"  [{e['source_field']} {e['start']}:{e['end']}]  ", style="dim")
            line.append("…" if e["context_start"] > 0 else "")
            line.append(terminal_safe(e["before"]))
            line.append(terminal_safe(e["text"]), style="bold black on yellow")
            line.append(terminal_safe(e["after"]))
            line.append("…" if e["after"] and e["context_end"] - e["end"] >= 60 else "")
            out.print(line)
