"""From the store to a pooled estimate: ``celltrials meta --from-store``.

:func:`study_rows_from_store` assembles one row per trial from the results
posted on ClinicalTrials.gov (API v2 JSON, legacy XML or API v1 study
fields in the store) for a chosen outcome, with every choice written down so
that a reviewer can check it:

* **outcome.** ``serious adverse events`` (also ``SAE``), ``deaths`` and
  ``other adverse events`` take the per-arm totals of the adverse-events
  module (participants affected / at risk). Any other text selects the
  posted outcome measure whose title contains it (case-insensitive; with
  ``time_frame`` also its time frame): the primary outcome first, then the
  first in the record's order. Binary measures need counts of participants
  (param type *Count of Participants* or *Number* with participant units; a
  percentage of participants is converted when it gives whole numbers);
  continuous ones a mean with an SD (an SE is converted, SD = SE·√n).
  Measures with several rows (classes or categories) are not guessed at:
  the trial is listed as excluded with the reason.
* **arms.** A results group is a *control* arm when its title names a
  control (placebo, control, sham, vehicle, saline, standard/usual care,
  conventional treatment, natural history, hyaluronic acid …) and no cells,
  an *experimental* (cell) arm when it names cells (cell, MSC, stromal,
  stem, exosome, product names …) and no control; otherwise the protocol's
  arm type decides when the title is an arm label (EXPERIMENTAL;
  PLACEBO/ACTIVE/SHAM comparator, NO_INTERVENTION; or the one arm sharing
  the most words with it), then the description. Sequences ("X after Y",
  "A->B", crossover, open-label extension) and groups that are neither
  are left out, and said so; ``experimental_arm`` (a regular expression)
  keeps only the cell arms whose title matches it (e.g. MSC arms only). Several experimental
  (or control) arms are combined by adding their counts (Cochrane Handbook
  6.5.2.10); means and SDs are combined with the Handbook's formula.
* **labels.** The trial's classification (cell type, MSC source, origin,
  route, dose, product form) is joined as moderator columns, with phase and
  start year.

:func:`validate_extracted` checks a CSV of values extracted from papers
(:data:`TEMPLATES`), naming the row and the column of every problem; such
rows are added to (or replace) the registry rows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from celltrials.analysis.landscape import Filters, select_trials
from celltrials.analysis.meta import meta_analysis, read_table
from celltrials.analysis.results import parse_results, study_object
from celltrials.errors import AnalysisError, CelltrialsError
from celltrials.registry_ids import canonical_id
from celltrials.safety import safe_cell
from celltrials.sources import RESULT_FORMATS
from celltrials.store import Store, label_text

BINARY_MEASURES = ("RR", "OR", "RD")
CONTINUOUS_MEASURES = ("MD", "SMD", "SMDH", "ROM")
SINGLE_ARM_MEASURES = ("PLO", "PR", "PFT")
AE_OUTCOMES = {
    "serious adverse events": "serious",
    "sae": "serious",
    "saes": "serious",
    "deaths": "deaths",
    "death": "deaths",
    "all-cause mortality": "deaths",
    "other adverse events": "other",
}
LABEL_COLUMNS = ("cell_type", "msc_source", "origin", "route", "dose", "product_form")

_CONTROL = re.compile(
    r"\b(placebo|control|sham|vehicle|saline|standard (of )?care|usual care|conventional|natural history|"
    r"no (intervention|treatment)|best supportive care|hyalur\w*|synvisc|durolane|plasma-?lyte|fibrin glue|"
    r"comparator)\b",
    re.I,
)
_CELL = re.compile(
    r"(\bcells?\b|mesenchymal|stromal|\bstem\b|\bmscs?\b|h?mscs?\b|\badscs?\b|\basc\b|\bsvf\b|\bbmac\b|"
    r"exosome|\bexo-?\d|remestemcel|rexlemestrocel|\bmpc\b|jointstem|astrostem|preob|\bctl\b|car-?t|"
    r"\bnk\b|\bcord blood\b|umbilical|adipose|bone marrow)",
    re.I,
)
_PARTICIPANT_UNITS = re.compile(r"participant|patient|subject|people|person|individual", re.I)

#: CSV templates for values extracted from papers (header row; see the README)
TEMPLATES: dict[str, list[str]] = {
    "binary": [
        "study",
        "trial_id",
        "source",
        "outcome",
        "time_frame",
        "experimental_arm",
        "control_arm",
        "ai",
        "n1i",
        "ci",
        "n2i",
        "notes",
    ],
    "continuous": [
        "study",
        "trial_id",
        "source",
        "outcome",
        "time_frame",
        "experimental_arm",
        "control_arm",
        "m1i",
        "sd1i",
        "n1i",
        "m2i",
        "sd2i",
        "n2i",
        "notes",
    ],
}
_REQUIRED_TEXT = ("study", "source")


def kind_of(measure: str) -> str:
    m = measure.upper()
    if m in BINARY_MEASURES:
        return "binary"
    if m in CONTINUOUS_MEASURES:
        return "continuous"
    if m in SINGLE_ARM_MEASURES:
        return "single"
    raise AnalysisError(
        f"--from-store cannot build {measure} rows",
        hint=f"Use a two-group binary ({', '.join(BINARY_MEASURES)}), continuous ({', '.join(CONTINUOUS_MEASURES)}) "
        f"or single-arm ({', '.join(SINGLE_ARM_MEASURES)}) measure.",
    )


# --------------------------------------------------------------------------- arms


def _norm(s: Any) -> str:
    return " ".join(str(s or "").lower().split())


_CROSSOVER = re.compile(
    r"\b(after|followed by|then|cross-?over|extension|ole?|follow-?up)\b|->|→", re.I
)
_TOKEN = re.compile(r"[a-z0-9]+")
_STOP = {
    "group",
    "arm",
    "cohort",
    "the",
    "of",
    "and",
    "with",
    "a",
    "in",
    "to",
    "for",
    "ss",
    "fas",
    "itt",
    "mg",
    "kg",
}


def _tokens(text: Any) -> set[str]:
    return {
        t for t in _TOKEN.findall(str(text or "").lower()) if t not in _STOP and not t.isdigit()
    }


def _protocol_type(title: Any, arm_types: dict[str, str]) -> str:
    """The protocol arm type of the arm whose label is this group's title, or failing that the one
    arm sharing the most words with it (ties: none)."""
    exact = arm_types.get(_norm(title))
    if exact:
        return exact
    words = _tokens(title)
    scored = sorted(
        ((len(words & _tokens(label)), typ) for label, typ in arm_types.items()), reverse=True
    )
    if scored and scored[0][0] > 0 and (len(scored) == 1 or scored[1][0] < scored[0][0]):
        return scored[0][1]
    return ""


def arm_role(title: Any, description: Any, arm_types: dict[str, str]) -> tuple[str | None, str]:
    """``("experimental" | "control" | None, why)`` for one results group.

    The group's title decides first (a control word and no cell word → control; a cell
    word and no control word → experimental; a sequence such as "X after Y" → neither),
    then the protocol's arm type for an arm of that label, then the description."""
    t = str(title or "")
    if _CROSSOVER.search(t):
        return None, "a sequence of treatments (crossover, extension or delayed arm): left out"
    ctl, cell = _CONTROL.search(t), _CELL.search(t)
    if ctl and not cell:
        return "control", f"title names a control ({ctl.group(0)!r})"
    if cell and not ctl:
        return "experimental", f"title names cells ({cell.group(0)!r})"
    typ = _protocol_type(title, arm_types)
    if typ == "EXPERIMENTAL":
        return "experimental", "protocol arm type EXPERIMENTAL"
    if typ in ("PLACEBO_COMPARATOR", "ACTIVE_COMPARATOR", "SHAM_COMPARATOR", "NO_INTERVENTION"):
        return "control", f"protocol arm type {typ}"
    text = f"{title or ''} {description or ''}"
    if _CONTROL.search(text) and not _CELL.search(text):
        return "control", "description names a control"
    if _CELL.search(text) and not _CONTROL.search(text):
        return "experimental", "description names cells"
    return (
        None,
        "neither a cell arm nor a control by its title, the protocol's arm type or its description",
    )


