"""Tidy tables from a ClinicalTrials.gov API v2 ``resultsSection``.

:func:`parse_results` is pure: it takes one study object (as the API and the
website's JSON download give it, and as the store keeps it in ``records.raw``)
and returns six :class:`pandas.DataFrame` tables:

``outcomes``
    one row per trial × outcome × group × class × category (one measurement):
    nct_id, outcome_index, outcome_type, outcome_title, time_frame, units,
    param_type, group_id, group_title, n (the denominator count for that group,
    from the class's own ``denoms`` when it has them, else the outcome's),
    n_units, class_title, category_title, value (float; NaN when not a
    number), value_raw, dispersion_type, dispersion_value (``spread``),
    lower_limit, upper_limit, comment.
``analyses``
    one row per statistical analysis of an outcome.
``adverse_events``
    one row per event term × group: event_type (serious/other), term,
    organ_system, num_affected, num_at_risk, num_events, …
``participant_flow``
    one row per period × milestone or drop/withdraw reason × group.
``baseline``
    one row per baseline measure × group × class × category.
``event_groups``
    one row per adverse-event group (arm): its totals of participants
    affected / at risk for deaths, serious and other adverse events.

Values the registry gives as text (``"83.7"``, ``"NA"``) become floats or
NaN; the registry's own wording of types (``"Standard Deviation"`` or
``"STANDARD_DEVIATION"``) is kept as given.

:func:`results_for_store` and :func:`export_outcomes` read study objects from
a celltrials store (the ``records`` table's ``raw`` JSON column).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from celltrials.errors import AnalysisError, CelltrialsError
from celltrials.outputs import ensure_dir, write_atomic
from celltrials.safety import safe_cell
from celltrials.sources import RESULT_FORMATS, ctgov_v1, ctgov_xml
from celltrials.store import raw_text

OUTCOME_COLUMNS = [
    "nct_id", "outcome_index", "outcome_type", "outcome_title", "time_frame", "units", "param_type",
    "group_id", "group_title", "n", "n_units", "class_title", "category_title", "value", "value_raw",
    "dispersion_type", "dispersion_value", "lower_limit", "upper_limit", "comment",
]  # fmt: skip
ANALYSIS_COLUMNS = [
    "nct_id", "outcome_index", "outcome_type", "outcome_title", "group_ids", "group_description",
    "param_type", "param_value", "dispersion_type", "dispersion_value", "ci_pct", "ci_sides",
    "ci_low", "ci_high", "p_value", "p_value_num", "statistical_method", "non_inferiority_type",
    "estimate_comment",
]  # fmt: skip
AE_COLUMNS = [
    "nct_id", "event_type", "term", "organ_system", "source_vocabulary", "assessment_type",
    "group_id", "group_title", "num_affected", "num_at_risk", "num_events",
]  # fmt: skip
FLOW_COLUMNS = [
    "nct_id", "period", "kind", "type", "group_id", "group_title", "num_subjects", "comment",
]  # fmt: skip
EVENT_GROUP_COLUMNS = [
    "nct_id", "group_id", "group_title", "group_description", "deaths_num_affected", "deaths_num_at_risk",
    "serious_num_affected", "serious_num_at_risk", "other_num_affected", "other_num_at_risk",
]  # fmt: skip
BASELINE_COLUMNS = [
    "nct_id", "measure_title", "param_type", "dispersion_type", "units", "group_id", "group_title",
    "n", "class_title", "category_title", "value", "value_raw", "dispersion_value", "lower_limit",
    "upper_limit",
]  # fmt: skip
TABLES = {
    "outcomes": OUTCOME_COLUMNS,
    "analyses": ANALYSIS_COLUMNS,
    "adverse_events": AE_COLUMNS,
    "participant_flow": FLOW_COLUMNS,
    "baseline": BASELINE_COLUMNS,
    "event_groups": EVENT_GROUP_COLUMNS,
}
INT_COLUMNS = {
    "n",
    "num_affected",
    "num_at_risk",
    "num_events",
    "num_subjects",
    "ci_sides",
    "outcome_index",
    "deaths_num_affected",
    "deaths_num_at_risk",
    "serious_num_affected",
    "serious_num_at_risk",
    "other_num_affected",
    "other_num_at_risk",
}

#: columns of :func:`export_outcomes`'s CSV (then outcome type, param type, class, category, limits)
EXPORT_COLUMNS = [
    "trial", "outcome title", "time frame", "group", "n", "value", "dispersion type",
    "dispersion value", "units", "outcome type", "param type", "class", "category",
    "lower limit", "upper limit",
]  # fmt: skip


def _num(x: Any) -> float:
    """A registry number (int, float or text such as "83.7", "1,234") or NaN."""
    if x is None or isinstance(x, bool):
        return math.nan
    if isinstance(x, int | float):
        return float(x)
    try:
        return float(str(x).strip().replace(",", ""))
    except ValueError:
        return math.nan


def _key(x: Any) -> Any:
    """A group id usable as a dict key: ids are strings in the registry's schema; anything
    else a malformed record holds (an object, a list) is compared by its text."""
    return x if x is None or isinstance(x, str | int | float) else repr(x)


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    v = obj.get(key)
    return v if isinstance(v, list) else []


def _denoms(denoms: list[Any]) -> tuple[dict[Any, float], Any]:
    """Counts per group id from the first denominator set (CT.gov puts Participants first)."""
    for d in denoms:
        if isinstance(d, dict):
            counts = {
                _key(c.get("groupId")): _num(c.get("value"))
                for c in _list(d, "counts")
                if isinstance(c, dict)
            }
            return counts, d.get("units")
    return {}, None


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    for col in columns:
        if col in INT_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    return df


def _measurement_rows(
    measure: dict[str, Any],
    base: dict[str, Any],
    groups: dict[Any, Any],
    top_denoms: tuple[dict[Any, float], Any],
) -> Iterator[dict[str, Any]]:
    for cls in _list(measure, "classes"):
        if not isinstance(cls, dict):
            continue
        counts, units = _denoms(_list(cls, "denoms")) if _list(cls, "denoms") else top_denoms
        for cat in _list(cls, "categories"):
            if not isinstance(cat, dict):
                continue
            for m in _list(cat, "measurements"):
                if not isinstance(m, dict):
                    continue
                gid = _key(m.get("groupId"))
                yield {
                    **base,
                    "group_id": gid,
                    "group_title": groups.get(gid),
                    "n": counts.get(gid, math.nan),
                    "n_units": units,
                    "class_title": cls.get("title"),
                    "category_title": cat.get("title"),
                    "value": _num(m.get("value")),
                    "value_raw": m.get("value"),
                    "dispersion_value": _num(m.get("spread")),
                    "lower_limit": _num(m.get("lowerLimit")),
                    "upper_limit": _num(m.get("upperLimit")),
                    "comment": m.get("comment"),
                }


def _group_titles(groups: list[Any]) -> dict[Any, Any]:
    return {_key(g.get("id")): g.get("title") for g in groups if isinstance(g, dict)}


def parse_results(study: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Six tidy tables from one study's ``resultsSection`` (empty tables if it has none)."""
    if not isinstance(study, dict):
        raise AnalysisError(
            f"expected a ClinicalTrials.gov study object (a JSON object), got {type(study).__name__}",
            hint="Pass one element of the API v2 'studies' array.",
        )
    nct = (study.get("protocolSection") or {}).get("identificationModule", {}).get("nctId")
    res = study.get("resultsSection") or {}
    if not isinstance(res, dict):
        raise AnalysisError(f"{nct or 'study'}: resultsSection is not a JSON object")
    outcomes: list[dict[str, Any]] = []
    analyses: list[dict[str, Any]] = []
    om_module = res.get("outcomeMeasuresModule") or {}
    for idx, om in enumerate(_list(om_module, "outcomeMeasures"), start=1):
        if not isinstance(om, dict):
            continue
        groups = _group_titles(_list(om, "groups"))
        base = {
            "nct_id": nct,
            "outcome_index": idx,
            "outcome_type": om.get("type"),
            "outcome_title": om.get("title"),
            "time_frame": om.get("timeFrame"),
            "units": om.get("unitOfMeasure"),
            "param_type": om.get("paramType"),
            "dispersion_type": om.get("dispersionType"),
        }
        outcomes.extend(_measurement_rows(om, base, groups, _denoms(_list(om, "denoms"))))
        for a in _list(om, "analyses"):
            if not isinstance(a, dict):
                continue
            analyses.append(
                {
                    "nct_id": nct,
                    "outcome_index": idx,
                    "outcome_type": om.get("type"),
                    "outcome_title": om.get("title"),
                    "group_ids": ",".join(str(g) for g in _list(a, "groupIds")),
                    "group_description": a.get("groupDescription"),
                    "param_type": a.get("paramType"),
                    "param_value": _num(a.get("paramValue")),
                    "dispersion_type": a.get("dispersionType"),
                    "dispersion_value": _num(a.get("dispersionValue")),
                    "ci_pct": _num(a.get("ciPctValue")),
                    "ci_sides": _num(
                        {"ONE_SIDED": 1, "TWO_SIDED": 2}.get(
                            a.get("ciNumSides") or "", a.get("ciNumSides")
                        )
                    ),
                    "ci_low": _num(a.get("ciLowerLimit")),
                    "ci_high": _num(a.get("ciUpperLimit")),
                    "p_value": a.get("pValue"),
                    "p_value_num": _num(a.get("pValue")),
                    "statistical_method": a.get("statisticalMethod"),
                    "non_inferiority_type": a.get("nonInferiorityType"),
                    "estimate_comment": a.get("estimateComment"),
                }
            )

    aes: list[dict[str, Any]] = []
    ae_module = res.get("adverseEventsModule") or {}
    ae_groups = _group_titles(_list(ae_module, "eventGroups"))
    for kind, key in (("serious", "seriousEvents"), ("other", "otherEvents")):
        for ev in _list(ae_module, key):
            if not isinstance(ev, dict):
                continue
            for st in _list(ev, "stats"):
                if not isinstance(st, dict):
                    continue
                aes.append(
                    {
                        "nct_id": nct,
                        "event_type": kind,
                        "term": ev.get("term"),
                        "organ_system": ev.get("organSystem"),
                        "source_vocabulary": ev.get("sourceVocabulary"),
                        "assessment_type": ev.get("assessmentType"),
                        "group_id": _key(st.get("groupId")),
                        "group_title": ae_groups.get(_key(st.get("groupId"))),
                        "num_affected": _num(st.get("numAffected")),
                        "num_at_risk": _num(st.get("numAtRisk")),
                        "num_events": _num(st.get("numEvents")),
                    }
                )

    event_groups = [
        {
            "nct_id": nct,
            "group_id": _key(g.get("id")),
            "group_title": g.get("title"),
            "group_description": g.get("description"),
            **{
                col: _num(g.get(key))
                for col, key in (
                    ("deaths_num_affected", "deathsNumAffected"),
                    ("deaths_num_at_risk", "deathsNumAtRisk"),
                    ("serious_num_affected", "seriousNumAffected"),
                    ("serious_num_at_risk", "seriousNumAtRisk"),
                    ("other_num_affected", "otherNumAffected"),
                    ("other_num_at_risk", "otherNumAtRisk"),
                )
            },
        }
        for g in _list(ae_module, "eventGroups")
        if isinstance(g, dict)
    ]

    flow: list[dict[str, Any]] = []
    pf = res.get("participantFlowModule") or {}
    pf_groups = _group_titles(_list(pf, "groups"))
    for period in _list(pf, "periods"):
        if not isinstance(period, dict):
            continue
        for kind, key, inner in (
            ("milestone", "milestones", "achievements"),
            ("drop_withdraw", "dropWithdraws", "reasons"),
        ):
            for item in _list(period, key):
                if not isinstance(item, dict):
                    continue
                for a in _list(item, inner):
                    if not isinstance(a, dict):
                        continue
                    flow.append(
                        {
                            "nct_id": nct,
                            "period": period.get("title"),
                            "kind": kind,
                            "type": item.get("type"),
                            "group_id": _key(a.get("groupId")),
                            "group_title": pf_groups.get(_key(a.get("groupId"))),
                            "num_subjects": _num(a.get("numSubjects")),
                            "comment": a.get("comment"),
                        }
                    )

    baseline: list[dict[str, Any]] = []
    bl = res.get("baselineCharacteristicsModule") or {}
    bl_groups = _group_titles(_list(bl, "groups"))
    bl_denoms = _denoms(_list(bl, "denoms"))
    for m in _list(bl, "measures"):
        if not isinstance(m, dict):
            continue
        base = {
            "nct_id": nct,
            "measure_title": m.get("title"),
            "param_type": m.get("paramType"),
            "dispersion_type": m.get("dispersionType"),
            "units": m.get("unitOfMeasure"),
        }
        baseline.extend(_measurement_rows(m, base, bl_groups, bl_denoms))

    return {
        "outcomes": _frame(outcomes, OUTCOME_COLUMNS),
        "analyses": _frame(analyses, ANALYSIS_COLUMNS),
        "adverse_events": _frame(aes, AE_COLUMNS),
        "participant_flow": _frame(flow, FLOW_COLUMNS),
        "baseline": _frame(baseline, BASELINE_COLUMNS),
        "event_groups": _frame(event_groups, EVENT_GROUP_COLUMNS),
    }


