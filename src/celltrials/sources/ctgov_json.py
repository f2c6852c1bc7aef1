"""ClinicalTrials.gov API v2 study objects, in every shape users meet.

One study object; a JSON array (the website's "Download → JSON"); an API
page ``{"studies": [...], "nextPageToken": ...}``; NDJSON (one study per
line); and a ``.zip`` of per-study JSON files (the registry's bulk
download). All of them go through :func:`parse_study`, which the live API
client uses too.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import orjson
import pyarrow as pa

from celltrials.errors import DataFileError, RecordError
from celltrials.models import (
    CHANNEL_CTGOV,
    Arm,
    Intervention,
    Outcome,
    ParsedRecord,
    Sponsor,
)
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
from celltrials.registry_ids import canonical_id, find_ids
from celltrials.sources.base import ParseStream
from celltrials.sources.validate import check_record, check_study_lists, check_study_shape, guard

FORMAT = "ctgov_json"


def _date(struct: Any, field: str, nct: str, position: int) -> Any:
    value = struct.get("date") if isinstance(struct, dict) else struct
    try:
        return parse_date(value)
    except DateError as exc:
        raise RecordError(f"{field}: {exc}", position=position, record_id=nct) from None


def parse_study(study: Any, *, position: int = 0, source_format: str = FORMAT) -> ParsedRecord:
    """Turn one API v2 study object into a :class:`ParsedRecord`.

    Raises :class:`RecordError` for a study without an NCT id, with an
    impossible date, with a field whose JSON type is not the API schema's,
    or with a value out of bounds (:mod:`celltrials.sources.validate`).
    """
    pos = position or None
    if not isinstance(study, dict):
        check_study_shape(study, position=pos)
    check_study_lists(study, position=pos)

    def nct() -> str | None:
        return str(study["protocolSection"]["identificationModule"]["nctId"])

    try:
        rec = guard(
            lambda: _parse_study(study, position=position, source_format=source_format),
            position=pos,
            record_id=nct,
        )
    except RecordError:
        check_study_shape(study, position=pos)  # name the field whose type is wrong, if one is
        raise
    return check_record(rec)


def _parse_study(study: Any, *, position: int = 0, source_format: str = FORMAT) -> ParsedRecord:
    if not isinstance(study, dict):
        raise RecordError(
            f"expected a study object, found {type(study).__name__}", position=position
        )
    ps = study.get("protocolSection")
    if not isinstance(ps, dict):
        raise RecordError("no protocolSection", position=position)
    ident = ps.get("identificationModule") or {}
    nct = clean_text(ident.get("nctId"))
    primary = canonical_id(nct, is_primary=True) if nct else None
    if primary is None or primary.registry != "ctgov":
        raise RecordError(
            f"no valid nctId (found {nct!r})" if nct else "record has no nctId", position=position
        )
    ids = [primary]
    seen = {primary.key}
    for sec in ident.get("secondaryIdInfos") or []:
        for rid in find_ids(str(sec.get("id", ""))):
            if rid.key not in seen:
                seen.add(rid.key)
                ids.append(rid)
    for alias in ident.get("nctIdAliases") or []:
        alias_id = canonical_id(alias)
        if alias_id and alias_id.key not in seen:
            seen.add(alias_id.key)
            ids.append(alias_id)

    status = ps.get("statusModule") or {}
    sponsor_mod = ps.get("sponsorCollaboratorsModule") or {}
    desc = ps.get("descriptionModule") or {}
    cond = ps.get("conditionsModule") or {}
    design = ps.get("designModule") or {}
    arms_mod = ps.get("armsInterventionsModule") or {}
    outcomes_mod = ps.get("outcomesModule") or {}
    elig = ps.get("eligibilityModule") or {}
    locs = (ps.get("contactsLocationsModule") or {}).get("locations") or []
    derived = study.get("derivedSection") or {}
    browse = derived.get("conditionBrowseModule") or {}

    sponsors: list[Sponsor] = []
    lead = sponsor_mod.get("leadSponsor") or {}
    if lead.get("name"):
        sponsors.append(
            Sponsor(
                clean_text(lead["name"]),
                "lead",
                normalize_sponsor_class(lead.get("class"), lead["name"]),
            )
        )
    for col in sponsor_mod.get("collaborators") or []:
        if col.get("name"):
            sponsors.append(
                Sponsor(
                    clean_text(col["name"]),
                    "collaborator",
                    normalize_sponsor_class(col.get("class"), col["name"]),
                )
            )

    enroll = design.get("enrollmentInfo") or {}
    phases = design.get("phases") or []
    phase_raw = "|".join(phases)
    outcomes: list[Outcome] = []
    for kind, key in (
        ("primary", "primaryOutcomes"),
        ("secondary", "secondaryOutcomes"),
        ("other", "otherOutcomes"),
    ):
        for o in outcomes_mod.get(key) or []:
            outcomes.append(
                Outcome(
                    kind,
                    clean_text(o.get("measure")),
                    clean_text(o.get("timeFrame")),
                    clean_text(o.get("description")),
                )
            )

    return finish_record(
        ParsedRecord(
            channel=CHANNEL_CTGOV,
            source_format=source_format,
            record_id=primary.key,
            registry="ctgov",
            raw=study,
            ids=ids,
            title=clean_text(ident.get("briefTitle")),
            official_title=clean_text(ident.get("officialTitle")),
            acronym=clean_text(ident.get("acronym")),
            brief_summary=(desc.get("briefSummary") or "").strip(),
            detailed_description=(desc.get("detailedDescription") or "").strip(),
            keywords=[clean_text(k) for k in cond.get("keywords") or []],
            status=normalize_status(status.get("overallStatus")),
            status_raw=status.get("overallStatus") or "",
            why_stopped=clean_text(status.get("whyStopped")),
            phase=normalize_phase(phase_raw) if phases else "UNKNOWN",
            phase_raw=phase_raw,
            study_type_raw=clean_text(design.get("studyType")),
            start_date=_date(status.get("startDateStruct"), "startDate", nct, position),
            completion_date=_date(
                status.get("completionDateStruct") or status.get("primaryCompletionDateStruct"),
                "completionDate",
                nct,
                position,
            ),
            registration_date=_date(
                status.get("studyFirstSubmitDate") or status.get("studyFirstPostDateStruct"),
                "studyFirstSubmitDate",
                nct,
                position,
            ),
            last_update=_date(
                status.get("lastUpdatePostDateStruct") or status.get("lastUpdateSubmitDate"),
                "lastUpdatePostDate",
                nct,
                position,
            ),
            enrollment=normalize_enrollment(enroll.get("count"), enroll.get("type"))
            if enroll.get("count") is not None
            else None,
            conditions=[clean_text(c) for c in cond.get("conditions") or []],
            mesh_terms=[m.get("term", "") for m in browse.get("meshes") or []],
            mesh_ancestors=[m.get("term", "") for m in browse.get("ancestors") or []],
            interventions=[
                Intervention(
                    type=clean_text(i.get("type")).upper(),
                    name=clean_text(i.get("name")),
                    description=(i.get("description") or "").strip(),
                    other_names=[clean_text(n) for n in i.get("otherNames") or []],
                    arm_labels=[clean_text(n) for n in i.get("armGroupLabels") or []],
                )
                for i in arms_mod.get("interventions") or []
            ],
            arms=[
                Arm(
                    label=clean_text(a.get("label")),
                    type=clean_text(a.get("type")).upper(),
                    description=(a.get("description") or "").strip(),
                    intervention_names=[clean_text(n) for n in a.get("interventionNames") or []],
                )
                for a in arms_mod.get("armGroups") or []
            ],
            countries_raw=[
                loc["country"]
                for loc in locs
                if isinstance(loc.get("country"), str) and loc["country"].strip()
            ],
            sponsors=sponsors,
            outcomes=outcomes,
            eligibility=(elig.get("eligibilityCriteria") or "").strip(),
            has_results=bool(study.get("hasResults")) or "resultsSection" in study,
            url=f"https://clinicaltrials.gov/study/{primary.key}",
            position=position,
        )
    )


def iter_studies(obj: Any) -> Iterator[Any]:
    """The study objects in a parsed JSON document of any supported shape."""
    if isinstance(obj, list):
        yield from obj
    elif isinstance(obj, dict) and isinstance(obj.get("studies"), list):
        yield from obj["studies"]
    elif isinstance(obj, dict) and "protocolSection" in obj:
        yield obj
    else:
        raise DataFileError(
            "JSON is neither a study, an array of studies, nor an API page with 'studies'"
        )


def _parse_stream(studies: Iterator[Any]) -> ParseStream:
    for pos, study in enumerate(studies, start=1):
        try:
            yield parse_study(study, position=pos)
        except RecordError as exc:
            exc.position = exc.position or pos
            yield exc


def load_json_bytes(data: bytes, path: str) -> Any:
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (Windows tools write one)
        data = data[3:]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = (
            "invalid UTF-8"
            if "utf-8" in str(exc).lower()
            else f"malformed or truncated JSON ({exc})"
        )
        raise DataFileError(reason, path=path) from None


#: JSON arrays larger than this are split into studies by DuckDB's JSON
#: reader as they are read, instead of being loaded whole (bounded memory)
STREAM_MIN_BYTES = 64 << 20
#: the largest study object the streaming reader accepts (its read buffer follows it)
STREAM_MAX_OBJECT = 16 << 20


def parse_json(path: Path) -> ParseStream:
    if path.stat().st_size >= STREAM_MIN_BYTES and _starts_array(path):
        yield from _with_path(_parse_stream(_stream_array(path)), path)
        return
    data = path.read_bytes()
    yield from _with_path(
        _parse_stream(iter_studies_checked(load_json_bytes(data, str(path)), str(path))), path
    )


def _starts_array(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"["


def _stream_array(path: Path, batch: int = 1000) -> Iterator[Any]:
    """The elements of a top-level JSON array, parsed range by range
    (:func:`array_ranges`, :func:`range_pieces`), then, from the first range
    that does not hold whole elements (or where the file cannot be cut),
    one by one: DuckDB's ``read_json_objects`` finds the element boundaries
    (in C++, streaming; :func:`stream_array_texts`) and each element's text
    is parsed with orjson. A malformed or truncated file raises
    :class:`DataFileError` when that reader reaches it. The worker processes
    of a large ingest read the same ranges (:mod:`celltrials.ingest_parallel`),
    so both find the same elements and stop at the same place.
    """
    done = 0
    for items in _array_pieces(path):
        if items is None:
            break
        done += len(items)
        yield from items
    else:
        return
    for texts in stream_array_texts(path, batch, skip=done):
        # as bytes: orjson parses UTF-8 bytes directly (a str would be re-encoded)
        for text in texts.to_pylist():
            yield orjson.loads(text)


def _array_pieces(path: Path) -> Iterator[list[dict[str, Any]] | None]:
    """The pieces of every range of :func:`array_ranges`, in file order; None
    last when the rest of the file does not hold whole elements or cannot be cut."""
    with path.open("rb") as fh:
        for span in array_ranges(path):
            if span is None:
                yield None
                return
            for items in range_pieces(fh, *span):
                yield items
                if items is None:
                    return


#: where one study of a ClinicalTrials.gov download ends and the next begins:
#: a top-level study object starts with its protocol section (nested objects
#: never have that key, and a JSON string cannot hold an unescaped quote), so
#: this is almost always a boundary between elements; a cut anywhere else
#: leaves a piece that does not parse (an open string, object or array)
_NEXT_STUDY = re.compile(rb'\}\s*,\s*\{\s*"protocolSection"')
#: bytes of a large array handed out at a time (to a worker: about 200 complete studies)
RANGE_BYTES = 4 << 20
#: ... and parsed at a time within a range: a study or two (parsing many studies
#: at once into objects costs more per study; 256 KB pieces cost ~10 % more)
PIECE_BYTES = 32 << 10
#: a range or piece ends at the first boundary after its size, looked for this
#: far: a file with no boundary there is read element by element from that point
RANGE_SEARCH_BYTES = 16 << 20
_BLANK = b" \t\r\n"


def array_ranges(path: Path) -> Iterator[tuple[int, int] | None]:
    """Byte ranges ``(start, stop)`` of a top-level JSON array's elements, one
    after another, about :data:`RANGE_BYTES` each: cut where one study ends
    and the next begins (:data:`_NEXT_STUDY`). Each range is a guess until
    :func:`range_pieces` reads it. Ends with None when the rest of the file
    cannot be cut (no boundary found within :data:`RANGE_SEARCH_BYTES`, or a
    file that does not end with ``]``: a truncated one): the caller reads the
    rest element by element. Only the bytes around each cut are read."""
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(_EDGE_BYTES)
        fh.seek(max(0, size - _EDGE_BYTES))
        tail = fh.read()
        at = 3 if head.startswith(b"\xef\xbb\xbf") else 0
        first = len(head) - len(head[at:].lstrip(_BLANK))  # the "["
        second = len(head) - len(head[first + 1 :].lstrip(_BLANK))  # the first element
        stop = size - (len(tail) - len(tail.rstrip(_BLANK)))  # after the "]"
        if (
            second >= len(head)  # (blank for kilobytes: the element-by-element reader decides)
            or head[first : first + 1] != b"["
            or tail.rstrip(_BLANK)[-1:] != b"]"
            or stop - 1 <= first
        ):
            yield None
            return
        if second == stop - 1:  # "[ ]"
            return

        def find(pos: int, end: int) -> tuple[int, int] | None:
            n = 1 << 16  # (a boundary is usually a few kilobytes on)
            while True:
                fh.seek(pos)
                window = fh.read(min(n, end - pos))
                m = _NEXT_STUDY.search(window)
                if m is not None:
                    return pos + m.start() + 1, pos + m.start() + m.group().index(b"{")
                if pos + len(window) >= end:
                    return None
                n *= 16

        yield from _cuts(find, second, stop - 1, RANGE_BYTES, RANGE_SEARCH_BYTES)


#: bytes read at each end of a file to find its array's brackets
_EDGE_BYTES = 4096


def _cuts(
    find: Callable[[int, int], tuple[int, int] | None],
    start: int,
    stop: int,
    size: int,
    search: int,
) -> Iterator[tuple[int, int] | None]:
    """Bytes ``start`` to ``stop`` (elements of an array, from the first
    one's start) cut into spans of about ``size`` bytes: ``find(pos, end)``
    gives the first boundary (:data:`_NEXT_STUDY`) after ``pos`` that ends
    before ``end``, as (end of the element before it, start of the next), and
    is asked ``search`` bytes on from a span's start; None when the rest,
    longer than that, cannot be cut."""
    while stop - start > size:
        got = find(start + size, min(stop, start + search))
        if got is None:
            break
        yield start, got[0]
        start = got[1]
    yield None if stop - start > search else (start, stop)


def range_pieces(fh: BinaryIO, start: int, stop: int) -> Iterator[list[dict[str, Any]] | None]:
    """The elements in bytes ``start`` to ``stop`` of the open file ``fh`` (a
    range of :func:`array_ranges`), a few at a time (pieces of about
    :data:`PIECE_BYTES`, cut as the ranges are). A piece that does not parse
    is read again with the rest of the range; when that fails too, or an
    element is not an object, the last item is None: the rest of the range
    does not hold whole elements (a range cut inside a string or a nested
    value, or damaged JSON, which the element-by-element reader reports)."""
    fh.seek(start)
    data = fh.read(stop - start)

    def find(pos: int, end: int) -> tuple[int, int] | None:
        m = _NEXT_STUDY.search(data, pos, end)
        return None if m is None else (m.start() + 1, m.start() + m.group().index(b"{"))

    for span in _cuts(find, 0, len(data), PIECE_BYTES, len(data)):
        assert span is not None  # (the whole range is searched)
        items = _objects(data[span[0] : span[1]])
        if items is None:  # (a wrong cut, or damage: the rest of the range at once)
            items = _objects(data[span[0] :])
            yield items
            return
        yield items


def _objects(text: bytes) -> list[dict[str, Any]] | None:
    """The JSON objects of ``text`` (elements of an array, separated by
    commas), or None when that is not what it holds."""
    try:
        items: list[dict[str, Any]] = orjson.loads(b"[" + text + b"]")
    except orjson.JSONDecodeError:
        return None
    if not all(type(x) is dict for x in items):
        return None
    return items


def stream_array_texts(path: Path, batch: int = 1000, skip: int = 0) -> Iterator[pa.Array]:
    """The element texts of a top-level JSON array (UTF-8, as an Arrow binary
    array), ``batch`` at a time, after the first ``skip`` (read past, not
    returned); see :func:`_stream_array`."""
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        literal = "'" + str(path).replace("'", "''") + "'"
        reader = None
        while True:
            try:
                if reader is None:  # (it reads the first chunk already: a damage there raises)
                    reader = con.sql(
                        f"SELECT json FROM read_json_objects({literal}, format = 'array', "
                        f"maximum_object_size = {STREAM_MAX_OBJECT})"
                    ).to_arrow_reader(batch)
                chunk = reader.read_next_batch()
            except StopIteration:
                return
            except (duckdb.Error, OSError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise DataFileError(
                    f"malformed or truncated JSON ({first})", path=str(path)
                ) from None
            texts = chunk.column(0)
            if isinstance(texts.type, pa.ExtensionType):
                texts = texts.storage
            if skip:
                n = min(skip, len(texts))
                texts, skip = texts.slice(n), skip - n
                if not len(texts):
                    continue
            as_bytes = pa.large_binary() if pa.types.is_large_string(texts.type) else pa.binary()
            yield texts.view(as_bytes)
    finally:
        con.close()


def iter_studies_checked(obj: Any, path: str) -> Iterator[Any]:
    try:
        yield from iter_studies(obj)
    except DataFileError as exc:
        raise DataFileError(exc.reason, path=path) from None


def parse_ndjson(path: Path) -> ParseStream:
    def studies() -> Iterator[Any]:
        with path.open("rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if not line.strip():
                    continue
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield RecordError(f"line {lineno}: malformed JSON ({exc})", position=lineno)

    for pos, item in enumerate(studies(), start=1):
        if isinstance(item, RecordError):
            item.path = str(path)
            yield item
            continue
        try:
            yield parse_study(item, position=pos)
        except RecordError as exc:
            exc.path = str(path)
            yield exc


def parse_zip(path: Path) -> ParseStream:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise DataFileError(f"broken zip archive ({exc})", path=str(path)) from None
    with zf:
        names = sorted(
            n for n in zf.namelist() if n.lower().endswith(".json") and not n.endswith("/")
        )
        pos = 0
        for name in names:
            member = f"{path}!{name}"
            try:
                data = read_member(zf, name)
            except DataFileError as exc:  # one damaged member is a finding; the others are read
                yield RecordError(exc.reason, path=member)
                continue
            try:
                obj = load_json_bytes(data, member)
                studies = list(iter_studies_checked(obj, member))
            except DataFileError as exc:  # one damaged member is a finding; the others are read
                yield RecordError(exc.reason, path=member)
                continue
            for study in studies:
                pos += 1
                try:
                    yield parse_study(study, position=pos)
                except RecordError as exc:
                    exc.path = member
                    yield exc


#: largest zip member read (uncompressed); a bigger one is a finding, not a memory blow-up
MAX_MEMBER_BYTES = 1 << 30


def read_member(zf: zipfile.ZipFile, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """One zip member's bytes, streamed with a size cap; a damaged member
    (bad CRC, corrupt deflate data, encryption, unknown compression method,
    truncated archive) is a :class:`DataFileError` with the reason."""
    info = zf.getinfo(name)
    if info.flag_bits & 0x1:
        raise DataFileError(
            "zip member is encrypted (password protected); celltrials cannot read it"
        )
    if info.file_size > limit:
        raise DataFileError(
            f"zip member is {info.file_size:,} bytes uncompressed, over the {limit:,}-byte limit"
        )
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except NotImplementedError as exc:
        raise DataFileError(f"zip member uses an unsupported compression method ({exc})") from None
    except zipfile.BadZipFile as exc:
        raise DataFileError(f"damaged zip member ({exc})") from None
    except (zlib.error, EOFError, OSError, RuntimeError, ValueError) as exc:
        raise DataFileError(f"damaged zip member ({type(exc).__name__}: {exc})") from None
    if len(data) > limit:
        raise DataFileError(f"zip member is over the {limit:,}-byte limit when uncompressed")
    return data


def parse_bytes(data: bytes, source: str) -> ParseStream:
    """Parse an API response body (used by the live client)."""
    obj = load_json_bytes(data, source)
    yield from _with_path(_parse_stream(iter_studies_checked(obj, source)), Path(source))


def _with_path(stream: ParseStream, path: Path) -> ParseStream:
    for item in stream:
        if isinstance(item, RecordError) and not item.path:
            item.path = str(path)
        yield item


__all__ = [
    "FORMAT",
    "iter_studies",
    "parse_bytes",
    "parse_json",
    "parse_ndjson",
    "parse_study",
    "parse_zip",
]
