"""WHO ICTRP exports: CSV, XML (``<Trials_downloaded_from_ICTRP>``) and XLSX.

All three carry the same columns; each row is first turned into one dict
with snake_case keys (``Public title`` / ``Public_title`` → ``public_title``)
and then into a record by :func:`parse_row`. ICTRP relays ChiCTR, EU-CTR,
ANZCTR, ISRCTN, IRCT, JPRN and other registers, and repeats
ClinicalTrials.gov records.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from celltrials.errors import DataFileError, RecordError
from celltrials.models import CHANNEL_ICTRP, Intervention, Outcome, ParsedRecord, Sponsor
from celltrials.normalize import (
    DateError,
    clean_text,
    finish_record,
    normalize_enrollment,
    normalize_phase,
    normalize_sponsor_class,
    normalize_status,
    parse_date,
)
from celltrials.registry_ids import canonical_id, find_ids, fold_id
from celltrials.safety import safe_url
from celltrials.sources.base import ParseStream
from celltrials.sources.validate import check_record, check_trial_id, guard

#: change between two exports of the same record; left out of its hash
VOLATILE = ("export_date",)

_TYPED = re.compile(
    r"^\s*(drug|biological|device|procedure|genetic|radiation|behavioral|dietary supplement|"
    r"combination product|diagnostic test|other)\s*:\s*(.+)$",
    re.I | re.S,
)


def snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _text(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if v is None:
        return ""
    if isinstance(v, datetime | date):
        return v.isoformat()
    return str(v)


def split_interventions(text: str) -> list[Intervention]:
    """ICTRP packs interventions into one ``;``-separated cell.

    ClinicalTrials.gov copies use ``Drug: name``; ChiCTR uses ``group:
    intervention`` (``experimental group:hUC-MSC;control group:standard
    care;``), which we keep as the arm label so comparator arms stay visible.
    """
    out: list[Intervention] = []
    for part in re.split(r";|\n|<br>", text or ""):
        part = part.strip()
        if not part:
            continue
        m = _TYPED.match(part)
        if m:
            out.append(
                Intervention(type=m.group(1).upper().replace(" ", "_"), name=clean_text(m.group(2)))
            )
            continue
        if ":" in part:
            label, name = part.split(":", 1)
            if len(label) <= 60 and name.strip():
                out.append(Intervention(name=clean_text(name), arm_labels=[clean_text(label)]))
                continue
        out.append(Intervention(name=clean_text(part)))
    return out


def split_conditions(text: str) -> list[str]:
    parts = re.split(r";|\n|<br>", text or "")
    return [clean_text(p) for p in parts if clean_text(p)]


def parse_row(row: dict[str, Any], source_format: str, position: int) -> ParsedRecord:
    """One ICTRP row as a record; a :class:`RecordError` for a bad one
    (no or malformed TrialID, impossible date, out-of-range target size)."""
    rec = guard(
        lambda: _parse_row(row, source_format, position),
        position=position,
        record_id=lambda: clean_text(_text(row, "trialid")) or None,
    )
    return check_record(rec)


def _parse_row(row: dict[str, Any], source_format: str, position: int) -> ParsedRecord:
    trial_id = fold_id(clean_text(_text(row, "trialid")))
    if not trial_id:
        raise RecordError("record has no TrialID", position=position)
    primary = canonical_id(trial_id, is_primary=True)
    try:
        check_trial_id(trial_id, known=primary is not None, position=position)
    except RecordError as exc:
        exc.record_id = None  # the id is what is wrong; the reason quotes it
        raise
    registry = primary.registry if primary else "other"
    ids = [primary] if primary else []
    for extra in find_ids(_text(row, "secondary_ids") + " " + _text(row, "secondary_id")):
        if not primary or extra.key != primary.key:
            ids.append(extra)

    def date_of(*keys: str) -> Any:
        for key in keys:
            value = row.get(key)
            if value in (None, ""):
                continue
            try:
                return parse_date(value)
            except DateError as exc:
                raise RecordError(f"{key}: {exc}", position=position, record_id=trial_id) from None
        return None

    sponsor = clean_text(_text(row, "primary_sponsor"))
    inclusion = _text(row, "inclusion_criteria").strip()
    exclusion = _text(row, "exclusion_criteria").strip()
    outcomes = [
        Outcome("primary", clean_text(p))
        for p in re.split(r";|\n", _text(row, "primary_outcome"))
        if p.strip()
    ]
    outcomes += [
        Outcome("secondary", clean_text(p))
        for p in re.split(r";|\n", _text(row, "secondary_outcome"))
        if p.strip()
    ]
    phase_raw = _text(row, "phase")
    return finish_record(
        ParsedRecord(
            channel=CHANNEL_ICTRP,
            source_format=source_format,
            record_id=trial_id,
            registry=registry,
            raw={
                k: (v.isoformat() if isinstance(v, datetime | date) else v) for k, v in row.items()
            },
            ids=ids,
            title=clean_text(_text(row, "public_title")),
            official_title=clean_text(_text(row, "scientific_title")),
            acronym=clean_text(_text(row, "acronym")),
            status=normalize_status(_text(row, "recruitment_status")),
            status_raw=_text(row, "recruitment_status"),
            phase=normalize_phase(phase_raw),
            phase_raw=phase_raw,
            study_type_raw=_text(row, "study_type"),
            start_date=date_of("date_enrollement", "date_enrollment"),
            registration_date=date_of("date_registration3", "date_registration"),
            last_update=date_of("last_refreshed_on"),
            enrollment=normalize_enrollment(_text(row, "target_size").strip() or None, "UNKNOWN"),
            conditions=split_conditions(_text(row, "condition")),
            interventions=split_interventions(_text(row, "intervention")),
            countries_raw=[c for c in re.split(r"[;\n]", _text(row, "countries")) if c.strip()],
            sponsors=[Sponsor(sponsor, "lead", normalize_sponsor_class(None, sponsor))]
            if sponsor
            else [],
            outcomes=outcomes,
            eligibility="\n".join(x for x in (inclusion, exclusion) if x),
            has_results=_text(row, "results_yes_no").strip().lower() == "yes",
            url=safe_url(
                clean_text(_text(row, "web_address"))
            ),  # http(s) only; the raw text stays in raw
            position=position,
        )
    )


def _rows_to_records(
    rows: Iterator[tuple[int, dict[str, Any]]], source_format: str, path: str
) -> ParseStream:
    for pos, row in rows:
        try:
            yield parse_row(row, source_format, pos)
        except RecordError as exc:
            exc.path = path
            yield exc


def parse_csv_text(text: str, path: str) -> ParseStream:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [snake(h) for h in next(reader)]
    except StopIteration:
        raise DataFileError("empty CSV file", path=path) from None

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for pos, values in enumerate(reader, start=1):
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                yield (
                    pos,
                    {
                        "__bad__": f"row has {len(values)} fields, header has {len(header)}",
                        "trialid": values[0] if values else "",
                    },
                )
                continue
            yield pos, dict(zip(header, values, strict=True))

    for pos, row in rows():
        if "__bad__" in row:
            yield RecordError(
                row["__bad__"], path=path, position=pos, record_id=row["trialid"] or None
            )
            continue
        try:
            yield parse_row(row, "ictrp_csv", pos)
        except RecordError as exc:
            exc.path = path
            yield exc


def parse_xml(path: Path) -> ParseStream:
    """Stream ``<Trial>`` elements (memory stays bounded on large exports);
    defusedxml refuses entity declarations and external references."""
    where = str(path)
    try:
        events = SafeET.iterparse(where, events=("start", "end"))
        _, root = next(events)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise DataFileError(f"malformed XML ({exc})", path=where) from None
    if root.tag != "Trials_downloaded_from_ICTRP":
        raise DataFileError(f"unexpected XML root <{root.tag}>", path=where)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        pos = 0
        try:
            for event, el in events:
                if event == "end" and el.tag == "Trial":
                    pos += 1
                    yield pos, {snake(child.tag): (child.text or "") for child in el}
                    root.clear()  # drop the trials already read
        except (ET.ParseError, DefusedXmlException) as exc:
            raise DataFileError(f"malformed XML after trial {pos} ({exc})", path=where) from None

    yield from _rows_to_records(rows(), "ictrp_xml", where)


def parse_xlsx(path: Path) -> ParseStream:
    import openpyxl  # noqa: PLC0415 - heavy optional dependency, imported on first use

    fh = path.open("rb")  # a file object: openpyxl would refuse a real workbook named .csv
    try:
        try:
            wb = openpyxl.load_workbook(fh, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many types for broken workbooks
            raise DataFileError(
                f"unreadable Excel workbook ({type(exc).__name__}: {exc})", path=str(path)
            ) from None
        try:
            state = {"pos": 0}
            try:
                ws = wb.worksheets[0]
                it = ws.iter_rows(values_only=True)
                header = [snake(str(h or "")) for h in next(it, ())]
            except Exception as exc:  # a corrupt sheet (bad XML, damaged zip member)
                raise DataFileError(
                    f"unreadable Excel sheet ({type(exc).__name__}: {exc})", path=str(path)
                ) from None
            if "trialid" not in header:
                raise DataFileError("first sheet has no TrialID column", path=str(path))

            def rows() -> Iterator[tuple[int, dict[str, Any]]]:
                while True:
                    try:
                        values = next(it)
                    except StopIteration:
                        return
                    except Exception as exc:  # the sheet breaks off: name where
                        raise DataFileError(
                            f"unreadable Excel sheet after row {state['pos']} "
                            f"({type(exc).__name__}: {exc})",
                            path=str(path),
                        ) from None
                    state["pos"] += 1
                    if not any(v not in (None, "") for v in values):
                        continue
                    yield state["pos"], {h: v for h, v in zip(header, values, strict=False) if h}

            yield from _rows_to_records(rows(), "ictrp_xlsx", str(path))
        finally:
            wb.close()
    finally:
        fh.close()


def parse_csv(path: Path, text: str | None = None) -> ParseStream:
    if text is None:
        text = path.read_bytes().decode("utf-8-sig")
    yield from parse_csv_text(text, str(path))