def _arm_types(study: dict[str, Any]) -> dict[str, str]:
    arms = ((study.get("protocolSection") or {}).get("armsInterventionsModule") or {}).get(
        "armGroups"
    ) or []
    return {
        _norm(a.get("label")): str(a.get("type") or "").upper()
        for a in arms
        if isinstance(a, dict) and a.get("label")
    }


def _pool_means(parts: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Combine (mean, sd, n) of several groups (Cochrane Handbook, Table 6.5.a)."""
    m, s, n = parts[0]
    for m2, s2, n2 in parts[1:]:
        tot = n + n2
        mean = (n * m + n2 * m2) / tot
        var = ((n - 1) * s**2 + (n2 - 1) * s2**2 + n * n2 / tot * (m - m2) ** 2) / (tot - 1)
        m, s, n = mean, math.sqrt(var), tot
    return m, s, n


# --------------------------------------------------------------------------- per trial


def _ae_groups(tables: dict[str, pd.DataFrame], which: str) -> list[dict[str, Any]]:
    eg = tables["event_groups"]
    out = []
    for r in eg.itertuples(index=False):
        events = getattr(r, f"{which}_num_affected")
        at_risk = getattr(r, f"{which}_num_at_risk")
        out.append(
            {
                "group_id": r.group_id,
                "title": r.group_title,
                "description": r.group_description,
                "events": None if pd.isna(events) else int(events),
                "n": None if pd.isna(at_risk) else int(at_risk),
            }
        )
    return out


def _measure_groups(
    tables: dict[str, pd.DataFrame], outcome: str, time_frame: str | None, kind: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str]:
    """The chosen outcome measure of one trial and its per-group values (or a reason)."""
    out = tables["outcomes"]
    if out.empty:
        return None, [], "no outcome measures posted"
    titles = out.drop_duplicates("outcome_index")
    hits = titles[
        titles["outcome_title"].fillna("").str.lower().str.contains(outcome.lower(), regex=False)
    ]
    if time_frame:
        hits = hits[
            hits["time_frame"].fillna("").str.lower().str.contains(time_frame.lower(), regex=False)
        ]
    if hits.empty:
        return (
            None,
            [],
            f"no posted outcome measure title contains {outcome!r}"
            + (f" with time frame containing {time_frame!r}" if time_frame else ""),
        )
    hits = hits.assign(
        _p=(hits["outcome_type"].fillna("").str.upper() != "PRIMARY").astype(int)
    ).sort_values(["_p", "outcome_index"])
    first = hits.iloc[0]
    info = {
        "outcome_index": int(first.outcome_index),
        "outcome_title": first.outcome_title,
        "outcome_type": first.outcome_type,
        "time_frame": first.time_frame,
        "param_type": first.param_type,
        "units": first.units,
        "dispersion_type": first.dispersion_type,
        "candidates": len(hits),
    }
    rows = out[out.outcome_index == first.outcome_index]
    if rows["comment"].fillna("").str.startswith("value not attributable").any():
        return info, [], "the measure's values are not attributable in the API v1 archive"
    if rows.duplicated("group_id").any():
        return (
            info,
            [],
            "the measure has several rows (classes or categories); extract it with the CSV template",
        )
    param = str(first.param_type or "").lower().replace("_", " ")
    units = str(first.units or "")
    groups = []
    if kind in ("binary", "single"):
        percent = "percent" in units.lower() and _PARTICIPANT_UNITS.search(units) is not None
        is_count = "count of participants" in param or (
            param == "number" and _PARTICIPANT_UNITS.search(units) and not percent
        )
        if not is_count and not (param == "number" and percent):
            return (
                info,
                [],
                f"not a count of participants (param type {first.param_type!r}, units {first.units!r})",
            )
        for r in rows.itertuples(index=False):
            events = None if pd.isna(r.value) else float(r.value)
            n = None if pd.isna(r.n) else int(r.n)
            if percent and events is not None and n is not None:
                count = events * n / 100
                if abs(count - round(count)) > 0.05 * max(1.0, n / 100):
                    return (
                        info,
                        [],
                        (
                            f"{events:g}% of {n} participants is not a whole number of participants; "
                            "extract the counts with the CSV template"
                        ),
                    )
                events = float(round(count))
            groups.append(
                {"group_id": r.group_id, "title": r.group_title, "events": events, "n": n}
            )
        if percent:
            info["converted"] = "events = round(percentage × n / 100)"
        return info, groups, ""
    disp = str(first.dispersion_type or "").lower().replace("_", " ")
    if "mean" not in param or disp not in ("standard deviation", "standard error"):
        return (
            info,
            [],
            f"not a mean with SD or SE (param type {first.param_type!r}, dispersion {first.dispersion_type!r})",
        )
    for r in rows.itertuples(index=False):
        n = None if pd.isna(r.n) else int(r.n)
        sd = None if pd.isna(r.dispersion_value) else float(r.dispersion_value)
        if sd is not None and disp == "standard error" and n is not None:
            sd = sd * math.sqrt(n)
        groups.append(
            {
                "group_id": r.group_id,
                "title": r.group_title,
                "mean": None if pd.isna(r.value) else float(r.value),
                "sd": sd,
                "n": n,
            }
        )
    info["sd_from_se"] = disp == "standard error"
    return info, groups, ""


def _descriptions(tables: dict[str, pd.DataFrame]) -> dict[Any, Any]:
    eg = tables["event_groups"]
    return dict(zip(eg.group_title, eg.group_description, strict=False))


def _trial_row(
    trial_id: str,
    record_id: str,
    fmt: str,
    study: dict[str, Any],
    outcome: str,
    time_frame: str | None,
    kind: str,
    experimental: re.Pattern[str] | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    tables = parse_results(study)
    ae = AE_OUTCOMES.get(outcome.strip().lower())
    choice: dict[str, Any] = {
        "trial_id": trial_id,
        "record_id": record_id,
        "source_format": fmt,
        "used": False,
    }
    if ae is not None:
        groups = _ae_groups(tables, ae)
        choice.update(
            {
                "outcome_title": f"{ae} adverse events (adverse-events module totals)"
                if ae != "deaths"
                else "deaths (adverse-events module totals)",
                "time_frame": (
                    (study.get("resultsSection") or {}).get("adverseEventsModule") or {}
                ).get("timeFrame"),
            }
        )
        if not groups:
            return None, {**choice, "reason": "no adverse-event groups posted"}
        if kind == "continuous":
            return None, {**choice, "reason": "adverse-event totals are counts, not means"}
    else:
        info, groups, reason = _measure_groups(tables, outcome, time_frame, kind)
        if info:
            choice.update(info)
        if reason:
            return None, {**choice, "reason": reason}
    arm_types = _arm_types(study)
    descs = _descriptions(tables)
    exp: list[dict[str, Any]] = []
    ctl: list[dict[str, Any]] = []
    left_out = []
    for g in groups:
        role, why = arm_role(g["title"], g.get("description") or descs.get(g["title"]), arm_types)
        if (
            role == "experimental"
            and experimental is not None
            and not experimental.search(str(g["title"] or ""))
        ):
            role, why = (
                None,
                f"experimental arm whose title does not match {experimental.pattern!r}",
            )
        entry = {"group_id": g["group_id"], "title": g["title"], "role": role, "why": why}
        if role == "experimental":
            exp.append({**g, **entry})
        elif role == "control":
            ctl.append({**g, **entry})
        else:
            left_out.append(entry)
    choice["groups"] = [
        {"group_id": g["group_id"], "title": g["title"], "role": g["role"], "why": g["why"]}
        for g in (*exp, *ctl)
    ] + left_out
    if not exp:
        return None, {**choice, "reason": "no experimental (cell) arm among the results groups"}
    if kind != "single" and not ctl:
        return None, {**choice, "reason": "no control arm (single-arm trial)"}
    row: dict[str, Any] = {
        "study": trial_id,
        "trial_id": trial_id,
        "record_id": record_id,
        "source_format": fmt,
        "outcome": choice.get("outcome_title"),
        "time_frame": choice.get("time_frame"),
        "experimental_arm": " | ".join(str(g["title"]) for g in exp),
        "control_arm": " | ".join(str(g["title"]) for g in ctl),
    }
    if kind in ("binary", "single"):
        for g in (*exp, *ctl):
            if g["events"] is None or g["n"] is None:
                return None, {
                    **choice,
                    "reason": f"group {g['title']!r} has no count or no denominator",
                }
        if kind == "single":
            row.update({"xi": sum(g["events"] for g in exp), "ni": sum(g["n"] for g in exp)})
            row["control_arm"] = ""
        else:
            row.update(
                {
                    "ai": sum(g["events"] for g in exp),
                    "n1i": sum(g["n"] for g in exp),
                    "ci": sum(g["events"] for g in ctl),
                    "n2i": sum(g["n"] for g in ctl),
                }
            )
            if row["n1i"] <= 0 or row["n2i"] <= 0:
                return None, {**choice, "reason": "an arm has no participants at risk"}
    else:
        for g in (*exp, *ctl):
            if g["mean"] is None or g["sd"] is None or g["n"] is None:
                return None, {**choice, "reason": f"group {g['title']!r} lacks a mean, SD or n"}
        m1, s1, n1 = _pool_means([(g["mean"], g["sd"], g["n"]) for g in exp])
        m2, s2, n2 = _pool_means([(g["mean"], g["sd"], g["n"]) for g in ctl])
        row.update({"m1i": m1, "sd1i": s1, "n1i": n1, "m2i": m2, "sd2i": s2, "n2i": n2})
    choice["used"] = True
    return row, choice


# --------------------------------------------------------------------------- driver


def study_rows_from_store(
    store: Store,
    outcome: str,
    *,
    measure: str,
    filters: Any = None,
    time_frame: str | None = None,
    experimental_arm: str | None = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, Any]]:
    """One row per trial (see module docstring) for the trials ``filters`` select.

    Returns the study table (text cells, ready for :func:`~celltrials.analysis.meta.meta_analysis`),
    the list of choices (one per trial with posted results: used, or excluded with the reason)
    and a summary (counts)."""

    if not outcome or not outcome.strip():
        raise AnalysisError("--outcome is empty", hint="e.g. --outcome 'serious adverse events'.")
    kind = kind_of(measure)
    pattern = None
    if experimental_arm:
        try:
            pattern = re.compile(experimental_arm, re.I)
        except re.error as exc:
            raise AnalysisError(
                f"--experimental-arm {experimental_arm!r} is not a regular expression ({exc})"
            ) from None
    con = store.con
    filters = filters or Filters()
    selected = select_trials(con, filters)
    ids = selected["trial_id"].tolist()
    labels = _labels(store, ids)
    fmts = ", ".join(f"'{f}'" for f in RESULT_FORMATS)
    rank = "CASE r.source_format WHEN 'ctgov_json' THEN 3 WHEN 'ctgov_xml' THEN 2 ELSE 1 END"
    con.register("_meta_sel", pd.DataFrame({"trial_id": ids}))
    try:
        cand = con.execute(f"""
            SELECT tr.trial_id, r.record_id, r.source_format, r.raw FROM _meta_sel s
            JOIN trial_records tr USING (trial_id) JOIN records r USING (record_key)
            WHERE r.channel = 'ctgov' AND r.source_format IN ({fmts})
            QUALIFY row_number() OVER (PARTITION BY tr.trial_id
                ORDER BY r.last_update DESC NULLS LAST, {rank} DESC, r.ingested_at DESC) = 1
            ORDER BY tr.trial_id""").fetchall()
    finally:
        con.unregister("_meta_sel")
    rows: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []
    n_results = 0
    for trial_id, record_id, fmt, raw in cand:
        try:
            study = study_object(raw, fmt)
        except CelltrialsError as exc:
            raise AnalysisError(f"stored record {record_id} ({fmt}): {exc.message}") from None
        if not study.get("resultsSection"):
            continue
        n_results += 1
        row, choice = _trial_row(
            trial_id, record_id, fmt, study, outcome, time_frame, kind, pattern
        )
        if row is not None:
            info = selected.loc[selected.trial_id == trial_id].iloc[0]
            row.update({c: labels.get(trial_id, {}).get(c, "") for c in LABEL_COLUMNS})
            row["phase"] = info["phase"]
            row["start_year"] = "" if pd.isna(info["start_year"]) else str(int(info["start_year"]))
            rows.append(row)
        choices.append(choice)
    table = pd.DataFrame(rows)
    summary = {
        "trials_selected": len(ids),
        "trials_with_results": n_results,
        "rows": len(rows),
        "excluded": n_results - len(rows),
    }
    return _as_text(table), choices, summary


def _labels(store: Store, ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The trials' labels as text (multi-values ``;``-joined)."""
    if not store.has_labels():
        return {}
    return {
        r["trial_id"]: {c: ("" if r[c] is None else str(label_text(r[c]))) for c in LABEL_COLUMNS}
        for r in store.label_rows(ids)
    }


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return df.apply(lambda col: col.map(cell)) if not df.empty else df


# --------------------------------------------------------------------------- paper-extracted values


def validate_extracted(df: pd.DataFrame, kind: str, *, source: str = "the CSV") -> pd.DataFrame:
    """Check a filled-in :data:`TEMPLATES` CSV; every problem names its row and column.

    Raises :class:`AnalysisError` listing all problems (the first 20)."""
    if kind not in TEMPLATES:
        raise AnalysisError(f"no template for {kind!r}", hint="Use binary or continuous.")
    need = [
        c
        for c in TEMPLATES[kind]
        if c
        not in ("notes", "trial_id", "outcome", "time_frame", "experimental_arm", "control_arm")
    ]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise AnalysisError(
            f"{source}: missing column(s) {', '.join(missing)}",
            hint=f"The {kind} template's header is: {','.join(TEMPLATES[kind])}.",
        )
    problems: list[str] = []

    def bad(i: int, col: str, why: str) -> None:
        problems.append(f"row {i + 1} (CSV line {i + 2}), column '{col}': {why}")

    numeric = [
        c for c in TEMPLATES[kind] if c in ("ai", "n1i", "ci", "n2i", "m1i", "sd1i", "m2i", "sd2i")
    ]

    for i, rec in enumerate(df.to_dict(orient="records")):
        vals: dict[str, float] = {}
        for col in _REQUIRED_TEXT:
            if not str(rec.get(col, "") or "").strip():
                bad(
                    i,
                    col,
                    "is empty (give the study label and where the numbers come from, e.g. a DOI or PMID)",
                )
        tid = str(rec.get("trial_id", "") or "").strip()
        if tid and canonical_id(tid) is None:
            bad(i, "trial_id", f"{tid!r} is not a registry id (e.g. NCT01234567, ChiCTR2000029580)")
        for col in numeric:
            text = str(rec.get(col, "") or "").strip()
            if text == "":
                bad(i, col, "is empty")
                continue
            try:
                v = float(text)
            except ValueError:
                bad(i, col, f"is not a number: {text!r}")
                continue
            if not math.isfinite(v):
                bad(i, col, f"is not finite: {text!r}")
                continue
            vals[col] = v
        if kind == "binary":
            for ev, n in (("ai", "n1i"), ("ci", "n2i")):
                if n in vals and (vals[n] <= 0 or not vals[n].is_integer()):
                    bad(i, n, "must be a positive whole number of participants")
                if ev in vals and (vals[ev] < 0 or not vals[ev].is_integer()):
                    bad(i, ev, "must be a whole number of participants with the event (0 or more)")
                if ev in vals and n in vals and vals[ev] > vals[n]:
                    bad(i, ev, f"more events ({vals[ev]:g}) than participants ({n} = {vals[n]:g})")
        else:
            for col in ("n1i", "n2i"):
                if col in vals and (vals[col] < 2 or not vals[col].is_integer()):
                    bad(i, col, "must be a whole number of participants, at least 2")
            for col in ("sd1i", "sd2i"):
                if col in vals and vals[col] < 0:
                    bad(i, col, "a standard deviation cannot be negative")
    if problems:
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise AnalysisError(
            f"{source}: " + "; ".join(problems[:20]) + more,
            hint="Fix the cells named above; the README documents the template.",
        )
    return df


def combine_rows(
    store_rows: pd.DataFrame,
    extra: pd.DataFrame,
    kind: str,
    source: str,
    choices: list[dict[str, Any]],
) -> pd.DataFrame:
    """Registry rows plus paper rows; a paper row for a trial that also has registry
    values replaces them (the choice is recorded)."""
    extra = extra.fillna("").astype(str).copy()
    extra["source_format"] = "extracted"
    if "record_id" not in extra.columns:
        extra["record_id"] = ""
    keys = {
        str(t).strip().upper()
        for t in extra.get("trial_id", pd.Series(dtype=str))
        if str(t).strip()
    }
    if not store_rows.empty and keys:
        replaced = store_rows["trial_id"].str.upper().isin(keys)
        for tid in store_rows.loc[replaced, "trial_id"]:
            for c in choices:
                if c["trial_id"] == tid:
                    c["used"] = False
                    c["reason"] = f"replaced by values extracted from papers ({source})"
        store_rows = store_rows.loc[~replaced]
    for i, rec in enumerate(extra.to_dict(orient="records")):
        choices.append(
            {
                "trial_id": rec.get("trial_id", ""),
                "record_id": "",
                "source_format": "extracted",
                "outcome_title": rec.get("outcome", ""),
                "time_frame": rec.get("time_frame", ""),
                "used": True,
                "source": rec.get("source", ""),
                "row": i + 1,
            }
        )
    return pd.concat([store_rows, extra], ignore_index=True).fillna("")


def write_template(kind: str, path: str | Any) -> None:
    """Write the empty CSV template (header only) for values extracted from papers."""

    if kind not in TEMPLATES:
        raise AnalysisError(f"no template for {kind!r}", hint="Use binary or continuous.")
    Path(path).write_text(",".join(TEMPLATES[kind]) + "\n", encoding="utf-8")


def meta_from_store(
    store: Store,
    outcome: str,
    measure: str,
    *,
    out_dir: str | Any,
    filters: Any = None,
    time_frame: str | None = None,
    extra: str | Any | None = None,
    experimental_arm: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``celltrials meta --from-store``: study rows from the store (plus validated paper
    rows from ``extra``), written to ``out_dir/studies.csv``, pooled with
    :func:`~celltrials.analysis.meta.meta_analysis` (``options``), the result written to
    ``out_dir/meta.json`` and returned with a ``from_store`` section listing every choice."""

    kind = kind_of(measure)
    table, choices, summary = study_rows_from_store(
        store,
        outcome,
        measure=measure,
        filters=filters,
        time_frame=time_frame,
        experimental_arm=experimental_arm,
    )
    if extra is not None:
        if kind == "single":
            raise AnalysisError(
                "--extra takes two-group rows; single-arm measures are not supported there"
            )
        src = str(extra)
        table = combine_rows(
            table, validate_extracted(read_table(extra), kind, source=src), kind, src, choices
        )
        summary["rows"] = len(table)
    if len(table) < 2:
        raise AnalysisError(
            f"{len(table)} trial(s) have usable results for {outcome!r}; a meta-analysis needs at least 2",
            hint="Widen the filters, choose another --outcome, or add values from papers with --extra FILE.csv.",
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "studies.csv"
    numeric = {"ai", "n1i", "ci", "n2i", "m1i", "sd1i", "m2i", "sd2i", "xi", "ni", "start_year"}
    written = table.copy()
    for col in written.columns:
        if col not in numeric:  # registry text: no spreadsheet formulas (numbers stay numbers)
            written[col] = written[col].map(safe_cell)
    written.to_csv(csv_path, index=False)
    result = meta_analysis(table, measure, label="study", **options)
    result["from_store"] = {
        "outcome": outcome,
        "time_frame": time_frame,
        "experimental_arm": experimental_arm,
        "filters": filters.describe() if filters is not None else {},
        "extra": str(extra) if extra is not None else None,
        "studies_csv": str(csv_path),
        **summary,
        "choices": choices,
    }
    (out / "meta.json").write_text(
        json.dumps(result, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
    )
    return result