# ------------------------------------------------------------------ store access


def _connection(con: Any) -> Any:
    """A DuckDB connection from a :class:`celltrials.store.Store` or a connection."""
    return getattr(con, "con", con)


def _load(raw: Any) -> Any:
    # a stored records.raw (a zstd frame; JSON text from an older store) or the parsed object
    return json.loads(raw_text(raw) or "null") if isinstance(raw, str | bytes) else raw


_FORMATS_SQL = ", ".join(f"'{f}'" for f in RESULT_FORMATS)
_ORDER = (
    "ORDER BY last_update DESC NULLS LAST, "
    "CASE source_format WHEN 'ctgov_json' THEN 3 WHEN 'ctgov_xml' THEN 2 ELSE 1 END DESC, ingested_at DESC"
)
_LATEST_RAW = (
    f"SELECT raw, source_format FROM records WHERE record_id = ? AND channel = 'ctgov' "
    f"AND source_format IN ({_FORMATS_SQL}) {_ORDER} LIMIT 1"
)


def study_object(raw: Any, source_format: str) -> dict[str, Any]:
    """The API v2-shaped study object of a stored record: API v2 JSON as stored; legacy
    XML and API v1 study fields converted (:mod:`celltrials.sources.ctgov_xml`,
    :mod:`celltrials.sources.ctgov_v1`) so that :func:`parse_results` reads them all."""
    obj = _load(raw)
    if source_format == "ctgov_xml":
        return ctgov_xml.study_from_raw(obj)
    if source_format == "ctgov_v1_json":
        return ctgov_v1.to_v2(obj)
    if not isinstance(obj, dict):
        raise AnalysisError("the stored record is not a JSON object")
    return obj


