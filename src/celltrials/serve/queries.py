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
from datetime import date, datetime, time, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from celltrials.analysis import landscape as ls
from celltrials.analysis.funnel import funnel
from celltrials.analysis.results import results_for_store, tables_to_records
from celltrials.changes import (
    HISTORY_FIELDS,
    KINDS,
    all_changes_sql,
    history_from_rows,
    parse_date,
)
from celltrials.changes import changes as store_changes
from celltrials.errors import CelltrialsError, ConfigError
from celltrials.labelling import explain_trial
from celltrials.products import json_records, product_detail, products_table
from celltrials.registry_ids import canonical_id, fold_id, trial_id_for
from celltrials.safety import safe_frame
from celltrials.serve.index import FacetIndex, Mask
from celltrials.store import LABEL_TABLE_COLUMNS, Store
from celltrials.store import _plain as _store_plain

ST = "memory.main.st"
CHANGES = (
    "memory.main.changes_all"  # every change of the snapshot (celltrials.changes.all_changes_sql)
)
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
MAX_Q_LEN = 200
MAX_VALUES = 50  # values per filter

#: the report's filters, in the order they appear in a URL
REPORT_FILTERS = (
    "country",
    "registry",
    "start_year",
    "status",
    "phase",
    "cell_type",
    "indication_group",
    "title",
    "all_trials",
)
#: the dashboard's further filters (multi-valued)
EXTRA_FILTERS = (
    "msc_source",
    "origin",
    "product_form",
    "therapeutic_area",
    "target",
    "study_type",
    "sponsor_class",
    "product",
)
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
    "cell_type": "Cell type",
    "msc_source": "MSC source",
    "origin": "Origin",
    "product_form": "Product form",
    "indication_group": "Indication group",
    "therapeutic_area": "Therapeutic area",
    "target": "Target antigen",
    "phase": "Phase",
    "status": "Status",
    "study_type": "Study type",
    "country": "Country",
    "registry": "Registry",
    "sponsor_class": "Sponsor class",
    "product": "Approved product named",
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
SORT_LABELS = {
    "trial_id": "Id",
    "-start_date": "Start date (newest)",
    "start_date": "Start date (oldest)",
    "-last_update": "Last update (newest)",
    "-enrollment": "Enrollment (largest)",
    "title": "Title (A–Z)",
    "phase": "Phase (early first)",
    "-phase": "Phase (late first)",
}


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
            out.append(
                (
                    "start_year",
                    f"{lo if lo is not None else ''}-{hi if hi is not None else ''}"
                    if lo != hi
                    else str(lo),
                )
            )
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
    pairs: list[tuple[str, str]] = list(
        args.multi_items()
        if hasattr(args, "multi_items")
        else args.items()
        if isinstance(args, Mapping)
        else args
    )
    multi: dict[str, list[str]] = {}
    for k, v in pairs:
        k = k.replace("-", "_")
        v = str(v)
        if len(v) > 500:
            raise ConfigError(
                f"parameter {k!r} is too long", hint="Values are at most 500 characters."
            )
        if v.strip() == "":
            continue
        multi.setdefault(k, []).append(v.strip())
    for k in MULTI:
        if len(multi.get(k, [])) > MAX_VALUES:
            raise ConfigError(
                f"too many values for {k!r}", hint=f"At most {MAX_VALUES} values per filter."
            )

    def one(name: str) -> str | None:
        vals = multi.get(name)
        return vals[-1] if vals else None

    all_trials = (one("all_trials") or "").lower() in ("1", "true", "yes", "on")
    filters = ls.make_filters(
        country=multi.get("country", ()),
        registry=multi.get("registry", ()),
        start_year=one("start_year"),
        status=multi.get("status", ()),
        phase=multi.get("phase", ()),
        cell_type=multi.get("cell_type", ()),
        indication_group=multi.get("indication_group", ()),
        title=one("title"),
        scope="all" if all_trials else "cell_therapy",
    )
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
        raise ConfigError(
            f"{name} {text!r} is not a whole number", hint=f"Write e.g. {name}=2."
        ) from None


