"""What the dashboard shows, as plain data (the JSON API returns exactly this).

Selection semantics are the report's (:mod:`celltrials.analysis.landscape`):
the report's filters (``country``, ``registry``, ``start_year``, ``status``,
``phase``, ``cell_type``, ``indication_group``, ``title``, ``all_trials``)
select the same trials as ``celltrials report`` with the same options, and
the overview's numbers come from the report's own section functions. The
dashboard adds filters on the other labels and fields (``msc_source``,
``origin``, ``product_form``, ``therapeutic_area``, ``target``,
``study_type``, ``sponsor_class``, ``product``) and ``q``, a full-text
search: every word of ``q`` must occur (case-insensitive) in the title,
official title, acronym, brief summary, conditions, keywords, interventions
(names, other names, descriptions) or ids of the trial.

For speed at whole-registry scale every snapshot gets one precomputed
in-memory table, ``memory.main.st``: the report's selection columns over
*all* trials (:data:`landscape.SELECT_COLUMNS`) plus countries, linked
products, conditions and interventions for display, and the lower-cased
search text. All values reach SQL as parameters, never as text.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any

import duckdb
import pandas as pd

from celltrials.analysis import landscape as ls
from celltrials.errors import CelltrialsError, ConfigError
from celltrials.safety import safe_frame

ST = "memory.main.st"
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
MAX_Q_LEN = 200
MAX_VALUES = 50  # values per filter

#: the report's filters, in the order they appear in a URL
REPORT_FILTERS = ("country", "registry", "start_year", "status", "phase", "cell_type", "indication_group",
                  "title", "all_trials")
#: the dashboard's further filters (multi-valued)
EXTRA_FILTERS = ("msc_source", "origin", "product_form", "therapeutic_area", "target", "study_type",
                 "sponsor_class", "product")
MULTI = ("country", "registry", "status", "phase", "cell_type", "indication_group", *EXTRA_FILTERS)

#: facet → (column of st, multi-valued)
FACETS: dict[str, tuple[str, bool]] = {
    "cell_type": ("cell_type", True),
    "msc_source": ("msc_source_f", True),
    "origin": ("origin", False),
    "product_form": ("product_form", True),
    "indication_group": ("indication_group", False),
    "therapeutic_area": ("therapeutic_area", True),
    "target": ("targets", True),
    "phase": ("phase", False),
    "status": ("status", False),
    "study_type": ("study_type", False),
    "country": ("countries", True),
    "registry": ("registry", False),
    "sponsor_class": ("sponsor_class", False),
    "product": ("products", True),
}
FACET_TITLES = {
    "cell_type": "Cell type", "msc_source": "MSC source", "origin": "Origin", "product_form": "Product form",
    "indication_group": "Indication group", "therapeutic_area": "Therapeutic area", "target": "Target antigen",
    "phase": "Phase", "status": "Status", "study_type": "Study type", "country": "Country",
    "registry": "Registry", "sponsor_class": "Sponsor class", "product": "Approved product named",
}

SORTS: dict[str, str] = {
    "trial_id": "trial_id",
    "-start_date": "start_date DESC NULLS LAST, trial_id",
    "start_date": "start_date NULLS LAST, trial_id",
    "-last_update": "last_update DESC NULLS LAST, trial_id",
    "-enrollment": "enrollment DESC NULLS LAST, trial_id",
    "title": "lower(title) NULLS LAST, trial_id",
    "phase": "phase_rank, trial_id",
    "-phase": "phase_rank DESC, trial_id",
}
SORT_LABELS = {"trial_id": "Id", "-start_date": "Start date (newest)", "start_date": "Start date (oldest)",
               "-last_update": "Last update (newest)", "-enrollment": "Enrollment (largest)",
               "title": "Title (A–Z)", "phase": "Phase (early first)", "-phase": "Phase (late first)"}


# ------------------------------------------------------------------ filters
@dataclass(frozen=True)
class Query:
    """A dashboard selection: the report's :class:`~landscape.Filters` plus
    the dashboard's own filters, the search text, sort and page."""

    filters: ls.Filters = field(default_factory=ls.Filters)
    msc_source: tuple[str, ...] = ()
    origin: tuple[str, ...] = ()
    product_form: tuple[str, ...] = ()
    therapeutic_area: tuple[str, ...] = ()
    target: tuple[str, ...] = ()
    study_type: tuple[str, ...] = ()
    sponsor_class: tuple[str, ...] = ()
    product: tuple[str, ...] = ()
    q: str = ""
    sort: str = "trial_id"
    page: int = 1
    per_page: int = DEFAULT_PAGE_SIZE

    def params(self, *, paging: bool = False) -> list[tuple[str, str]]:
        """URL query parameters that reproduce this selection (a view can be shared)."""
        f = self.filters
        out: list[tuple[str, str]] = []
        for name in ("country", "registry", "status", "phase", "cell_type", "indication_group"):
            out += [(name, v) for v in getattr(f, name)]
        lo, hi = f.start_year
        if lo is not None or hi is not None:
            out.append(("start_year", f"{lo if lo is not None else ''}-{hi if hi is not None else ''}"
                        if lo != hi else str(lo)))
        if f.title:
            out.append(("title", f.title))
        if f.scope == "all":
            out.append(("all_trials", "1"))
        for name in EXTRA_FILTERS:
            out += [(name, v) for v in getattr(self, name)]
        if self.q:
            out.append(("q", self.q))
        if paging:
            if self.sort != "trial_id":
                out.append(("sort", self.sort))
            if self.page != 1:
                out.append(("page", str(self.page)))
            if self.per_page != DEFAULT_PAGE_SIZE:
                out.append(("per_page", str(self.per_page)))
        return out

    def describe(self) -> dict[str, str]:
        out = self.filters.describe()
        for name in EXTRA_FILTERS:
            v = getattr(self, name)
            if v:
                out[name] = ", ".join(v)
        if self.q:
            out["search"] = self.q
        return out