def study_from_store(con: Any, trial_id: str) -> dict[str, Any]:
    """The latest ClinicalTrials.gov study object stored for ``trial_id`` (an NCT id
    or, when ``con`` is a Store, any id it can resolve): the newest registry version
    (last update), API v2 JSON before legacy XML before API v1 study fields."""
    db = _connection(con)
    nct = trial_id.strip().upper()
    row = db.execute(_LATEST_RAW, [nct]).fetchone()
    if row is None and hasattr(con, "resolve"):
        resolved = con.resolve(trial_id)
        if resolved is not None:
            hit = db.execute(
                "SELECT r.record_id FROM trial_records tr JOIN records r USING (record_key) "
                f"WHERE tr.trial_id = ? AND r.channel = 'ctgov' AND r.source_format IN ({_FORMATS_SQL}) "
                "ORDER BY r.ingested_at DESC LIMIT 1",
                [resolved],
            ).fetchone()
            if hit is not None:
                row = db.execute(_LATEST_RAW, [hit[0]]).fetchone()
    if row is None:
        raise AnalysisError(
            f"no ClinicalTrials.gov JSON or XML record for {trial_id} in the store",
            hint="Ingest the trial's API v2 JSON, legacy XML or API v1 study fields (celltrials ingest FILE); "
            "CSV exports carry no results.",
        )
    try:
        return study_object(row[0], row[1])
    except CelltrialsError as exc:
        raise AnalysisError(f"{trial_id}: {exc.message}") from None


