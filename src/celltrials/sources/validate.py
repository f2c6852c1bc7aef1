"""The shapes each source promises, checked before a record is stored.

Every violation becomes a :class:`~celltrials.errors.RecordError` naming the
field and the reason, so a bad record is a finding (file, position, id,
reason) and never a traceback or a silently wrong value:

* :func:`check_study_shape` — a ClinicalTrials.gov API v2 study against the
  types the API schema gives for every field celltrials reads (a string
  where the schema has a list would otherwise be split into characters);
* :func:`check_record` — bounds on what any parser produced (enrollment is a
  whole number from 0 to 2,147,483,647; a number written in scientific
  notation is read as a number, not as its first digits);
* :func:`check_trial_id` — a WHO ICTRP ``TrialID`` must look like a registry id;
* :func:`guard` — turns any other exception while reading one record into a
  finding for that record.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from celltrials.errors import RecordError
from celltrials.models import ParsedRecord
from celltrials.sources.base import content_hash

#: the store keeps enrollment as a 32-bit integer
MAX_ENROLLMENT = 2**31 - 1

_STR = "string"
_INT = "integer"
_BOOL = "boolean"
_DATE = {"date": _STR}
_NAMED = {"name": _STR, "class": _STR}
_OUTCOME = [{"measure": _STR, "timeFrame": _STR, "description": _STR}]

#: API v2 types (https://clinicaltrials.gov/data-api/about-api/study-data-structure)
#: of the fields celltrials reads; a one-element list means "list of"
STUDY_SHAPE: dict[str, Any] = {
    "protocolSection": {
        "identificationModule": {
            "nctId": _STR,
            "briefTitle": _STR,
            "officialTitle": _STR,
            "acronym": _STR,
            "nctIdAliases": [_STR],
            "secondaryIdInfos": [{"id": _STR}],
        },
        "statusModule": {
            "overallStatus": _STR,
            "whyStopped": _STR,
            "studyFirstSubmitDate": _STR,
            "lastUpdateSubmitDate": _STR,
            "startDateStruct": _DATE,
            "completionDateStruct": _DATE,
            "primaryCompletionDateStruct": _DATE,
            "studyFirstPostDateStruct": _DATE,
            "lastUpdatePostDateStruct": _DATE,
        },
        "sponsorCollaboratorsModule": {"leadSponsor": _NAMED, "collaborators": [_NAMED]},
        "descriptionModule": {"briefSummary": _STR, "detailedDescription": _STR},
        "conditionsModule": {"conditions": [_STR], "keywords": [_STR]},
        "designModule": {
            "studyType": _STR,
            "phases": [_STR],
            "enrollmentInfo": {"count": _INT, "type": _STR},
        },
        "armsInterventionsModule": {
            "interventions": [
                {
                    "type": _STR,
                    "name": _STR,
                    "description": _STR,
                    "otherNames": [_STR],
                    "armGroupLabels": [_STR],
                }
            ],
            "armGroups": [
                {"label": _STR, "type": _STR, "description": _STR, "interventionNames": [_STR]}
            ],
        },
        "outcomesModule": {
            "primaryOutcomes": _OUTCOME,
            "secondaryOutcomes": _OUTCOME,
            "otherOutcomes": _OUTCOME,
        },
        "eligibilityModule": {"eligibilityCriteria": _STR},
        "contactsLocationsModule": {"locations": [{"country": _STR}]},
    },
    "derivedSection": {
        "conditionBrowseModule": {"meshes": [{"term": _STR}], "ancestors": [{"term": _STR}]}
    },
    "hasResults": _BOOL,
    "resultsSection": {},
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check(value: Any, shape: Any, where: str) -> str | None:
    """The first violation of ``shape`` in ``value`` (None: fine; null is always fine)."""
    if value is None:
        return None
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where}: expected an object, found {_kind(value)}"
        for key, sub in shape.items():
            if key in value:
                bad = _check(value[key], sub, f"{where}.{key}" if where else key)
                if bad:
                    return bad
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where}: expected a list, found {_kind(value)}"
        for i, item in enumerate(value):
            if item is None:
                continue
            bad = _check(item, shape[0], f"{where}[{i}]")
            if bad:
                return bad
        return None
    found = _kind(value)
    if shape == _INT and found == "number" and float(value).is_integer():
        return None
    if found != shape:
        return f"{where}: expected a {shape}, found {found}"
    return None


def check_study_shape(study: Any, *, position: int | None = None) -> None:
    """Raise a :class:`RecordError` naming the first field whose JSON type
    differs from the API v2 schema."""
    if not isinstance(study, dict):
        raise RecordError(f"expected a study object, found {_kind(study)}", position=position)
    bad = _check(study, STUDY_SHAPE, "")
    if bad:
        ident = study.get("protocolSection")
        ident = ident.get("identificationModule") if isinstance(ident, dict) else None
        nct = ident.get("nctId") if isinstance(ident, dict) else None
        raise RecordError(bad, position=position, record_id=nct if isinstance(nct, str) else None)


def _strs(v: Any) -> bool:
    return v is None or (type(v) is list and all(type(x) is str or x is None for x in v))


def _objs(v: Any, scalars: tuple[str, ...], lists: tuple[str, ...] = ()) -> bool:
    if v is None:
        return True
    if type(v) is not list:
        return False
    for x in v:
        if x is None:
            continue
        if type(x) is not dict:
            return False
        for k in scalars:
            y = x.get(k)
            if y is not None and type(y) is not str:
                return False
        for k in lists:
            if not _strs(x.get(k)):
                return False
    return True


def _mod(ps: dict[str, Any], name: str) -> dict[str, Any] | None:
    m = ps.get(name)
    if m is None:
        return {}
    return m if type(m) is dict else None


def _scalars(m: dict[str, Any], keys: tuple[str, ...]) -> bool:
    for k in keys:
        v = m.get(k)
        if v is not None and type(v) is not str:
            return False
    return True


def _dates(m: dict[str, Any], keys: tuple[str, ...]) -> bool:
    for k in keys:
        v = m.get(k)
        if v is not None and (type(v) is not dict or not _scalars(v, ("date",))):
            return False
    return True


def _fast_ok(study: Any) -> bool:
    """:data:`STUDY_SHAPE` checked by hand-flattened code (no recursion, no
    path strings): the same verdict as :func:`_check` except that location
    items are only checked to be objects (the parser rejects a mistyped
    country itself, and the full check then names it)."""
    if type(study) is not dict:
        return False
    ps = study.get("protocolSection")
    if ps is None:
        ps = {}
    if type(ps) is not dict:
        return False
    m = _mod(ps, "identificationModule")
    if (
        m is None
        or not _scalars(m, ("nctId", "briefTitle", "officialTitle", "acronym"))
        or not _strs(m.get("nctIdAliases"))
        or not _objs(m.get("secondaryIdInfos"), ("id",))
    ):
        return False
    m = _mod(ps, "statusModule")
    if (
        m is None
        or not _scalars(
            m, ("overallStatus", "whyStopped", "studyFirstSubmitDate", "lastUpdateSubmitDate")
        )
        or not _dates(
            m,
            (
                "startDateStruct",
                "completionDateStruct",
                "primaryCompletionDateStruct",
                "studyFirstPostDateStruct",
                "lastUpdatePostDateStruct",
            ),
        )
    ):
        return False
    m = _mod(ps, "sponsorCollaboratorsModule")
    if m is None or not _objs(m.get("collaborators"), ("name", "class")):
        return False
    lead = m.get("leadSponsor")
    if lead is not None and (type(lead) is not dict or not _scalars(lead, ("name", "class"))):
        return False
    m = _mod(ps, "descriptionModule")
    if m is None or not _scalars(m, ("briefSummary", "detailedDescription")):
        return False
    m = _mod(ps, "conditionsModule")
    if m is None or not _strs(m.get("conditions")) or not _strs(m.get("keywords")):
        return False
    m = _mod(ps, "designModule")
    if m is None or not _scalars(m, ("studyType",)) or not _strs(m.get("phases")):
        return False
    e = m.get("enrollmentInfo")
    if e is not None:
        if type(e) is not dict or not _scalars(e, ("type",)):
            return False
        c = e.get("count")
        if c is not None and type(c) is not int and not (type(c) is float and c.is_integer()):
            return False
    m = _mod(ps, "armsInterventionsModule")
    if (
        m is None
        or not _objs(
            m.get("interventions"),
            ("type", "name", "description"),
            ("otherNames", "armGroupLabels"),
        )
        or not _objs(m.get("armGroups"), ("label", "type", "description"), ("interventionNames",))
    ):
        return False
    m = _mod(ps, "outcomesModule")
    if m is None or not all(
        _objs(m.get(k), ("measure", "timeFrame", "description"))
        for k in ("primaryOutcomes", "secondaryOutcomes", "otherOutcomes")
    ):
        return False
    m = _mod(ps, "eligibilityModule")
    if m is None or not _scalars(m, ("eligibilityCriteria",)):
        return False
    m = _mod(ps, "contactsLocationsModule")
    if m is None:
        return False
    locs = m.get("locations")
    if locs is not None and (
        type(locs) is not list or not all(type(x) is dict or x is None for x in locs)
    ):
        return False
    d = study.get("derivedSection")
    if d is not None:
        if type(d) is not dict:
            return False
        b = _mod(d, "conditionBrowseModule")
        if (
            b is None
            or not _objs(b.get("meshes"), ("term",))
            or not _objs(b.get("ancestors"), ("term",))
        ):
            return False
    h = study.get("hasResults")
    if h is not None and type(h) is not bool:
        return False
    r = study.get("resultsSection")
    return r is None or type(r) is dict


def check_study_lists(study: dict[str, Any], *, position: int | None = None) -> None:
    """The fast check run on every study; on a violation the full
    :func:`check_study_shape` names the field."""
    if not _fast_ok(study):
        raise _shape_error(study, position)


def _shape_error(study: Any, position: int | None) -> RecordError:
    try:
        check_study_shape(study, position=position)
    except RecordError as exc:
        return exc
    return RecordError("unexpected JSON types", position=position)


_SCI = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+")
_NEGATIVE = re.compile(r"[-\u2212\u2013]\s*\d")


def check_record(rec: ParsedRecord) -> ParsedRecord:
    """Bounds on a parsed record; returns it (with a scientific-notation
    enrollment read as the number it is) or raises :class:`RecordError`."""
    e = rec.enrollment
    if e is not None:
        raw = (e.raw or "").strip()
        if _NEGATIVE.match(raw):
            raise _bad(rec, f"enrollment {raw!r} is negative")
        if _SCI.fullmatch(raw):
            value = float(raw)
            if (
                not math.isfinite(value)
                or not value.is_integer()
                or not 0 <= value <= MAX_ENROLLMENT
            ):
                raise _bad(
                    rec, f"enrollment {raw!r} is not a whole number from 0 to {MAX_ENROLLMENT:,}"
                )
            if e.count != int(value):
                rec = dataclasses.replace(rec, enrollment=dataclasses.replace(e, count=int(value)))
                e = rec.enrollment
        if e is not None and e.count is not None and not 0 <= e.count <= MAX_ENROLLMENT:
            raise _bad(rec, f"enrollment {e.count:,} is outside 0 to {MAX_ENROLLMENT:,}")
    return rec


def _bad(rec: ParsedRecord, reason: str) -> RecordError:
    return RecordError(reason, position=rec.position or None, record_id=rec.record_id)


#: what a WHO ICTRP TrialID looks like when it is not one of the registries
#: celltrials knows by pattern: letters first, then letters/digits in groups
#: joined by - / . _ ; at least one digit; at most 64 characters
_GENERIC_ID = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-/._][A-Za-z0-9]+)*")


def check_trial_id(trial_id: str, *, known: bool, position: int | None = None) -> None:
    """Reject a TrialID that cannot be a registry id (``known``: it matched a
    registry's own id pattern)."""
    if known:
        return
    if (
        len(trial_id) > 64
        or not _GENERIC_ID.fullmatch(trial_id)
        or not any(c.isdigit() for c in trial_id)
    ):
        shown = trial_id if len(trial_id) <= 80 else trial_id[:77] + "..."
        raise RecordError(f"TrialID {shown!r} is not a registry id", position=position)


T = TypeVar("T")

#: exceptions that mean "this record's content is not what the format promises"
RECORD_FAULTS = (
    AttributeError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    ArithmeticError,
    UnicodeError,
)


def guard(
    parse: Callable[[], T], *, position: int | None, record_id: Callable[[], str | None]
) -> T:
    """Run ``parse``; any content fault becomes a :class:`RecordError`."""
    try:
        return parse()
    except RecordError:
        raise
    except RECORD_FAULTS as exc:
        try:
            rid = record_id()
        except Exception:  # the id itself may be what is broken
            rid = None
        msg = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise RecordError(
            f"unreadable record ({type(exc).__name__}: {msg})"
            if msg
            else f"unreadable record ({type(exc).__name__})",
            position=position,
            record_id=rid,
        ) from None


__all__ = [
    "MAX_ENROLLMENT",
    "RECORD_FAULTS",
    "STUDY_SHAPE",
    "check_record",
    "check_study_shape",
    "check_trial_id",
    "guard",
]


#: orjson (the record hash and the stored raw JSON) serialises at most this many levels
MAX_DEPTH = 254


def nesting_depth(obj: Any, limit: int = 10_000) -> int:
    """How deeply lists/objects nest in ``obj`` (iterative; stops past ``limit``)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict):
            values: Any = x.values()
        elif isinstance(x, list):
            values = x
        else:
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        stack.extend((v, d + 1) for v in values if isinstance(v, dict | list))
    return deepest


def unstorable_reason(raw: Any) -> str | None:
    """Why a record's raw content cannot be hashed and stored (None: it can).

    Only called after a batch failed to store, so the happy path pays nothing.
    """

    try:
        content_hash(raw)
        orjson.dumps(raw, default=str)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        depth = nesting_depth(raw)
        if depth > MAX_DEPTH:
            return f"nested {depth} levels deep; at most {MAX_DEPTH} can be stored"
        return f"content cannot be stored as JSON ({type(exc).__name__})"
    return None
