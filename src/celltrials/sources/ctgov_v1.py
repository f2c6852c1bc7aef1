"""ClinicalTrials.gov API v1 "study fields" JSON (retired in 2024).

The classic API's ``/api/query/study_fields`` returned, per study, every
requested field as a *list of strings* — ``{"NCTId": ["NCT00136903"],
"Phase": ["Phase 2", "Phase 3"], "OutcomeMeasurementValue": [...], ...}``
— with nested tables (interventions, arms, results) flattened into parallel
lists in document order and **empty values left out**. Users hold archives
of it as one JSON file per study (the shape of
``../shared/data-extra/ctgov-v1-studyfields``), a JSON array of such
objects, or the API's own ``{"StudyFieldsResponse": {"StudyFields": [...]}}``.

:func:`to_v2` turns one study into the shape of an API v2 study object so
that it goes through the same parser (:func:`celltrials.sources.ctgov_json.
parse_study`) and the same results tables
(:func:`celltrials.analysis.results.parse_results`); the store keeps the v1
object verbatim (``source_format = "ctgov_v1_json"``).

Re-assembling the flattened lists is only done where it is certain:

* per-item lists (e.g. ``InterventionDescription``) are zipped with their
  items only when they have one value per item; otherwise that attribute is
  left out (the values stay in the stored raw record);
* results groups, denominators, adverse-event statistics and flow
  achievements are split into runs at each repeated group id and used only
  when the number of runs equals the number of measures / terms / milestones;
* outcome measurements are assigned to measures only when exactly one
  segmentation of the measurement runs fits the measures' groups; otherwise
  the measure is kept with its groups and denominators and one row per group
  whose value is empty and whose comment says why (see :data:`UNATTRIBUTED`).
  Class titles are used when there is exactly one per measurement row;
  spreads and limits only when their count fits.

Baseline characteristics and statistical analyses are not re-assembled.
:func:`conversion_notes` lists what was left out for a study.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celltrials.errors import DataFileError, RecordError
from celltrials.models import ParsedRecord
from celltrials.sources import ctgov_json
from celltrials.sources.base import ParseStream

FORMAT = "ctgov_v1_json"
#: keys that change between downloads of the same content (search rank)
VOLATILE = ("Rank",)
UNATTRIBUTED = "value not attributable: the API v1 study-fields archive flattens this measure's rows ambiguously"
_SPREAD_TYPES = {"standard deviation", "standard error", "geometric coefficient of variation"}


def is_v1_study(obj: Any) -> bool:
    """A v1 study-fields object: a dict with an ``NCTId`` list."""
    return isinstance(obj, dict) and isinstance(obj.get("NCTId"), list)


def iter_v1_studies(obj: Any) -> Iterator[Any]:
    """The study objects of a v1 document: one study, an array, or a ``StudyFieldsResponse``."""
    if is_v1_study(obj):
        yield obj
    elif isinstance(obj, list):
        yield from obj
    elif isinstance(obj, dict) and isinstance(obj.get("StudyFieldsResponse"), dict):
        yield from obj["StudyFieldsResponse"].get("StudyFields") or []
    else:
        raise DataFileError(
            "JSON is not ClinicalTrials.gov API v1 study fields (no NCTId list, no StudyFieldsResponse)"
        )


# --------------------------------------------------------------------------- helpers


def _l(d: dict[str, Any], key: str) -> list[Any]:
    """The values of a v1 field (a list of strings; numbers are taken as their text).
    Anything else — an object, a nested list — makes the record bad, naming the field."""
    v = d.get(key)
    if v is None or v == "":
        return []
    items = v if isinstance(v, list) else [v]
    out: list[Any] = []
    for x in items:
        if isinstance(x, bool) or not isinstance(x, str | int | float):
            if x is None:
                continue
            raise RecordError(
                f"{key}: expected a list of strings (API v1 study fields), found {type(x).__name__}"
            )
        out.append(x if isinstance(x, str) else str(x))
    return out


def _first(d: dict[str, Any], key: str) -> Any:
    v = _l(d, key)
    return v[0] if v else None


def _aligned(d: dict[str, Any], key: str, n: int) -> list[Any] | None:
    """The list for ``key`` if it has exactly one value per item (``n``), else None."""
    v = _l(d, key)
    return v if len(v) == n and n > 0 else None


def _at(values: list[Any] | None, i: int) -> Any:
    return values[i] if values is not None else None


def _runs(ids: list[Any]) -> list[list[Any]]:
    """Split a flattened group-id list into runs: a new run starts at a repeated id."""
    out: list[list[Any]] = []
    cur: list[Any] = []
    for g in ids:
        if g in cur:
            out.append(cur)
            cur = []
        cur.append(g)
    if cur:
        out.append(cur)
    return out


def _offsets(runs: list[list[Any]]) -> list[int]:
    offs, pos = [], 0
    for r in runs:
        offs.append(pos)
        pos += len(r)
    return offs


def _count(v: Any) -> Any:
    """An enrollment count as the API v2 integer (text that is not a whole number stays text,
    so the shared validation names it)."""
    text = str(v).strip().replace(",", "")
    return int(text) if text.isdigit() else v


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


# --------------------------------------------------------------------------- protocol


def _protocol(d: dict[str, Any]) -> dict[str, Any]:
    n_int = len(_l(d, "InterventionName"))
    itype = _aligned(d, "InterventionType", n_int)
    idesc = _aligned(d, "InterventionDescription", n_int)
    iother = _aligned(d, "InterventionOtherName", n_int)
    ilabels = _aligned(d, "InterventionArmGroupLabel", n_int)
    interventions = [
        _drop_none(
            {
                "type": (str(_at(itype, i)).upper().replace(" ", "_") if itype else None),
                "name": name,
                "description": _at(idesc, i),
                "otherNames": [_at(iother, i)] if iother else None,
                "armGroupLabels": [_at(ilabels, i)] if ilabels else None,
            }
        )
        for i, name in enumerate(_l(d, "InterventionName"))
    ]
    n_arm = len(_l(d, "ArmGroupLabel"))
    atype = _aligned(d, "ArmGroupType", n_arm)
    adesc = _aligned(d, "ArmGroupDescription", n_arm)
    aint = _aligned(d, "ArmGroupInterventionName", n_arm)
    arms = [
        _drop_none(
            {
                "label": label,
                "type": (str(_at(atype, i)).upper().replace(" ", "_") if atype else None),
                "description": _at(adesc, i),
                "interventionNames": [_at(aint, i)] if aint else None,
            }
        )
        for i, label in enumerate(_l(d, "ArmGroupLabel"))
    ]
    outcomes: dict[str, list[dict[str, Any]]] = {}
    for kind in ("Primary", "Secondary", "Other"):
        measures = _l(d, f"{kind}OutcomeMeasure")
        tf = _aligned(d, f"{kind}OutcomeTimeFrame", len(measures))
        desc = _aligned(d, f"{kind}OutcomeDescription", len(measures))
        outcomes[f"{kind.lower()}Outcomes"] = [
            _drop_none({"measure": m, "timeFrame": _at(tf, i), "description": _at(desc, i)})
            for i, m in enumerate(measures)
        ]
    collab_names = _l(d, "CollaboratorName")
    collab_class = _aligned(d, "CollaboratorClass", len(collab_names))
    enroll = _first(d, "EnrollmentCount")

    def date(key: str) -> dict[str, Any] | None:
        v = _first(d, key)
        return {"date": v} if v else None

    return {
        "identificationModule": _drop_none(
            {
                "nctId": _first(d, "NCTId"),
                "orgStudyIdInfo": {"id": _first(d, "OrgStudyId")}
                if _first(d, "OrgStudyId")
                else None,
                "secondaryIdInfos": [{"id": s} for s in _l(d, "SecondaryId")],
                "nctIdAliases": _l(d, "NCTIdAlias"),
                "briefTitle": _first(d, "BriefTitle"),
                "officialTitle": _first(d, "OfficialTitle"),
                "acronym": _first(d, "Acronym"),
                "organization": {
                    "fullName": _first(d, "OrgFullName"),
                    "class": _first(d, "OrgClass"),
                },
            }
        ),
        "statusModule": _drop_none(
            {
                "overallStatus": _first(d, "OverallStatus"),
                "lastKnownStatus": _first(d, "LastKnownStatus"),
                "whyStopped": _first(d, "WhyStopped"),
                "startDateStruct": date("StartDate"),
                "primaryCompletionDateStruct": date("PrimaryCompletionDate"),
                "completionDateStruct": date("CompletionDate"),
                "studyFirstSubmitDate": _first(d, "StudyFirstSubmitDate"),
                "studyFirstPostDateStruct": date("StudyFirstPostDate"),
                "lastUpdatePostDateStruct": date("LastUpdatePostDate"),
                "resultsFirstPostDateStruct": date("ResultsFirstPostDate"),
            }
        ),
        "sponsorCollaboratorsModule": _drop_none(
            {
                "leadSponsor": _drop_none(
                    {"name": _first(d, "LeadSponsorName"), "class": _first(d, "LeadSponsorClass")}
                ),
                "collaborators": [
                    _drop_none({"name": n, "class": _at(collab_class, i)})
                    for i, n in enumerate(collab_names)
                ],
            }
        ),
        "descriptionModule": _drop_none(
            {
                "briefSummary": _first(d, "BriefSummary"),
                "detailedDescription": _first(d, "DetailedDescription"),
            }
        ),
        "conditionsModule": _drop_none(
            {"conditions": _l(d, "Condition"), "keywords": _l(d, "Keyword")}
        ),
        "designModule": _drop_none(
            {
                "studyType": _first(d, "StudyType"),
                "phases": _l(d, "Phase"),
                "enrollmentInfo": _drop_none(
                    {"count": _count(enroll), "type": _first(d, "EnrollmentType")}
                )
                if enroll
                else None,
            }
        ),
        "armsInterventionsModule": _drop_none({"armGroups": arms, "interventions": interventions}),
        "outcomesModule": _drop_none(outcomes),
        "eligibilityModule": _drop_none(
            {
                "eligibilityCriteria": _first(d, "EligibilityCriteria"),
                "sex": _first(d, "Gender"),
                "minimumAge": _first(d, "MinimumAge"),
                "maximumAge": _first(d, "MaximumAge"),
            }
        ),
        "contactsLocationsModule": _drop_none(
            {"locations": [{"country": c} for c in _l(d, "LocationCountry")]}
        ),
    }


# --------------------------------------------------------------------------- results


def _segmentations(blocks: list[list[Any]], groups: list[list[Any]]) -> list[int] | None:
    """The number of measurement runs per measure if exactly one assignment fits, else None.

    Runs are consecutive; every measure gets at least one; a run's group ids
    must be among its measure's groups.
    """
    n, p = len(blocks), len(groups)

    @functools.cache
    def count(j: int, i: int) -> int:
        if j == p:
            return 1 if i == n else 0
        total = 0
        for e in range(i + 1, n + 1):
            if not set(blocks[e - 1]) <= set(groups[j]):
                break
            total += count(j + 1, e)
            if total > 1:
                return total
        return total

    if count(0, 0) != 1:
        return None
    sizes: list[int] = []
    i = 0
    for j in range(p):
        for e in range(i + 1, n + 1):
            if count(j + 1, e) == 1 and all(set(blocks[x]) <= set(groups[j]) for x in range(i, e)):
                sizes.append(e - i)
                i = e
                break
    return sizes


def _outcomes(d: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:  # noqa: C901 - one branch per flattened v1 outcome layout
    titles = _l(d, "OutcomeMeasureTitle")
    m = len(titles)
    if m == 0:
        return []
    field = {key: _aligned(d, f"OutcomeMeasure{key}", m) for key in (
        "Type", "TimeFrame", "Description", "PopulationDescription", "ReportingStatus", "ParamType",
        "DispersionType", "UnitOfMeasure")}  # fmt: skip
    status = field["ReportingStatus"]
    posted = [i for i in range(m) if status is None or str(status[i]).lower() == "posted"]
    measures: list[dict[str, Any]] = []
    for i in range(m):
        om = _drop_none(
            {
                "type": (str(_at(field["Type"], i)).upper() if field["Type"] else None),
                "title": titles[i],
                "description": _at(field["Description"], i),
                "populationDescription": _at(field["PopulationDescription"], i),
                "reportingStatus": _at(field["ReportingStatus"], i),
                "paramType": _at(field["ParamType"], i),
                "dispersionType": _at(field["DispersionType"], i),
                "unitOfMeasure": _at(field["UnitOfMeasure"], i),
                "timeFrame": _at(field["TimeFrame"], i),
            }
        )
        measures.append(om)
    for key in ("ParamType", "DispersionType", "UnitOfMeasure"):
        if field[key] is None and _l(d, f"OutcomeMeasure{key}"):
            notes.append(
                f"outcome {key}: {len(_l(d, f'OutcomeMeasure{key}'))} values for {m} measures, not attributed"
            )

    gids = _l(d, "OutcomeGroupId")
    gtitle = _aligned(d, "OutcomeGroupTitle", len(gids))
    gdesc = _aligned(d, "OutcomeGroupDescription", len(gids))
    gruns = _runs(gids)
    if len(gruns) != len(posted):
        if gids:
            notes.append(
                f"outcome groups: {len(gruns)} group lists for {len(posted)} posted measures; results not attributed"
            )
        return measures
    goff = _offsets(gruns)
    for j, i in enumerate(posted):
        measures[i]["groups"] = [
            _drop_none(
                {"id": g, "title": _at(gtitle, goff[j] + x), "description": _at(gdesc, goff[j] + x)}
            )
            for x, g in enumerate(gruns[j])
        ]
    # denominators (one set per measure)
    dids = _l(d, "OutcomeDenomCountGroupId")
    dvals = _aligned(d, "OutcomeDenomCountValue", len(dids))
    druns = _runs(dids)
    dunits = _aligned(d, "OutcomeDenomUnits", len(druns))
    if dvals is not None and len(druns) == len(posted):
        doff = _offsets(druns)
        for j, i in enumerate(posted):
            measures[i]["denoms"] = [
                _drop_none(
                    {
                        "units": _at(dunits, j),
                        "counts": [
                            {"groupId": g, "value": dvals[doff[j] + x]}
                            for x, g in enumerate(druns[j])
                        ],
                    }
                )
            ]
    elif dids:
        notes.append(
            "outcome denominators not attributed (their lists do not split into one set per measure)"
        )

    # measurements
    mids = _l(d, "OutcomeMeasurementGroupId")
    mvals = _aligned(d, "OutcomeMeasurementValue", len(mids))
    blocks = _runs(mids)
    sizes = (
        _segmentations(
            blocks,
            [measures[i]["groups"] and [g["id"] for g in measures[i]["groups"]] for i in posted],
        )
        if mvals is not None and blocks
        else None
    )
    if sizes is None:
        if mids:
            notes.append(
                f"outcome measurements: {len(mids)} values in {len(blocks)} rows cannot be attributed to "
                f"{len(posted)} posted measures unambiguously; measures kept with groups and denominators"
            )
            for i in posted:
                measures[i]["classes"] = [
                    {
                        "categories": [
                            {
                                "measurements": [
                                    {"groupId": g["id"], "comment": UNATTRIBUTED}
                                    for g in measures[i]["groups"]
                                ]
                            }
                        ]
                    }
                ]
        return measures
    n_values = len(mids)
    spread = _aligned(d, "OutcomeMeasurementSpread", n_values)
    lower = _aligned(d, "OutcomeMeasurementLowerLimit", n_values)
    upper = _aligned(d, "OutcomeMeasurementUpperLimit", n_values)
    comment = _aligned(d, "OutcomeMeasurementComment", n_values)
    boff = _offsets(blocks)
    per_value_measure: list[int] = []
    for j, size in enumerate(sizes):
        per_value_measure.extend(
            [posted[j]] * sum(len(b) for b in blocks[sum(sizes[:j]) : sum(sizes[:j]) + size])
        )
    # spreads / limits given only for measures of some dispersion types: place them when counts fit
    if spread is None and _l(d, "OutcomeMeasurementSpread") and field["DispersionType"] is not None:
        want = [
            x
            for x, i in enumerate(per_value_measure)
            if str(field["DispersionType"][i]).lower() in _SPREAD_TYPES
        ]
        vals = _l(d, "OutcomeMeasurementSpread")
        if len(want) == len(vals):
            spread = [None] * n_values
            for x, val in zip(want, vals, strict=True):
                spread[x] = val
    limits: list[list[Any] | None] = [lower, upper]
    for li, key in enumerate(("OutcomeMeasurementLowerLimit", "OutcomeMeasurementUpperLimit")):
        vals = _l(d, key)
        if limits[li] is None and vals and field["DispersionType"] is not None:
            want = [
                x
                for x, i in enumerate(per_value_measure)
                if field["DispersionType"][i]
                and str(field["DispersionType"][i]).lower() not in _SPREAD_TYPES
                and str(field["DispersionType"][i]).lower() != "not applicable"
            ]
            if len(want) == len(vals):
                placed: list[Any] = [None] * n_values
                for x, val in zip(want, vals, strict=True):
                    placed[x] = val
                limits[li] = placed
    lower, upper = limits
    for name, got in (("spreads", spread), ("lower limits", lower), ("upper limits", upper)):
        key = {"spreads": "Spread", "lower limits": "LowerLimit", "upper limits": "UpperLimit"}[
            name
        ]
        if got is None and _l(d, f"OutcomeMeasurement{key}"):
            notes.append(
                f"outcome {name}: {len(_l(d, f'OutcomeMeasurement{key}'))} values not attributable"
            )
    class_titles = _l(d, "OutcomeClassTitle")
    cat_titles = _l(d, "OutcomeCategoryTitle")
    titled = len(class_titles) == len(blocks) and not cat_titles
    if not titled and (class_titles or cat_titles):
        notes.append(
            "outcome class/category titles not attributable to rows; rows of multi-row measures are numbered"
        )
    b = 0
    for j, size in enumerate(sizes):
        i = posted[j]
        classes = []
        for r in range(size):
            block, off = blocks[b], boff[b]
            title = (
                class_titles[b]
                if titled
                else (
                    f"row {r + 1} of {size} (title not in API v1 flattening)" if size > 1 else None
                )
            )
            classes.append(
                _drop_none(
                    {
                        "title": title,
                        "categories": [
                            {
                                "measurements": [
                                    _drop_none(
                                        {
                                            "groupId": g,
                                            "value": mvals[off + x] if mvals else None,
                                            "spread": _at(spread, off + x),
                                            "lowerLimit": _at(lower, off + x),
                                            "upperLimit": _at(upper, off + x),
                                            "comment": _at(comment, off + x),
                                        }
                                    )
                                    for x, g in enumerate(block)
                                ]
                            }
                        ],
                    }
                )
            )
            b += 1
        measures[i]["classes"] = classes
    return measures


def _adverse_events(d: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    gids = _l(d, "EventGroupId")
    if not gids:
        return None
    n = len(gids)
    cols = {key: _aligned(d, f"EventGroup{key}", n) for key in (
        "Title", "Description", "DeathsNumAffected", "DeathsNumAtRisk", "SeriousNumAffected", "SeriousNumAtRisk",
        "OtherNumAffected", "OtherNumAtRisk")}  # fmt: skip
    groups = [
        _drop_none(
            {
                "id": g,
                "title": _at(cols["Title"], i),
                "description": _at(cols["Description"], i),
                "deathsNumAffected": _at(cols["DeathsNumAffected"], i),
                "deathsNumAtRisk": _at(cols["DeathsNumAtRisk"], i),
                "seriousNumAffected": _at(cols["SeriousNumAffected"], i),
                "seriousNumAtRisk": _at(cols["SeriousNumAtRisk"], i),
                "otherNumAffected": _at(cols["OtherNumAffected"], i),
                "otherNumAtRisk": _at(cols["OtherNumAtRisk"], i),
            }
        )
        for i, g in enumerate(gids)
    ]
    out: dict[str, Any] = _drop_none(
        {
            "frequencyThreshold": _first(d, "EventsFrequencyThreshold"),
            "timeFrame": _first(d, "EventsTimeFrame"),
            "description": _first(d, "EventsDescription"),
            "eventGroups": groups,
        }
    )
    for kind, key in (("Serious", "seriousEvents"), ("Other", "otherEvents")):
        terms = _l(d, f"{kind}EventTerm")
        if not terms:
            continue
        t = len(terms)
        per = {
            k: _aligned(d, f"{kind}Event{k}", t)
            for k in ("OrganSystem", "SourceVocabulary", "AssessmentType", "Notes")
        }
        sids = _l(d, f"{kind}EventStatsGroupId")
        runs = _runs(sids)
        stats = {
            k: _aligned(d, f"{kind}EventStats{k}", len(sids))
            for k in ("NumAffected", "NumAtRisk", "NumEvents")
        }
        if len(runs) != t or stats["NumAffected"] is None:
            notes.append(
                f"{kind.lower()} adverse events: {len(sids)} statistics for {t} terms not attributable"
            )
            continue
        off = _offsets(runs)
        out[key] = [
            _drop_none(
                {
                    "term": term,
                    "organSystem": _at(per["OrganSystem"], i),
                    "sourceVocabulary": _at(per["SourceVocabulary"], i),
                    "assessmentType": (
                        str(per["AssessmentType"][i]).upper().replace(" ", "_")
                        if per["AssessmentType"]
                        else None
                    ),
                    "notes": _at(per["Notes"], i),
                    "stats": [
                        _drop_none(
                            {
                                "groupId": g,
                                "numAffected": _at(stats["NumAffected"], off[i] + x),
                                "numAtRisk": _at(stats["NumAtRisk"], off[i] + x),
                                "numEvents": _at(stats["NumEvents"], off[i] + x),
                            }
                        )
                        for x, g in enumerate(runs[i])
                    ],
                }
            )
            for i, term in enumerate(terms)
        ]
    return out


def _participant_flow(d: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    gids = _l(d, "FlowGroupId")
    if not gids:
        return None
    gtitle = _aligned(d, "FlowGroupTitle", len(gids))
    gdesc = _aligned(d, "FlowGroupDescription", len(gids))
    groups = [
        _drop_none({"id": g, "title": _at(gtitle, i), "description": _at(gdesc, i)})
        for i, g in enumerate(gids)
    ]
    periods_t = _l(d, "FlowPeriodTitle")
    mtypes = _l(d, "FlowMilestoneType")
    aids = _l(d, "FlowAchievementGroupId")
    anum = _aligned(d, "FlowAchievementNumSubjects", len(aids))
    aruns = _runs(aids)
    out: dict[str, Any] = {"groups": groups, "periods": []}
    starts = [i for i, t in enumerate(mtypes) if str(t).upper() == "STARTED"]
    if (
        len(aruns) != len(mtypes)
        or anum is None
        or len(starts) != len(periods_t)
        or (starts and starts[0] != 0)
    ):
        if mtypes:
            notes.append("participant flow milestones not attributable to periods")
        return out
    aoff = _offsets(aruns)
    bounds = [*starts, len(mtypes)]
    for p, title in enumerate(periods_t):
        out["periods"].append(
            {
                "title": title,
                "milestones": [
                    {
                        "type": mtypes[x],
                        "achievements": [
                            {"groupId": g, "numSubjects": anum[aoff[x] + y]}
                            for y, g in enumerate(aruns[x])
                        ],
                    }
                    for x in range(bounds[p], bounds[p + 1])
                ],
            }
        )
    dtypes = _l(d, "FlowDropWithdrawType")
    rids = _l(d, "FlowReasonGroupId")
    rnum = _aligned(d, "FlowReasonNumSubjects", len(rids))
    rruns = _runs(rids)
    if dtypes:
        if len(periods_t) == 1 and len(rruns) == len(dtypes) and rnum is not None:
            roff = _offsets(rruns)
            out["periods"][0]["dropWithdraws"] = [
                {
                    "type": t,
                    "reasons": [
                        {"groupId": g, "numSubjects": rnum[roff[x] + y]}
                        for y, g in enumerate(rruns[x])
                    ],
                }
                for x, t in enumerate(dtypes)
            ]
        else:
            notes.append("participant flow drop-out reasons not attributable to periods")
    return out


def _results(d: dict[str, Any], notes: list[str]) -> dict[str, Any] | None:
    oms = _outcomes(d, notes)
    ae = _adverse_events(d, notes)
    flow = _participant_flow(d, notes)
    if not (oms or ae or flow):
        return None
    if _l(d, "BaselineMeasureTitle"):
        notes.append(
            "baseline characteristics not re-assembled from API v1 (kept in the raw record)"
        )
    if _l(d, "OutcomeAnalysisGroupId") or _l(d, "OutcomeAnalysisPValue"):
        notes.append("statistical analyses not re-assembled from API v1 (kept in the raw record)")
    return _drop_none(
        {
            "participantFlowModule": flow,
            "outcomeMeasuresModule": {"outcomeMeasures": oms} if oms else None,
            "adverseEventsModule": ae,
        }
    )


# --------------------------------------------------------------------------- public


def to_v2(d: dict[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """The API v2-shaped study object for a v1 study-fields object (see module docstring)."""
    if not is_v1_study(d):
        raise RecordError("not an API v1 study-fields object (no NCTId list)")
    notes = [] if notes is None else notes
    study: dict[str, Any] = {
        "protocolSection": _protocol(d),
        "derivedSection": {
            "conditionBrowseModule": {
                "meshes": [{"term": t} for t in _l(d, "ConditionMeshTerm")],
                "ancestors": [{"term": t} for t in _l(d, "ConditionAncestorTerm")],
            }
        },
    }
    results = _results(d, notes)
    if results:
        study["resultsSection"] = results
    study["hasResults"] = bool(_l(d, "ResultsFirstPostDate")) or results is not None
    return study


def conversion_notes(d: dict[str, Any]) -> list[str]:
    """What :func:`to_v2` could not attribute for this study (empty when everything was)."""
    notes: list[str] = []
    to_v2(d, notes)
    return notes


def parse_study(obj: Any, *, position: int = 0) -> ParsedRecord:
    """One v1 study → :class:`ParsedRecord` (raw = the v1 object, verbatim)."""
    if not is_v1_study(obj):
        raise RecordError("not an API v1 study-fields object (no NCTId list)", position=position)
    rec = ctgov_json.parse_study(to_v2(obj), position=position, source_format=FORMAT)
    rec.raw = obj
    return rec


def _stream(studies: Iterator[Any], path: str, start: int = 0) -> Iterator[Any]:
    pos = start
    for study in studies:
        pos += 1
        try:
            yield parse_study(study, position=pos)
        except RecordError as exc:
            exc.position = exc.position or pos
            exc.path = exc.path or path
            yield exc


def parse_json(path: Path) -> ParseStream:
    """A v1 JSON file: one study, an array of studies, or a ``StudyFieldsResponse``."""
    obj = ctgov_json.load_json_bytes(path.read_bytes(), str(path))
    try:
        studies = list(iter_v1_studies(obj))
    except DataFileError as exc:
        raise DataFileError(exc.reason, path=str(path)) from None
    yield from _stream(iter(studies), str(path))


def parse_zip(path: Path) -> ParseStream:
    """A zip of v1 JSON files (one study each, or arrays)."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DataFileError(f"broken zip archive ({exc})", path=str(path)) from None
    with zf:
        names = sorted(
            n for n in zf.namelist() if n.lower().endswith(".json") and not n.endswith("/")
        )
        pos = 0
        for name in names:
            member = f"{path}!{name}"
            obj = ctgov_json.load_json_bytes(zf.read(name), member)
            try:
                studies = list(iter_v1_studies(obj))
            except DataFileError as exc:
                raise DataFileError(exc.reason, path=member) from None
            for item in _stream(iter(studies), member, pos):
                pos += 1
                yield item


__all__ = [
    "FORMAT",
    "conversion_notes",
    "is_v1_study",
    "parse_json",
    "parse_study",
    "parse_zip",
    "to_v2",
]