def results_for_store(con: Any, trial_id: str) -> dict[str, pd.DataFrame]:
    """:func:`parse_results` of the latest stored ClinicalTrials.gov record for ``trial_id``."""
    return parse_results(study_from_store(con, trial_id))


def _studies_with_results(con: Any) -> Iterator[dict[str, Any]]:
    db = _connection(con)
    cur = db.execute(
        f"SELECT raw, source_format, record_id FROM records WHERE channel = 'ctgov' AND source_format IN ({_FORMATS_SQL}) "
        f"QUALIFY row_number() OVER (PARTITION BY record_id {_ORDER}) = 1 "
        "ORDER BY record_id"
    )
    while True:
        batch = cur.fetchmany(500)
        if not batch:
            return
        for raw, fmt, rid in batch:
            try:
                study = study_object(raw, fmt)
            except CelltrialsError as exc:
                raise AnalysisError(f"stored record {rid} ({fmt}): {exc.message}") from None
            if study.get("resultsSection"):
                yield study


def _cell(x: Any) -> Any:
    if x is None or x is pd.NA:
        return ""
    if isinstance(x, float):
        if not math.isfinite(x):
            return ""
        return str(int(x)) if x == int(x) else repr(x)
    return x


def export_outcomes(con: Any, path: str | Path) -> int:
    """Write every stored trial's outcome rows to CSV (columns :data:`EXPORT_COLUMNS`).

    Uses the latest ClinicalTrials.gov JSON version of each trial; ``value`` is
    the registry's text as posted (e.g. ``"83.7"``, ``"NA"``). Returns the
    number of rows written.
    """

    out = Path(path)
    ensure_dir(out.parent)
    count = [0]
    write_atomic(out, lambda tmp: _write_outcomes(con, tmp, count, safe_cell))
    return count[0]


def _write_outcomes(con: Any, out: Path, count: list[int], safe_cell: Any) -> None:
    n = 0
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(EXPORT_COLUMNS)
        for study in _studies_with_results(con):
            df = parse_results(study)["outcomes"]
            for r in df.itertuples(index=False):
                writer.writerow([safe_cell(_cell(v)) for v in (
                    r.nct_id, r.outcome_title, r.time_frame, r.group_title, r.n, r.value_raw,
                    r.dispersion_type, r.dispersion_value, r.units, r.outcome_type, r.param_type,
                    r.class_title, r.category_title, r.lower_limit, r.upper_limit,
                )])  # fmt: skip
                n += 1
    count[0] = n


def tables_to_records(tables: dict[str, pd.DataFrame]) -> dict[str, list[dict[str, Any]]]:
    """JSON-ready form of :func:`parse_results`'s tables (NaN/NA become ``None``)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, df in tables.items():
        rows = []
        for rec in df.astype(object).to_dict(orient="records"):
            rows.append(
                {
                    str(k): (
                        None
                        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
                        else v
                    )
                    for k, v in rec.items()
                }
            )
        out[name] = rows
    return out
