"""Evidence-synthesis commands: ``meta`` (meta-analysis of a CSV)."""

from __future__ import annotations

from typing import Any

import click
import pandas as pd
from rich.console import Console
from rich.markup import escape as esc
from rich.table import Table

from celltrials.analysis.meta import MEASURES, METHODS, TO_CHOICES, meta_analysis_csv
from celltrials.analysis.meta_store import meta_from_store, write_template
from celltrials.analysis.plots_meta import write_plots
from celltrials.analysis.results import export_outcomes, results_for_store, tables_to_records
from celltrials.commands.base import (
    Context,
    FilterOptions,
    cli,
    echo_json,
    pass_ctx,
    report_filter_options,
)
from celltrials.errors import AnalysisError


def _parse_cols(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        role, sep, col = pair.partition("=")
        if not sep or not role.strip() or not col.strip():
            raise AnalysisError(
                f"--col {pair!r} is not ROLE=COLUMN", hint="Write e.g. --col ai=tpos."
            )
        out[role.strip()] = col.strip()
    return out


def _f(x: Any, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pv(p: Any) -> str:
    return "= —" if p is None else "< 0.0001" if p < 1e-4 else f"= {p:.4f}"


@cli.command(context_settings={"max_content_width": 100})
@click.argument("input_csv", metavar="[INPUT.csv]", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--from-store",
    "from_store",
    is_flag=True,
    help="Build the study rows from the results posted in the store (needs --outcome and --out).",
)
@click.option(
    "--outcome",
    default=None,
    metavar="TEXT",
    help="With --from-store: 'serious adverse events' (or SAE), 'deaths', 'other adverse events' "
    "(adverse-event totals per arm), or text in a posted outcome measure's title.",
)
@click.option(
    "--time-frame",
    "time_frame",
    default=None,
    metavar="TEXT",
    help="With --from-store: the outcome's time frame contains TEXT.",
)
@click.option(
    "--experimental-arm",
    "experimental_arm",
    default=None,
    metavar="REGEX",
    help="With --from-store: use only cell arms whose title matches REGEX (e.g. 'MSC|mesenchymal').",
)
@click.option(
    "--extra",
    default=None,
    type=click.Path(dir_okay=False),
    metavar="FILE.csv",
    help="With --from-store: add values extracted from papers (template: celltrials meta-template).",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="With --from-store: folder for studies.csv (the study rows) and meta.json (the result).",
)
@report_filter_options(when="With --from-store")
@click.option(
    "--measure",
    required=True,
    type=click.Choice(list(MEASURES), case_sensitive=False),
    help="RR/OR/RD: ai,bi,ci,di or ai,n1i,ci,n2i. MD/SMD/SMDH/ROM: m1i,sd1i,n1i,m2i,sd2i,n2i "
    "(SMD = Hedges' g, exact correction; SMDH = Bonett's heteroscedastic; ROM = log ratio of means). "
    "PLO/PR/PFT: xi,ni. IRR: x1i,t1i,x2i,t2i. IRLN: xi,ti. ZCOR: ri,ni. GEN: yi,vi or yi,sei.",
)
@click.option(
    "--method",
    default="REML",
    show_default=True,
    type=click.Choice(list(METHODS), case_sensitive=False),
    help="FE = fixed effect (inverse variance); DL/REML/PM/ML = random effects with that tau² estimator; "
    "MH = Mantel–Haenszel (OR, RR, RD, IRR); PETO = Peto's odds ratio.",
)
@click.option(
    "--test",
    "test",
    default="z",
    show_default=True,
    type=click.Choice(["z", "knha"], case_sensitive=False),
    help="Wald z or Knapp–Hartung t.",
)
@click.option(
    "--col",
    "cols",
    multiple=True,
    metavar="ROLE=COLUMN",
    help="Map a role to your column, e.g. --col ai=tpos (repeatable).",
)
@click.option(
    "--label",
    default=None,
    help="Column with study labels (default: study/trial/label/author/name/id if present).",
)
@click.option(
    "--add",
    "add",
    default=0.5,
    show_default=True,
    type=float,
    help="Continuity correction added to zero cells.",
)
@click.option(
    "--to",
    "to",
    default="only0",
    show_default=True,
    type=click.Choice(list(TO_CHOICES)),
    help="Where --add goes: studies with a zero cell, all studies, all if any has a zero, nowhere.",
)
@click.option(
    "--drop00/--keep00",
    "drop00",
    default=None,
    help="Drop studies with no events (or only events) in both groups [default: drop for MH/PETO, keep otherwise].",
)
@click.option(
    "--mods",
    default=None,
    metavar="COL[,COL…]",
    help="Meta-regression on these columns (numeric, or categorical dummy coded; force with COL:cat / COL:num).",
)
@click.option(
    "--by",
    default=None,
    metavar="COLUMN",
    help="Subgroup analysis by COLUMN with the test for subgroup differences.",
)
@click.option(
    "--by-tau2",
    "by_tau2",
    default="separate",
    show_default=True,
    type=click.Choice(["separate", "common"]),
    help="Subgroups with their own tau² each, or one tau² common to all (a mixed-effects model).",
)
@click.option(
    "--tau2-ci",
    "tau2_ci",
    default="QP",
    show_default=True,
    type=click.Choice(["QP", "PL"], case_sensitive=False),
    help="CI for tau², I², H²: Q-profile, or profile likelihood (ML/REML).",
)
@click.option("--leave-one-out", is_flag=True, help="Refit omitting each study in turn.")
@click.option(
    "--level", default=95.0, show_default=True, type=float, help="Confidence level in percent."
)
@click.option(
    "--plot-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Write forest.svg/png and funnel.svg/png here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@pass_ctx
def meta(
    ctx: Context,
    input_csv: str | None,
    from_store: bool,
    outcome: str | None,
    time_frame: str | None,
    experimental_arm: str | None,
    extra: str | None,
    out_dir: str | None,
    filter_options: FilterOptions,
    measure: str,
    method: str,
    test: str,
    cols: tuple[str, ...],
    label: str | None,
    add: float,
    to: str,
    drop00: bool | None,
    mods: str | None,
    by: str | None,
    by_tau2: str,
    tau2_ci: str,
    leave_one_out: bool,
    level: float,
    plot_dir: str | None,
    as_json: bool,
) -> None:
    """Meta-analyse INPUT.csv (one row per study).

    Column names follow R's metafor (ai, bi, ci, di, n1i, n2i, m1i, sd1i, xi,
    ni, ti, x1i, t1i, ri, yi, vi, sei); map your own with --col. Zero cells:
    studies with a zero cell get --add (0.5) added to all four cells of their
    2x2 table (RR, OR, RD), or to events and non-events when xi = 0 or xi = ni
    (PLO, PR), as metafor's escalc does by default (--to, --drop00 change
    that). With MH and PETO the correction only affects the per-study values
    (Q, plots); the pooled estimate uses the raw counts, as metafor does.
    Prints the pooled estimate, CI, prediction interval, tau² with its SE and
    CI, I², H² (with CIs), Q, back-transformed values, Egger's test; with
    --mods the meta-regression (coefficients, QM, QE, R²).

    --from-store builds INPUT from the results posted in the store instead:
    one row per trial for --outcome (cell arms vs control arms, combined when
    there are several), every choice listed with the record id, the trial's
    labels (cell type, MSC source, origin, route, dose) as columns usable in
    --mods and --by; studies.csv and meta.json are written to --out.
    """

    if not 0 < level < 100:
        raise AnalysisError(
            f"--level {level} is not between 0 and 100", hint="Use e.g. --level 95."
        )
    options: dict[str, Any] = {
        "method": method,
        "test": test,
        "add": add,
        "to": to,
        "drop00": drop00,
        "mods": mods,
        "by": by,
        "by_tau2": by_tau2,
        "tau2_ci": tau2_ci,
        "leave_one_out": leave_one_out,
        "level": level / 100,
    }
    if from_store:
        if input_csv is not None:
            raise AnalysisError("give either INPUT.csv or --from-store, not both")
        if not outcome or not out_dir:
            raise AnalysisError(
                "--from-store needs --outcome TEXT and --out DIR",
                hint="e.g. --from-store --outcome 'serious adverse events' --out sae/.",
            )

        filters = filter_options.filters()
        with ctx.open_store(read_only=True) as store:
            result = meta_from_store(
                store,
                outcome,
                measure,
                out_dir=out_dir,
                filters=filters,
                time_frame=time_frame,
                extra=extra,
                experimental_arm=experimental_arm,
                **options,
            )
        plot_dir = plot_dir or out_dir  # the forest and funnel plots go beside studies.csv
    else:
        if input_csv is None:
            raise AnalysisError(
                "give INPUT.csv (one row per study) or --from-store",
                hint="See `celltrials meta --help`.",
            )
        for name, val in (
            ("--outcome", outcome),
            ("--out", out_dir),
            ("--extra", extra),
            ("--time-frame", time_frame),
            ("--experimental-arm", experimental_arm),
        ):
            if val:
                raise AnalysisError(f"{name} only applies with --from-store")
        result = meta_analysis_csv(
            input_csv, measure, columns=_parse_cols(cols), label=label, **options
        )
    if plot_dir is not None:
        paths = write_plots(result, plot_dir)
    else:
        paths = []
    if as_json:
        echo_json(result)
        return
    _render(result, paths, quiet=ctx.quiet)


def _render(r: dict[str, Any], paths: list[Any], quiet: bool) -> None:

    con = Console()
    lvl = round(100 * r["level"])
    model = {
        "FE": "fixed-effect (inverse variance)",
        "MH": "fixed-effect, Mantel–Haenszel",
        "PETO": "fixed-effect, Peto",
    }.get(r["method"], f"random-effects ({r['method']})")
    con.print(
        f"[bold]{r['measure']}[/bold] meta-analysis, {model}, test {r['test']}, k = {r['k']} ({r['scale']})"
    )
    t = Table("", "estimate", "SE", f"{lvl}% CI", "prediction interval", "p")
    t.add_row(
        "pooled",
        _f(r["estimate"]),
        _f(r["se"]),
        f"{_f(r['ci_low'])} to {_f(r['ci_high'])}",
        f"{_f(r['pi_low'])} to {_f(r['pi_high'])}",
        _pv(r["p"]).removeprefix("= "),
    )
    bt = r["back_transformed"]
    if bt:
        t.add_row(
            "back-transformed",
            _f(bt["estimate"]),
            "",
            f"{_f(bt['ci_low'])} to {_f(bt['ci_high'])}",
            f"{_f(bt['pi_low'])} to {_f(bt['pi_high'])}",
            "",
        )
    con.print(t)
    tau = f"tau² = {_f(r['tau2'])}"
    if r.get("tau2_se") is not None:
        tau += f" (SE {_f(r['tau2_se'])})"
    if r.get("tau2_ci_low") is not None:
        tau += (
            f", {lvl}% CI {_f(r['tau2_ci_low'])} to {_f(r['tau2_ci_high'])} ({r['tau2_ci_method']})"
        )
    con.print(tau)
    i2 = f"I² = {_f(r['i2'], 2)}%"
    h2 = f"H² = {_f(r['h2'], 2)}"
    if r.get("i2_ci_low") is not None:
        i2 += f" ({_f(r['i2_ci_low'], 2)} to {_f(r['i2_ci_high'], 2)})"
        h2 += f" ({_f(r['h2_ci_low'], 2)} to {_f(r['h2_ci_high'], 2)})"
    con.print(f"{i2}, {h2}, Q({r['q_df']}) = {_f(r['q'])}, p {_pv(r['q_p'])}")
    if r.get("cmh") is not None:
        con.print(
            f"Cochran–Mantel–Haenszel test: CMH = {_f(r['cmh'])}, df = 1, p {_pv(r['cmh_p'])}"
        )
    if r.get("tarone") is not None:
        con.print(
            f"Tarone's test for heterogeneity: X² = {_f(r['tarone'])}, df = {r['tarone_df']}, p {_pv(r['tarone_p'])}"
        )
    if r["egger"]:
        e = r["egger"]
        con.print(
            f"Egger's test: intercept {_f(e['intercept'])} (SE {_f(e['se'])}), t({e['df']}) = {_f(e['t'], 3)}, p {_pv(e['p'])}"
        )
    if r["continuity_corrected"]:
        con.print(
            f"{r['add']:g} added to the cells of: " + esc(", ".join(r["continuity_corrected"]))
        )
    if r.get("dropped_00"):
        con.print(
            "Dropped (no events or only events in both groups): " + esc(", ".join(r["dropped_00"]))
        )
    st = Table("study", "yi", "vi", "weight %", *(["group"] if r["subgroups"] else []))
    for s in r["studies"]:
        st.add_row(
            esc(s["study"]),
            _f(s["yi"]),
            _f(s["vi"]),
            _f(s["weight"], 1),
            *([esc(s["group"])] if r["subgroups"] else []),
        )
    con.print(st)
    reg = r.get("meta_regression")
    if reg:
        stat = "t" if r["test"] == "knha" else "z"
        ct = Table(
            "coefficient",
            "estimate",
            "SE",
            stat,
            "p",
            f"{lvl}% CI",
            title=f"Meta-regression ({reg['model']}, k = {reg['k']})",
        )
        for c in reg["coefficients"]:
            ct.add_row(
                esc(c["name"]),
                _f(c["estimate"]),
                _f(c["se"]),
                _f(c["stat"]),
                _pv(c["p"]).removeprefix("= "),
                f"{_f(c['ci_low'])} to {_f(c['ci_high'])}",
            )
        con.print(ct)
        for col, cd in reg["coding"].items():
            if cd["type"] == "categorical":
                con.print(
                    esc(
                        f"{col}: categorical, reference level {cd['reference']!r}; dummies {', '.join(cd['dummies'])}"
                    )
                )
        if reg["qm"] is not None:
            qm = (
                f"F({reg['qm_df']}, {reg['qm_df2']})"
                if reg["qm_test"] == "F"
                else f"QM({reg['qm_df']})"
            )
            con.print(f"Test of moderators: {qm} = {_f(reg['qm'])}, p {_pv(reg['qm_p'])}")
        con.print(
            f"Residual heterogeneity: QE({reg['qe_df']}) = {_f(reg['qe'])}, p {_pv(reg['qe_p'])}; "
            f"tau² = {_f(reg['tau2'])}"
            + (f" (SE {_f(reg['tau2_se'])})" if reg["tau2_se"] is not None else "")
            + f", I² = {_f(reg['i2'], 2)}%, R² = {_f(reg['r2'], 2)}%"
        )
    if r["subgroups"]:
        sg = r["subgroups"]
        how = {"common": "one common tau²", "separate": "a separate tau² per subgroup"}.get(
            sg["tau2_model"], sg["tau2_model"]
        )
        gt = Table(
            "subgroup",
            "k",
            "estimate",
            f"{lvl}% CI",
            "tau²",
            "I² %",
            title=esc(f"Subgroups by {sg['by']} ({how})"),
        )
        for g in sg["groups"]:
            gt.add_row(
                esc(g["group"]),
                str(g["k"]),
                _f(g["estimate"]),
                f"{_f(g['ci_low'])} to {_f(g['ci_high'])}",
                _f(g["tau2"]),
                _f(g["i2"], 1),
            )
        con.print(gt)
        qb = (
            f"F({sg['q_between_df']}, {sg['q_between_df2']})"
            if sg["q_between_test"] == "F"
            else f"Q_between({sg['q_between_df']})"
        )
        con.print(
            f"Test for subgroup differences: {qb} = {_f(sg['q_between'])}, p {_pv(sg['q_between_p'])}"
        )
    if r["leave_one_out"]:
        lt = Table("omitted", "estimate", f"{lvl}% CI", "tau²", "I² %", title="Leave-one-out")
        for row in r["leave_one_out"]:
            lt.add_row(
                esc(row["omitted"]),
                _f(row["estimate"]),
                f"{_f(row['ci_low'])} to {_f(row['ci_high'])}",
                _f(row["tau2"]),
                _f(row["i2"], 1),
            )
        con.print(lt)
    fs = r.get("from_store")
    if fs:
        ct = Table(
            "trial",
            "experimental arm(s)",
            "control arm(s)",
            "used / why not",
            title=esc(
                f"Trials with posted results for {fs['outcome']!r} ({fs['trials_with_results']} of "
                f"{fs['trials_selected']} selected trials; {fs['rows']} rows)"
            ),
        )
        for c in fs["choices"]:
            groups = c.get("groups") or []
            exp = "; ".join(str(g["title"]) for g in groups if g.get("role") == "experimental")
            ctl = "; ".join(str(g["title"]) for g in groups if g.get("role") == "control")
            rec = str(c.get("record_id") or c.get("source") or "")
            trial = str(c.get("trial_id") or "") + (
                f" ({rec})" if rec and rec != c.get("trial_id") else ""
            )
            ct.add_row(
                esc(trial),
                esc(exp),
                esc(ctl),
                "used" if c.get("used") else esc(str(c.get("reason") or "")),
            )
        con.print(ct)
        con.print(
            esc(
                f"Outcome and time frame of every row, and why each arm was used: {fs['studies_csv']} "
                "and meta.json beside it (--json prints the same)."
            )
        )
    if paths and not quiet:
        con.print("Plots: " + esc(", ".join(str(p) for p in paths)))


@cli.command("meta-template", context_settings={"max_content_width": 100})
@click.argument("kind", type=click.Choice(["binary", "continuous"]))
@click.option(
    "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="CSV file to write."
)
def meta_template(kind: str, out_path: str) -> None:
    """Write the CSV template for values extracted from papers (for meta --from-store --extra).

    binary: study,trial_id,source,outcome,time_frame,experimental_arm,control_arm,ai,n1i,ci,n2i,notes.
    continuous: … m1i,sd1i,n1i,m2i,sd2i,n2i,notes. study and source (DOI, PMID) are required.
    """

    write_template(kind, out_path)
    click.echo(f"Wrote the {kind} template to {out_path}")


@cli.command(context_settings={"max_content_width": 100})
@click.argument("trial_id", metavar="ID", required=False)
@click.option(
    "--export",
    "export_path",
    default=None,
    type=click.Path(dir_okay=False),
    metavar="FILE.csv",
    help="Write the outcome rows of every stored trial with posted results to FILE.csv.",
)
@click.option(
    "--limit",
    default=25,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows shown per table.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print all result tables (or the export summary) as JSON.",
)
@pass_ctx
def results(
    ctx: Context, trial_id: str | None, export_path: str | None, limit: int, as_json: bool
) -> None:
    """Posted results of trial ID (outcomes, analyses, adverse events, flow), or --export them all.

    Reads the latest ClinicalTrials.gov record stored for the trial: API v2
    JSON, legacy XML or API v1 study fields (re-assembled where the v1
    flattening is unambiguous).
    """

    if (trial_id is None) == (export_path is None):
        raise AnalysisError(
            "give either a trial ID or --export FILE.csv",
            hint="e.g. `celltrials results NCT02210780` or `celltrials results --export outcomes.csv`.",
        )
    with ctx.open_store(read_only=True) as store:
        if export_path is not None:
            n = export_outcomes(store, export_path)
            if as_json:
                echo_json({"path": export_path, "rows": n})
            else:
                click.echo(f"Wrote {n} outcome rows to {export_path}")
            return
        assert trial_id is not None
        tables = results_for_store(store, trial_id)
    if as_json:
        echo_json(tables_to_records(tables))
        return
    _render_results(trial_id, tables, limit)


def _num_text(x: Any) -> str:

    if x is None or (not isinstance(x, str) and pd.isna(x)):
        return ""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _render_results(trial_id: str, tables: dict[str, Any], limit: int) -> None:

    con = Console()
    out = tables["outcomes"]
    if all(df.empty for df in tables.values()):
        con.print(
            f"{esc(trial_id)}: no results posted on ClinicalTrials.gov (in the stored record)."
        )
        return

    def more(df: Any) -> None:
        if len(df) > limit:
            con.print(f"[dim]… {len(df) - limit} more rows (use --limit or --json)[/dim]")

    con.print(f"[bold]{esc(trial_id)}: {out['outcome_index'].nunique()} outcome measures[/bold]")
    for _, om in out.groupby("outcome_index", sort=True):
        first = om.iloc[0]
        has_sub = bool(om["class_title"].notna().any() or om["category_title"].notna().any())
        t = Table(
            "group",
            *(["class / category"] if has_sub else []),
            "n",
            "value",
            "dispersion",
            title=esc(f"{first.outcome_title} [{str(first.outcome_type or '').lower()}]"),
            caption=esc(
                f"{first.param_type or ''} · {first.units or ''} · {first.time_frame or ''}"
            ),
            title_justify="left",
            caption_justify="left",
        )
        for r in om.head(limit).itertuples(index=False):
            sub = " / ".join(
                str(x) for x in (r.class_title, r.category_title) if isinstance(x, str) and x
            )
            disp = ""
            if r.dispersion_value == r.dispersion_value:  # not NaN
                disp = f"{r.dispersion_type}: {_num_text(r.dispersion_value)}"
            elif r.lower_limit == r.lower_limit or r.upper_limit == r.upper_limit:
                disp = (
                    f"{r.dispersion_type}: {_num_text(r.lower_limit)} to {_num_text(r.upper_limit)}"
                )
            t.add_row(
                esc(r.group_title or r.group_id or ""),
                *([esc(sub)] if has_sub else []),
                _num_text(r.n),
                esc(r.value_raw or ""),
                esc(disp),
            )
        con.print(t)
        more(om)
    if out["comment"].fillna("").str.startswith("value not attributable").any():
        con.print(
            "[dim]Some values are empty: this record is from an API v1 study-fields archive whose flattened "
            "lists do not say which measure they belong to (see celltrials.sources.ctgov_v1).[/dim]"
        )
    an = tables["analyses"]
    if not an.empty:
        t = Table(
            "outcome", "groups", "estimate", "CI", "p", "method", title="Statistical analyses"
        )
        for r in an.head(limit).itertuples(index=False):
            ci = f"{_num_text(r.ci_low)} to {_num_text(r.ci_high)}" if r.ci_low == r.ci_low else ""
            t.add_row(
                esc(r.outcome_title or ""),
                esc(r.group_ids),
                esc(f"{r.param_type or ''} {_num_text(r.param_value)}".strip()),
                ci,
                esc(r.p_value or ""),
                esc(r.statistical_method or ""),
            )
        con.print(t)
        more(an)
    ae = tables["adverse_events"]
    if not ae.empty:
        t = Table(
            "type", "term", "organ system", "group", "affected / at risk", title="Adverse events"
        )
        shown = ae.sort_values(
            ["event_type", "num_affected"], ascending=[False, False], na_position="last"
        )
        for r in shown.head(limit).itertuples(index=False):
            t.add_row(
                r.event_type,
                esc(r.term or ""),
                esc(r.organ_system or ""),
                esc(r.group_title or r.group_id or ""),
                f"{_num_text(r.num_affected)} / {_num_text(r.num_at_risk)}",
            )
        con.print(t)
        more(ae)
    eg = tables["event_groups"]
    if not eg.empty:
        t = Table(
            "group",
            "serious: affected / at risk",
            "deaths: affected / at risk",
            "other: affected / at risk",
            title="Adverse-event groups (totals)",
        )
        for r in eg.head(limit).itertuples(index=False):
            t.add_row(
                esc(r.group_title or r.group_id or ""),
                f"{_num_text(r.serious_num_affected)} / {_num_text(r.serious_num_at_risk)}",
                f"{_num_text(r.deaths_num_affected)} / {_num_text(r.deaths_num_at_risk)}",
                f"{_num_text(r.other_num_affected)} / {_num_text(r.other_num_at_risk)}",
            )
        con.print(t)
        more(eg)
    pf = tables["participant_flow"]
    if not pf.empty:
        t = Table("period", "milestone / reason", "group", "participants", title="Participant flow")
        for r in pf.head(limit).itertuples(index=False):
            t.add_row(
                esc(r.period or ""),
                esc(r.type or ""),
                esc(r.group_title or r.group_id or ""),
                _num_text(r.num_subjects),
            )
        con.print(t)
        more(pf)
    con.print(
        f"[dim]{len(tables['baseline'])} baseline rows not shown; use --json for all tables.[/dim]"
    )
