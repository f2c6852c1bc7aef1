"""The report page: ``report.html`` (Jinja2, autoescaped) and its data.

The page embeds plotly.js inline and ``<script id="report-data"
type="application/json">`` with the counts, the charts and — up to
:data:`INLINE_LISTS_MAX_BYTES` — the trial table and the trial lists behind
the counts; above that size those go to :data:`LISTS_FILE` beside the page.
Registry text is escaped by the template's autoescaping; the JSON is made
safe inside a ``<script>`` element by :func:`json_for_script`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

import celltrials
from celltrials.analysis import landscape as L
from celltrials.report.figures import Chart, to_plotly
from celltrials.report.sections import Counts, fmt_count

__all__ = [
    "INLINE_LISTS_MAX_BYTES",
    "LISTS_FILE",
    "encode_lists",
    "json_for_script",
    "place_lists",
    "read_lists_file",
    "render_html",
    "trial_rows",
    "write_html",
]


def _json_bytes_for_script(obj: Any) -> bytes:
    b = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    return b.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def json_for_script(obj: Any) -> str:
    """JSON safe inside a <script> element."""
    return _json_bytes_for_script(obj).decode()


def encode_lists(
    lists: dict[str, list[str]], trial_ids: pd.Index, selection: L.Selection | None = None
) -> dict[str, np.ndarray]:
    """Trial lists as delta-encoded positions in the page's (sorted) trial table.
    ``selection``: the trials of ``trial_ids`` (same order) as a
    :class:`~celltrials.analysis.landscape.Selection`; a list counted in it
    (:class:`~celltrials.analysis.landscape.TrialIds`) brings its rows, the
    others are looked up by id."""
    if selection is not None and not selection.same_ids(trial_ids):
        selection = None
    keys = list(lists)
    known: dict[str, np.ndarray] = {}
    if selection is not None:
        for k in keys:
            rows = L.listed_rows(lists[k], selection)
            if rows is not None:
                known[k] = rows
    rest = [k for k in keys if k not in known]
    lengths = np.fromiter((len(lists[k]) for k in rest), dtype=np.int64, count=len(rest))
    flat = [t for k in rest for t in lists[k]]
    try:  # Arrow's hash lookup: about twice pandas' on millions of ids
        pos = (
            pc.index_in(
                pa.array(flat, type=pa.string()),
                value_set=selection.arrow
                if selection is not None
                else pa.array(trial_ids.to_numpy(dtype=object), type=pa.string()),
            )
            .fill_null(-1)
            .to_numpy()
            .astype(np.int64)
        )
    except (pa.ArrowException, TypeError):  # ids that are not text
        pos = (
            trial_ids.get_indexer(pd.Index(flat, dtype=object))
            if flat
            else np.zeros(0, dtype=np.int64)
        )
    looked_up: dict[str, np.ndarray] = {}
    start = 0
    for k, n in zip(rest, lengths.tolist(), strict=True):
        looked_up[k] = pos[start : start + n]
        start += n
    out: dict[str, np.ndarray] = {}
    for k in keys:
        idx = known[k] if k in known else looked_up[k]
        idx = np.sort(idx[idx >= 0])
        out[k] = np.diff(idx, prepend=0) if idx.size else np.zeros(0, dtype=np.int64)
    return out


#: the trial table and the trial lists behind the counts stay inside
#: report.html up to this size; above it they go to LISTS_FILE beside it,
#: loaded by the page on the first click (a <script> element, so it works
#: offline from the folder) — report.html stays small at any number of trials
INLINE_LISTS_MAX_BYTES = 8 << 20
LISTS_FILE = "report-lists.js"


def place_lists(out: Path, page_data: dict[str, Any], lists: dict[str, Any]) -> None:
    data = _json_bytes_for_script(lists)  # UTF-8: 1 to 4 bytes a character
    side = out / LISTS_FILE
    if len(data) <= INLINE_LISTS_MAX_BYTES or (
        len(data) <= 4 * INLINE_LISTS_MAX_BYTES and len(data.decode()) <= INLINE_LISTS_MAX_BYTES
    ):
        page_data.update(lists)
        side.unlink(missing_ok=True)
        return
    page_data["lists_src"] = LISTS_FILE
    tmp = side.with_name(side.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(b"window.celltrialsLists(")
        fh.write(data)
        fh.write(b");\n")
    tmp.replace(side)


def read_lists_file(path: Path) -> dict[str, Any]:
    """The ``trials`` and ``lists`` of a report's side file (for checks and tests)."""
    text = path.read_text(encoding="utf-8").strip()
    prefix, suffix = "window.celltrialsLists(", ");"
    if not (text.startswith(prefix) and text.endswith(suffix)):
        raise ValueError(f"{path} is not a celltrials report lists file")
    return dict(orjson.loads(text[len(prefix) : -len(suffix)]))


