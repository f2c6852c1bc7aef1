"""The cell-therapy trial landscape: trial selection and one table per report section.

Every section function returns a :class:`pandas.DataFrame` whose count
columns (``n_trials``) come with the trial ids behind them (``trial_ids``,
a sorted list), so every number in a report can list its trials.

Counting rules (stated in the report's methods section):

* one trial = one deduplicated trial of the store (records merged across
  registries count once), shown through its primary record;
* a trial with several cell types / MSC sources / therapeutic areas / targets
  / product forms / countries counts once under each, so bars of such
  sections can add up to more than the number of trials;
* the *family* of a trial follows its cell types: ``immune``, ``stem_stromal``
  or ``other`` (``somatic_other``); a trial with cell types of two families
  counts in both; a trial without a cell type is ``unassigned``;
* the start year is the year of the registry start date; the year of the
  latest registry update in the store (:func:`data_date`) is the current,
  partial year; start dates after that date are planned starts.

Usage::

    sel = select_trials(store.con, Filters(country=("China",), start_year=(2019, 2024)))
    immune_by_cell_type(store.con, sel)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from datetime import date
from importlib.resources import files
from itertools import pairwise
from typing import Any, overload

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from celltrials.errors import ConfigError
from celltrials.safety import safe_urls
from celltrials.taxonomy.loader import TAXONOMY_VALUES

# ----------------------------------------------------------------- vocabulary
IMMUNE = (
    "car_t",
    "car_nk",
    "tcr_t",
    "til",
    "nk",
    "cik",
    "dc",
    "treg",
    "virus_specific_t",
    "gamma_delta_t",
    "macrophage",
    "other_immune",
)
STEM_STROMAL = (
    "msc",
    "hsc",
    "ipsc_derived",
    "esc_derived",
    "mononuclear_cells",
    "neural_stem",
    "other_stem",
)
OTHER = ("somatic_other",)
CELL_TYPES = IMMUNE + STEM_STROMAL + OTHER
FAMILIES = ("immune", "stem_stromal", "other", "unassigned")
FAMILY_OF = {
    **dict.fromkeys(IMMUNE, "immune"),
    **dict.fromkeys(STEM_STROMAL, "stem_stromal"),
    **dict.fromkeys(OTHER, "other"),
}
INDICATION_GROUPS = TAXONOMY_VALUES["indication_group"]
MSC_SOURCES = TAXONOMY_VALUES["msc_source"]
PRODUCT_FORMS = TAXONOMY_VALUES["product_form"]
THERAPEUTIC_AREAS = TAXONOMY_VALUES["therapeutic_area"]
STOPPED = ("TERMINATED", "WITHDRAWN", "SUSPENDED")
PHASES = (
    "EARLY_PHASE1",
    "PHASE1",
    "PHASE1_PHASE2",
    "PHASE2",
    "PHASE2_PHASE3",
    "PHASE3",
    "PHASE4",
    "NOT_APPLICABLE",
    "UNKNOWN",
)

LABELS: dict[str, str] = {
    "car_t": "CAR-T",
    "car_nk": "CAR-NK",
    "tcr_t": "TCR-T",
    "til": "TIL",
    "nk": "NK",
    "cik": "CIK",
    "dc": "Dendritic cells",
    "treg": "Treg",
    "virus_specific_t": "Virus-specific T",
    "gamma_delta_t": "γδ T",
    "macrophage": "Macrophage",
    "other_immune": "Other immune",
    "msc": "MSC",
    "hsc": "HSC",
    "ipsc_derived": "iPSC-derived",
    "esc_derived": "ESC-derived",
    "mononuclear_cells": "Mononuclear cells",
    "neural_stem": "Neural stem",
    "other_stem": "Other stem",
    "somatic_other": "Other somatic",
    "immune": "Immune cells",
    "stem_stromal": "Stem/stromal cells",
    "other": "Other",
    "unassigned": "No cell type",
    "oncology": "Oncology",
    "degenerative": "Degenerative",
    "immune_mediated": "Immune-mediated",
    "umbilical_cord": "Umbilical cord",
    "bone_marrow": "Bone marrow",
    "adipose": "Adipose",
    "placenta": "Placenta",
    "amnion": "Amnion",
    "dental_pulp": "Dental pulp",
    "endometrium_menstrual": "Endometrium/menstrual",
    "cord_blood": "Cord blood",
    "unspecified": "Unspecified",
    "cells": "Cells",
    "extracellular_vesicles": "Extracellular vesicles",
    "secretome": "Secretome",
    "gene_modified": "Gene-modified",
    "composite": "Composite",
    "hematologic_malignancy": "Haematologic malignancy",
    "solid_tumor": "Solid tumour",
    "musculoskeletal": "Musculoskeletal",
    "neurological": "Neurological",
    "cardiovascular": "Cardiovascular",
    "respiratory": "Respiratory",
    "hepatic": "Hepatic",
    "renal": "Renal",
    "metabolic_endocrine": "Metabolic/endocrine",
    "autoimmune_inflammatory": "Autoimmune/inflammatory",
    "gvhd_transplant": "GvHD/transplant",
    "skin_wound": "Skin/wound",
    "ophthalmic": "Ophthalmic",
    "reproductive": "Reproductive",
    "infectious": "Infectious",
    "hematologic_nonmalignant": "Haematologic non-malignant",
    "industry": "Industry",
    "academic_other": "Academic/other",
    "government": "Government",
    "EARLY_PHASE1": "Early phase 1",
    "PHASE1": "Phase 1",
    "PHASE1_PHASE2": "Phase 1/2",
    "PHASE2": "Phase 2",
    "PHASE2_PHASE3": "Phase 2/3",
    "PHASE3": "Phase 3",
    "PHASE4": "Phase 4",
    "NOT_APPLICABLE": "Not applicable",
    "UNKNOWN": "Unknown",
    "not_classified": "Not classified",
    "NOT_YET_RECRUITING": "Not yet recruiting",
    "RECRUITING": "Recruiting",
    "ENROLLING_BY_INVITATION": "Enrolling by invitation",
    "ACTIVE_NOT_RECRUITING": "Active, not recruiting",
    "COMPLETED": "Completed",
    "SUSPENDED": "Suspended",
    "TERMINATED": "Terminated",
    "WITHDRAWN": "Withdrawn",
    "AVAILABLE": "Available",
    "NO_LONGER_AVAILABLE": "No longer available",
    "TEMPORARILY_NOT_AVAILABLE": "Temporarily not available",
    "APPROVED_FOR_MARKETING": "Approved for marketing",
    "WITHHELD": "Withheld",
}


def label(code: Any) -> str:
    """Human label of a taxonomy/registry code; other values (targets,
    countries, sponsors) as they are."""
    if code is None or (isinstance(code, float) and code != code):
        return "—"
    s = str(code)
    return LABELS.get(s, s)


# -------------------------------------------------------------------- filters
@dataclass(frozen=True)
class Filters:
    """Which trials a report covers. Fields combine with AND; values within a
    field with OR. Empty means no restriction.

    ``scope`` is ``"cell_therapy"`` (trials classified as cell therapy, the
    default) or ``"all"`` (every trial in the store, classified or not).
    """

    country: tuple[str, ...] = ()
    registry: tuple[str, ...] = ()
    start_year: tuple[int | None, int | None] = (None, None)
    status: tuple[str, ...] = ()
    phase: tuple[str, ...] = ()
    cell_type: tuple[str, ...] = ()
    indication_group: tuple[str, ...] = ()
    title: str | None = None
    scope: str = "cell_therapy"

    def describe(self) -> dict[str, str]:
        """Non-empty filters as display strings (for the methods section)."""
        out: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "start_year":
                lo, hi = v
                if lo is not None or hi is not None:
                    out["start_year"] = (
                        f"{lo if lo is not None else '…'}–{hi if hi is not None else '…'}"
                    )
            elif f.name == "scope":
                out["scope"] = (
                    "cell-therapy trials" if v == "cell_therapy" else "all trials in the store"
                )
            elif isinstance(v, tuple) and v:
                out[f.name] = ", ".join(v)
            elif isinstance(v, str) and v:
                out[f.name] = v
        return out


def parse_year_range(text: str | None) -> tuple[int | None, int | None]:
    """``"2019-2024"`` → (2019, 2024); ``"2019"`` → (2019, 2019); ``"2019-"`` → (2019, None)."""
    if text is None or not text.strip():
        return (None, None)
    m = re.fullmatch(r"\s*(\d{4})?\s*(?:(-|–|\.\.|:)\s*(\d{4})?)?\s*", text)
    if not m or not (m.group(1) or m.group(3)):
        raise ConfigError(
            f"start year {text!r} is not YEAR or FROM-TO",
            hint="Write e.g. --start-year 2019-2024, --start-year 2020 or --start-year 2019-.",
        )
    lo = int(m.group(1)) if m.group(1) else None
    hi = int(m.group(3)) if m.group(3) else (lo if not m.group(2) else None)
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(
            f"start year range {text!r} runs backwards", hint="Write FROM-TO with FROM ≤ TO."
        )
    return (lo, hi)


def _norm_phase(value: str) -> str:
    v = re.sub(r"[\s/\-]+", "_", value.strip().upper())
    v = {
        "1": "PHASE1",
        "2": "PHASE2",
        "3": "PHASE3",
        "4": "PHASE4",
        "1_2": "PHASE1_PHASE2",
        "2_3": "PHASE2_PHASE3",
        "0": "EARLY_PHASE1",
        "NA": "NOT_APPLICABLE",
        "N_A": "NOT_APPLICABLE",
    }.get(v, v)
    v = re.sub(r"^PHASE_?(\d)_PHASE_?(\d)$", r"PHASE\1_PHASE\2", v)
    v = re.sub(r"^PHASE_(\d)$", r"PHASE\1", v)
    v = re.sub(r"^PHASE(\d)_(\d)$", r"PHASE\1_PHASE\2", v)
    if v not in PHASES:
        raise ConfigError(
            f"unknown phase {value!r}",
            hint="Use one of: " + ", ".join(PHASES) + " (or 1, 2, 1/2, 3…).",
        )
    return v


def _norm_choice(value: str, allowed: Iterable[str], what: str) -> str:
    v = value.strip().lower().replace("-", "_").replace(" ", "_")
    allowed = tuple(allowed)
    if v not in allowed:
        raise ConfigError(f"unknown {what} {value!r}", hint=f"Use one of: {', '.join(allowed)}.")
    return v


def make_filters(
    *,
    country: Iterable[str] = (),
    registry: Iterable[str] = (),
    start_year: str | tuple[int | None, int | None] | None = None,
    status: Iterable[str] = (),
    phase: Iterable[str] = (),
    cell_type: Iterable[str] = (),
    indication_group: Iterable[str] = (),
    title: str | None = None,
    scope: str = "cell_therapy",
) -> Filters:
    """Validated, normalised :class:`Filters` from user input (case-insensitive).

    ``cell_type`` also accepts a family name (``immune``, ``stem_stromal``,
    ``other``), which stands for all its cell types.
    """
    cts: list[str] = []
    for c in cell_type:
        v = _norm_choice(c, (*CELL_TYPES, "immune", "stem_stromal", "stem", "other"), "cell type")
        cts.extend(
            {
                "immune": IMMUNE,
                "stem_stromal": STEM_STROMAL,
                "stem": STEM_STROMAL,
                "other": OTHER,
            }.get(v, (v,))
        )
    if scope not in ("cell_therapy", "all"):
        raise ConfigError(f"unknown scope {scope!r}", hint="Use cell_therapy or all.")
    years = start_year if isinstance(start_year, tuple) else parse_year_range(start_year)
    return Filters(
        country=tuple(dict.fromkeys(c.strip() for c in country if c.strip())),
        registry=tuple(dict.fromkeys(r.strip().lower() for r in registry if r.strip())),
        start_year=years,
        status=tuple(
            dict.fromkeys(
                s.strip().upper().replace(" ", "_").replace("-", "_") for s in status if s.strip()
            )
        ),
        phase=tuple(dict.fromkeys(_norm_phase(p) for p in phase)),
        cell_type=tuple(dict.fromkeys(cts)),
        indication_group=tuple(
            dict.fromkeys(
                _norm_choice(g, INDICATION_GROUPS, "indication group") for g in indication_group
            )
        ),
        title=title.strip() if title and title.strip() else None,
        scope=scope,
    )


# ------------------------------------------------------------- label access
LABEL_VIEW = "_landscape_labels"
_MULTI = ("cell_type", "msc_source", "product_form", "therapeutic_area", "targets")
_SINGLE = ("is_cell_therapy", "origin", "indication_group")


def has_labels(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        _one(
            con,
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_name = 'labels' AND table_schema = 'main'",
        )
    )


def ensure_label_view(con: duckdb.DuckDBPyConnection) -> bool:
    """Create the temp view ``_landscape_labels`` (one row per trial, list
    columns for multi-valued fields, ``is_cell_therapy`` as BOOLEAN, and
    ``families``) over the classifier's ``labels`` table (typed since the
    store's migration 7: lists and a boolean). Returns whether any trial is labelled."""
    if not has_labels(con) or not _one(
        con, "SELECT count(*) > 0 FROM (SELECT 1 FROM labels LIMIT 1)"
    ):
        exprs = ["NULL::VARCHAR AS trial_id", "NULL::BOOLEAN AS is_cell_therapy"]
        exprs += [f"NULL::VARCHAR[] AS {c}" for c in _MULTI]
        exprs += ["NULL::VARCHAR AS origin", "NULL::VARCHAR AS indication_group"]
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {LABEL_VIEW} AS SELECT {', '.join(exprs)}, "
            "NULL::VARCHAR[] AS families WHERE false"
        )
        return False
    exprs = ["trial_id", "is_cell_therapy"]
    exprs += [f"{_clean_list(c)} AS {c}" for c in _MULTI]
    exprs += [f"nullif(trim({c}), '') AS {c}" for c in ("origin", "indication_group")]

    def family(x: str) -> str:
        return (
            f"CASE WHEN {x} IN ({_in(IMMUNE)}) THEN 'immune' "
            f"WHEN {x} IN ({_in(STEM_STROMAL)}) THEN 'stem_stromal' ELSE 'other' END"
        )

    # (one cell type, as most labelled trials have: its family without the lambda,
    # which cost a third of a 560,000-trial selection)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {LABEL_VIEW} AS "
        f"WITH l AS (SELECT {', '.join(exprs)} FROM labels) "
        "SELECT *, CASE WHEN len(cell_type) = 0 THEN ['unassigned'] "
        f"WHEN len(cell_type) = 1 THEN [{family('cell_type[1]')}] "
        f"ELSE list_sort(list_distinct(list_transform(cell_type, lambda x: {family('x')}))) "
        "END AS families FROM l"
    )
    return True


