"""Forest and funnel plots for a :func:`celltrials.analysis.meta.meta_analysis` result.

Both plots are drawn from the result dict alone (nothing is recomputed), with
matplotlib's object API (no pyplot state) and the Okabe–Ito colour-blind-safe
palette. Ratio measures (RR, OR, ROM, IRR) are drawn on a log axis labelled in
natural units; PLO, PFT, ZCOR, IRLN on their natural scale. With subgroups
the forest plot has one block per subgroup (studies, subgroup diamond,
heterogeneity) and the test for subgroup differences in its footer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celltrials.analysis.meta import NATURAL_LABELS, RATIO_MEASURES, back_transform

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BLUE = "#0072B2"  # Okabe–Ito
VERMILLION = "#D55E00"
GREY = "#666666"
LIGHT = "#E8E8E8"
_RATIO_TICKS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def _fmt(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.3g}"


def _p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


def _diamond(
    ax: Any, y: float, est: float, lo: float, hi: float, color: str, h: float = 0.38
) -> None:
    from matplotlib.patches import Polygon  # noqa: PLC0415 - heavy optional dependency, imported on first use

    ax.add_patch(
        Polygon([(lo, y), (est, y + h), (hi, y), (est, y - h)], closed=True, color=color, zorder=3)
    )


def forest_plot(result: dict[str, Any]) -> Figure:
    """Studies, then the pooled diamond; with subgroups, one block per subgroup (its
    studies, a subgroup diamond and its heterogeneity) before the overall diamond."""
    from matplotlib.figure import Figure  # noqa: PLC0415 - heavy optional dependency, imported on first use
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator  # noqa: PLC0415 - heavy optional dependency, imported on first use

    measure = result["measure"]
    studies = result["studies"]
    ratio = measure in RATIO_MEASURES
    pft_n = result.get("pft_harmonic_n")

    def nat(x: float) -> float:
        return back_transform(measure, x, pft_n)

    sub = result.get("subgroups")
    # rows from the top: ("study", s) | ("header", name) | ("group", g) | ("gap", None)
    rows: list[tuple[str, Any]] = []
    if sub:
        for g in sub["groups"]:
            rows.append(("header", g["group"]))
            rows.extend(("study", s) for s in studies if s.get("group") == g["group"])
            rows.append(("group", g))
            rows.append(("gap", None))
    else:
        rows.extend(("study", s) for s in studies)
    n_rows = len(rows)
    fig = Figure(figsize=(8.0, 0.32 * (n_rows + 3) + 1.3))
    ax = fig.add_axes((0.30, 0.12, 0.40, 0.80))
    ax.set_ylim(-2.2, n_rows + 0.8)
    trans = ax.get_yaxis_transform()  # x in axes fraction, y in data units
    level = round(100 * result["level"])
    random = result["method"] not in ("FE", "MH", "PETO")

    max_w = max((s["weight"] for s in studies), default=1.0) or 1.0
    for i, (kind, item) in enumerate(rows):
        y = n_rows - i
        if kind == "header":
            ax.text(
                -0.04,
                y,
                str(item),
                transform=trans,
                ha="right",
                va="center",
                fontsize=9,
                fontweight="bold",
            )
        elif kind == "study":
            s = item
            ax.text(
                -0.04,
                y,
                ("  " if sub else "") + s["study"],
                transform=trans,
                ha="right",
                va="center",
                fontsize=9,
            )
            if s["yi"] is None:
                ax.text(
                    1.04,
                    y,
                    "not estimable (excluded)",
                    transform=trans,
                    ha="left",
                    va="center",
                    fontsize=8,
                    color=GREY,
                )
                continue
            lo, hi, est = nat(s["ci_low"]), nat(s["ci_high"]), nat(s["yi"])
            ax.plot([lo, hi], [y, y], color="black", lw=1.0, solid_capstyle="butt", zorder=2)
            size = 4 + 9 * math.sqrt(s["weight"] / max_w)
            ax.plot([est], [y], marker="s", ms=size, color=BLUE, mec=BLUE, zorder=3)
            ax.text(
                1.04,
                y,
                f"{_fmt(est)} [{_fmt(lo)}, {_fmt(hi)}]",
                transform=trans,
                ha="left",
                va="center",
                fontsize=9,
            )
            ax.text(
                1.70, y, f"{s['weight']:.1f}%", transform=trans, ha="right", va="center", fontsize=9
            )
        elif kind == "group":
            g = item
            est, lo, hi = nat(g["estimate"]), nat(g["ci_low"]), nat(g["ci_high"])
            _diamond(ax, y, est, lo, hi, BLUE, 0.3)
            het = f"k = {g['k']}; I² = {g['i2']:.1f}%" + (
                f"; τ² = {g['tau2']:.3f}" if random else ""
            )
            ax.text(
                -0.04,
                y,
                f"Subgroup ({het})",
                transform=trans,
                ha="right",
                va="center",
                fontsize=8,
                color=GREY,
            )
            ax.text(
                1.04,
                y,
                f"{_fmt(est)} [{_fmt(lo)}, {_fmt(hi)}]",
                transform=trans,
                ha="left",
                va="center",
                fontsize=9,
                style="italic",
            )

    # pooled diamond
    yd = -1.0
    est, lo, hi = nat(result["estimate"]), nat(result["ci_low"]), nat(result["ci_high"])
    _diamond(ax, yd, est, lo, hi, VERMILLION)
    model = {
        "FE": "Fixed-effect model",
        "MH": "Mantel–Haenszel (fixed effect)",
        "PETO": "Peto (fixed effect)",
    }.get(result["method"], f"Random-effects model ({result['method']})")
    if result["test"] == "knha":
        model += ", Knapp–Hartung"
    ax.text(
        -0.04, yd, model, transform=trans, ha="right", va="center", fontsize=9, fontweight="bold"
    )
    ax.text(
        1.04,
        yd,
        f"{_fmt(est)} [{_fmt(lo)}, {_fmt(hi)}]",
        transform=trans,
        ha="left",
        va="center",
        fontsize=9,
        fontweight="bold",
    )
    ax.text(
        1.70, yd, "100%", transform=trans, ha="right", va="center", fontsize=9, fontweight="bold"
    )
    if random:
        plo, phi = nat(result["pi_low"]), nat(result["pi_high"])
        ax.plot([plo, phi], [yd - 0.75, yd - 0.75], color=VERMILLION, lw=1.2, zorder=2)
        ax.text(
            -0.04,
            yd - 0.75,
            "Prediction interval",
            transform=trans,
            ha="right",
            va="center",
            fontsize=8,
            color=GREY,
        )
        ax.text(
            1.04,
            yd - 0.75,
            f"[{_fmt(plo)}, {_fmt(phi)}]",
            transform=trans,
            ha="left",
            va="center",
            fontsize=8,
            color=GREY,
        )
    ax.axvline(est, color=VERMILLION, lw=0.8, ls=":", zorder=1)

    # headers
    name = NATURAL_LABELS.get(measure, measure)
    ax.text(
        -0.04,
        n_rows + 0.8,
        "Study",
        transform=trans,
        ha="right",
        va="bottom",
        fontsize=9,
        fontweight="bold",
    )
    ax.text(
        1.04,
        n_rows + 0.8,
        f"{name} [{level}% CI]",
        transform=trans,
        ha="left",
        va="bottom",
        fontsize=9,
        fontweight="bold",
    )
    ax.text(
        1.70,
        n_rows + 0.8,
        "Weight",
        transform=trans,
        ha="right",
        va="bottom",
        fontsize=9,
        fontweight="bold",
    )

    if ratio:
        ax.set_xscale("log")
        ax.axvline(1.0, color=GREY, lw=0.8, ls="--", zorder=1)
        xmin, xmax = ax.get_xlim()
        decades = math.log10(xmax / xmin) if xmin > 0 else 0.0
        # fewer ticks on a wide axis so the labels do not run into each other
        candidates = (
            _RATIO_TICKS
            if decades <= 2.2
            else (0.01, 0.1, 0.5, 1, 2, 10, 100)
            if decades <= 3.5
            else (0.001, 0.01, 0.1, 1, 10, 100, 1000)
        )
        ticks = [t for t in candidates if xmin <= t <= xmax]
        if len(ticks) >= 2:
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif measure in ("RD", "MD", "SMD", "SMDH", "ZCOR", "GEN"):
        ax.axvline(0.0, color=GREY, lw=0.8, ls="--", zorder=1)
    title = (
        f"{name} (log scale)"
        if ratio
        else NATURAL_LABELS.get(measure, result["scale"].capitalize())
    )
    if measure == "PR":
        title = "Proportion"
    ax.set_xlabel(title, fontsize=9)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="x", labelsize=8)
    foot = (
        f"Heterogeneity: τ² = {result['tau2']:.3f}; I² = {result['i2']:.1f}%; "
        f"Q = {result['q']:.2f}, df = {result['q_df']}"
        + (f", {_p(result['q_p'])}" if result["q_p"] is not None else "")
    )
    if sub:
        how = {"common": "common τ²", "separate": "separate τ² per subgroup"}.get(
            sub["tau2_model"], "fixed effect"
        )
        test = "F" if sub.get("q_between_test") == "F" else "Q"
        foot += (
            f"\nSubgroup differences ({how}): {test} = {sub['q_between']:.2f}, df = {sub['q_between_df']}"
            + (f", {_p(sub['q_between_p'])}" if sub["q_between_p"] is not None else "")
        )
    ax.annotate(
        foot,
        xy=(0.5, 0.0),
        xycoords="axes fraction",
        xytext=(0, -40),
        textcoords="offset points",
        ha="center",
        va="top",
        fontsize=8,
        color=GREY,
    )
    return fig


def funnel_plot(result: dict[str, Any]) -> Figure:
    from matplotlib.figure import Figure  # noqa: PLC0415 - heavy optional dependency, imported on first use

    studies = [s for s in result["studies"] if s["yi"] is not None]
    yi = [s["yi"] for s in studies]
    se = [math.sqrt(s["vi"]) for s in studies]
    est = result["estimate"]
    z = 1.959963984540054
    top = max(se) * 1.08
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.fill(
        [est - z * top, est, est + z * top],
        [top, 0, top],
        facecolor=LIGHT,
        edgecolor=GREY,
        lw=0.8,
        ls="--",
        zorder=0,
        label="Pseudo 95% CI region",
    )
    ax.axvline(est, color=VERMILLION, lw=1.0, zorder=1, label="Pooled estimate")
    ax.scatter(
        yi, se, s=28, color=BLUE, edgecolor="white", linewidth=0.5, zorder=3, label="Studies"
    )
    ax.set_ylim(top, 0)
    ax.set_xlabel(result["scale"].capitalize(), fontsize=9)
    ax.set_ylabel("Standard error", fontsize=9)
    ax.tick_params(labelsize=8)
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    egger = result.get("egger")
    if egger:
        ax.set_title(
            f"Egger's test: intercept {egger['intercept']:.2f}, {_p(egger['p'])}", fontsize=9
        )
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def write_plots(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write forest.svg/.png and funnel.svg/.png into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in (("forest", forest_plot(result)), ("funnel", funnel_plot(result))):
        for ext in ("svg", "png"):
            path = out / f"{name}.{ext}"
            fig.savefig(
                path,
                dpi=200,
                bbox_inches="tight",
                metadata={"Date": None} if ext == "svg" else None,
            )
            written.append(path)
    return written