# -------------------------------------------------------------- preparing
def prepare(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Build the precomputed table ``memory.main.st`` of a freshly loaded
    snapshot (run once per snapshot). Returns facts about the snapshot."""
    ls.ensure_label_view(con)
    sel_sql, sel_params = ls.selection_sql(ls.Filters(scope="all"))
    has_links = _has_table(con, "product_links")
    prod = (
        "SELECT trial_id, list(DISTINCT product ORDER BY product) AS products FROM product_links GROUP BY 1"
        if has_links
        else "SELECT NULL::VARCHAR AS trial_id, NULL::VARCHAR[] AS products WHERE false"
    )
    con.execute(
        f"""
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
        ORDER BY b.trial_id""",
        sel_params,
    )
    n = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE is_cell_therapy) FROM {ST}"
    ).fetchone()
    dd = ls.data_date(con)
    shadows = _memory_copies(con, has_links)
    index = FacetIndex.build(
        con,
        ST,
        list_columns=(*LIST_COLUMNS, "is_cell_therapy"),
        sorts=SORTS,
        facets=FACETS,
        data_date=dd,
    )
    index.add_changes(con, CHANGES)
    index.add_ranges(
        con,
        {
            name: table
            for name, (table, _cols, _order) in _DETAIL_TABLES.items()
            if name != "product_links" or has_links
        },
    )
    index.facts = {
        "labelled": ls.has_labels(con),
        "label_rows": ls.has_labels(con) and Store(con, "").has_labels(),
        "product_links": has_links,
    }
    return {
        "trials": int(n[0]) if n else 0,
        "cell_therapy_trials": int(n[1] or 0) if n else 0,
        "labelled": ls.has_labels(con),
        "product_links": has_links,
        "data_date": dd.isoformat() if dd else None,
        "index_seconds": round(index.build_seconds, 1),
        "index_mb": round(index.memory_bytes() / 1e6),
        "shadows": shadows,
        "index": index,
    }


#: store views copied into memory, sorted by trial (point look-ups read one
#: row group; full scans skip the joins the views do)
_TRIAL_VIEWS = (
    "trials",
    "countries",
    "trial_ids",
    "conditions",
    "interventions",
    "arms",
    "sponsors",
    "outcomes",
)


def _memory_copies(con: duckdb.DuckDBPyConnection, has_links: bool) -> dict[str, dict[str, str]]:
    """In-memory copies of the store's hot views and tables (same rows, sorted
    for look-ups). Each request's cursor sees them under the store's names
    (temp views shadow the store's), so library code (the report's sections,
    products, explain) reads them unchanged. Profile ``texts`` also shadows the
    tables :func:`celltrials.labelling.store_trial_texts` reads, restricted to
    the current records (the only ones it joins)."""
    main: dict[str, str] = {}
    for v in _TRIAL_VIEWS:
        # a trial's rows in a fixed order (its columns left to right; `idx` first
        # where there is one), so the trial page lists them the same every time
        cols = [str(r[0]) for r in con.execute(f"DESCRIBE {v}").fetchall() if r[0] != "trial_id"]
        order = ", ".join(f'"{c}"' for c in ["trial_id", *sorted(cols, key=lambda c: c != "idx")])
        con.execute(
            f"CREATE OR REPLACE TABLE memory.main.v_{v} AS SELECT * FROM {v} ORDER BY {order}"
        )
        main[v] = f"memory.main.v_{v}"
    if ls.has_labels(con):
        con.execute(
            "CREATE OR REPLACE TABLE memory.main.v_label_evidence AS "
            "SELECT * FROM label_evidence ORDER BY trial_id, rowid"
        )
        main["label_evidence"] = "memory.main.v_label_evidence"
    if has_links:
        con.execute(
            "CREATE OR REPLACE TABLE memory.main.v_product_links AS "
            "SELECT * FROM product_links ORDER BY trial_id"
        )
        main["product_links"] = "memory.main.v_product_links"
    # every version of each trial's records (provenance, history), by trial
    con.execute(f"""CREATE OR REPLACE TABLE memory.main.versions AS
        WITH own AS (SELECT DISTINCT tr.trial_id, r.channel, r.record_id
                     FROM trial_records tr JOIN records r USING (record_key))
        SELECT own.trial_id, r.record_key, r.channel, r.record_id, r.registry, r.source_format, r.source,
               r.position, r.content_hash, r.last_update, r.ingested_at, r.is_current, tr.is_primary,
               tr.merge_reason, {", ".join("r." + f for f in HISTORY_FIELDS)}
        FROM records r JOIN own USING (channel, record_id) LEFT JOIN trial_records tr USING (record_key)
        ORDER BY own.trial_id, r.channel, r.record_id, r.last_update NULLS FIRST, r.ingested_at, r.record_key""")
    # any id of a trial, upper-cased → trial
    con.execute("""CREATE OR REPLACE TABLE memory.main.id_lookup AS
        SELECT DISTINCT k, trial_id FROM (
            SELECT upper(trial_id) AS k, trial_id FROM memory.main.versions
            UNION ALL SELECT upper(record_id), trial_id FROM memory.main.versions
            UNION ALL SELECT upper(id_key), trial_id FROM memory.main.v_trial_ids
            UNION ALL SELECT upper(id_raw), trial_id FROM memory.main.v_trial_ids)
        WHERE k IS NOT NULL ORDER BY k""")

    con.execute(
        f"CREATE OR REPLACE TABLE {CHANGES} AS SELECT * FROM ({all_changes_sql()}) ORDER BY d DESC"
    )
    texts: dict[str, str] = dict(main)
    con.execute(
        "CREATE OR REPLACE TABLE memory.main.t_trial_records AS SELECT * FROM trial_records ORDER BY trial_id"
    )
    texts["trial_records"] = "memory.main.t_trial_records"
    con.execute("""CREATE OR REPLACE TABLE memory.main.t_records AS
        SELECT r.record_key, r.record_id, r.channel, r.source_format, r.registry, r.title, r.official_title,
               r.acronym, r.brief_summary, r.detailed_description
        FROM records r WHERE r.record_key IN (SELECT record_key FROM trial_records) ORDER BY r.record_key""")
    texts["records"] = "memory.main.t_records"
    if ls.has_labels(
        con
    ):  # explain reads one trial's labels: a sorted copy, not a scan of the file
        con.execute(
            "CREATE OR REPLACE TABLE memory.main.t_labels AS SELECT * FROM labels ORDER BY trial_id"
        )
        texts["labels"] = "memory.main.t_labels"
    for t in ("record_conditions", "record_interventions", "record_arms"):
        con.execute(
            f"CREATE OR REPLACE TABLE memory.main.t_{t} AS SELECT * FROM {t} "
            f"WHERE record_key IN (SELECT record_key FROM trial_records) ORDER BY record_key, rowid"
        )
        texts[t] = f"memory.main.t_{t}"
    return {"main": main, "texts": texts}


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'store' "
        "AND table_name = ?",
        [name],
    ).fetchone()
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
        out["country"] = (
            "len(list_intersect(countries_lower, ?::VARCHAR[])) > 0",
            [[c.lower() for c in f.country]],
        )
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
        out["indication_group"] = (
            "indication_group IN (SELECT unnest(?::VARCHAR[]))",
            [list(f.indication_group)],
        )
    if f.title:
        out["_title"] = ("contains(lower(coalesce(title, '')), lower(?))", [f.title])
    for name in EXTRA_FILTERS:
        vals = list(getattr(query, name))
        if not vals:
            continue
        col, multi = FACETS[name]
        if name == "therapeutic_area" and "not_classified" in vals:
            out[name] = (
                "(len(list_intersect(therapeutic_area, ?::VARCHAR[])) > 0 OR len(therapeutic_area) = 0)",
                [vals],
            )
        elif name in ("target", "country", "product"):  # names: case-insensitive
            out[name] = (
                f"len(list_intersect(list_transform({col}, lambda x: lower(x)), ?::VARCHAR[])) > 0",
                [[v.lower() for v in vals]],
            )
        elif multi:
            out[name] = (f"len(list_intersect({col}, ?::VARCHAR[])) > 0", [vals])
        elif name == "study_type":
            out[name] = (
                "lower(study_type) IN (SELECT unnest(?::VARCHAR[]))",
                [[v.lower() for v in vals]],
            )
        else:
            out[name] = (f"{col} IN (SELECT unnest(?::VARCHAR[]))", [vals])
    words = [w for w in re.split(r"\s+", query.q.lower()) if w][:20]
    for i, w in enumerate(words):
        out[f"_q{i}"] = ("contains(search, ?)", [w])
    return out


def where(
    conds: Mapping[str, tuple[str, list[Any]]], skip: str | None = None
) -> tuple[str, list[Any]]:
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


def count(con: duckdb.DuckDBPyConnection, query: Query, index: FacetIndex | None = None) -> int:
    if index is not None:
        m = _and(index, condition_masks(con, index, query).values())
        return index.n if m is None else int(np.count_nonzero(m))
    w, p = where(conditions(query))
    row = con.execute(f"SELECT count(*) FROM {ST} WHERE {w}", p).fetchone()
    return int(row[0]) if row else 0


def condition_masks(
    con: duckdb.DuckDBPyConnection, index: FacetIndex, query: Query
) -> dict[str, Mask]:
    """:func:`conditions` as boolean masks over the index's rows (same keys,
    same semantics; a NULL never matches)."""
    f = query.filters
    out: dict[str, Mask] = {}
    if f.scope == "cell_therapy":
        out["_scope"] = index.cell_therapy
    if f.country:
        out["country"] = index.multi["countries"].mask({c.lower() for c in f.country}, "lower")
    if f.registry:
        out["registry"] = index.single["registry"].mask(set(f.registry), "lower")
    lo, hi = f.start_year
    if lo is not None:
        out["_start_lo"] = index.year_ok & (index.year >= lo)
    if hi is not None:
        out["_start_hi"] = index.year_ok & (index.year <= hi)
    if f.status:
        out["status"] = index.single["status"].mask(set(f.status), "upper")
    if f.phase:
        out["phase"] = index.single["phase"].mask(set(f.phase))
    if f.cell_type:
        out["cell_type"] = index.multi["cell_type"].mask(set(f.cell_type))
    if f.indication_group:
        out["indication_group"] = index.single["indication_group"].mask(set(f.indication_group))
    if f.title:  # a substring of the title: a scan (rare; not indexed)
        out["_title"] = _sql_rows(
            con, index, "contains(lower(coalesce(title, '')), lower(?))", [f.title]
        )
    for name in EXTRA_FILTERS:
        vals = list(getattr(query, name))
        if not vals:
            continue
        col, multi = FACETS[name]
        if name == "therapeutic_area" and "not_classified" in vals:
            out[name] = index.multi[col].mask(set(vals)) | index.ta_empty
        elif name in ("target", "country", "product"):  # names: case-insensitive
            out[name] = index.multi[col].mask({v.lower() for v in vals}, "lower")
        elif multi:
            out[name] = index.multi[col].mask(set(vals))
        elif name == "study_type":
            out[name] = index.single[col].mask({v.lower() for v in vals}, "lower")
        else:
            out[name] = index.single[col].mask(set(vals))
    words = [w for w in re.split(r"\s+", query.q.lower()) if w][:20]
    for i, w in enumerate(words):
        rows = index.word_rows(w)
        out[f"_q{i}"] = (
            _sql_rows(con, index, "contains(search, ?)", [w])
            if rows is None
            else index.rows_mask(rows)
        )
    return out


def _sql_rows(
    con: duckdb.DuckDBPyConnection, index: FacetIndex, cond: str, params: list[Any]
) -> Mask:
    rows = con.execute(f"SELECT rowid FROM {ST} WHERE {cond}", params).fetchnumpy()["rowid"]
    return index.rows_mask(np.asarray(rows, dtype=np.int64))


def _and(index: FacetIndex, masks: Iterable[Mask]) -> Mask | None:
    out: Mask | None = None
    for m in masks:
        out = m.copy() if out is None else (out & m)
    return out


LIST_COLUMNS = (
    "trial_id",
    "primary_record_id",
    "registry",
    "title",
    "status",
    "phase",
    "study_type",
    "start_date",
    "last_update",
    "enrollment",
    "enrollment_type",
    "lead_sponsor",
    "sponsor_class",
    "cell_type",
    "msc_source",
    "origin",
    "product_form",
    "indication_group",
    "therapeutic_area",
    "targets",
    "countries",
    "products",
    "url",
    "has_results",
)


def trial_page(
    con: duckdb.DuckDBPyConnection, query: Query, index: FacetIndex | None = None
) -> dict[str, Any]:
    """``{"count", "page", "per_page", "pages", "sort", "trials": [...]}`` for one page
    (from the snapshot's index when given, else in SQL; the same answer)."""
    if index is not None:
        return _trial_page_indexed(con, query, index)
    w, p = where(conditions(query))

    def fetch(page: int) -> tuple[int | None, list[tuple[Any, ...]]]:
        # one scan: the page's row ids (narrow sort) with the total, then their columns
        rows = con.execute(
            f"WITH ids AS (SELECT rowid AS rid, count(*) OVER () AS n FROM {ST} WHERE {w} "
            f"ORDER BY {SORTS[query.sort]} LIMIT ? OFFSET ?) "
            f"SELECT {', '.join(LIST_COLUMNS)}, (SELECT any_value(n) FROM ids) FROM {ST} "
            f"WHERE rowid IN (SELECT rid FROM ids) ORDER BY {SORTS[query.sort]}",
            [*p, query.per_page, (page - 1) * query.per_page],
        ).fetchall()
        return (int(rows[0][-1]) if rows else None), [r[:-1] for r in rows]

    page = query.page
    n, rows = fetch(page)
    if n is None:  # an empty selection, or a page past its end: count, then show the last page
        n = int(con.execute(f"SELECT count(*) FROM {ST} WHERE {w}", p).fetchone()[0])  # type: ignore[index]
        page = min(page, max(1, math.ceil(n / query.per_page)))
        if n:
            _, rows = fetch(page)
    pages = max(1, math.ceil(n / query.per_page))
    trials = [{c: _plain(v) for c, v in zip(LIST_COLUMNS, r, strict=True)} for r in rows]
    for t in trials:
        t["registry_url"] = registry_url(t["trial_id"], t["url"])
    return {
        "count": n,
        "page": page,
        "per_page": query.per_page,
        "pages": pages,
        "sort": query.sort,
        "filters": query.describe(),
        "trials": trials,
    }


def _trial_page_indexed(
    con: duckdb.DuckDBPyConnection, query: Query, index: FacetIndex
) -> dict[str, Any]:
    mask = _and(index, condition_masks(con, index, query).values())
    pp = query.per_page
    page = query.page
    n, rows = index.page(mask, query.sort, (page - 1) * pp, pp)
    if len(rows) == 0:  # an empty selection, or a page past its end: show the last page
        page = min(page, max(1, math.ceil(n / pp)))
        if n:
            n, rows = index.page(mask, query.sort, (page - 1) * pp, pp)
    trials = [{c: _plain(r[c]) for c in LIST_COLUMNS} for r in index.list_rows(rows)]
    for t in trials:
        t["registry_url"] = registry_url(t["trial_id"], t["url"])
    return {
        "count": n,
        "page": page,
        "per_page": pp,
        "pages": max(1, math.ceil(n / pp)),
        "sort": query.sort,
        "filters": query.describe(),
        "trials": trials,
    }


def facets(
    con: duckdb.DuckDBPyConnection, query: Query, top: int = 40, index: FacetIndex | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Live counts per facet value: for each facet, the trials matching every
    *other* active filter (so choosing a second value of a facet shows how
    many it adds). Most frequent first; chosen values always listed."""
    by = (
        _facet_counts_indexed(con, query, index) if index is not None else _facet_counts(con, query)
    )
    chosen = _chosen(query)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, vals in by.items():
        vals.sort(key=lambda x: (-x[1], x[0]))
        sel = {v.lower() for v in chosen.get(name, ())}
        keep = list(vals[:top]) + [v for v in vals[top:] if v[0].lower() in sel]
        out[name] = [
            {"value": v, "label": ls.label(v), "n": n, "selected": v.lower() in sel}
            for v, n in keep
        ]
        present = {v.lower() for v, _ in keep}
        for s in chosen.get(name, ()):  # a chosen value with no trials left still shows (0)
            if s.lower() not in present:
                out[name].append({"value": s, "label": ls.label(s), "n": 0, "selected": True})
    return out


def _facet_counts_indexed(
    con: duckdb.DuckDBPyConnection, query: Query, index: FacetIndex
) -> dict[str, list[tuple[str, int]]]:
    """Per facet, (value, trials) under every other active filter (numpy)."""
    masks = condition_masks(con, index, query)
    hard = [m for k, m in masks.items() if k not in FACETS]
    soft = {k: m for k, m in masks.items() if k in FACETS}
    every = _and(index, [*hard, *soft.values()])
    own = {name: _and(index, [*hard, *(v for k, v in soft.items() if k != name)]) for name in soft}
    return index.facet_counts(every, own)


def _facet_counts(con: duckdb.DuckDBPyConnection, query: Query) -> dict[str, list[tuple[str, int]]]:
    """Per facet, (value, trials) under every other active filter (SQL)."""
    conds = conditions(query)
    # Conditions on facets are flags (a facet's counts ignore its own filter);
    # the others (scope, years, title, search) and "fails at most one facet
    # filter" restrict the rows once, before the per-facet counts.
    hard = {k: v for k, v in conds.items() if k not in FACETS}
    soft = {k: v for k, v in conds.items() if k in FACETS}
    hw, params = where(hard)
    flags: list[str] = []
    for i, (sql_, _p) in enumerate(soft.values()):
        flags.append(f"coalesce({sql_}, false) AS _c{i}")
    # parameters: flag expressions come first in the SELECT list, then the WHERE
    flag_params: list[Any] = [x for _k, (_s, p) in soft.items() for x in p]
    flag_of = {k: f"_c{i}" for i, k in enumerate(soft)}
    cols = sorted({c for c, _ in FACETS.values()})
    fails = " + ".join(f"(NOT _c{i})::INT" for i in range(len(soft))) or "0"
    inner = (
        f"SELECT {', '.join(cols)}{', ' if flags else ''}{', '.join(flags)} FROM {ST} WHERE {hw}"
    )
    base = f"SELECT * FROM ({inner}) WHERE {fails} <= 1"
    branches: list[str] = []
    for name, (col, multi) in FACETS.items():
        others = [flag_of[k] for k in soft if k != name] or ["true"]
        val = f"unnest({col})" if multi else col
        branches.append(
            f"SELECT '{name}' AS facet, value, count(*) AS n FROM "
            f"(SELECT {val} AS value FROM m WHERE {' AND '.join(others)}) WHERE value IS NOT NULL "
            "GROUP BY value"
        )
    sql = f"WITH m AS MATERIALIZED ({base}) " + " UNION ALL ".join(branches)
    params = [*flag_params, *params]
    rows = con.execute(sql, params).fetchall()
    by: dict[str, list[tuple[str, int]]] = {k: [] for k in FACETS}
    for facet, value, n in rows:
        by[facet].append((str(value), int(n)))
    return by


def _chosen(query: Query) -> dict[str, tuple[str, ...]]:
    f = query.filters
    out: dict[str, tuple[str, ...]] = {
        n: getattr(f, n)
        for n in ("country", "registry", "status", "phase", "cell_type", "indication_group")
    }
    for n in EXTRA_FILTERS:
        out[n] = getattr(query, n)
    return out


# ---------------------------------------------------------------- overview
#: overview chart → (landscape section, category column, series column or None, filter builder)
def overview(
    con: duckdb.DuckDBPyConnection, query: Query, index: FacetIndex | None = None
) -> dict[str, Any]:
    """The report's headline and main charts for the selection. Each bar
    carries the URL parameters that list exactly its trials.

    The counting rules are the report's (:mod:`celltrials.analysis.landscape`:
    a trial counts once under each of its cell types, sources, countries and
    families; start years up to the data date); the counts are computed here
    in one pass over the precomputed table, without the lists of trial ids
    the report keeps for each count (those are what make the report's
    section functions slow at registry scale). Tests compare every number
    with the report built with the same filters."""
    dd = index.data_date if index is not None else ls.data_date(con)
    if index is not None:
        mask = _and(index, condition_masks(con, index, query).values())
        sec = _overview_frames(index.overview_counts(mask, dd), dd)
    else:
        w, params = where(conditions(query))
        sec = _overview_frames(_overview_counts(con, w, params, dd), dd)
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

    headline = sec["headline"]
    charts: list[dict[str, Any]] = []

    def bar(
        cid: str,
        title: str,
        recs: list[dict[str, Any]],
        key: str,
        link: Callable[[str], list[tuple[str, str]] | None] | None,
        series: str | None = None,
        note: str = "",
    ) -> None:
        items = []
        for r in recs:
            k = str(r[key])
            s = str(r[series]) if series else None
            lk = link(k) if link else None
            if lk is not None and series is not None and s is not None:
                lk = _family_link(s, lk)
            lk = full_link(lk)
            items.append(
                {
                    "key": k,
                    "label": ls.label(k),
                    "series": s,
                    "series_label": ls.label(s) if s else None,
                    "n": int(r["n_trials"]),
                    "link": lk,
                    "partial": bool(r.get("partial", False)),
                }
            )
        charts.append(
            {"id": cid, "title": title, "items": items, "stacked": series is not None, "note": note}
        )

    bar(
        "immune_by_cell_type",
        "Immune-cell trials by cell type",
        sec["immune_by_cell_type"],
        "cell_type",
        lambda k: [("cell_type", k)],
    )
    bar(
        "stem_by_indication",
        "Stem/stromal-cell trials by indication group",
        sec["stem_by_indication"],
        "indication_group",
        lambda k: (
            [("cell_type", "stem_stromal"), ("indication_group", k)]
            if k != "not_classified"
            else None
        ),
    )
    bar(
        "msc_by_source",
        "MSC trials by tissue source",
        sec["msc_by_source"],
        "msc_source",
        lambda k: [("cell_type", "msc"), ("msc_source", k)],
    )
    sy = sec["start_year_by_family"]
    bar(
        "start_year_by_family",
        "Trials per start year, by cell-type family",
        sy,
        "year",
        None,
        series="family",
        note="The latest year is partial (data up to the latest registry update).",
    )
    bar(
        "phase_by_family",
        "Trials by phase and family",
        sec["phase_by_family"],
        "phase",
        lambda k: [("phase", k)],
        series="family",
    )
    bar(
        "status_by_family",
        "Trials by status and family",
        sec["status_by_family"],
        "status",
        lambda k: [("status", k)] if k != "UNKNOWN" else None,
        series="family",
    )
    bar(
        "countries",
        "Countries (top 15)",
        sec["countries"][:15],
        "country",
        lambda k: [("country", k)],
    )
    bar(
        "sponsor_classes",
        "Lead sponsor class",
        sec["sponsor_classes"],
        "sponsor_class",
        lambda k: [("sponsor_class", k)],
    )
    return {
        "count": int(headline.get("trials") or 0),
        "headline": headline,
        "charts": charts,
        "filters": query.describe(),
        "data_date": _plain(dd),
    }


def _overview_counts(
    con: duckdb.DuckDBPyConnection, w: str, params: list[Any], dd: date | None
) -> dict[str, Any]:
    """The overview's numbers in SQL: ``{"headline": {...}, "rows": [(chart, key, family, n)]}``
    (:meth:`FacetIndex.overview_counts` computes the same with numpy)."""
    cutoff = dd or date.max
    rows = con.execute(
        f"""
        WITH s AS MATERIALIZED (
            SELECT cell_type, families, indication_group, msc_source, start_date, start_year, phase,
                   coalesce(status, 'UNKNOWN') AS status, sponsor_class, countries
            FROM {ST} WHERE {w})
        SELECT 'immune_by_cell_type', k, NULL, count(*) FROM (SELECT unnest(cell_type) AS k FROM s)
            WHERE k IN ({ls._in(ls.IMMUNE)}) GROUP BY k
        UNION ALL SELECT 'stem_by_indication', coalesce(indication_group, 'not_classified'), NULL, count(*)
            FROM s WHERE list_contains(families, 'stem_stromal') GROUP BY 2
        UNION ALL SELECT 'msc_by_source', k, NULL, count(*) FROM (
            SELECT unnest(CASE WHEN len(msc_source) = 0 THEN ['unspecified'] ELSE msc_source END) AS k
            FROM s WHERE list_contains(cell_type, 'msc')) WHERE k IS NOT NULL GROUP BY k
        UNION ALL SELECT 'start_year_by_family', CAST(y AS VARCHAR), f, count(*) FROM (
            SELECT start_year AS y, unnest(families) AS f FROM s
            WHERE start_date IS NOT NULL AND start_date <= ?) GROUP BY ALL
        UNION ALL SELECT 'phase_by_family', phase, f, count(*) FROM (SELECT phase, unnest(families) AS f FROM s)
            GROUP BY ALL
        UNION ALL SELECT 'status_by_family', status, f, count(*) FROM (SELECT status, unnest(families) AS f FROM s)
            GROUP BY ALL
        UNION ALL SELECT 'countries', k, NULL, count(*) FROM (SELECT unnest(countries) AS k FROM s)
            WHERE k IS NOT NULL GROUP BY k
        UNION ALL SELECT 'sponsor_classes', sponsor_class, NULL, count(*) FROM s WHERE sponsor_class IS NOT NULL
            GROUP BY 2""",
        [*params, cutoff],
    ).fetchall()
    h = (
        con.execute(
            f"""
        SELECT count(*), coalesce(sum(enrollment), 0),
               coalesce(sum(enrollment) FILTER (WHERE enrollment_type = 'ACTUAL'), 0),
               coalesce(sum(enrollment) FILTER (WHERE enrollment_type = 'ESTIMATED'), 0),
               coalesce(sum(enrollment) FILTER (WHERE enrollment_type = 'UNKNOWN'), 0),
               count(*) FILTER (WHERE enrollment IS NULL), count(DISTINCT registry),
               min(start_year) FILTER (WHERE start_date <= ?), max(start_year) FILTER (WHERE start_date <= ?),
               count(*) FILTER (WHERE start_date IS NULL), count(*) FILTER (WHERE start_date > ?),
               count(*) FILTER (WHERE n_records > 1)
        FROM {ST} WHERE {w}""",
            [cutoff, cutoff, cutoff, *params],
        ).fetchone()
        or ()
    )
    names = (
        "trials",
        "patients_total",
        "patients_actual",
        "patients_anticipated",
        "patients_type_not_stated",
        "trials_without_enrollment",
        "registries",
        "first_start_year",
        "last_start_year",
        "start_date_missing",
        "start_after_data_date",
        "merged_trials",
    )
    headline: dict[str, int | None] = {
        n: (None if v is None else int(v)) for n, v in zip(names, h, strict=True)
    }
    return {"headline": headline, "rows": rows}


def _overview_frames(counts: dict[str, Any], dd: date | None) -> dict[str, Any]:
    headline: dict[str, int | None] = dict(counts["headline"])
    by: dict[str, list[tuple[str, str | None, int]]] = {}
    for name, key, fam, n in sorted(counts["rows"], key=lambda r: (r[0], str(r[1]), str(r[2]))):
        by.setdefault(name, []).append((str(key), fam, int(n)))
    headline["countries"] = len(by.get("countries", []))

    Rec = dict[str, Any]  # one bar: {key: value, ("family": f,) "n_trials": n}

    def frame(name: str, key: str, series: bool = False) -> list[Rec]:
        return [
            {key: k, **({"family": f} if series else {}), "n_trials": n}
            for k, f, n in by.get(name, [])
        ]

    def most_first(recs: list[Rec], key: str, last: tuple[str, ...] = ()) -> list[Rec]:
        rank = {v: i + 1 for i, v in enumerate(last)}
        return sorted(recs, key=lambda r: (rank.get(r[key], 0), -r["n_trials"], r[key]))

    def in_order(
        recs: list[Rec], key: str, order: Iterable[str], series: bool = False
    ) -> list[Rec]:
        rank = {v: i for i, v in enumerate(order)}
        return sorted(
            recs,
            key=lambda r: (rank.get(r[key], len(rank)), *((str(r["family"]),) if series else ())),
        )

    years = [
        {**r, "year": int(r["year"])} for r in frame("start_year_by_family", "year", series=True)
    ]
    years.sort(key=lambda r: (r["year"], str(r["family"])))
    for r in years:
        r["partial"] = r["year"] == (dd.year if dd else -1)
    return {
        "headline": headline,
        "immune_by_cell_type": most_first(frame("immune_by_cell_type", "cell_type"), "cell_type"),
        "stem_by_indication": in_order(
            frame("stem_by_indication", "indication_group"),
            "indication_group",
            (*ls.INDICATION_GROUPS, "not_classified"),
        ),
        "msc_by_source": most_first(
            frame("msc_by_source", "msc_source"), "msc_source", ("other", "unspecified")
        ),
        "start_year_by_family": years,
        "phase_by_family": in_order(
            frame("phase_by_family", "phase", series=True), "phase", ls.PHASES, series=True
        ),
        "status_by_family": in_order(
            frame("status_by_family", "status", series=True), "status", ls.STATUS_ORDER, series=True
        ),
        "countries": most_first(frame("countries", "country"), "country"),
        "sponsor_classes": in_order(
            frame("sponsor_classes", "sponsor_class"),
            "sponsor_class",
            ("industry", "academic_other", "government", "unknown"),
        ),
    }


def _expand(name: str, value: str) -> tuple[str, ...]:
    if name == "cell_type":
        return {"immune": ls.IMMUNE, "stem_stromal": ls.STEM_STROMAL, "other": ls.OTHER}.get(
            value, (value,)
        )
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


class _SnapshotStore(Store):
    """A :class:`Store` over a snapshot cursor whose ``resolve`` reads the
    precomputed id table (any id of a trial, any case); ``known`` trial ids
    resolve to themselves without a query, and what the caller already read
    (``trials``: trial id → its ``trials`` row; ``label_rows_exist``) is
    answered without one."""

    def __init__(
        self,
        con: Any,
        path: str,
        known: tuple[str, ...] = (),
        trials: Mapping[str, Mapping[str, Any]] | None = None,
        label_rows_exist: bool | None = None,
    ) -> None:
        super().__init__(con, path)
        self.known = set(known)
        self.known_rows = dict(trials or {})
        self.label_rows_exist = label_rows_exist

    def has_labels(self) -> bool:
        if self.label_rows_exist is not None:
            return self.label_rows_exist
        return super().has_labels()

    def trial_title(self, trial_id: str) -> str:
        if trial_id in self.known_rows:
            return str(self.known_rows[trial_id].get("title") or "")
        return super().trial_title(trial_id)

    def label_rows(self, trial_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """:meth:`Store.label_rows`; for one trial by point look-ups (the
        general query hash-joins every trial, ≈10 ms at 100,000 trials)."""
        ids = sorted(set(trial_ids)) if trial_ids is not None else None
        if ids is None or len(ids) != 1:
            return super().label_rows(trial_ids)
        cols = ", ".join(f'"{c}"' for c in LABEL_TABLE_COLUMNS)
        rows = self.con.execute(f"SELECT {cols} FROM labels WHERE trial_id = ?", ids).fetchall()
        if ids[0] in self.known_rows:
            primary = [(self.known_rows[ids[0]].get("primary_record_id"),)]
        else:
            primary = self.con.execute(
                "SELECT primary_record_id FROM trials WHERE trial_id = ?", ids
            ).fetchall()
        rows = [(*r, primary[0][0] if primary else None) for r in rows]
        names = (*LABEL_TABLE_COLUMNS, "primary_record_id")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def resolve(self, any_id: str) -> str | None:

        if any_id in self.known:
            return any_id
        text = fold_id(any_id.strip())
        keys = [text.upper(), trial_id_for(text).upper()]
        rid = canonical_id(text)
        if rid:
            keys.append(rid.key.upper())
        for k in dict.fromkeys(keys):
            row = self.con.execute(
                "SELECT trial_id FROM memory.main.id_lookup WHERE k = ? ORDER BY trial_id LIMIT 1",
                [k],
            ).fetchone()
            if row:
                return str(row[0])
        return None


def trial_detail(
    con: duckdb.DuckDBPyConnection,
    any_id: str,
    texts: duckdb.DuckDBPyConnection | None = None,
    index: FacetIndex | None = None,
) -> dict[str, Any] | None:
    """Everything the trial page shows, or None for an unknown id.

    ``con`` is a snapshot cursor; ``texts`` one of profile ``texts`` (for the
    evidence context; ``con`` is used when not given); ``index`` the
    snapshot's index (the trial's list columns and the store's facts without
    a query)."""

    store = _SnapshotStore(con, "")
    # a trial id as the index holds it is its own answer (no look-up query)
    trial_id = any_id if index is not None and any_id in index.row_of else store.resolve(any_id)
    if trial_id is None:
        return None
    found = _trial_rows(con, index, trial_id) if index is not None else None
    if found is not None:
        if not found["trials"]:
            return None
        t: dict[str, Any] = {str(k): _row_plain(v) for k, v in found["trials"][0].items()}
        t["ids"] = [{k: _plain(v) for k, v in r.items()} for r in found["trial_ids"]]
        for name in ("conditions", "interventions", "arms", "countries", "sponsors", "outcomes"):
            t[name] = [{k: _plain(v) for k, v in r.items()} for r in found[name]]
        versions = [tuple(r.values()) for r in found["versions"]]
    else:
        cur = con.execute("SELECT * FROM trials WHERE trial_id = ?", [trial_id])
        names = [d[0] for d in cur.description or []]
        rows = cur.fetchall()
        if not rows:
            return None
        t = {str(k): _row_plain(v) for k, v in zip(names, rows[0], strict=True)}
        t["ids"] = _records(
            con.execute(
                "SELECT id_key, id_raw, registry FROM trial_ids WHERE trial_id = ? ORDER BY id_key",
                [trial_id],
            )
        )
        for name in ("conditions", "interventions", "arms", "countries", "sponsors", "outcomes"):
            t[name] = _records(
                con.execute(
                    f"SELECT * EXCLUDE (trial_id) FROM {name} WHERE trial_id = ?", [trial_id]
                )
            )
        versions = con.execute(
            f"SELECT {_VERSION_COLUMNS} FROM memory.main.versions WHERE trial_id = ? "
            "ORDER BY channel, record_id, last_update NULLS FIRST, ingested_at, record_key",
            [trial_id],
        ).fetchall()
    nh = 8 + len(HISTORY_FIELDS)
    t["records"] = [
        {
            "record_key": v[2],
            "channel": v[0],
            "record_id": v[1],
            "registry": v[nh],
            "source_format": v[6],
            "source": v[5],
            "position": v[nh + 1],
            "content_hash": v[nh + 2],
            "last_update": _plain(v[3]),
            "ingested_at": _plain(v[4]),
            "is_current": v[7],
            "is_primary": v[nh + 3],
            "merge_reason": v[nh + 4],
        }
        for v in sorted(
            sorted(versions, key=lambda v: str(v[4]), reverse=True), key=lambda v: (v[0], v[1])
        )
    ]  # newest first, as Store.trial
    out: dict[str, Any] = {
        "trial_id": trial_id,
        "trial": t,
        "registry_url": registry_url(trial_id, t.get("url")),
    }
    cols = (*LIST_COLUMNS, "is_cell_therapy")
    if index is not None:
        at = index.row_of.get(trial_id)
        listed = index.list_rows(np.array([at], dtype=np.int32)) if at is not None else []
        out["summary"] = {c: _plain(listed[0][c]) for c in cols} if listed else {}
        labelled, linked = index.facts["labelled"], index.facts["product_links"]
    else:
        row = con.execute(
            f"SELECT {', '.join(cols)} FROM {ST} WHERE trial_id = ?", [trial_id]
        ).fetchone()
        out["summary"] = {c: _plain(v) for c, v in zip(cols, row, strict=True)} if row else {}
        labelled, linked = ls.has_labels(con), _has_table(con, "product_links")
    out["labels"], out["evidence"] = None, []
    if labelled:
        with contextlib.suppress(CelltrialsError):
            ex = explain_trial(
                _SnapshotStore(
                    texts or con,
                    "",
                    known=(trial_id,),
                    trials={trial_id: found["trials"][0]} if found is not None else None,
                    label_rows_exist=index.facts.get("label_rows") if index is not None else None,
                ),
                trial_id,
            )
            out["labels"] = ex["labels"]
            out["evidence"] = ex["evidence"]
    out["product_links"] = []
    if found is not None and "product_links" in found:
        out["product_links"] = [
            {k: _plain(v) for k, v in r.items()} for r in found["product_links"]
        ]
    elif linked:
        out["product_links"] = _records(
            con.execute(
                "SELECT product, regulators, field, alias, snippet FROM product_links WHERE trial_id = ? "
                "ORDER BY product, field",
                [trial_id],
            )
        )
    out["history"] = history_from_rows(v[:nh] for v in versions)
    out["results"] = None
    if t.get("has_results"):
        with contextlib.suppress(CelltrialsError, KeyError, ValueError, TypeError):
            out["results"] = tables_to_records(results_for_store(store, trial_id))
    return out


_VERSION_COLUMNS = (
    "channel, record_id, record_key, last_update, ingested_at, source, source_format, is_current, "
    f"{', '.join(HISTORY_FIELDS)}, registry, position, content_hash, is_primary, merge_reason"
)
#: what the trial page reads per trial: name → (in-memory table sorted by
#: trial, its columns, the order of its rows); see :func:`_trial_rows`
_DETAIL_TABLES: dict[str, tuple[str, str, str]] = {
    "trials": ("memory.main.v_trials", "*", "_r"),
    "trial_ids": ("memory.main.v_trial_ids", "id_key, id_raw, registry", "id_key, _r"),
    **{
        name: (f"memory.main.v_{name}", "* EXCLUDE (trial_id)", "_r")
        for name in ("conditions", "interventions", "arms", "countries", "sponsors", "outcomes")
    },
    "versions": ("memory.main.versions", _VERSION_COLUMNS, "_r"),
    "product_links": (
        "memory.main.v_product_links",
        "product, regulators, field, alias, snippet",
        "product, field, _r",
    ),
}


def _trial_rows(
    con: duckdb.DuckDBPyConnection, index: FacetIndex, trial_id: str
) -> dict[str, list[dict[str, Any]]] | None:
    """The trial's rows of every :data:`_DETAIL_TABLES` table (each a
    ``rowid`` range known from the index: a look-up, not a scan), or None when
    the index cannot say (then the caller asks by ``trial_id``). The same rows,
    columns and order as the queries by ``trial_id``."""
    row = index.row_of.get(trial_id)
    if row is None or any(n not in index.ranges for n in _DETAIL_TABLES if n != "product_links"):
        return None
    out: dict[str, list[dict[str, Any]]] = {}
    for name, (table, cols, order) in _DETAIL_TABLES.items():
        if name not in index.ranges:
            continue
        r = index.ranges[name]
        lo, hi = int(r[row]), int(r[row + 1])
        if lo == hi:
            out[name] = []
            continue
        # rows in table order need no ORDER BY (DuckDB keeps insertion order:
        # preserve_insertion_order is on), which saves a sort per table
        by = "" if order == "_r" else f" ORDER BY {order.replace('_r', 'rowid')}"
        cur = con.execute(
            f"SELECT {cols} FROM {table} WHERE rowid >= ? AND rowid < ?{by}", [lo, hi]
        )
        names = [d[0] for d in cur.description or []]
        out[name] = [dict(zip(names, v, strict=True)) for v in cur.fetchall()]
    return out


def _row_plain(v: Any) -> Any:
    """A DuckDB value as :func:`celltrials.store._plain` shows it after pandas
    (a timestamp at midnight as its date)."""
    if isinstance(v, datetime) and v.tzinfo is None and v.time() == time(0):
        return v.date().isoformat()
    return _store_plain(v)


def _records(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description or []]
    return [{c: _plain(v) for c, v in zip(cols, r, strict=True)} for r in cur.fetchall()]


# ----------------------------------------------------------------- changes
def changes_page(
    con: duckdb.DuckDBPyConnection,
    query: Query,
    since: str | None,
    until: str | None,
    limit: int,
    index: FacetIndex | None = None,
) -> dict[str, Any]:
    """What changed from ``since`` (default: 30 days before the data date)
    to ``until`` in the trials of ``query``: :func:`celltrials.changes.changes`
    over the snapshot's precomputed changes (with the index: the same answer
    from its arrays)."""
    dd = index.data_date if index is not None else ls.data_date(con)
    since = since or ((dd or date.today()) - timedelta(days=30)).isoformat()
    if index is None or index.changes is None:
        sql, params = selection(query)
        return store_changes(con, since, until, within=(sql, params), limit=limit, table=CHANGES)
    lo = parse_date(since)
    if lo is None:
        raise ConfigError("a start date is needed", hint="Pass --since YYYY-MM-DD.")
    hi = parse_date(until, "--until")
    if hi is not None and hi < lo:
        raise ConfigError(f"--until {hi} is before --since {lo}", hint="Swap the dates.")
    mask = _and(index, condition_masks(con, index, query).values())
    found, listed = index.changes_in(mask, lo, hi, limit)
    counts = dict.fromkeys(KINDS, 0)
    counts.update(found)
    return {
        "since": lo.isoformat(),
        "until": hi.isoformat() if hi else None,
        "counts": counts,
        "total": sum(counts.values()),
        "changes": [
            {
                "date": r["d"].isoformat() if r["d"] else None,
                "kind": r["kind"],
                "trial_id": r["trial_id"],
                "record_id": r["record_id"],
                "registry": r["registry"],
                "title": r["title"],
                "old": r["old"],
                "new": r["new"],
                "previous_date": r["prev_d"].isoformat() if r["prev_d"] else None,
            }
            for r in listed
        ],
    }


# ---------------------------------------------------------------- products
def products_list(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:

    return json_records(products_table(Store(con, ""), relink=False))


def product_page(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any]:
    """A catalog product: its approvals (with sources), linked trials by
    phase, and the funnel row(s) of its cell type."""

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
EXPORT_FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "parquet": "application/vnd.apache.parquet",
}
EXPORT_COLUMNS = (
    "trial_id",
    "primary_record_id",
    "registry",
    "title",
    "status",
    "why_stopped",
    "phase",
    "study_type",
    "start_date",
    "registration_date",
    "last_update",
    "completion_date",
    "enrollment",
    "enrollment_type",
    "lead_sponsor",
    "sponsor_class",
    "countries",
    "conditions",
    "interventions",
    "is_cell_therapy",
    "cell_type",
    "msc_source",
    "origin",
    "product_form",
    "indication_group",
    "therapeutic_area",
    "targets",
    "products",
    "has_results",
    "url",
)


def export_frame(con: duckdb.DuckDBPyConnection, query: Query) -> pd.DataFrame:
    """The whole selection (no paging), one row per trial, lists ``; ``-joined."""
    w, p = where(conditions(query))
    cols = [
        f"array_to_string({c}, '; ') AS {c}"
        if c
        in (
            "countries",
            "cell_type",
            "msc_source",
            "product_form",
            "therapeutic_area",
            "targets",
            "products",
        )
        else c
        for c in EXPORT_COLUMNS
    ]
    return con.execute(
        f"SELECT {', '.join(cols)} FROM {ST} WHERE {w} ORDER BY {SORTS[query.sort]}", p
    ).df()


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


__all__ = [
    "EXPORT_FORMATS",
    "FACETS",
    "MAX_PAGE_SIZE",
    "Query",
    "count",
    "export_bytes",
    "export_frame",
    "facets",
    "overview",
    "parse_query",
    "prepare",
    "product_page",
    "products_list",
    "selection",
    "trial_detail",
    "trial_page",
]