def _clean_list(c: str) -> str:
    """SQL: the text list ``c`` without NULL or blank items, each once, sorted. Most
    trials' lists hold no item or one: those skip the sort and the lambda (which
    cost most of a 560,000-trial selection's label view)."""
    full = f"list_sort(list_distinct(list_filter({c}, lambda x: x IS NOT NULL AND trim(x) <> '')))"
    return (
        f"CASE WHEN {c} IS NULL OR len({c}) = 0 THEN []::VARCHAR[] "
        f"WHEN len({c}) = 1 THEN CASE WHEN trim({c}[1]) <> '' THEN {c} ELSE []::VARCHAR[] END "
        f"ELSE {full} END"
    )


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The single value of a one-row, one-column query."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None


def _in(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


# ------------------------------------------------------------------ selection
SELECT_COLUMNS = """
    t.trial_id, t.primary_record_id, t.registry, t.title, t.status,
    nullif(trim(t.why_stopped), '') AS why_stopped, coalesce(t.phase, 'UNKNOWN') AS phase,
    t.study_type, t.start_date, year(t.start_date) AS start_year, t.registration_date, t.last_update,
    t.enrollment, coalesce(t.enrollment_type, 'UNKNOWN') AS enrollment_type,
    t.lead_sponsor, coalesce(t.sponsor_class, 'unknown') AS sponsor_class, t.url, t.n_records, t.source,
    l.is_cell_therapy, coalesce(l.cell_type, []) AS cell_type, coalesce(l.msc_source, []) AS msc_source,
    l.origin, coalesce(l.product_form, []) AS product_form, l.indication_group,
    coalesce(l.therapeutic_area, []) AS therapeutic_area, coalesce(l.targets, []) AS targets,
    coalesce(l.families, ['unassigned']) AS families"""


def selection_sql(filters: Filters) -> tuple[str, list[Any]]:
    """The SQL (with ``?`` parameters) that selects the report's trials."""
    where: list[str] = []
    params: list[Any] = []
    if filters.scope == "cell_therapy":
        where.append("l.is_cell_therapy")
    if filters.country:
        where.append(
            "t.trial_id IN (SELECT trial_id FROM countries WHERE lower(country) IN "
            "(SELECT lower(unnest(?::VARCHAR[]))))"
        )
        params.append(list(filters.country))
    if filters.registry:
        where.append("lower(t.registry) IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(filters.registry))
    lo, hi = filters.start_year
    if lo is not None:
        where.append("year(t.start_date) >= ?")
        params.append(lo)
    if hi is not None:
        where.append("year(t.start_date) <= ?")
        params.append(hi)
    if filters.status:
        where.append("upper(t.status) IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(filters.status))
    if filters.phase:
        where.append("coalesce(t.phase, 'UNKNOWN') IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(filters.phase))
    if filters.cell_type:
        where.append("len(list_intersect(coalesce(l.cell_type, []), ?::VARCHAR[])) > 0")
        params.append(list(filters.cell_type))
    if filters.indication_group:
        where.append("l.indication_group IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(filters.indication_group))
    if filters.title:
        where.append("contains(lower(coalesce(t.title, '')), lower(?))")
        params.append(filters.title)
    sql = (
        f"SELECT {SELECT_COLUMNS}\nFROM trials t LEFT JOIN {LABEL_VIEW} l USING (trial_id)"
        + ("\nWHERE " + "\n  AND ".join(where) if where else "")
        + "\nORDER BY t.trial_id"
    )
    return sql, params


def select_trials(con: duckdb.DuckDBPyConnection, filters: Filters | None = None) -> pd.DataFrame:
    """The trials a report covers, one row per trial, with their labels.

    The selection is also kept on the connection (temp table ``_sel``), so
    section functions called with the returned frame do not select again."""
    filters = filters or Filters()
    ensure_label_view(con)
    sql, params = selection_sql(filters)
    # sorted once, when read (sorting the wide rows into the table costs more)
    unsorted = sql.removesuffix("\nORDER BY t.trial_id")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _sel AS {unsorted}", params)
    # each row's key: its row id (numbering the rows in trial-id order instead, a
    # window over the wide rows, cost more than the whole selection)
    con.execute(f"ALTER TABLE _sel ADD COLUMN {SEL_ROW} INTEGER; UPDATE _sel SET {SEL_ROW} = rowid")
    table = con.sql("SELECT * FROM _sel ORDER BY trial_id").to_arrow_table()
    df = frame_of(table.drop_columns([SEL_ROW]))
    _remember(con, df, table.column(SEL_ROW).to_numpy())
    return df


#: the column of ``_sel`` holding each trial's key (an integer): the section queries
#: list these keys, not the trial ids, behind each count, and :func:`id_lists` reads
#: the ids from the selection frame through them (no lookup of every id by its text)
SEL_ROW = "sel_row"


def frame_of(table: pa.Table) -> pd.DataFrame:
    """``table.to_pandas()``, with each label-list column converted one distinct
    list at a time (:func:`_label_lists`): a few dozen distinct lists stand for
    500,000 trials, and pandas would make an array for every row."""
    lists = {n: s for n in table.column_names if (s := _label_lists(table.column(n))) is not None}
    df: pd.DataFrame = (table.drop_columns(list(lists)) if lists else table).to_pandas()
    for i, name in enumerate(table.column_names):
        if name in lists:
            df.insert(i, name, lists[name])
    return df


def _label_lists(column: pa.ChunkedArray) -> np.ndarray | None:
    """A list-of-text column as pandas converts it (an object array of object
    arrays), built from its distinct lists; each row holds its list's array, shared
    with the rows of the same list (read-only by convention, like any frame cell).
    None when it is not such a column or converting row by row costs less."""
    if not pa.types.is_list(column.type) or not pa.types.is_string(column.type.value_type):
        return None
    arr = column.combine_chunks()
    if len(arr) < 1000 or arr.null_count:
        return None
    flat = arr.flatten()  # (the items of the rows, in order, whatever the array's offset)
    if flat.null_count:
        return None
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    encoded = flat.dictionary_encode()
    vocab = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    base = len(vocab) + 1
    if int(lengths.max()) * np.log2(base) >= 62:
        return _label_lists_by_text(arr, flat)  # (the integer keys would not fit an int64)
    # each row as one integer: its items' codes in the vocabulary, from 1, as the
    # digits of a base-(vocabulary + 1) number (no digit is 0: [] is 0, [""] is not);
    # vectorised, where keys made as text took 0.1 s a column at 500,000 trials
    item_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) + 1
    first_item = np.cumsum(lengths) - lengths
    place = np.arange(len(flat)) - np.repeat(first_item, lengths)
    keys = np.zeros(len(arr), dtype=np.int64)
    filled = lengths > 0
    if filled.any():
        keys[filled] = np.add.reduceat(item_codes * np.power(base, place), first_item[filled])
    codes, uniques = pd.factorize(keys)  # (codes in order of first appearance)
    if len(uniques) > len(arr) // 4:
        return None
    seen = np.maximum.accumulate(codes)
    first_row = np.flatnonzero(codes > np.concatenate(([-1], seen[:-1])))
    distinct = np.empty(len(uniques), dtype=object)
    for i, r in enumerate(first_row.tolist()):
        lo = int(first_item[r])
        distinct[i] = np.array(vocab[item_codes[lo : lo + lengths[r]] - 1].tolist(), dtype=object)
    out: np.ndarray = distinct[codes]
    return out


_LIST_SEP = "\x1f"


def _label_lists_by_text(arr: pa.ListArray, flat: pa.Array) -> np.ndarray | None:
    """:func:`_label_lists` with each row's key as text (long lists of a large
    vocabulary, whose integer keys would not fit)."""
    if pc.any(pc.match_substring(flat, _LIST_SEP)).as_py():
        return None
    # the list's length first: [] and [""] differ
    keys = pc.binary_join_element_wise(
        pc.cast(pc.list_value_length(arr), pa.string()), pc.binary_join(arr, _LIST_SEP), _LIST_SEP
    )
    encoded = keys.dictionary_encode()
    uniques = encoded.dictionary.to_pylist()
    if len(uniques) > len(arr) // 4:
        return None
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    distinct = np.empty(len(uniques), dtype=object)
    for i, key in enumerate(uniques):
        n, _, rest = key.partition(_LIST_SEP)
        distinct[i] = np.array(rest.split(_LIST_SEP) if int(n) else [], dtype=object)
    out: np.ndarray = distinct[codes]
    return out


_SEL_TOKENS: dict[int, str] = {}


def _remember(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame, keys: np.ndarray) -> None:
    """Mark ``trials`` as the frame ``_sel`` now holds, with its :class:`Selection`
    (``keys``: the ``SEL_ROW`` of each of its rows). The mark travels with copies
    of the frame (pandas keeps ``attrs``), reordered ones too: the Selection made
    here, not one of a copy, is what the keys are read through."""
    token = uuid.uuid4().hex
    trials.attrs["_landscape_token"] = token
    _SEL_TOKENS[id(con)] = token
    _SELECTIONS[id(con)] = (token, Selection(trials, keys))


class Selection:
    """The trial ids of a selection frame, in its row order: the text
    (``ids``, one Python string per trial, shared by every :class:`TrialIds`
    made from it) and the Arrow array the section lists are looked up in."""

    __slots__ = ("_order", "_rank", "_row_of_key", "arrow", "ids")

    def __init__(self, trials: pd.DataFrame, keys: np.ndarray | None = None) -> None:
        self.ids: np.ndarray = np.asarray(trials["trial_id"].astype(str).tolist(), dtype=object)
        self.arrow = pa.array(self.ids, type=pa.string())
        self._rank: np.ndarray | None = None
        self._order: np.ndarray | None = None  # the rows in trial-id order (None: sorted)
        self._row_of_key: np.ndarray | None = None
        if keys is not None and len(keys):
            self._row_of_key = np.full(int(keys.max()) + 1, -1, dtype=np.int64)
            self._row_of_key[keys] = np.arange(len(keys), dtype=np.int64)

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """The rows of the trials whose ``SEL_ROW`` are ``keys`` (made with the
        keys by :func:`select_trials` or :func:`_selected`)."""
        if self._row_of_key is None:
            if len(keys):
                raise ValueError("this selection has no keys")
            return np.zeros(0, dtype=np.int64)
        rows: np.ndarray = self._row_of_key[keys]
        return rows

    def rank(self) -> np.ndarray:
        """Each row's place in trial-id order (the row itself when the ids are sorted,
        as :func:`select_trials` returns them)."""
        if self._rank is None:
            order = pc.sort_indices(self.arrow).to_numpy().astype(np.int64)
            self._rank = np.empty(len(order), dtype=np.int64)
            self._rank[order] = np.arange(len(order), dtype=np.int64)
            if not (order == np.arange(len(order))).all():
                self._order = order
        return self._rank

    def sort_lists(self, rows: np.ndarray, which: np.ndarray) -> np.ndarray:
        """``rows`` (of lists one after another: ``which`` numbers each row's list,
        non-decreasing) with each list's rows in trial-id order. One sort of
        integer keys (list, rank), not a sort of indices: several times faster
        on the millions of rows of a large report."""
        n = len(self.ids)
        base = which.astype(np.int64) * n
        keys = base + self.rank()[rows]
        keys.sort()  # (each list's keys stay in its own range: base is unchanged)
        ranks: np.ndarray = keys - base
        return ranks if self._order is None else self._order[ranks]

    def same_ids(self, trial_ids: pd.Index) -> bool:
        """Are ``trial_ids`` this selection's ids, in the same order?"""
        other = trial_ids.to_numpy(dtype=object)
        return len(other) == len(self.ids) and bool((other == self.ids).all())


class TrialIds(list):  # type: ignore[type-arg]  # list[str]
    """A section's trial ids (a plain list of text for every reader) that also
    knows their rows in the selection they were counted in (``positions``,
    in ``selection``): the report encodes its lists from the rows instead of
    looking 7.7 million ids up again at 500,000 trials. A copy or a pickle is
    a plain list."""

    __slots__ = ("positions", "selection")

    def __init__(self, ids: list[str], positions: np.ndarray, selection: Selection) -> None:
        super().__init__(ids)
        self.positions = positions
        self.selection = selection

    def rows_in(self, sel: Selection) -> np.ndarray | None:
        """The rows of these ids in ``sel`` (None when unknown: another
        selection, or the list was changed since it was made)."""
        if self.selection is not sel or len(self.positions) != len(self):
            return None
        return self.positions

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (list, (list(self),))


class TrialRows(Sequence[str]):
    """A section's trial ids as their rows in a selection, the text made only when
    read (a :class:`TrialIds` without its list). Inside :func:`lazy_id_lists`
    the section queries return these: the report reads only the rows (for its
    page and CSV lists), and at 500,000 trials making 9.6 million list items of
    text it never reads took seconds. Iterating, indexing, comparing to a list
    and pickling (as a plain list) give the ids."""

    __slots__ = ("positions", "selection")

    def __init__(self, positions: np.ndarray, selection: Selection) -> None:
        self.positions = positions
        self.selection = selection

    def __len__(self) -> int:
        return len(self.positions)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            got: list[str] = self.selection.ids[self.positions[i]].tolist()
            return got
        return str(self.selection.ids[self.positions[i]])

    def __iter__(self) -> Iterator[str]:
        return iter(self[:])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TrialRows | list | tuple):
            return self[:] == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # (mutable-looking, like a list)

    def __repr__(self) -> str:
        return repr(self[:])

    def rows_in(self, sel: Selection) -> np.ndarray | None:
        """The rows of these ids in ``sel`` (None for another selection)."""
        return self.positions if self.selection is sel else None

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (list, (self[:],))


def listed(rows: np.ndarray, sel: Selection) -> TrialIds | TrialRows:
    """The trial ids of ``rows`` of ``sel`` (in trial-id order) as a section's list:
    :class:`TrialRows` inside :func:`lazy_id_lists`, else :class:`TrialIds`."""
    if _LAZY_LISTS.get():
        return TrialRows(rows, sel)
    return TrialIds(sel.ids[rows].tolist(), rows, sel)


def listed_rows(ids: object, sel: Selection) -> np.ndarray | None:
    """The rows in ``sel`` of a section's list of trial ids when the list knows
    them (:class:`TrialIds`, :class:`TrialRows` counted in ``sel``), else None."""
    return ids.rows_in(sel) if isinstance(ids, TrialIds | TrialRows) else None


def listed_selection(ids: object) -> Selection | None:
    """The selection a section's list was counted in, when it knows its rows."""
    return ids.selection if isinstance(ids, TrialIds | TrialRows) else None


#: inside :func:`lazy_id_lists`: section lists as :class:`TrialRows`
_LAZY_LISTS: ContextVar[bool] = ContextVar("_LAZY_LISTS", default=False)


@contextmanager
def lazy_id_lists() -> Iterator[None]:
    """Section queries run inside return their trial-id lists as :class:`TrialRows`
    (when the ids are rows of the selection; else as lists): for a caller that
    reads the rows (the report), not the text."""
    token = _LAZY_LISTS.set(True)
    try:
        yield
    finally:
        _LAZY_LISTS.reset(token)


#: the selection whose ids the section queries of this thread list (set by _selected)
_LISTING: ContextVar[tuple[duckdb.DuckDBPyConnection, pd.DataFrame] | None] = ContextVar(
    "_LISTING", default=None
)
_SELECTIONS: dict[int, tuple[str, Selection]] = {}


def selection_of(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> Selection:
    """The :class:`Selection` of ``trials`` (made once per selection and connection)."""
    token = trials.attrs.get("_landscape_token")
    got = _SELECTIONS.get(id(con))
    if token is not None and got is not None and got[0] == token:
        return got[1]
    sel = Selection(trials)
    if token is not None:
        _SELECTIONS[id(con)] = (token, sel)
    return sel


def id_lists(column: pa.ChunkedArray | pa.Array, sel: Selection | None) -> list[Any]:
    """An Arrow column of trial-id lists as Python lists, each sorted (a missing
    list: []). With ``sel``, when every id is one of its trials and there are at
    least as many ids as trials: :class:`TrialIds` whose text is the selection's
    own strings (no new string per id). A column of integer lists holds rows of
    ``sel`` (the section queries' ``SEL_ROW``), read without any lookup.

    The section queries leave the ids of a list unordered: sorting them here (as
    rows of the selection) costs a fraction of DuckDB's ``list(... ORDER BY
    trial_id)`` on strings."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(arr, pa.LargeListArray):
        arr = arr.cast(pa.list_(arr.type.value_type))
    if len(arr) == 0:
        return []
    flat = arr.flatten()  # the ids of the valid lists, in order
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    bounds = np.concatenate(([0], np.cumsum(lengths))).tolist()
    pos: pa.Array | None = None
    if pa.types.is_integer(flat.type):  # rows of the selection (``SEL_ROW``)
        if sel is None or flat.null_count:
            raise ValueError("a list of selection rows needs its selection")
        pos = flat
    # (a lookup hashes every trial of the selection first: worth it for many ids only)
    elif sel is not None and pa.types.is_string(flat.type) and len(flat) >= len(sel.ids):
        pos = pc.index_in(flat, value_set=sel.arrow)
    if sel is not None and pos is not None and pos.null_count == 0:
        rows = pos.to_numpy(zero_copy_only=False).astype(np.int64)
        if pos is flat:
            rows = sel.rows(rows)
        rows = sel.sort_lists(rows, np.repeat(np.arange(len(lengths)), lengths))
        return [listed(rows[a:b], sel) for a, b in pairwise(bounds)]
    values = flat.to_pylist()
    return [sorted(values[a:b]) for a, b in pairwise(bounds)]


@contextmanager
def _selected(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> Iterator[str]:
    """Expose ``trials`` (its trial ids) to SQL as the temp table ``_sel``
    (joined with the trial and label views) for the section queries.

    The table is built once per (connection, DataFrame): section functions
    called in a row on the same selection reuse it."""
    token = trials.attrs.get("_landscape_token")
    fresh = token is not None and _SEL_TOKENS.get(id(con)) == token
    if fresh:
        try:
            fresh = _one(con, "SELECT count(*) FROM _sel") == len(trials)
        except duckdb.CatalogException:  # another connection that reused the id
            fresh = False
    if not fresh:
        ensure_label_view(con)
        ids = pd.DataFrame(
            {
                "trial_id": trials["trial_id"].astype(str),
                SEL_ROW: np.arange(len(trials), dtype=np.int32),
            }
        )
        con.register("_sel_ids", ids)
        try:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _sel AS SELECT {SELECT_COLUMNS}, s.{SEL_ROW} "
                f"FROM _sel_ids s JOIN trials t USING (trial_id) LEFT JOIN {LABEL_VIEW} l USING (trial_id)"
            )
        finally:
            con.unregister("_sel_ids")
        _remember(con, trials, ids[SEL_ROW].to_numpy())
    listing = _LISTING.set((con, trials))
    try:
        yield "_sel"
    finally:
        _LISTING.reset(listing)


_SEL_COUNTRIES: dict[int, str] = {}


def _selected_countries(con: duckdb.DuckDBPyConnection) -> None:
    """The temp table ``_sel_countries``: each (trial, country) of the trials in
    ``_sel`` (inside :func:`_selected`), built once per selection — the
    ``countries`` view de-duplicates every trial's countries of the store on each
    read, and the headline and the countries section read it three times."""
    token = _SEL_TOKENS.get(id(con))
    if token is None or _SEL_COUNTRIES.get(id(con)) != token:
        # (the rows of the countries view, read from its tables: the view's own
        # DISTINCT over every trial of the store cost twice as much at 500,000 trials)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _sel_countries AS "
            f"SELECT DISTINCT tr.trial_id, s.{SEL_ROW}, c.country "
            "FROM trial_records tr JOIN _sel s ON s.trial_id = tr.trial_id "
            "JOIN record_countries c USING (record_key) "
            "WHERE tr.is_primary AND c.country IS NOT NULL"
        )
        if token is not None:
            _SEL_COUNTRIES[id(con)] = token


def _q(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    """The result of a section query as a frame; its ``trial_ids`` lists (in any
    order from the query) sorted (:func:`id_lists`)."""
    listing = _LISTING.get()
    trials = listing[1] if listing is not None and listing[0] is con else None
    rel = con.sql(sql, params=params or None)
    if "trial_ids" not in rel.columns:
        return _counted(rel.df())
    # the id lists through Arrow (as the selection's rows, :class:`TrialIds`, inside
    # :func:`_selected`); the other columns converted by DuckDB as before
    table = rel.to_arrow_table()
    ids = id_lists(
        table.column("trial_ids"), selection_of(con, trials) if trials is not None else None
    )
    df = duckdb.from_arrow(table.drop_columns(["trial_ids"]), connection=con).df()
    df.insert(table.column_names.index("trial_ids"), "trial_ids", pd.Series(ids, dtype=object))
    return _counted(df)


def _counted(df: pd.DataFrame) -> pd.DataFrame:
    if "n_trials" in df.columns:
        df["n_trials"] = df["n_trials"].astype("int64")
    return df


def _count_by(
    con: duckdb.DuckDBPyConnection,
    key_expr: str,
    where: str = "true",
    order: str = "n_trials DESC, key",
    unnest: bool = False,
) -> pd.DataFrame:
    inner = f"unnest({key_expr})" if unnest else key_expr
    return _q(
        con,
        f"""
        WITH k AS (SELECT sel_row, {inner} AS key FROM _sel WHERE {where})
        SELECT key, count(DISTINCT sel_row) AS n_trials, list(DISTINCT sel_row) AS trial_ids
        FROM k WHERE key IS NOT NULL GROUP BY key ORDER BY {order}""",
    )


def _order_by(df: pd.DataFrame, column: str, order: Iterable[str]) -> pd.DataFrame:
    rank = {v: i for i, v in enumerate(order)}
    return df.sort_values(
        column, key=lambda s: s.map(lambda v: rank.get(v, len(rank))), kind="stable"
    ).reset_index(drop=True)


# ---------------------------------------------------------------- data dates
def data_date(con: duckdb.DuckDBPyConnection) -> date | None:
    """The latest registry update date of any trial in the store: the 'as of'
    date of the data (never the wall clock)."""
    held = _HELD_DATA_DATE.get()
    if held is not None and held[0] is con:
        return held[1]
    v = _one(con, "SELECT max(last_update) FROM trials")
    return v if isinstance(v, date) else None


#: (connection, its data date) while :func:`holding_data_date` runs
_HELD_DATA_DATE: ContextVar[tuple[duckdb.DuckDBPyConnection, date | None] | None] = ContextVar(
    "_HELD_DATA_DATE", default=None
)


@contextmanager
def holding_data_date(con: duckdb.DuckDBPyConnection) -> Iterator[date | None]:
    """Read :func:`data_date` of ``con`` once; inside the block (in this
    thread) the section functions use it instead of each reading it again
    (a scan of every trial each time). For a run of sections over a store
    nothing writes to meanwhile, such as a report's."""
    dd = data_date(con)
    token = _HELD_DATA_DATE.set((con, dd))
    try:
        yield dd
    finally:
        _HELD_DATA_DATE.reset(token)


# ------------------------------------------------------------------- sections
def headline(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Key figures: trials, patients (actual / anticipated / type not stated),
    countries, registries, first and last start year, missing and planned starts.

    ``value`` is an integer; ``trial_ids`` the trials behind it (for the
    patient sums: the trials whose enrollment is summed)."""
    dd = data_date(con)
    cutoff = dd or date.max
    # metric, value expression, which trials stand behind it (a filter on _sel)
    metrics = [
        ("trials", "count(*)", "true"),
        ("patients_total", "coalesce(sum(enrollment), 0)", "enrollment IS NOT NULL"),
        (
            "patients_actual",
            "coalesce(sum(enrollment) FILTER (WHERE enrollment_type = 'ACTUAL'), 0)",
            "enrollment IS NOT NULL AND enrollment_type = 'ACTUAL'",
        ),
        (
            "patients_anticipated",
            "coalesce(sum(enrollment) FILTER (WHERE enrollment_type = 'ESTIMATED'), 0)",
            "enrollment IS NOT NULL AND enrollment_type = 'ESTIMATED'",
        ),
        (
            "patients_type_not_stated",
            "coalesce(sum(enrollment) FILTER (WHERE enrollment_type = 'UNKNOWN'), 0)",
            "enrollment IS NOT NULL AND enrollment_type = 'UNKNOWN'",
        ),
        (
            "trials_without_enrollment",
            "count(*) FILTER (WHERE enrollment IS NULL)",
            "enrollment IS NULL",
        ),
        (
            "countries",
            "any_value(c.n)",
            "trial_id IN (SELECT trial_id FROM _sel_countries)",
        ),
        ("registries", "count(DISTINCT registry)", "registry IS NOT NULL"),
        ("first_start_year", "any_value(y.y0)", "dated AND start_year = y.y0"),
        ("last_start_year", "any_value(y.y1)", "dated AND start_year = y.y1"),
        ("start_date_missing", "count(*) FILTER (WHERE start_date IS NULL)", "start_date IS NULL"),
        ("start_after_data_date", "count(*) FILTER (WHERE start_date > ?)", "start_date > ?"),
        ("merged_trials", "count(*) FILTER (WHERE n_records > 1)", "n_records > 1"),
    ]
    values = ", ".join(f"{value} AS v{i}" for i, (_, value, _) in enumerate(metrics))
    flags = ", ".join(f"({where}) AS f{i}" for i, (_, _, where) in enumerate(metrics))
    with _selected(con, trials):
        _selected_countries(con)
        cte = """
            WITH s AS (SELECT *, start_date <= ? AS dated FROM _sel),
                 y AS (SELECT min(start_year) FILTER (WHERE dated) AS y0,
                              max(start_year) FILTER (WHERE dated) AS y1 FROM s),
                 c AS (SELECT count(DISTINCT country) AS n FROM _sel_countries)"""
        got = con.execute(f"{cte} SELECT {values} FROM s, y, c", [cutoff, cutoff]).fetchall()[0]
        # the trials behind each metric: one sorted read of the flags, filtered by Arrow
        # (the same lists as list(trial_id ORDER BY trial_id) FILTER (WHERE ...), in C++)
        table = con.sql(
            f"{cte} SELECT {SEL_ROW}, {flags} FROM s, y ORDER BY trial_id",
            params=[cutoff, cutoff],
        ).to_arrow_table()
    sel = selection_of(con, trials)
    at = sel.rows(table.column(SEL_ROW).to_numpy())  # (each trial's row in the frame)
    row: list[Any] = []
    for i in range(len(metrics)):
        picked = at[pc.fill_null(table.column(f"f{i}"), False).to_numpy(zero_copy_only=False)]
        row += [got[i], listed(picked, sel)]
    rows = [
        {
            "metric": m,
            "value": None if row[2 * i] is None else int(row[2 * i]),
            "trial_ids": row[2 * i + 1],
        }
        for i, (m, _, _) in enumerate(metrics)
    ]
    df = pd.DataFrame(rows)
    df["value"] = df["value"].astype("Int64")
    df["n_trials"] = [len(x) for x in df["trial_ids"]]
    return df


def registries(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials by the registry of their primary record."""
    with _selected(con, trials):
        return _count_by(con, "registry").rename(columns={"key": "registry"})


def snapshots(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """One row per ingested source file: format, when ingested, records read,
    trials of the report shown from it, and the latest registry update date
    among its records (the snapshot date of the source)."""
    with _selected(con, trials):
        df = _q(
            con,
            """
            WITH src AS (
                SELECT source, any_value(format) AS format, min(started_at) AS first_ingested,
                       max(finished_at) AS last_ingested, sum(n_records) AS n_records_read,
                       sum(n_bad) AS n_bad
                FROM ingests GROUP BY source),
            upd AS (SELECT source, max(last_update) AS latest_update, string_agg(DISTINCT registry, ', ' ORDER BY registry) AS registries
                    FROM records GROUP BY source),
            shown AS (SELECT source, count(*) AS n_trials, list(sel_row) AS trial_ids
                      FROM _sel GROUP BY source)
            SELECT src.source, src.format, upd.registries, src.first_ingested, src.last_ingested,
                   src.n_records_read, src.n_bad, upd.latest_update,
                   coalesce(shown.n_trials, 0) AS n_trials, coalesce(shown.trial_ids, []) AS trial_ids
            FROM src LEFT JOIN upd USING (source) LEFT JOIN shown USING (source)
            ORDER BY src.source""",
        )
    return df


def immune_by_cell_type(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Immune-cell trials by immune cell type (a trial counts under each of its types)."""
    with _selected(con, trials):
        df = _q(
            con,
            f"""
            WITH k AS (SELECT sel_row, unnest(cell_type) AS key FROM _sel)
            SELECT key AS cell_type, count(DISTINCT sel_row) AS n_trials, list(DISTINCT sel_row) AS trial_ids
            FROM k WHERE key IN ({_in(IMMUNE)}) GROUP BY key ORDER BY n_trials DESC, key""",
        )
    return df


def stem_by_indication(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Stem/stromal-cell trials by indication group."""
    with _selected(con, trials):
        df = _count_by(
            con,
            "coalesce(indication_group, 'not_classified')",
            where="list_contains(families, 'stem_stromal')",
        ).rename(columns={"key": "indication_group"})
    return _order_by(df, "indication_group", (*INDICATION_GROUPS, "not_classified"))


def stem_by_cell_type(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Stem/stromal-cell trials by stem/stromal cell type."""
    with _selected(con, trials):
        return _q(
            con,
            f"""
            WITH k AS (SELECT sel_row, unnest(cell_type) AS key FROM _sel)
            SELECT key AS cell_type, count(DISTINCT sel_row) AS n_trials, list(DISTINCT sel_row) AS trial_ids
            FROM k WHERE key IN ({_in(STEM_STROMAL)}) GROUP BY key ORDER BY n_trials DESC, key""",
        )


def msc_by_source(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """MSC trials by MSC tissue source (an MSC trial without a source is
    'unspecified'); most trials first, 'other' and 'unspecified' last."""
    with _selected(con, trials):
        df = _count_by(
            con,
            "CASE WHEN len(msc_source) = 0 THEN ['unspecified'] ELSE msc_source END",
            where="list_contains(cell_type, 'msc')",
            unnest=True,
        ).rename(columns={"key": "msc_source"})
    rank = df["msc_source"].map({"other": 1, "unspecified": 2}).fillna(0)
    return (
        df.assign(_r=rank)
        .sort_values(["_r", "n_trials", "msc_source"], ascending=[True, False, True], kind="stable")
        .drop(columns="_r")
        .reset_index(drop=True)
    )


def _by_family_and(con: duckdb.DuckDBPyConnection, key_expr: str, name: str) -> pd.DataFrame:
    return _q(
        con,
        f"""
        WITH k AS (SELECT sel_row, {key_expr} AS key, unnest(families) AS family FROM _sel)
        SELECT key AS {name}, family, count(DISTINCT sel_row) AS n_trials,
               list(DISTINCT sel_row) AS trial_ids
        FROM k GROUP BY ALL ORDER BY {name}, family""",
    )


def start_year_by_family(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per start year and cell-type family, up to the year of the data
    date; ``partial`` marks that year (the data do not cover all of it).
    Trials without a start date or starting after the data date are left out
    (counted in :func:`headline`)."""
    dd = data_date(con)
    cutoff = dd or date.max
    with _selected(con, trials):
        df = _q(
            con,
            """
            WITH k AS (SELECT sel_row, start_year, unnest(families) AS family FROM _sel
                       WHERE start_date IS NOT NULL AND start_date <= ?)
            SELECT start_year AS year, family, count(DISTINCT sel_row) AS n_trials,
                   list(DISTINCT sel_row) AS trial_ids
            FROM k GROUP BY ALL ORDER BY year, family""",
            [cutoff],
        )
    df["year"] = df["year"].astype("int64")
    df["partial"] = df["year"] == (dd.year if dd else -1)
    return df


def phase_by_family(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials by phase and family."""
    with _selected(con, trials):
        df = _by_family_and(con, "phase", "phase")
    return _order_by(df, "phase", PHASES)


STATUS_ORDER = (
    "NOT_YET_RECRUITING",
    "RECRUITING",
    "ENROLLING_BY_INVITATION",
    "ACTIVE_NOT_RECRUITING",
    "COMPLETED",
    "SUSPENDED",
    "TERMINATED",
    "WITHDRAWN",
    "UNKNOWN",
)


def status_by_family(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials by overall status and family."""
    with _selected(con, trials):
        df = _by_family_and(con, "coalesce(status, 'UNKNOWN')", "status")
    return _order_by(df, "status", STATUS_ORDER)


def stopped_reasons(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Terminated, withdrawn and suspended trials by the reason their record
    states (``why_stopped``); ``(no reason given)`` when it states none."""
    with _selected(con, trials):
        df = _q(
            con,
            f"""
            SELECT * FROM (
                SELECT status, coalesce(why_stopped, '(no reason given)') AS reason,
                       count(*) AS n_trials, list(sel_row) AS trial_ids
                FROM _sel WHERE status IN ({_in(STOPPED)}) GROUP BY ALL)
            ORDER BY status, (reason = '(no reason given)'), n_trials DESC, reason""",
        )
    return _order_by(df, "status", STOPPED)


def countries(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials by country (a multinational trial counts in each country)."""
    with _selected(con, trials):
        _selected_countries(con)
        return _q(
            con,
            """
            SELECT country, count(*) AS n_trials, list(sel_row) AS trial_ids
            FROM _sel_countries GROUP BY country ORDER BY n_trials DESC, country""",
        )


def sponsors(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials by lead sponsor (with its class), most trials first; all sponsors.

    Spellings of one sponsor (case, accents, punctuation, spacing, repaired
    encoding: ``lead_sponsor_key``) count together under their most common
    spelling; ``spellings`` lists them all."""
    with _selected(con, trials):
        return _q(
            con,
            """
            WITH s AS (
                SELECT x.sel_row, x.lead_sponsor, x.sponsor_class,
                       coalesce(t.lead_sponsor_key, x.lead_sponsor) AS k
                FROM _sel x JOIN trials t USING (trial_id)
                WHERE x.lead_sponsor IS NOT NULL AND trim(x.lead_sponsor) <> ''),
            spelt AS (SELECT k, lead_sponsor, count(*) AS n FROM s GROUP BY k, lead_sponsor),
            named AS (SELECT k, first(lead_sponsor ORDER BY n DESC, lead_sponsor) AS name,
                             list(lead_sponsor ORDER BY n DESC, lead_sponsor) AS spellings
                      FROM spelt GROUP BY k)
            SELECT named.name AS lead_sponsor, any_value(s.sponsor_class ORDER BY s.sponsor_class) AS sponsor_class,
                   count(*) AS n_trials, list(s.sel_row) AS trial_ids,
                   any_value(named.spellings) AS spellings
            FROM s JOIN named USING (k)
            GROUP BY s.k, named.name ORDER BY n_trials DESC, lead_sponsor""",
        )


def sponsor_classes(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials by the class of their lead sponsor: industry, academic/other, government, unknown."""
    with _selected(con, trials):
        df = _count_by(con, "sponsor_class").rename(columns={"key": "sponsor_class"})
    return _order_by(df, "sponsor_class", ("industry", "academic_other", "government", "unknown"))


def _cell_type_by_area(
    con: duckdb.DuckDBPyConnection, trials: pd.DataFrame, cell_type: str, column: str, key: str
) -> pd.DataFrame:
    """Trials of one cell type by a multi-valued label (``column``, named ``key``)
    × therapeutic area; an empty label counts as 'unspecified', an empty area
    as 'not_classified'. Non-zero cells only."""
    with _selected(con, trials):
        return _q(
            con,
            f"""
            WITH k AS (SELECT sel_row,
                              unnest(CASE WHEN len({column}) = 0 THEN ['unspecified'] ELSE {column} END) AS {key}
                       FROM _sel WHERE list_contains(cell_type, '{cell_type}')),
                 a AS (SELECT sel_row, unnest(CASE WHEN len(therapeutic_area) = 0 THEN ['not_classified']
                                                    ELSE therapeutic_area END) AS therapeutic_area
                       FROM _sel WHERE list_contains(cell_type, '{cell_type}'))
            SELECT {key}, therapeutic_area, count(DISTINCT sel_row) AS n_trials,
                   list(DISTINCT sel_row) AS trial_ids
            FROM k JOIN a USING (sel_row) GROUP BY ALL ORDER BY {key}, therapeutic_area""",
        )


def msc_source_by_area(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """MSC trials by MSC source × therapeutic area (non-zero cells only)."""
    return _cell_type_by_area(con, trials, "msc", "msc_source", "msc_source")


def car_t_targets_by_area(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """CAR-T trials by target antigen × therapeutic area (non-zero cells only;
    a CAR-T trial without a recognised target is 'unspecified')."""
    return _cell_type_by_area(con, trials, "car_t", "targets", "target")


def product_form_by_year(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per start year and product form (up to the data date; the data
    year is ``partial``)."""
    dd = data_date(con)
    with _selected(con, trials):
        df = _q(
            con,
            """
            WITH k AS (SELECT sel_row, start_year, unnest(product_form) AS product_form FROM _sel
                       WHERE start_date IS NOT NULL AND start_date <= ?)
            SELECT start_year AS year, product_form, count(DISTINCT sel_row) AS n_trials,
                   list(DISTINCT sel_row) AS trial_ids
            FROM k GROUP BY ALL ORDER BY year, product_form""",
            [dd or date.max],
        )
    df["year"] = df["year"].astype("int64")
    df["partial"] = df["year"] == (dd.year if dd else -1)
    return df


def exclusions(con: duckdb.DuckDBPyConnection, filters: Filters) -> pd.DataFrame:
    """Trials of the store left out of the report, by reason: not classified
    yet, classified as not cell therapy, or outside the filters."""
    ensure_label_view(con)
    sel_sql, params = selection_sql(filters)
    df = _q(
        con,
        f"""
        WITH sel AS (SELECT trial_id FROM ({sel_sql})),
             r AS (
                SELECT t.trial_id, CASE
                    WHEN l.trial_id IS NULL AND ? THEN 'not classified'
                    WHEN NOT l.is_cell_therapy AND ? THEN 'classified as not cell therapy'
                    ELSE 'outside the filters' END AS reason
                FROM trials t LEFT JOIN {LABEL_VIEW} l USING (trial_id)
                WHERE t.trial_id NOT IN (SELECT trial_id FROM sel))
        SELECT reason, count(*) AS n_trials, list(trial_id) AS trial_ids
        FROM r GROUP BY reason ORDER BY reason""",
        [*params, filters.scope == "cell_therapy", filters.scope == "cell_therapy"],
    )
    return _order_by(
        df, "reason", ("not classified", "classified as not cell therapy", "outside the filters")
    )


def unclassified_fields(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """Report trials missing a label the sections need: no cell type, no
    indication group, MSC without a source, CAR-T without a target."""
    with _selected(con, trials):
        return _q(
            con,
            """
            SELECT * FROM (
              SELECT 'no cell type' AS gap, count(*) AS n_trials, coalesce(list(sel_row), []) AS trial_ids FROM _sel WHERE len(cell_type) = 0
              UNION ALL SELECT 'no indication group', count(*), coalesce(list(sel_row), []) FROM _sel WHERE indication_group IS NULL
              UNION ALL SELECT 'MSC without a stated source', count(*), coalesce(list(sel_row), []) FROM _sel
                        WHERE list_contains(cell_type, 'msc') AND (len(msc_source) = 0 OR list_contains(msc_source, 'unspecified'))
              UNION ALL SELECT 'CAR-T without a recognised target', count(*), coalesce(list(sel_row), []) FROM _sel
                        WHERE list_contains(cell_type, 'car_t') AND len(targets) = 0
              UNION ALL SELECT 'no start date', count(*), coalesce(list(sel_row), []) FROM _sel WHERE start_date IS NULL)
            """,
        )


def taxonomy_version(con: duckdb.DuckDBPyConnection) -> str | None:
    """The taxonomy version the stored labels carry (or the packaged one)."""
    if has_labels(con):
        rows = con.execute(
            "SELECT DISTINCT taxonomy_version FROM labels WHERE taxonomy_version IS NOT NULL ORDER BY 1"
        ).fetchall()
        if rows:
            return ", ".join(str(r[0]) for r in rows)
    try:
        text = files("celltrials.taxonomy").joinpath("taxonomy.yaml").read_text(encoding="utf-8")
        v = yaml.safe_load(text).get("version")
        return f"{v} (packaged; labels carry no version)" if v else None
    except (OSError, ValueError, AttributeError):
        return None


#: section name → function(con, trials) in report order
SECTIONS: dict[str, Callable[[duckdb.DuckDBPyConnection, pd.DataFrame], pd.DataFrame]] = {
    "headline": headline,
    "registries": registries,
    "immune_by_cell_type": immune_by_cell_type,
    "stem_by_indication": stem_by_indication,
    "stem_by_cell_type": stem_by_cell_type,
    "msc_by_source": msc_by_source,
    "start_year_by_family": start_year_by_family,
    "phase_by_family": phase_by_family,
    "status_by_family": status_by_family,
    "stopped_reasons": stopped_reasons,
    "countries": countries,
    "sponsors": sponsors,
    "sponsor_classes": sponsor_classes,
    "msc_source_by_area": msc_source_by_area,
    "car_t_targets_by_area": car_t_targets_by_area,
    "product_form_by_year": product_form_by_year,
    "unclassified_fields": unclassified_fields,
    "snapshots": snapshots,
}


def trial_list(con: duckdb.DuckDBPyConnection, trials: pd.DataFrame) -> pd.DataFrame:
    """The report's trials for listing: id, title, registry, status, phase,
    start date, registry link (ICTRP search link when the record has none)."""

    df = trials[["trial_id", "registry", "title", "status", "phase", "start_date", "url"]].copy()
    df["url"] = safe_urls(df["url"].tolist())  # only http(s) links ever reach the page
    missing = df["url"].isna() | (df["url"].astype(str).str.strip() == "")
    df.loc[missing, "url"] = "https://trialsearch.who.int/Trial2.aspx?TrialID=" + df.loc[
        missing, "trial_id"
    ].astype(str)
    return df


__all__ = [
    "CELL_TYPES",
    "FAMILIES",
    "IMMUNE",
    "OTHER",
    "SECTIONS",
    "STEM_STROMAL",
    "Filters",
    "car_t_targets_by_area",
    "countries",
    "data_date",
    "exclusions",
    "headline",
    "holding_data_date",
    "immune_by_cell_type",
    "label",
    "make_filters",
    "msc_by_source",
    "msc_source_by_area",
    "parse_year_range",
    "phase_by_family",
    "product_form_by_year",
    "registries",
    "select_trials",
    "selection_sql",
    "snapshots",
    "sponsor_classes",
    "sponsors",
    "start_year_by_family",
    "status_by_family",
    "stem_by_cell_type",
    "stem_by_indication",
    "stopped_reasons",
    "taxonomy_version",
    "trial_list",
    "unclassified_fields",
]
