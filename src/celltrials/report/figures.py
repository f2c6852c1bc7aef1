"""Report charts: one small chart description, drawn twice.

A :class:`Chart` holds exactly the numbers of a section table (and the count
id of every bar or cell, so the HTML can list the trials behind it). It is
drawn as a Plotly figure (a plain JSON-able dict, for the interactive HTML)
and as a Matplotlib figure (SVG + PNG for publication), with one colour-blind
safe palette (Okabe–Ito) and sequential ``viridis`` for heatmaps.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Okabe & Ito (2008) colour-blind safe palette
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
GREY = "#999999"
COLORS: dict[str, str] = {
    "immune": "#0072B2",
    "stem_stromal": "#E69F00",
    "other": "#009E73",
    "unassigned": GREY,
    "industry": "#D55E00",
    "academic_other": "#56B4E9",
    "government": "#009E73",
    "unknown": GREY,
    "registered": "#56B4E9",
    "reached_phase2": "#0072B2",
    "reached_phase3": "#009E73",
    "approved_products": "#D55E00",
    "cells": "#0072B2",
    "extracellular_vesicles": "#E69F00",
    "secretome": "#009E73",
    "gene_modified": "#CC79A7",
    "composite": "#D55E00",
}
#: sequential light-to-dark blue (ColorBrewer Blues), readable for colour-blind readers
HEAT_SCALE: list[tuple[float, str]] = [
    (0.0, "#deebf7"),
    (0.25, "#9ecae1"),
    (0.5, "#4292c6"),
    (0.75, "#2171b5"),
    (1.0, "#08306b"),
]
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


@dataclass
class Series:
    name: str
    values: list[int]
    count_ids: list[str | None]
    color: str = OKABE_ITO[0]
    #: per point: True draws the bar hatched (e.g. a partial year)
    hatched: list[bool] = field(default_factory=list)
    #: per point colours (overrides ``color``), e.g. one colour per sponsor class
    point_colors: list[str] = field(default_factory=list)
    #: per point: True draws the bar faded and cross-hatched (e.g. a year the data do not cover)
    faded: list[bool] = field(default_factory=list)
    #: per point: a line added to the hover text (e.g. why the bar is marked)
    notes: list[str] = field(default_factory=list)


@dataclass
class Chart:
    id: str
    title: str
    kind: str  # "hbar" | "bar" | "stacked" | "grouped" | "hstacked" | "heatmap"
    categories: list[str]
    series: list[Series] = field(default_factory=list)
    x_title: str = ""
    y_title: str = ""
    note: str = ""
    # heatmap only: rows (y) × columns (categories)
    rows: list[str] = field(default_factory=list)
    z: list[list[int]] = field(default_factory=list)
    z_ids: list[list[str | None]] = field(default_factory=list)
    #: value axis on a log scale (e.g. a funnel from thousands of trials to a few products)
    log_scale: bool = False
    #: vertical dashed lines at category positions (``x``: index, fractions between), labelled ``text``
    vlines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        if self.kind == "heatmap":
            return not any(v for row in self.z for v in row)
        return not any(v for s in self.series for v in s.values)


def palette(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


# --------------------------------------------------------------------- plotly
def to_plotly(chart: Chart) -> dict[str, Any]:
    """A Plotly figure as a plain dict (``data`` + ``layout``); every point's
    ``customdata`` is its count id (the key of its trial list)."""
    layout: dict[str, Any] = {
        "font": {"family": FONT, "size": 13, "color": "#222"},
        "margin": {"l": 10, "r": 20, "t": 10, "b": 10},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "hoverlabel": {"font": {"family": FONT}},
        "legend": {
            "orientation": "h",
            "y": 1.0,
            "x": 0,
            "yanchor": "bottom",
            "traceorder": "normal",
        },
        "xaxis": {
            "automargin": True,
            "title": {"text": chart.x_title},
            "gridcolor": "#e5e5e5",
            "zeroline": False,
        },
        "yaxis": {
            "automargin": True,
            "title": {"text": chart.y_title},
            "gridcolor": "#e5e5e5",
            "zeroline": False,
        },
    }
    data: list[dict[str, Any]] = []
    n = len(chart.categories)
    if chart.kind == "heatmap":
        text = [[str(v) if v else "" for v in row] for row in chart.z]
        z = [[v if v else None for v in row] for row in chart.z]  # empty cells stay blank
        data.append(
            {
                "type": "heatmap",
                "x": chart.categories,
                "y": chart.rows,
                "z": z,
                "hoverongaps": False,
                "customdata": chart.z_ids,
                "text": text,
                "texttemplate": "%{text}",
                "colorscale": [list(x) for x in HEAT_SCALE],
                "zmin": 0,
                "xgap": 1,
                "ygap": 1,
                "hovertemplate": "%{y} × %{x}: %{z} trials<br>click to list them<extra></extra>",
                "colorbar": {"title": {"text": "trials"}, "thickness": 12},
            }
        )
        layout["xaxis"].update({"tickangle": -35, "gridcolor": "rgba(0,0,0,0)", "type": "category"})
        layout["yaxis"].update(
            {"autorange": "reversed", "gridcolor": "rgba(0,0,0,0)", "type": "category"}
        )
        layout["height"] = max(320, 34 * len(chart.rows) + 170)
        layout["margin"]["t"] = 34  # room for the mode bar above the cells
        layout["margin"]["l"] = 110  # the first rotated column label reaches left of the cells
        return {"data": data, "layout": layout}
    horizontal = chart.kind in ("hbar", "hstacked")
    for s in chart.series:
        trace: dict[str, Any] = {
            "type": "bar",
            "name": s.name,
            "customdata": s.count_ids,
            "marker": {"color": s.point_colors or s.color, "line": {"width": 0}},
            "hovertemplate": ("%{y}" if horizontal else "%{x}")
            + f"{' · ' + s.name if len(chart.series) > 1 else ''}"
            ": %{" + ("x" if horizontal else "y") + "} trials<br>click to list them<extra></extra>",
        }
        faded = s.faded or [False] * n
        if (s.hatched and any(s.hatched)) or any(faded):
            hatched = s.hatched or [False] * n
            trace["marker"]["pattern"] = {
                "shape": [
                    "x" if f else "/" if h else "" for h, f in zip(hatched, faded, strict=True)
                ],
                "solidity": 0.45,
            }
        if any(faded):
            trace["marker"]["opacity"] = [0.4 if f else 1.0 for f in faded]
        if s.notes and any(s.notes):
            trace["hovertext"] = s.notes
            trace["hovertemplate"] = trace["hovertemplate"].replace(
                "<br>click", "%{hovertext}<br>click"
            )
        if horizontal:
            trace.update({"orientation": "h", "y": chart.categories, "x": s.values})
        else:
            trace.update({"x": chart.categories, "y": s.values})
        if len(chart.series) == 1:
            trace["text"] = [str(v) if v else "" for v in s.values]
            trace["textposition"] = "outside"
            trace["cliponaxis"] = False
            # a lone series that is a category (one family) keeps its legend entry
            trace["showlegend"] = s.name != "trials"
        data.append(trace)
    if chart.kind in ("stacked", "hstacked"):
        layout["barmode"] = "stack"
    elif chart.kind == "grouped":
        layout["barmode"] = "group"
    if horizontal:
        layout["yaxis"].update(
            {"autorange": "reversed", "type": "category", "gridcolor": "rgba(0,0,0,0)"}
        )
        layout["height"] = max(150, 26 * n + 90)
        layout["bargap"] = 0.25 if n > 3 else 0.45
    else:
        layout["xaxis"].update({"type": "category", "gridcolor": "rgba(0,0,0,0)"})
        layout["height"] = 420
    if len(chart.series) > 1:
        layout["margin"]["t"] = 40
    # value axis from 0 with headroom for the tallest (stacked) bar and its label
    if chart.kind in ("stacked", "hstacked"):
        top = max((sum(v) for v in zip(*(s.values for s in chart.series), strict=True)), default=0)
    else:
        top = max((v for s in chart.series for v in s.values), default=0)
    if chart.vlines and not horizontal:
        line = {"color": "#444444", "width": 1.2, "dash": "dash"}
        layout["shapes"] = [
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": v["x"],
                "x1": v["x"],
                "y0": 0,
                "y1": 1,
                "line": line,
            }
            for v in chart.vlines
        ]
        layout["annotations"] = [
            {
                "xref": "x",
                "yref": "paper",
                "x": v["x"],
                "y": 0.99,
                "xanchor": "right",
                "yanchor": "top",
                "textangle": -90,
                "showarrow": False,
                "text": v["text"],
                "font": {"size": 11, "color": "#333333"},
                "bgcolor": "rgba(255,255,255,0.75)",
            }
            for v in chart.vlines
        ]
    if chart.log_scale:
        hi = math.log10(max(top, 1)) + 0.15
        layout["xaxis" if horizontal else "yaxis"].update(
            {
                "type": "log",
                "range": [-0.15, hi],
                "tickvals": [10**k for k in range(int(hi) + 1)],
                "ticktext": [f"{10**k:,}" for k in range(int(hi) + 1)],
            }
        )
    else:
        layout["xaxis" if horizontal else "yaxis"]["range"] = [
            0,
            max(1.0, top * (1.12 if len(chart.series) == 1 else 1.05)),
        ]
    return {"data": data, "layout": layout}


# ----------------------------------------------------------------- matplotlib
def _mpl() -> Any:
    import matplotlib  # noqa: PLC0415 - heavy optional dependency, imported on first use

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415 - heavy optional dependency, imported on first use

    plt.rcParams.update(
        {
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.titlesize": 11,
            "axes.titleweight": "bold",
            "axes.labelsize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.edgecolor": "#444444",
            "xtick.color": "#333333",
            "ytick.color": "#333333",
            "legend.frameon": False,
            "svg.fonttype": "none",
            "svg.hashsalt": "celltrials",
            "hatch.color": "white",
            "hatch.linewidth": 1.0,
        }
    )
    return plt


def _wrap(text: str, width: int = 34) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def prepare_matplotlib() -> None:
    """Import and configure Matplotlib (the slow part of a drawing worker's start)."""
    _mpl()


def draw_matplotlib(chart: Chart, out_dir: Path, *, dpi: int = 200) -> list[Path]:
    """Write ``<id>.svg`` and ``<id>.png`` into ``out_dir``; returns the paths."""
    plt = _mpl()
    n = len(chart.categories)
    if chart.kind == "heatmap":
        w = max(6.0, 0.55 * n + 3.0)
        h = max(3.0, 0.36 * len(chart.rows) + 2.2)
    elif chart.kind in ("hbar", "hstacked"):
        w, h = 7.0, max(2.4, 0.28 * n + 1.3)
    else:
        w, h = max(6.5, min(12.0, 0.32 * n + 3.0)), 4.0
    fig, ax = plt.subplots(figsize=(w, h), layout="constrained")
    try:
        _draw(ax, chart, plt)
        ax.set_title(chart.title, loc="left")
        if chart.note:
            # wrapped to the figure's width; the figure grows to hold it
            lines = [
                ln
                for para in chart.note.split("\n")
                for ln in textwrap.wrap(para, max(40, int(w * 17)))
            ]
            extra = 0.13 * len(lines) + 0.06
            fig.set_size_inches(w, h + extra)
            fig.text(
                0.005,
                0.005,
                "\n".join(lines),
                fontsize=7.5,
                color="#555555",
                ha="left",
                va="bottom",
                transform=fig.transFigure,
                linespacing=1.25,
            )
            engine: Any = fig.get_layout_engine()
            engine.set(rect=(0, extra / (h + extra), 1, 1 - extra / (h + extra)))
        # lay out once, then freeze it for both files (constrained layout would rerun per
        # save). No engine at all, not "none": savefig draws the figure once more before
        # drawing it into the file while any engine (even a placeholder) is set
        # (the engine alone: draw_without_rendering also drew every artist, for nothing)
        engine = fig.get_layout_engine()
        engine.execute(fig)
        fig.set_layout_engine(None)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / f"{chart.id}.svg", out_dir / f"{chart.id}.png"]
        fig.savefig(paths[0], metadata={"Date": None})
        fig.savefig(paths[1], dpi=dpi, pil_kwargs={"compress_level": 1})  # lossless; fast to write
    finally:
        plt.close(fig)
    return paths