def _per_value(values: pd.Series, fn: Any) -> list[Any]:
    """``fn`` of every distinct value (missing ones too), spread back over
    ``values``: one call per distinct status, phase or date, not per trial."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    done = np.empty(len(uniques), dtype=object)
    done[:] = fn(pd.Series(np.asarray(uniques, dtype=object), dtype=object))
    return list(done[codes].tolist())


def trial_rows(tl: pd.DataFrame) -> list[tuple[str, ...]]:
    """The page's trial table (:func:`celltrials.analysis.landscape.trial_list`):
    id, title, link, registry, status, phase, start date."""

    def labels(s: pd.Series) -> list[str]:
        return [L.label(x) for x in s.tolist()]

    def days(s: pd.Series) -> list[str]:
        return list(pd.to_datetime(s, errors="coerce").dt.strftime("%Y-%m-%d").fillna("").tolist())

    return list(
        zip(
            tl["trial_id"].astype(str).tolist(),
            tl["title"].fillna("").astype(str).tolist(),
            tl["url"].astype(str).tolist(),
            tl["registry"].fillna("").astype(str).tolist(),
            _per_value(tl["status"], labels),
            _per_value(tl["phase"], labels),
            _per_value(tl["start_date"], days),
            strict=True,
        )
    )


def write_html(
    out: Path,
    html: Path,
    *,
    counts: Counts,
    charts: list[Chart],
    trials: pd.DataFrame,
    context: dict[str, Any],
) -> None:
    """Write ``html`` (and, for a large report, :data:`LISTS_FILE` beside it in
    ``out``): the template filled with ``context``, the page data built from
    ``counts``, ``charts`` and the report's ``trials``."""
    trial_index = pd.Index(trials["trial_id"].astype(str).tolist(), dtype=object)
    selection = next(
        (s for v in counts.lists.values() if (s := L.listed_selection(v)) is not None), None
    )
    page_data: dict[str, Any] = {
        "version": celltrials.__version__,
        "counts": counts.counts,
        "charts": {c.id: to_plotly(c) for c in charts if not c.empty},
    }
    place_lists(
        out,
        page_data,
        {"trials": trial_rows(trials), "lists": encode_lists(counts.lists, trial_index, selection)},
    )
    render_html(html, {**context, "page_data": json_for_script(page_data)})


_FORMAT_NAMES = {
    "ctgov_json": "ClinicalTrials.gov API v2 JSON",
    "ctgov_csv": "ClinicalTrials.gov CSV export",
    "ctgov_csv_classic": "ClinicalTrials.gov classic CSV export",
    "ictrp_csv": "WHO ICTRP CSV export",
    "ictrp_xml": "WHO ICTRP XML export",
    "ictrp_xlsx": "WHO ICTRP Excel export",
}


def render_html(path: Path, ctx: dict[str, Any]) -> None:
    from plotly.offline import get_plotlyjs  # noqa: PLC0415 - heavy optional dependency, imported on first use

    env = Environment(
        loader=PackageLoader("celltrials.report", "templates"),
        autoescape=select_autoescape(["html", "j2", "html.j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["label"] = L.label
    env.filters["fmt"] = fmt_count
    env.globals["format_name"] = lambda f: _FORMAT_NAMES.get(f, f)
    tpl = env.get_template("report.html.j2")
    plotly_js = get_plotlyjs()
    if "</script" in plotly_js.lower():  # never expected; keeps the inline script well-formed
        plotly_js = plotly_js.replace("</script", "<\\/script")
    ctx = {**ctx, "plotly_js": Markup(plotly_js), "page_data": Markup(ctx["page_data"])}
    with path.open("w", encoding="utf-8") as fh:
        for chunk in tpl.generate(**ctx):
            fh.write(chunk)