_MSC_SOURCES = (*ls.MSC_SOURCES,)
_VOCAB: dict[str, tuple[str, ...]] = {
    "msc_source": _MSC_SOURCES,
    "origin": ("autologous", "allogeneic", "both", "unspecified"),
    "product_form": ls.PRODUCT_FORMS,
    "therapeutic_area": (*ls.THERAPEUTIC_AREAS, "not_classified"),
    "sponsor_class": ("industry", "academic_other", "government", "unknown"),
}


def parse_query(args: Mapping[str, Any] | Iterable[tuple[str, str]]) -> Query:
    """A :class:`Query` from URL query parameters (repeated keys = OR).

    Unknown parameters are ignored; bad values raise :class:`ConfigError`
    naming the parameter (the server answers 400)."""
    pairs: list[tuple[str, str]] = list(args.multi_items() if hasattr(args, "multi_items")
                                        else args.items() if isinstance(args, Mapping) else args)
    multi: dict[str, list[str]] = {}
    for k, v in pairs:
        k = k.replace("-", "_")
        v = str(v)
        if len(v) > 500:
            raise ConfigError(f"parameter {k!r} is too long", hint="Values are at most 500 characters.")
        if v.strip() == "":
            continue
        multi.setdefault(k, []).append(v.strip())
    for k in MULTI:
        if len(multi.get(k, [])) > MAX_VALUES:
            raise ConfigError(f"too many values for {k!r}", hint=f"At most {MAX_VALUES} values per filter.")

    def one(name: str) -> str | None:
        vals = multi.get(name)
        return vals[-1] if vals else None

    all_trials = (one("all_trials") or "").lower() in ("1", "true", "yes", "on")
    filters = ls.make_filters(
        country=multi.get("country", ()), registry=multi.get("registry", ()), start_year=one("start_year"),
        status=multi.get("status", ()), phase=multi.get("phase", ()), cell_type=multi.get("cell_type", ()),
        indication_group=multi.get("indication_group", ()), title=one("title"),
        scope="all" if all_trials else "cell_therapy")
    extras: dict[str, tuple[str, ...]] = {}
    for name in EXTRA_FILTERS:
        vals = multi.get(name, [])
        if name in _VOCAB:
            vals = [ls._norm_choice(v, _VOCAB[name], name.replace("_", " ")) for v in vals]
        extras[name] = tuple(dict.fromkeys(vals))
    q = (one("q") or "")[:MAX_Q_LEN]
    sort = one("sort") or "trial_id"
    if sort not in SORTS:
        raise ConfigError(f"unknown sort {sort!r}", hint="Use one of: " + ", ".join(SORTS) + ".")
    page = _int(one("page"), "page", 1)
    per_page = _int(one("per_page"), "per_page", DEFAULT_PAGE_SIZE)
    if page < 1 or page > 1_000_000:
        raise ConfigError(f"page {page} is out of range", hint="Pages count from 1.")
    per_page = max(1, min(per_page, MAX_PAGE_SIZE))
    return Query(filters=filters, q=q, sort=sort, page=page, per_page=per_page, **extras)


