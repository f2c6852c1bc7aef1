"""ClinicalTrials.gov CSV exports.

Two layouts exist: the classic website's 27-column export (``NCT Number,
Title, Conditions, Interventions, …, URL``) and the current website's
(``NCT Number, Study Title, Study URL, …``), whose columns the user chooses.
One column map per layout; missing optional columns are simply empty.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from celltrials.errors import DataFileError, RecordError
from celltrials.models import CHANNEL_CTGOV, Intervention, Outcome, ParsedRecord, Sponsor
from celltrials.normalize import (
    DateError,
    clean_text,
    country_from_location,
    finish_record,
    normalize_enrollment,
    normalize_phase,
    normalize_sponsor_class,
    normalize_status,
    parse_date,
)
from celltrials.registry_ids import canonical_id, find_ids
from celltrials.safety import safe_url
from celltrials.sources.base import ParseStream, split_list
from celltrials.sources.validate import check_record, guard

# our field → (classic header, current header)
COLUMNS: dict[str, tuple[str, str]] = {
    "nct": ("NCT Number", "NCT Number"),
    "title": ("Title", "Study Title"),
    "acronym": ("Acronym", "Acronym"),
    "status": ("Status", "Study Status"),
    "summary": ("", "Brief Summary"),
    "results": ("Study Results", "Study Results"),
    "conditions": ("Conditions", "Conditions"),
    "interventions": ("Interventions", "Interventions"),
    "outcomes": ("Outcome Measures", ""),
    "primary_outcomes": ("", "Primary Outcome Measures"),
    "secondary_outcomes": ("", "Secondary Outcome Measures"),
    "other_outcomes": ("", "Other Outcome Measures"),
    "sponsors": ("Sponsor/Collaborators", "Sponsor"),
    "collaborators": ("", "Collaborators"),
    "phases": ("Phases", "Phases"),
    "enrollment": ("Enrollment", "Enrollment"),
    "funders": ("Funded Bys", "Funder Type"),
    "study_type": ("Study Type", "Study Type"),
    "other_ids": ("Other IDs", "Other IDs"),
    "start": ("Start Date", "Start Date"),
    "completion": ("Completion Date", "Completion Date"),
    "primary_completion": ("Primary Completion Date", "Primary Completion Date"),
    "first_posted": ("First Posted", "First Posted"),
    "last_update": ("Last Update Posted", "Last Update Posted"),
    "locations": ("Locations", "Locations"),
    "url": ("URL", "Study URL"),
}
#: columns that change between two exports of the same record, left out of its hash
VOLATILE = ("Rank",)

_INTERVENTION_TYPES = {
    "drug",
    "biological",
    "device",
    "procedure",
    "procedure/surgery",
    "genetic",
    "radiation",
    "behavioral",
    "dietary supplement",
    "combination product",
    "diagnostic test",
    "other",
}


def is_classic(header: list[str]) -> bool:
    return "Title" in header and "NCT Number" in header


def split_intervention(text: str) -> Intervention:
    """``Drug: Prochymal™ …`` → type DRUG, name ``Prochymal™ …``."""
    m = re.match(r"\s*([A-Za-z /]+):\s*(.*)", text, re.S)
    if m and m.group(1).strip().lower() in _INTERVENTION_TYPES:
        kind = m.group(1).strip().upper().replace(" ", "_").replace("/SURGERY", "")
        return Intervention(type=kind, name=clean_text(m.group(2)))
    return Intervention(name=clean_text(text))


def parse_row(row: dict[str, str], classic: bool, position: int) -> ParsedRecord:
    """One CSV row as a record; a :class:`RecordError` for a bad one."""
    rec = guard(
        lambda: _parse_row(row, classic, position),
        position=position,
        record_id=lambda: (row.get("NCT Number") or "").strip() or None,
    )
    return check_record(rec)


def _parse_row(row: dict[str, str], classic: bool, position: int) -> ParsedRecord:
    col = 0 if classic else 1

    def get(field: str) -> str:
        name = COLUMNS[field][col]
        return (row.get(name) or "") if name else ""

    nct = get("nct").strip()
    primary = canonical_id(nct, is_primary=True)
    if not nct:
        raise RecordError("record has no NCT Number", position=position)
    if primary is None or primary.registry != "ctgov":
        raise RecordError(f"invalid NCT Number {nct!r}", position=position, record_id=nct)
    ids = [primary, *[i for i in find_ids(get("other_ids")) if i.key != primary.key]]

    def date(field: str) -> object:
        try:
            return parse_date(get(field))
        except DateError as exc:
            raise RecordError(
                f"{COLUMNS[field][col]}: {exc}", position=position, record_id=nct
            ) from None

    names = split_list(get("sponsors"))
    if not classic:
        names += split_list(get("collaborators"))
    funders = split_list(get("funders"))
    sponsors = [
        Sponsor(
            clean_text(n),
            "lead" if i == 0 else "collaborator",
            normalize_sponsor_class(funders[0] if i == 0 and funders else None, n),
        )
        for i, n in enumerate(names)
    ]
    outcomes: list[Outcome] = []
    if classic:
        outcomes = [Outcome("unspecified", clean_text(m)) for m in split_list(get("outcomes"))]
    else:
        for kind in ("primary", "secondary", "other"):
            outcomes += [Outcome(kind, clean_text(m)) for m in split_list(get(f"{kind}_outcomes"))]
    enrollment = normalize_enrollment(get("enrollment").strip() or None, "UNKNOWN")
    phases = get("phases")
    start = date("start")
    completion = date("completion") or date("primary_completion")
    registered = date("first_posted")
    last_update = date("last_update")
    return finish_record(
        ParsedRecord(
            channel=CHANNEL_CTGOV,
            source_format="ctgov_csv_classic" if classic else "ctgov_csv",
            record_id=primary.key,
            registry="ctgov",
            raw=dict(row),
            ids=ids,
            title=clean_text(get("title")),
            acronym=clean_text(get("acronym")),
            brief_summary=get("summary").strip(),
            status=normalize_status(get("status")),
            status_raw=get("status"),
            phase=normalize_phase(phases),
            phase_raw=phases,
            study_type_raw=get("study_type"),
            start_date=start,  # type: ignore[arg-type]
            completion_date=completion,  # type: ignore[arg-type]
            registration_date=registered,  # type: ignore[arg-type]
            last_update=last_update,  # type: ignore[arg-type]
            enrollment=enrollment,
            conditions=split_list(get("conditions")),
            interventions=[split_intervention(t) for t in split_list(get("interventions"))],
            countries_raw=[country_from_location(x) for x in split_list(get("locations"))],
            sponsors=sponsors,
            outcomes=outcomes,
            has_results=get("results").strip().lower() in {"has results", "yes"},
            url=safe_url(get("url")) or f"https://clinicaltrials.gov/study/{primary.key}",
            position=position,
        )
    )


def parse_csv_text(text: str, path: str) -> ParseStream:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataFileError("empty CSV file", path=path) from None
    header = [h.strip() for h in header]
    classic = is_classic(header)
    for pos, values in enumerate(reader, start=1):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            yield RecordError(
                f"row has {len(values)} fields, header has {len(header)}",
                path=path,
                position=pos,
                record_id=values[header.index("NCT Number")]
                if "NCT Number" in header and len(values) > header.index("NCT Number")
                else None,
            )
            continue
        row = dict(zip(header, values, strict=True))
        try:
            rec = parse_row(row, classic, pos)
        except RecordError as exc:
            exc.path = path
            yield exc
            continue
        yield rec


def parse(path: Path, text: str | None = None) -> ParseStream:
    if text is None:
        text = path.read_bytes().decode("utf-8-sig")
    yield from parse_csv_text(text, str(path))
