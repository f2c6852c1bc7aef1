"""Legacy ClinicalTrials.gov XML (``<clinical_study>``, the pre-2024 bulk download).

One study per file (``NCT*.xml``, public.xsd), as the classic site's
"Download → XML" and the AllPublicXML archive gave it; a zip of such files
is read too. :func:`to_v2` maps the XML onto the shape of an API v2 study
object, results included (participant flow, outcome measures with classes,
categories, denominators and analyses, adverse events — the "Total"
rows become the event groups' totals), so that it goes through the same
parser as API v2 JSON and the same results tables. The store keeps the
XML text verbatim (``raw = {"xml": ...}``, ``source_format = "ctgov_xml"``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from celltrials.errors import DataFileError, RecordError
from celltrials.models import ParsedRecord
from celltrials.sources import ctgov_json
from celltrials.sources.base import ParseStream

FORMAT = "ctgov_xml"


def _text(node: ET.Element, block: bool) -> str:
    """An element's text; the XML wraps long values over indented lines: short fields are
    joined into one line, ``textblock``s keep their lines (each stripped of the indent)."""
    raw = "".join(node.itertext())
    if block:
        return "\n".join(line.strip() for line in raw.strip().splitlines())
    return " ".join(raw.split())


def _t(el: ET.Element | None, path: str) -> str | None:
    if el is None:
        return None
    node = el.find(path)
    if node is None:
        return None
    return _text(node, path.endswith("textblock")) or None


def _all(el: ET.Element | None, path: str) -> list[str]:
    if el is None:
        return []
    return [s for s in (_text(n, False) for n in el.findall(path)) if s]


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


def _date(el: ET.Element, path: str) -> dict[str, Any] | None:
    v = _t(el, path)
    return {"date": v} if v else None


def _upper(v: str | None) -> str | None:
    return v.upper().replace(" ", "_") if v else None


def _groups(el: ET.Element | None) -> list[dict[str, Any]]:
    if el is None:
        return []
    return [
        _drop_none(
            {"id": g.get("group_id"), "title": _t(g, "title"), "description": _t(g, "description")}
        )
        for g in el.findall("group_list/group")
    ]


def _protocol(root: ET.Element) -> dict[str, Any]:
    interventions = [
        _drop_none(
            {
                "type": _upper(_t(i, "intervention_type")),
                "name": _t(i, "intervention_name"),
                "description": _t(i, "description"),
                "otherNames": _all(i, "other_name"),
                "armGroupLabels": _all(i, "arm_group_label"),
            }
        )
        for i in root.findall("intervention")
    ]
    arms = [
        _drop_none(
            {
                "label": _t(a, "arm_group_label"),
                "type": _upper(_t(a, "arm_group_type")),
                "description": _t(a, "description"),
            }
        )
        for a in root.findall("arm_group")
    ]
    outcomes = {
        f"{kind}Outcomes": [
            _drop_none(
                {
                    "measure": _t(o, "measure"),
                    "timeFrame": _t(o, "time_frame"),
                    "description": _t(o, "description"),
                }
            )
            for o in root.findall(f"{kind}_outcome")
        ]
        for kind in ("primary", "secondary", "other")
    }
    phase = _t(root, "phase")
    phases = (
        [p.strip() for p in phase.split("/")]
        if phase and phase.upper() != "N/A"
        else (["NA"] if phase else [])
    )
    enroll = root.find("enrollment")
    enroll_info = None
    if enroll is not None and (enroll.text or "").strip():
        text = (enroll.text or "").strip().replace(",", "")
        enroll_info = _drop_none(
            {"count": int(text) if text.isdigit() else text, "type": enroll.get("type")}
        )
    return {
        "identificationModule": _drop_none(
            {
                "nctId": _t(root, "id_info/nct_id"),
                "orgStudyIdInfo": {"id": _t(root, "id_info/org_study_id")}
                if _t(root, "id_info/org_study_id")
                else None,
                "secondaryIdInfos": [{"id": s} for s in _all(root, "id_info/secondary_id")],
                "nctIdAliases": _all(root, "id_info/nct_alias"),
                "briefTitle": _t(root, "brief_title"),
                "officialTitle": _t(root, "official_title"),
                "acronym": _t(root, "acronym"),
            }
        ),
        "statusModule": _drop_none(
            {
                "overallStatus": _t(root, "overall_status"),
                "lastKnownStatus": _t(root, "last_known_status"),
                "whyStopped": _t(root, "why_stopped"),
                "startDateStruct": _date(root, "start_date"),
                "primaryCompletionDateStruct": _date(root, "primary_completion_date"),
                "completionDateStruct": _date(root, "completion_date"),
                "studyFirstSubmitDate": _t(root, "study_first_submitted"),
                "studyFirstPostDateStruct": _date(root, "study_first_posted"),
                "lastUpdatePostDateStruct": _date(root, "last_update_posted"),
                "resultsFirstPostDateStruct": _date(root, "results_first_posted"),
            }
        ),
        "sponsorCollaboratorsModule": _drop_none(
            {
                "leadSponsor": _drop_none(
                    {
                        "name": _t(root, "sponsors/lead_sponsor/agency"),
                        "class": _t(root, "sponsors/lead_sponsor/agency_class"),
                    }
                ),
                "collaborators": [
                    _drop_none({"name": _t(c, "agency"), "class": _t(c, "agency_class")})
                    for c in root.findall("sponsors/collaborator")
                ],
            }
        ),
        "descriptionModule": _drop_none(
            {
                "briefSummary": _t(root, "brief_summary/textblock"),
                "detailedDescription": _t(root, "detailed_description/textblock"),
            }
        ),
        "conditionsModule": _drop_none(
            {"conditions": _all(root, "condition"), "keywords": _all(root, "keyword")}
        ),
        "designModule": _drop_none(
            {
                "studyType": _t(root, "study_type"),
                "phases": phases,
                "enrollmentInfo": enroll_info,
            }
        ),
        "armsInterventionsModule": _drop_none({"armGroups": arms, "interventions": interventions}),
        "outcomesModule": _drop_none(outcomes),
        "eligibilityModule": _drop_none(
            {
                "eligibilityCriteria": _t(root, "eligibility/criteria/textblock"),
                "sex": _t(root, "eligibility/gender"),
                "minimumAge": _t(root, "eligibility/minimum_age"),
                "maximumAge": _t(root, "eligibility/maximum_age"),
            }
        ),
        "contactsLocationsModule": _drop_none(
            {"locations": [{"country": c} for c in _all(root, "location/facility/address/country")]}
        ),
    }


def _denoms(measure: ET.Element) -> list[dict[str, Any]]:
    return [
        _drop_none(
            {
                "units": _t(a, "units"),
                "counts": [
                    {"groupId": c.get("group_id"), "value": c.get("value")}
                    for c in a.findall("count_list/count")
                ],
            }
        )
        for a in measure.findall("analyzed_list/analyzed")
    ]


def _outcome(o: ET.Element) -> dict[str, Any]:
    m = o.find("measure")
    classes = []
    if m is not None:
        for cls in m.findall("class_list/class"):
            cats = [
                _drop_none(
                    {
                        "title": _t(cat, "title"),
                        "measurements": [
                            _drop_none(
                                {
                                    "groupId": x.get("group_id"),
                                    "value": x.get("value"),
                                    "spread": x.get("spread"),
                                    "lowerLimit": x.get("lower_limit"),
                                    "upperLimit": x.get("upper_limit"),
                                    "comment": (x.text or "").strip() or None,
                                }
                            )
                            for x in cat.findall("measurement_list/measurement")
                        ],
                    }
                )
                for cat in cls.findall("category_list/category")
            ]
            classes.append(
                _drop_none({"title": _t(cls, "title"), "denoms": _denoms(cls), "categories": cats})
            )
    disp = _t(m, "dispersion")
    analyses = [
        _drop_none(
            {
                "groupIds": _all(a, "group_id_list/group_id"),
                "groupDescription": _t(a, "groups_desc"),
                "nonInferiorityType": _t(a, "non_inferiority_type"),
                "pValue": _t(a, "p_value"),
                "statisticalMethod": _t(a, "method"),
                "paramType": _t(a, "param_type"),
                "paramValue": _t(a, "param_value"),
                "dispersionType": _t(a, "dispersion_type"),
                "dispersionValue": _t(a, "dispersion_value"),
                "ciPctValue": _t(a, "ci_percent"),
                "ciNumSides": _upper(_t(a, "ci_n_sides")),
                "ciLowerLimit": _t(a, "ci_lower_limit"),
                "ciUpperLimit": _t(a, "ci_upper_limit"),
                "estimateComment": _t(a, "estimate_desc"),
            }
        )
        for a in o.findall("analysis_list/analysis")
    ]
    return _drop_none(
        {
            "type": _upper(_t(o, "type")),
            "title": _t(o, "title"),
            "description": _t(o, "description"),
            "populationDescription": _t(o, "population"),
            "timeFrame": _t(o, "time_frame"),
            "paramType": _t(m, "param"),
            "dispersionType": disp,
            "unitOfMeasure": _t(m, "units"),
            "groups": _groups(o),
            "denoms": _denoms(m) if m is not None else None,
            "classes": classes,
            "analyses": analyses,
        }
    )


def _events(
    block: ET.Element | None, groups: dict[str, dict[str, Any]], kind: str
) -> list[dict[str, Any]]:
    if block is None:
        return []
    default = _t(block, "default_assessment")
    vocab = _t(block, "default_vocab")
    out = []
    for cat in block.findall("category_list/category"):
        organ = _t(cat, "title")
        for ev in cat.findall("event_list/event"):
            term = _t(ev, "sub_title")
            counts = ev.findall("counts")
            if organ == "Total" and term and term.lower().startswith("total"):
                for c in counts:
                    g = groups.get(c.get("group_id") or "")
                    if g is not None:
                        g[f"{kind}NumAffected"] = c.get("subjects_affected")
                        g[f"{kind}NumAtRisk"] = c.get("subjects_at_risk")
                continue
            out.append(
                _drop_none(
                    {
                        "term": term,
                        "organSystem": organ,
                        "sourceVocabulary": vocab,
                        "assessmentType": _upper(default),
                        "stats": [
                            _drop_none(
                                {
                                    "groupId": c.get("group_id"),
                                    "numEvents": c.get("events"),
                                    "numAffected": c.get("subjects_affected"),
                                    "numAtRisk": c.get("subjects_at_risk"),
                                }
                            )
                            for c in counts
                        ],
                    }
                )
            )
    return out


def _results(root: ET.Element) -> dict[str, Any] | None:
    res = root.find("clinical_results")
    if res is None:
        return None
    flow_el = res.find("participant_flow")
    flow = None
    if flow_el is not None:
        flow = {
            "groups": _groups(flow_el),
            "periods": [
                _drop_none(
                    {
                        "title": _t(p, "title"),
                        "milestones": [
                            {
                                "type": _t(ms, "title"),
                                "achievements": [
                                    _drop_none(
                                        {
                                            "groupId": x.get("group_id"),
                                            "numSubjects": x.get("count"),
                                        }
                                    )
                                    for x in ms.findall("participants_list/participants")
                                ],
                            }
                            for ms in p.findall("milestone_list/milestone")
                        ],
                        "dropWithdraws": [
                            {
                                "type": _t(dw, "title"),
                                "reasons": [
                                    _drop_none(
                                        {
                                            "groupId": x.get("group_id"),
                                            "numSubjects": x.get("count"),
                                        }
                                    )
                                    for x in dw.findall("participants_list/participants")
                                ],
                            }
                            for dw in p.findall("drop_withdraw_reason_list/drop_withdraw_reason")
                        ],
                    }
                )
                for p in flow_el.findall("period_list/period")
            ],
        }
    base_el = res.find("baseline")
    baseline = None
    if base_el is not None:
        measures = []
        for m in base_el.findall("measure_list/measure"):
            classes = [
                _drop_none(
                    {
                        "title": _t(cls, "title"),
                        "categories": [
                            _drop_none(
                                {
                                    "title": _t(cat, "title"),
                                    "measurements": [
                                        _drop_none(
                                            {
                                                "groupId": x.get("group_id"),
                                                "value": x.get("value"),
                                                "spread": x.get("spread"),
                                                "lowerLimit": x.get("lower_limit"),
                                                "upperLimit": x.get("upper_limit"),
                                            }
                                        )
                                        for x in cat.findall("measurement_list/measurement")
                                    ],
                                }
                            )
                            for cat in cls.findall("category_list/category")
                        ],
                    }
                )
                for cls in m.findall("class_list/class")
            ]
            measures.append(
                _drop_none(
                    {
                        "title": _t(m, "title"),
                        "paramType": _t(m, "param"),
                        "dispersionType": _t(m, "dispersion"),
                        "unitOfMeasure": _t(m, "units"),
                        "denoms": _denoms(m),
                        "classes": classes,
                    }
                )
            )
        baseline = _drop_none(
            {"groups": _groups(base_el), "denoms": _denoms(base_el), "measures": measures}
        )
    oms = [_outcome(o) for o in res.findall("outcome_list/outcome")]
    ev = res.find("reported_events")
    ae = None
    if ev is not None:
        groups = {g["id"]: g for g in _groups(ev)}
        serious = _events(ev.find("serious_events"), groups, "serious")
        other = _events(ev.find("other_events"), groups, "other")
        ae = _drop_none(
            {
                "frequencyThreshold": _t(ev, "other_events/frequency_threshold"),
                "timeFrame": _t(ev, "time_frame"),
                "description": _t(ev, "desc"),
                "eventGroups": list(groups.values()),
                "seriousEvents": serious,
                "otherEvents": other,
            }
        )
    return _drop_none(
        {
            "participantFlowModule": flow,
            "baselineCharacteristicsModule": baseline,
            "outcomeMeasuresModule": {"outcomeMeasures": oms} if oms else None,
            "adverseEventsModule": ae,
        }
    )


def _root(text: str, where: str) -> ET.Element:
    try:
        root = SafeET.fromstring(text)
    except DefusedXmlException as exc:  # entity declarations, external references
        raise RecordError(f"XML refused: {exc}; registry exports never declare entities") from None
    except ET.ParseError as exc:
        raise RecordError(f"malformed XML ({exc})") from None
    if root.tag != "clinical_study":
        raise RecordError(f"unexpected XML root <{root.tag}> in {where}")
    return root


def to_v2(text: str) -> dict[str, Any]:
    """The API v2-shaped study object for the text of one ``<clinical_study>`` document."""
    root = _root(text, "study")
    study: dict[str, Any] = {"protocolSection": _protocol(root)}
    results = _results(root)
    mesh = _all(root, "condition_browse/mesh_term")
    study["derivedSection"] = {"conditionBrowseModule": {"meshes": [{"term": t} for t in mesh]}}
    if results:
        study["resultsSection"] = results
    study["hasResults"] = results is not None
    return study


def parse_text(text: str, *, position: int = 1) -> ParsedRecord:
    try:
        study = to_v2(text)
    except RecordError as exc:
        exc.position = position
        raise
    rec = ctgov_json.parse_study(study, position=position, source_format=FORMAT)
    rec.raw = {"xml": text}
    return rec


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"invalid UTF-8 at byte {exc.start}", path=where) from None


def parse_xml(path: Path) -> ParseStream:
    text = _decode(path.read_bytes(), str(path))
    try:
        yield parse_text(text)
    except RecordError as exc:
        exc.path = str(path)
        yield exc


def parse_zip(path: Path) -> ParseStream:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DataFileError(f"broken zip archive ({exc})", path=str(path)) from None
    with zf:
        names = sorted(
            n for n in zf.namelist() if n.lower().endswith(".xml") and not n.endswith("/")
        )
        for pos, name in enumerate(names, start=1):
            member = f"{path}!{name}"
            try:
                yield parse_text(_decode(zf.read(name), member), position=pos)
            except RecordError as exc:
                exc.path = member
                yield exc


def study_from_raw(raw: Any) -> dict[str, Any]:
    """The v2-shaped study of a stored ``ctgov_xml`` record."""
    if not isinstance(raw, dict) or not isinstance(raw.get("xml"), str):
        raise RecordError("stored ctgov_xml record has no XML text")
    return to_v2(raw["xml"])


__all__ = ["FORMAT", "parse_text", "parse_xml", "parse_zip", "study_from_raw", "to_v2"]
