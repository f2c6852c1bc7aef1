"""Approved-product commands: ``products``, ``products show NAME``, ``products --check``."""

from __future__ import annotations

import sys

import click

from celltrials import products as lib
from celltrials.commands.base import Context, cli, echo_json
from celltrials.safety import terminal_safe


@cli.group(invoke_without_command=True)
@click.option(
    "--json", "as_json", is_flag=True, help="Print exactly what the library returns, as JSON."
)
@click.option("--check", is_flag=True, help="Validate the product catalog; exit 1 on findings.")
@click.option(
    "--catalog",
    default=None,
    type=click.Path(dir_okay=False),
    help="With --check: the catalog CSV to validate (its NAME.meta.yaml must sit beside it).",
)
@click.pass_context
def products(cctx: click.Context, as_json: bool, check: bool, catalog: str | None) -> None:
    """Approved cell-therapy products and the trials that name them.

    Without a subcommand: every catalog product with the number of trials in
    the store that name it (the links are refreshed into `product_links`).
    """

    if cctx.invoked_subcommand is not None:
        return
    if check:
        findings = lib.check_file(catalog)
        if as_json:
            echo_json([f.__dict__ for f in findings])
        else:
            for f in findings:
                click.echo(str(f))
            meta = lib.load_meta() if catalog is None else None
            what = catalog or f"packaged catalog (version {meta.version if meta else '?'})"
            click.echo(f"{what}: {len(findings)} finding(s)", err=bool(findings))
        if findings:
            sys.exit(1)
        return
    ctx: Context = cctx.obj
    store = ctx.open_store()
    try:
        table = lib.products_table(store)
    finally:
        store.close()
    if as_json:
        echo_json(lib.json_records(table))
        return
    click.echo(f"{'product':<34} {'cell type':<18} {'MSC source':<15} {'trials':>6}  regulators")
    for r in lib.json_records(table):
        product, ctype, source = str(r["product"]), str(r["cell_type"]), str(r["msc_source"])
        click.echo(
            f"{product[:34]:<34} {ctype[:18]:<18} {source[:15]:<15} {r['n_trials']:>6}  {r['regulators']}"
        )
    linked = int((table["n_trials"] > 0).sum())
    if not ctx.quiet:
        click.echo(f"{len(table)} products, {linked} named in at least one trial", err=True)


@products.command("show")
@click.argument("name")
@click.option(
    "--json", "as_json", is_flag=True, help="Print exactly what the library returns, as JSON."
)
@click.pass_context
def show(cctx: click.Context, name: str, as_json: bool) -> None:
    """One product (NAME may be a brand name, INN or code): approvals and linked trials by phase and date."""

    ctx: Context = cctx.obj
    store = ctx.open_store()
    try:
        detail = lib.product_detail(store, name)
    finally:
        store.close()
    if as_json:
        echo_json(detail)
        return
    click.secho(detail["product"], bold=True)
    for a in detail["approvals"]:
        when = a["approval_date"] or "date n/a"
        kind = a["approval_type"] or "type n/a"
        click.echo(
            f"  {a['regulator']} ({a['country_or_region']}): {kind}, {when}, {a['status']} [{a['verification']}]"
        )
    click.echo(f"{len(detail['trials'])} linked trial(s)")
    phase = None
    for t in detail["trials"]:
        if t["phase"] != phase:
            phase = t["phase"]
            click.echo(f"  {phase} ({detail['by_phase'].get(phase, 0)})")
        start = t["start_date"] or "start n/a"
        click.echo(
            terminal_safe(
                f"    {t['trial_id']}  {start}  {t['status'] or ''}  {(t['title'] or '')[:80]}  [{t['aliases']}]"
            )
        )