def _int(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} {text!r} is not a whole number", hint=f"Write e.g. {name}=2.") from None


# -------------------------------------------------------------- preparing
def prepare(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Build the precomputed table ``memory.main.st`` of a freshly loaded
    snapshot (run once per snapshot). Returns facts about the snapshot."""
    ls.ensure_label_view(con)
    sel_sql, sel_params = ls.selection_sql(ls.Filters(scope="all"))
    has_links = _has_table(con, "product_links")
    prod = ("SELECT trial_id, list(DISTINCT product ORDER BY product) AS products FROM product_links GROUP BY 1"
            if has_links else "SELECT NULL::VARCHAR AS trial_id, NULL::VARCHAR[] AS products WHERE false")
    con.execute(f"""
        CREATE OR REPLACE TABLE {ST} AS
        WITH base AS ({sel_sql}),
        ctry AS (SELECT trial_id, list(DISTINCT country ORDER BY country) AS countries
                 FROM countries WHERE country IS NOT NULL GROUP BY 1),
        cond AS (SELECT trial_id, string_agg(condition, '; ') FILTER (WHERE kind = 'condition') AS conditions,
                        string_agg(condition, ' ') FILTER (WHERE kind IN ('condition', 'keyword')) AS cond_text
                 FROM conditions GROUP BY 1),
        intr AS (SELECT trial_id, string_agg(name, '; ' ORDER BY idx) AS interventions,
                        string_agg(concat_ws(' ', name, array_to_string(other_names, ' '), description), ' ')
                            AS intr_text
                 FROM interventions GROUP BY 1),
        ids AS (SELECT trial_id, string_agg(DISTINCT id_raw, ' ') AS id_text FROM trial_ids GROUP BY 1),
        prod AS ({prod}),
        extra AS (SELECT trial_id, official_title, acronym, brief_summary, completion_date, has_results
                  FROM trials)
        SELECT b.*, coalesce(ctry.countries, []) AS countries,
               list_transform(coalesce(ctry.countries, []), lambda x: lower(x)) AS countries_lower,
               coalesce(prod.products, []) AS products,
               CASE WHEN list_contains(b.cell_type, 'msc') AND len(b.msc_source) = 0 THEN ['unspecified']
                    ELSE b.msc_source END AS msc_source_f,
               cond.conditions, intr.interventions, x.completion_date, coalesce(x.has_results, false) AS has_results,
               CASE b.phase {" ".join(f"WHEN '{p}' THEN {i}" for i, p in enumerate(ls.PHASES))} ELSE 99 END
                   AS phase_rank,
               lower(concat_ws(' ', b.trial_id, b.primary_record_id, ids.id_text, b.title, x.official_title,
                               x.acronym, x.brief_summary, cond.cond_text, intr.intr_text)) AS search
        FROM base b LEFT JOIN ctry USING (trial_id) LEFT JOIN cond USING (trial_id)
        LEFT JOIN intr USING (trial_id) LEFT JOIN ids USING (trial_id) LEFT JOIN prod USING (trial_id)
        LEFT JOIN extra x USING (trial_id)
        ORDER BY b.trial_id""", sel_params)
    n = con.execute(f"SELECT count(*), count(*) FILTER (WHERE is_cell_therapy) FROM {ST}").fetchone()
    dd = ls.data_date(con)
    return {"trials": int(n[0]) if n else 0, "cell_therapy_trials": int(n[1] or 0) if n else 0,
            "labelled": ls.has_labels(con), "product_links": has_links,
            "data_date": dd.isoformat() if dd else None}


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'store' "
                      "AND table_name = ?", [name]).fetchone()
    return bool(row and row[0])


# --------------------------------------------------------------- selection
def conditions(query: Query) -> dict[str, tuple[str, list[Any]]]:
    """One SQL condition over ``st`` per active filter (key: the filter/facet
    name, or ``_scope``, ``_q``…); the same semantics as
    :func:`landscape.selection_sql`."""
    f = query.filters
    out: dict[str, tuple[str, list[Any]]] = {}
    if f.scope == "cell_therapy":
        out["_scope"] = ("is_cell_therapy", [])
    if f.country:
        out["country"] = ("len(list_intersect(countries_lower, ?::VARCHAR[])) > 0", [[c.lower() for c in f.country]])
    if f.registry:
        out["registry"] = ("lower(registry) IN (SELECT unnest(?::VARCHAR[]))", [list(f.registry)])
    lo, hi = f.start_year
    if lo is not None:
        out["_start_lo"] = ("start_year >= ?", [lo])
    if hi is not None:
        out["_start_hi"] = ("start_year <= ?", [hi])
    if f.status:
        out["status"] = ("upper(status) IN (SELECT unnest(?::VARCHAR[]))", [list(f.status)])
    if f.phase:
        out["phase"] = ("phase IN (SELECT unnest(?::VARCHAR[]))", [list(f.phase)])
    if f.cell_type:
        out["cell_type"] = ("len(list_intersect(cell_type, ?::VARCHAR[])) > 0", [list(f.cell_type)])
    if f.indication_group:
        out["indication_group"] = ("indication_group IN (SELECT unnest(?::VARCHAR[]))", [list(f.indication_group)])
    if f.title:
        out["_title"] = ("contains(lower(coalesce(title, '')), lower(?))", [f.title])
    for name in EXTRA_FILTERS:
        vals = list(getattr(query, name))
        if not vals:
            continue
        col, multi = FACETS[name]
        if name == "therapeutic_area" and "not_classified" in vals:
            out[name] = ("(len(list_intersect(therapeutic_area, ?::VARCHAR[])) > 0 OR len(therapeutic_area) = 0)",
                         [vals])
        elif name in ("target", "country", "product"):  # names: case-insensitive
            out[name] = (f"len(list_intersect(list_transform({col}, lambda x: lower(x)), ?::VARCHAR[])) > 0",
                         [[v.lower() for v in vals]])
        elif multi:
            out[name] = (f"len(list_intersect({col}, ?::VARCHAR[])) > 0", [vals])
        elif name == "study_type":
            out[name] = ("lower(study_type) IN (SELECT unnest(?::VARCHAR[]))", [[v.lower() for v in vals]])
        else:
            out[name] = (f"{col} IN (SELECT unnest(?::VARCHAR[]))", [vals])
    words = [w for w in re.split(r"\s+", query.q.lower()) if w][:20]
    for i, w in enumerate(words):
        out[f"_q{i}"] = ("contains(search, ?)", [w])
    return out


def where(conds: Mapping[str, tuple[str, list[Any]]], skip: str | None = None) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for k, (sql, p) in conds.items():
        if k == skip:
            continue
        parts.append(sql)
        params += p
    return (" AND ".join(parts) or "true"), params


def selection(query: Query) -> tuple[str, list[Any]]:
    """SQL (with parameters) selecting the rows of ``st`` of this query."""
    w, p = where(conditions(query))
    return f"SELECT * FROM {ST} WHERE {w}", p


def count(con: duckdb.DuckDBPyConnection, query: Query) -> int:
    w, p = where(conditions(query))
    row = con.execute(f"SELECT count(*) FROM {ST} WHERE {w}", p).fetchone()
    return int(row[0]) if row else 0


LIST_COLUMNS = ("trial_id", "primary_record_id", "registry", "title", "status", "phase", "study_type",
                "start_date", "last_update", "enrollment", "enrollment_type", "lead_sponsor", "sponsor_class",
                "cell_type", "msc_source", "origin", "product_form", "indication_group", "therapeutic_area",
                "targets", "countries", "products", "url", "has_results")


def trial_page(con: duckdb.DuckDBPyConnection, query: Query) -> dict[str, Any]:
    """``{"count", "page", "per_page", "pages", "sort", "trials": [...]}`` for one page."""
    w, p = where(conditions(query))
    n = int(con.execute(f"SELECT count(*) FROM {ST} WHERE {w}", p).fetchone()[0])  # type: ignore[index]
    pages = max(1, math.ceil(n / query.per_page))
    page = min(query.page, pages)
    rows = con.execute(
        f"SELECT {', '.join(LIST_COLUMNS)} FROM {ST} WHERE {w} ORDER BY {SORTS[query.sort]} LIMIT ? OFFSET ?",
        [*p, query.per_page, (page - 1) * query.per_page]).fetchall()
    trials = [{c: _plain(v) for c, v in zip(LIST_COLUMNS, r, strict=True)} for r in rows]
    for t in trials:
        t["registry_url"] = registry_url(t["trial_id"], t["url"])
    return {"count": n, "page": page, "per_page": query.per_page, "pages": pages, "sort": query.sort,
            "filters": query.describe(), "trials": trials}


def facets(con: duckdb.DuckDBPyConnection, query: Query, top: int = 40) -> dict[str, list[dict[str, Any]]]:
    """Live counts per facet value: for each facet, the trials matching every
    *other* active filter (so choosing a second value of a facet shows how
    many it adds). Most frequent first; chosen values always listed."""
    conds = conditions(query)
    active_cols: list[str] = []
    params: list[Any] = []
    flag: dict[str, str] = {}
    for i, (k, (sql, p)) in enumerate(conds.items()):
        flag[k] = f"_c{i}"
        active_cols.append(f"({sql}) AS _c{i}")
        params += p
    cols = sorted({c for c, _ in FACETS.values()})
    base = f"SELECT {', '.join(cols)}{', ' if active_cols else ''}{', '.join(active_cols)} FROM {ST}"
    branches: list[str] = []
    for name, (col, multi) in FACETS.items():
        others = [flag[k] for k in conds if k != name] or ["true"]
        val = f"unnest({col})" if multi else col
        branches.append(f"SELECT '{name}' AS facet, value, count(*) AS n FROM "
                        f"(SELECT {val} AS value FROM m WHERE {' AND '.join(others)}) WHERE value IS NOT NULL "
                        "GROUP BY value")
    sql = f"WITH m AS MATERIALIZED ({base}) " + " UNION ALL ".join(branches)
    rows = con.execute(sql, params).fetchall()
    chosen = _chosen(query)
    by: dict[str, list[tuple[str, int]]] = {k: [] for k in FACETS}
    for facet, value, n in rows:
        by[facet].append((str(value), int(n)))
    out: dict[str, list[dict[str, Any]]] = {}
    for name, vals in by.items():
        vals.sort(key=lambda x: (-x[1], x[0]))
        sel = {v.lower() for v in chosen.get(name, ())}
        keep = [v for v in vals[:top]] + [v for v in vals[top:] if v[0].lower() in sel]
        out[name] = [{"value": v, "label": ls.label(v), "n": n, "selected": v.lower() in sel} for v, n in keep]
        present = {v.lower() for v, _ in keep}
        for s in chosen.get(name, ()):  # a chosen value with no trials left still shows (0)
            if s.lower() not in present:
                out[name].append({"value": s, "label": ls.label(s), "n": 0, "selected": True})
    return out


def _chosen(query: Query) -> dict[str, tuple[str, ...]]:
    f = query.filters
    out: dict[str, tuple[str, ...]] = {n: getattr(f, n) for n in
                                       ("country", "registry", "status", "phase", "cell_type", "indication_group")}
    for n in EXTRA_FILTERS:
        out[n] = getattr(query, n)
    return out


# ---------------------------------------------------------------- overview
#: overview chart → (landscape section, category column, series column or None, filter builder)
def overview(con: duckdb.DuckDBPyConnection, query: Query) -> dict[str, Any]:
    """The report's headline and main charts for the selection, computed by
    the report's own section functions over the selected trials. Each bar
    carries the URL parameters that list exactly its trials."""
    sql, params = selection(query)
    trials = ls.select_with(con, sql, params)
    current = query.params()
    active: dict[str, set[str]] = {}
    for k, v in current:
        active.setdefault(k, set()).add(v)

    def full_link(pairs: list[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
        """The complete URL parameters listing exactly the trials of a bar: the
        current ones plus the bar's. Values of one filter combine with OR, so a
        bar on a filtered field is listable only when its values cover, or are
        covered by, the chosen ones."""
        if pairs is None:
            return None
        out = list(current)
        for k, v in pairs:
            vals = set(_expand(k, v))
            chosen = active.get(k)
            if not chosen:
                out += [(k, v)]
            elif chosen <= vals:
                continue
            elif vals <= chosen:
                out = [(a, b) for a, b in out if a != k] + [(k, x) for x in sorted(vals)]
            else:
                return None
        return out

    head = ls.headline(con, trials)
    headline: dict[str, int | None] = {}
    for metric, value in zip(head["metric"], head["value"], strict=True):
        headline[str(metric)] = None if value is None or value is pd.NA else int(value)
    charts: list[dict[str, Any]] = []

    def bar(cid: str, title: str, df: pd.DataFrame, key: str, link: Callable[[str], list[tuple[str, str]]] | None,
            series: str | None = None, note: str = "") -> None:
        items = []
        for r in df.to_dict("records"):
            k = str(r[key])
            s = str(r[series]) if series else None
            lk = link(k) if link else None
            if lk is not None and series is not None and s is not None:
                lk = _family_link(s, lk)
            lk = full_link(lk)
            items.append({"key": k, "label": ls.label(k), "series": s, "series_label": ls.label(s) if s else None,
                          "n": int(r["n_trials"]), "link": lk, "partial": bool(r.get("partial", False))})
        charts.append({"id": cid, "title": title, "items": items, "stacked": series is not None, "note": note})

    bar("immune_by_cell_type", "Immune-cell trials by cell type", ls.immune_by_cell_type(con, trials), "cell_type",
        lambda k: [("cell_type", k)])
    bar("stem_by_indication", "Stem/stromal-cell trials by indication group", ls.stem_by_indication(con, trials),
        "indication_group",
        lambda k: [("cell_type", "stem_stromal"), ("indication_group", k)] if k != "not_classified" else None)  # type: ignore[arg-type,return-value]
    bar("msc_by_source", "MSC trials by tissue source", ls.msc_by_source(con, trials), "msc_source",
        lambda k: [("cell_type", "msc"), ("msc_source", k)])
    sy = ls.start_year_by_family(con, trials)
    bar("start_year_by_family", "Trials per start year, by cell-type family", sy, "year",
        None, series="family",
        note="The latest year is partial (data up to the latest registry update).")
    bar("phase_by_family", "Trials by phase and family", ls.phase_by_family(con, trials), "phase",
        lambda k: [("phase", k)], series="family")
    bar("status_by_family", "Trials by status and family", ls.status_by_family(con, trials), "status",
        lambda k: [("status", k)] if k != "UNKNOWN" else None, series="family")  # type: ignore[arg-type,return-value]
    bar("countries", "Countries (top 15)", ls.countries(con, trials).head(15), "country",
        lambda k: [("country", k)])
    bar("sponsor_classes", "Lead sponsor class", ls.sponsor_classes(con, trials), "sponsor_class",
        lambda k: [("sponsor_class", k)])
    return {"count": int(headline.get("trials") or 0), "headline": headline, "charts": charts,
            "filters": query.describe(), "data_date": _plain(ls.data_date(con))}


def _expand(name: str, value: str) -> tuple[str, ...]:
    if name == "cell_type":
        return {"immune": ls.IMMUNE, "stem_stromal": ls.STEM_STROMAL, "other": ls.OTHER}.get(value, (value,))
    return (value,)


def _family_link(family: str, link: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    if family == "unassigned":
        return None
    return [*link, ("cell_type", family)]


# ------------------------------------------------------------------- trial
def registry_url(trial_id: str, url: str | None) -> str:
    if url and str(url).startswith(("https://", "http://")):
        return str(url)
    return "https://trialsearch.who.int/Trial2.aspx?TrialID=" + str(trial_id)


def trial_detail(con: duckdb.DuckDBPyConnection, any_id: str, store_path: str = "") -> dict[str, Any] | None:
    """Everything the trial page shows, or None for an unknown id."""
    from celltrials.changes import record_history
    from celltrials.store import Store

    store = Store(con, store_path)
    trial_id = store.resolve(any_id)
    if trial_id is None:
        return None
    t = store.trial(trial_id)
    if t is None:
        return None
    out: dict[str, Any] = {"trial_id": trial_id, "trial": t, "registry_url": registry_url(trial_id, t.get("url"))}
    row = con.execute(f"SELECT {', '.join(LIST_COLUMNS)}, is_cell_therapy FROM {ST} WHERE trial_id = ?",
                      [trial_id]).fetchone()
    out["summary"] = ({c: _plain(v) for c, v in zip((*LIST_COLUMNS, "is_cell_therapy"), row, strict=True)}
                      if row else {})
    out["labels"], out["evidence"] = None, []
    if ls.has_labels(con):
        from celltrials.classify import explain_trial

        with contextlib.suppress(CelltrialsError):
            ex = explain_trial(store, trial_id)
            out["labels"] = ex["labels"]
            out["evidence"] = ex["evidence"]
    out["product_links"] = []
    if _has_table(con, "product_links"):
        out["product_links"] = _records(con.execute(
            "SELECT product, regulators, field, alias, snippet FROM product_links WHERE trial_id = ? "
            "ORDER BY product, field", [trial_id]))
    out["history"] = record_history(con, trial_id)
    out["results"] = None
    if t.get("has_results"):
        from celltrials.analysis.results import results_for_store, tables_to_records

        with contextlib.suppress(CelltrialsError, KeyError, ValueError, TypeError):
            out["results"] = tables_to_records(results_for_store(store, trial_id))
    return out


def _records(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description or []]
    return [{c: _plain(v) for c, v in zip(cols, r, strict=True)} for r in cur.fetchall()]


# ---------------------------------------------------------------- products
def products_list(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    from celltrials.products import json_records, products_table
    from celltrials.store import Store

    return json_records(products_table(Store(con, ""), relink=False))


def product_page(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any]:
    """A catalog product: its approvals (with sources), linked trials by
    phase, and the funnel row(s) of its cell type."""
    from celltrials.analysis.funnel import funnel
    from celltrials.products import product_detail
    from celltrials.store import Store

    d = product_detail(Store(con, ""), name, relink=False)
    cell_types = {str(a.get("cell_type") or "") for a in d["approvals"]}
    fn = pd.DataFrame()
    with contextlib.suppress(CelltrialsError, duckdb.Error, KeyError, ValueError):
        fn = funnel(con)
    rows: list[dict[str, Any]] = []
    if len(fn):
        keycol = next((c for c in ("cell_type", "group", "family") if c in fn.columns), None)
        for r in fn.to_dict("records"):
            if keycol and str(r.get(keycol)) in cell_types:
                rows.append({str(k): _plain(v) for k, v in r.items()})
    d["funnel"] = rows
    return d


# -------------------------------------------------------------------- export
EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8",
                  "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                  "parquet": "application/vnd.apache.parquet"}
EXPORT_COLUMNS = ("trial_id", "primary_record_id", "registry", "title", "status", "why_stopped", "phase",
                  "study_type", "start_date", "registration_date", "last_update", "completion_date", "enrollment",
                  "enrollment_type", "lead_sponsor", "sponsor_class", "countries", "conditions", "interventions",
                  "is_cell_therapy", "cell_type", "msc_source", "origin", "product_form", "indication_group",
                  "therapeutic_area", "targets", "products", "has_results", "url")


def export_frame(con: duckdb.DuckDBPyConnection, query: Query) -> pd.DataFrame:
    """The whole selection (no paging), one row per trial, lists ``; ``-joined."""
    w, p = where(conditions(query))
    cols = [f"array_to_string({c}, '; ') AS {c}" if c in ("countries", "cell_type", "msc_source", "product_form",
                                                           "therapeutic_area", "targets", "products") else c
            for c in EXPORT_COLUMNS]
    return con.execute(f"SELECT {', '.join(cols)} FROM {ST} WHERE {w} ORDER BY {SORTS[query.sort]}", p).df()


def export_bytes(df: pd.DataFrame, fmt: str) -> bytes:
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", hint="Use csv, xlsx or parquet.")
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    if fmt == "csv":  # text cells through the one spreadsheet-safety helper (OWASP CSV injection)
        return safe_frame(df).to_csv(index=False).encode("utf-8")
    buf = io.BytesIO()
    safe_frame(df, xlsx=True).to_excel(buf, index=False, sheet_name="trials")
    return buf.getvalue()


# ------------------------------------------------------------------ helpers
def _plain(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, date):
        return v.isoformat()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "tolist"):
        return v.tolist()
    if hasattr(v, "item"):
        return v.item()
    return v


def query_fields() -> list[str]:
    return [f.name for f in fields(Query)]


__all__ = ["EXPORT_FORMATS", "FACETS", "MAX_PAGE_SIZE", "Query", "count", "export_bytes", "export_frame",
           "facets", "overview", "parse_query", "prepare", "product_page", "products_list", "selection",
           "trial_detail", "trial_page"]
