"""Registry sources: one module per export format, chosen by sniffing content.

``parse_file(path)`` yields :class:`~celltrials.models.ParsedRecord` for good
records and :class:`~celltrials.errors.RecordError` for bad ones; a file that
cannot be read at all raises :class:`~celltrials.errors.DataFileError`.
The file extension is never trusted: the first bytes decide.
"""

from __future__ import annotations

import csv
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import orjson

from celltrials.errors import DataFileError, UnknownFormatError
from celltrials.sources import ctgov_csv, ctgov_json, ctgov_v1, ctgov_xml, ictrp
from celltrials.sources.base import ParseItem, ParseStream

__all__ = [
    "FORMATS",
    "RESULT_FORMATS",
    "ParseItem",
    "ParseStream",
    "SourceFormat",
    "format_rank",
    "parse_file",
    "sniff",
    "volatile_fields",
]


@dataclass(frozen=True)
class SourceFormat:
    """One registry export format: the one place that knows it.

    ``record_format`` is the ``source_format`` its records carry (a zip or
    NDJSON file holds records of a plain format); the remaining fields are
    read for record formats: ``volatile_fields`` change between exports of
    the same content (ranks, export stamps) and are left out of the content
    hash; ``rank`` breaks ties between versions with the same update date
    (richer formats win); ``has_results`` formats can carry posted results.
    """

    name: str
    description: str
    parse: Callable[[Path, str | None], ParseStream]
    record_format: str = ""
    volatile_fields: tuple[str, ...] = ()
    rank: int = 0
    has_results: bool = False

    def __post_init__(self) -> None:
        if not self.record_format:
            object.__setattr__(self, "record_format", self.name)


def _no_text(parse: Callable[[Path], ParseStream]) -> Callable[[Path, str | None], ParseStream]:
    return lambda path, _text: parse(path)


#: every supported format by name, sniffed by content (:func:`sniff`)
FORMATS: dict[str, SourceFormat] = {
    f.name: f
    for f in (
        SourceFormat(
            "ctgov_json",
            "ClinicalTrials.gov API v2 JSON (study, array or API page)",
            _no_text(ctgov_json.parse_json),
            rank=5,
            has_results=True,
        ),
        SourceFormat(
            "ctgov_ndjson",
            "ClinicalTrials.gov API v2 NDJSON",
            _no_text(ctgov_json.parse_ndjson),
            record_format="ctgov_json",
        ),
        SourceFormat(
            "ctgov_zip",
            "ZIP of ClinicalTrials.gov API v2 JSON files",
            _no_text(ctgov_json.parse_zip),
            record_format="ctgov_json",
        ),
        SourceFormat(
            "ctgov_v1_json",
            "ClinicalTrials.gov API v1 study-fields JSON (retired 2024)",
            _no_text(ctgov_v1.parse_json),
            volatile_fields=ctgov_v1.VOLATILE,
            rank=4,
            has_results=True,
        ),
        SourceFormat(
            "ctgov_v1_zip",
            "ZIP of ClinicalTrials.gov API v1 study-fields JSON files",
            _no_text(ctgov_v1.parse_zip),
            record_format="ctgov_v1_json",
        ),
        SourceFormat(
            "ctgov_xml",
            "ClinicalTrials.gov legacy XML (<clinical_study>)",
            _no_text(ctgov_xml.parse_xml),
            rank=4,
            has_results=True,
        ),
        SourceFormat(
            "ctgov_xml_zip",
            "ZIP of ClinicalTrials.gov legacy XML files",
            _no_text(ctgov_xml.parse_zip),
            record_format="ctgov_xml",
        ),
        SourceFormat(
            "ctgov_csv_classic",
            "ClinicalTrials.gov classic website CSV",
            ctgov_csv.parse,
            volatile_fields=ctgov_csv.VOLATILE,
            rank=2,
        ),
        SourceFormat(
            "ctgov_csv",
            "ClinicalTrials.gov website CSV",
            ctgov_csv.parse,
            volatile_fields=ctgov_csv.VOLATILE,
            rank=3,
        ),
        SourceFormat(
            "ictrp_csv",
            "WHO ICTRP CSV export",
            ictrp.parse_csv,
            volatile_fields=ictrp.VOLATILE,
            rank=2,
        ),
        SourceFormat(
            "ictrp_xml",
            "WHO ICTRP XML export",
            _no_text(ictrp.parse_xml),
            volatile_fields=ictrp.VOLATILE,
            rank=2,
        ),
        SourceFormat(
            "ictrp_xlsx",
            "WHO ICTRP Excel export",
            _no_text(ictrp.parse_xlsx),
            volatile_fields=ictrp.VOLATILE,
            rank=2,
        ),
    )
}

#: record formats that can carry ClinicalTrials.gov results, richest first
RESULT_FORMATS = tuple(
    sorted((f.name for f in FORMATS.values() if f.has_results), key=lambda n: -FORMATS[n].rank)
)


def volatile_fields(record_format: str) -> tuple[str, ...]:
    """Fields of a record of this format that the content hash leaves out."""
    f = FORMATS.get(record_format)
    return f.volatile_fields if f else ()


def format_rank(record_format: str) -> int:
    f = FORMATS.get(record_format)
    return f.rank if f else 0