def _draw(ax: Any, chart: Chart, plt: Any) -> None:

    cats = [_wrap(c) for c in chart.categories]
    n = len(cats)
    if chart.kind == "heatmap":
        z = np.array(chart.z, dtype=float) if chart.z else np.zeros((0, n))
        masked = np.ma.masked_where(z == 0, z)
        from matplotlib.colors import LinearSegmentedColormap  # noqa: PLC0415 - heavy optional dependency, imported on first use

        stops: Any = list(HEAT_SCALE)
        cmap = LinearSegmentedColormap.from_list("heat", stops).with_extremes(bad="#f6f6f6")
        im = ax.imshow(
            masked,
            cmap=cmap,
            aspect="auto",
            vmin=0,
            vmax=max(1.0, float(z.max()) if z.size else 1.0),
        )
        ax.set_xticks(range(n), cats, rotation=40, ha="right")
        ax.set_yticks(range(len(chart.rows)), [_wrap(r, 28) for r in chart.rows])
        ax.tick_params(length=0)
        for sp in ax.spines.values():
            sp.set_visible(False)
        vmax = float(z.max()) if z.size else 1.0
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                if z[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(z[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if z[i, j] > 0.45 * vmax else "#111111",
                    )
        cb = plt.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
        cb.set_label("trials")
        cb.outline.set_visible(False)
        ax.set_xlabel(chart.x_title)
        ax.set_ylabel(chart.y_title)
        return
    horizontal = chart.kind in ("hbar", "hstacked")
    pos = np.arange(n)
    k = len(chart.series)
    left = np.zeros(n)
    width = 0.8 / k if chart.kind == "grouped" else 0.75
    for i, s in enumerate(chart.series):
        vals = np.array(s.values, dtype=float)
        hatches = [("///" if h else "") for h in s.hatched] if s.hatched else [""] * n
        faded = s.faded or [False] * n
        hatches = ["xxx" if f else h for h, f in zip(hatches, faded, strict=True)]
        offs = pos + (i - (k - 1) / 2) * width if chart.kind == "grouped" else pos
        if horizontal:
            bars = ax.barh(
                offs,
                vals,
                height=width,
                left=left if chart.kind == "hstacked" else None,
                color=s.point_colors or s.color,
                label=s.name,
                edgecolor="white",
                linewidth=0.4,
            )
        else:
            bars = ax.bar(
                offs,
                vals,
                width=width,
                bottom=left if chart.kind == "stacked" else None,
                color=s.point_colors or s.color,
                label=s.name,
                edgecolor="white",
                linewidth=0.4,
            )
        for b, hatch, fade in zip(bars, hatches, faded, strict=False):
            if hatch:
                b.set_hatch(hatch)
            if fade:
                b.set_alpha(0.4)
        if k == 1:
            labels = [f"{int(v)}" if v else "" for v in vals]
            ax.bar_label(bars, labels=labels, padding=2, fontsize=7.5, color="#333333")
        if chart.kind in ("stacked", "hstacked"):
            left = left + vals
    if chart.log_scale:
        from matplotlib.ticker import FuncFormatter  # noqa: PLC0415 - heavy optional dependency, imported on first use

        (ax.set_xscale if horizontal else ax.set_yscale)("log", nonpositive="clip")
        (ax.xaxis if horizontal else ax.yaxis).set_major_formatter(
            FuncFormatter(lambda v, _: f"{v:g}")
        )
    if horizontal:
        ax.set_yticks(pos, cats)
        ax.invert_yaxis()
        ax.tick_params(axis="y", length=0)
        ax.xaxis.grid(True, color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlabel(chart.x_title or "trials")
        ax.set_ylabel(chart.y_title)
        ax.margins(x=0.08)
    else:
        step = max(1, int(np.ceil(n / 30)))
        ax.set_xticks(
            pos[::step],
            cats[::step],
            rotation=45 if n > 8 or max((len(c) for c in cats), default=0) > 10 else 0,
            ha="right" if n > 8 or max((len(c) for c in cats), default=0) > 10 else "center",
        )
        ax.yaxis.grid(True, color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_ylabel(chart.y_title or "trials")
        ax.set_xlabel(chart.x_title)
        ax.margins(y=0.1)
    marked = [(any(s.hatched), any(s.faded)) for s in chart.series]
    if chart.vlines and not horizontal:
        from matplotlib.transforms import blended_transform_factory  # noqa: PLC0415 - heavy optional dependency, imported on first use

        tr = blended_transform_factory(ax.transData, ax.transAxes)
        for v in chart.vlines:
            ax.axvline(v["x"], color="#444444", linestyle="--", linewidth=0.9)
            ax.text(
                v["x"] - 0.08,
                0.98,
                v["text"],
                transform=tr,
                rotation=90,
                ha="right",
                va="top",
                fontsize=7,
                color="#333333",
                bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1},
            )
    if k > 1 or (k == 1 and chart.series[0].name != "trials") or any(h or f for h, f in marked):
        from matplotlib.patches import Patch  # noqa: PLC0415 - heavy optional dependency, imported on first use

        handles, labels = ax.get_legend_handles_labels()
        if any(h for h, _ in marked):
            handles.append(Patch(facecolor="#999999", hatch="///", edgecolor="white", linewidth=0))
            labels.append("year covered in part")
        if any(f for _, f in marked):
            handles.append(
                Patch(facecolor="#999999", hatch="xxx", edgecolor="white", alpha=0.4, linewidth=0)
            )
            labels.append("year not covered by the data")
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