@dataclass(frozen=True)
class Sniffed:
    format: str
    text: str | None = None  # decoded text for CSV formats, reused by the parser


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _decode(data: bytes, path: Path) -> str:
    try:
        if data.startswith(_UTF16_BOMS):  # Excel's "Unicode text" and some XML tools write UTF-16
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFileError(
            f"invalid UTF-8 at byte {exc.start}",
            path=str(path),
            hint="Re-export the file as UTF-8 (registry exports are UTF-8).",
        ) from None


# API v1 study fields: PascalCase field names with list values, or the API's response wrapper
_V1_HEAD = re.compile(rb'"(?:StudyFieldsResponse|NCTId|Rank|Acronym|BriefTitle)"\s*:')


def _is_v1_head(head: bytes) -> bool:
    return (
        b'"protocolSection"' not in head
        and b'"studies"' not in head
        and _V1_HEAD.search(head) is not None
    )


def sniff(path: Path) -> Sniffed:
    """Decide a file's format from its content."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head.strip():
        raise UnknownFormatError("file is empty", path=str(path))
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
            raise DataFileError(f"broken zip archive ({exc})", path=str(path)) from None
        if "xl/workbook.xml" in names:
            return Sniffed("ictrp_xlsx")
        first_json = next(
            (n for n in sorted(names) if n.lower().endswith(".json") and not n.endswith("/")), None
        )
        first_xml = next(
            (n for n in sorted(names) if n.lower().endswith(".xml") and not n.endswith("/")), None
        )
        try:
            if first_json is not None:
                with zipfile.ZipFile(path) as zf, zf.open(first_json) as member:
                    member_head = member.read(4096)
                return Sniffed("ctgov_v1_zip" if _is_v1_head(member_head) else "ctgov_zip")
            if first_xml is not None:
                with zipfile.ZipFile(path) as zf, zf.open(first_xml) as member:
                    if b"<clinical_study" in member.read(4096):
                        return Sniffed("ctgov_xml_zip")
        except (
            zipfile.BadZipFile,
            EOFError,
            ValueError,
            NotImplementedError,
            RuntimeError,
            zlib.error,
        ) as exc:
            raise DataFileError(f"broken zip archive ({exc})", path=str(path)) from None
        raise UnknownFormatError("zip archive holds no registry JSON or XML files", path=str(path))
    if head.startswith(_UTF16_BOMS):
        text16 = head.decode("utf-16", errors="ignore").lstrip(" \t\r\n")
        if text16.startswith("<"):
            if "Trials_downloaded_from_ICTRP" in text16:
                return Sniffed("ictrp_xml")  # expat reads UTF-16 with a byte-order mark itself
            raise UnknownFormatError("XML that is not a WHO ICTRP export", path=str(path))
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"<"):
        if b"Trials_downloaded_from_ICTRP" in head:
            return Sniffed("ictrp_xml")
        if b"<clinical_study" in head:
            return Sniffed("ctgov_xml")
        raise UnknownFormatError(
            "XML that is neither a WHO ICTRP export nor a ClinicalTrials.gov <clinical_study>",
            path=str(path),
        )
    if stripped[:1] in (b"[", b"{") and _is_v1_head(head):
        return Sniffed("ctgov_v1_json")
    if stripped[:1] == b"[":
        return Sniffed("ctgov_json")
    if stripped[:1] == b"{":
        # NDJSON: the first line is a whole JSON object and another object follows
        with path.open("rb") as fh:
            first_line = fh.readline().lstrip(b"\xef\xbb\xbf \t")
            second = fh.readline()
            while second and not second.strip():
                second = fh.readline()
        if second.lstrip().startswith(b"{"):
            try:
                orjson.loads(first_line)
            except orjson.JSONDecodeError:
                return Sniffed("ctgov_json")
            return Sniffed("ctgov_ndjson")
        return Sniffed("ctgov_json")
    text = _decode(path.read_bytes(), path)
    first = text.split("\n", 1)[0]
    if "NCT Number" in first:
        return Sniffed(
            "ctgov_csv_classic" if '"Title"' in first or ",Title," in first else "ctgov_csv", text
        )
    if first.lstrip('"').startswith("TrialID"):
        return Sniffed("ictrp_csv", text)
    raise UnknownFormatError(
        "not a recognised registry export (no NCT Number / TrialID header, not JSON/XML/XLSX)",
        path=str(path),
        no_id_column=True,
    )


def parse_file(path: str | Path, sniffed: Sniffed | None = None) -> ParseStream:
    """Parse one registry export of any supported format.

    Faults of the file as a whole (truncated archive, corrupt sheet, an
    unreadable CSV line) end the stream with a :class:`DataFileError` naming
    the file and the reason, never another exception type.
    """
    p = Path(path)
    s = sniffed or sniff(p)
    try:
        yield from _parse(p, s)
    except DataFileError as exc:
        if not exc.path:
            raise DataFileError(exc.reason, path=str(p), hint=exc.hint) from None
        raise
    except (csv.Error, OSError, EOFError, zipfile.BadZipFile, zlib.error, ET.ParseError) as exc:
        raise DataFileError(f"unreadable file ({type(exc).__name__}: {exc})", path=str(p)) from None


def _parse(p: Path, s: Sniffed) -> ParseStream:
    fmt = FORMATS.get(s.format)
    if fmt is None:  # pragma: no cover - sniff only returns registered names
        raise UnknownFormatError(f"no parser for {s.format}", path=str(p))
    yield from fmt.parse(p, s.text)
