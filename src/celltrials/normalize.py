"""Small pure functions that turn registry spellings into one vocabulary.

Each is table-tested with values that really occur in the shared exports.
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from typing import Any

import ftfy
import pycountry
import yaml
from ftfy.badness import BADNESS_RE

from celltrials.errors import TaxonomyError
from celltrials.models import Enrollment, ParsedRecord, PartialDate, Place, TextRepair

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

_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4"}


#: phase spellings that say "no phase" or "not stated" in so many words
_PHASE_WORDS = {
    "n/a": "NOT_APPLICABLE",
    "na": "NOT_APPLICABLE",
    "not applicable": "NOT_APPLICABLE",
    "not_applicable": "NOT_APPLICABLE",
    "none": "NOT_APPLICABLE",
    "other": "NOT_APPLICABLE",
    # ChiCTR's phase list names study categories for trials without a drug phase
    "retrospective study": "NOT_APPLICABLE",
    "new treatment measure clinical study": "NOT_APPLICABLE",
    "diagnostic new technique clincal study": "NOT_APPLICABLE",
    "diagnostic new technique clinical study": "NOT_APPLICABLE",
    # post-marketing surveillance is ClinicalTrials.gov's Phase 4 ("after FDA approval")
    "post marketing surveillance": "PHASE4",
    "not specified": "UNKNOWN",
    "not selected": "UNKNOWN",
    "unknown": "UNKNOWN",
}

#: Excel turned ICTRP's "1-2" / "2-3" into dates of the export year, day
#: first: "2-3" became 2020-03-02 and "1-2" 2020-02-01. All 9 ChiCTR and
#: IRCT trials that read "1-2" / "2-3" in ICTRP's CSV and XML exports carry
#: exactly these dates in the XLSX export (tests/test_normalize_complete.py),
#: so a midnight date whose day and month are consecutive phases (1-2, 2-3,
#: 3-4) is read back as that range (day-month); any other date stays unmapped.
_EXCEL_PHASE_DATE = re.compile(r"\d{4}-0([1-4])-0([0-4])(?:[t ]00:00(?::00)?)?")


def phase_lookup(raw: str | None) -> str | None:
    """The phase a registry spelling maps to; None when it is not recognised.

    Empty text maps to UNKNOWN (nothing stated). See :func:`normalize_phase`.
    """
    if raw is None:
        return "UNKNOWN"
    text = raw.strip().lower()
    if not text:
        return "UNKNOWN"
    m = _EXCEL_PHASE_DATE.fullmatch(text)
    if m:
        month, day = int(m[1]), int(m[2])
        return _combine_phases([str(day), str(month)]) if day >= 1 and month == day + 1 else None
    # ClinicalTrials.gov's "Early Phase 1" was formerly "Phase 0"; ChiCTR writes "0"
    if (
        "early phase 1" in text
        or "early_phase1" in text
        or text in {"0", "phase 0"}
        or re.fullmatch(r"0 \(exploratory trials?\)", text)
    ):
        return "EARLY_PHASE1"
    if "human pharmacology" in text or "therapeutic exploratory" in text:
        # EU-CTR: "Human pharmacology (Phase I): no\nTherapeutic exploratory (Phase II): yes ..."
        found = [_ROMAN[m.group(1)] for m in re.finditer(r"\(phase (i{1,3}|iv)\)\s*:\s*yes", text)]
        # every box unticked: the form was filled in without a phase
        return _combine_phases(sorted(set(found))) if found else "UNKNOWN"
    if text in _PHASE_WORDS:
        return _PHASE_WORDS[text]
    nums = re.findall(
        r"(?:phase\s*|\b)(iv|iii|ii|i|[1-4])(?:[ab]\b|\b)", text.replace("_", " ").replace("-", " ")
    )
    digits = sorted({_ROMAN.get(n, n) for n in nums})
    if not digits:
        return None
    return _combine_phases(digits)


def normalize_phase(raw: str | None) -> str:
    """Map any registry phase spelling to the API v2 vocabulary (+ UNKNOWN).

    ``Phase 1|Phase 2`` and ``Phase 2/Phase 3`` are combined phases; ``N/A``
    and ChiCTR's non-drug study categories are NOT_APPLICABLE; EU-CTR's
    multi-line yes/no form keeps the phases marked ``yes``; Excel-dated
    ranges (``2020-03-02`` for ``2-3``) are read back; unrecognised text is
    UNKNOWN (and listed by ``celltrials check``).
    """
    if type(raw) is str:
        return _phase_of(raw)
    return phase_lookup(raw) or "UNKNOWN"


@functools.lru_cache(maxsize=4096)
def _phase_of(raw: str) -> str:
    # registries spell phases a few hundred ways: each spelling is read once
    return phase_lookup(raw) or "UNKNOWN"


def _combine_phases(digits: list[str]) -> str:
    if not digits:
        return "UNKNOWN"
    lo = int(digits[0])
    if len(digits) == 1 or lo >= 3:
        return f"PHASE{lo}"
    # "Phase 1/2", "Phase 2|Phase 3"; a wider span ("1/3") keeps its first two stages
    return f"PHASE{lo}_PHASE{lo + 1}"


STATUSES = (
    "ACTIVE_NOT_RECRUITING",
    "COMPLETED",
    "ENROLLING_BY_INVITATION",
    "NOT_YET_RECRUITING",
    "RECRUITING",
    "SUSPENDED",
    "TERMINATED",
    "WITHDRAWN",
    "AVAILABLE",
    "NO_LONGER_AVAILABLE",
    "TEMPORARILY_NOT_AVAILABLE",
    "APPROVED_FOR_MARKETING",
    "WITHHELD",
    "UNKNOWN",
)

_STATUS_ALIASES = {
    "not recruiting": "ACTIVE_NOT_RECRUITING",
    "active, not recruiting": "ACTIVE_NOT_RECRUITING",
    # EU-CTR (relayed by ICTRP) records no recruitment status: "Authorised"
    # says only that a member state's competent authority authorised the
    # trial and no end was declared. The trial may not have started, may be
    # recruiting or may have finished recruiting (the shared export has
    # "Authorised" trials that started in 2015), so no API v2 status fits:
    # UNKNOWN, with status_raw kept.
    "authorised": "UNKNOWN",
    "authorized": "UNKNOWN",
    # ICTRP writes "Not Available" when the source register gave no status
    "not available": "UNKNOWN",
    "pending": "NOT_YET_RECRUITING",
    "unknown status": "UNKNOWN",
    "ongoing": "ACTIVE_NOT_RECRUITING",
    "prematurely ended": "TERMINATED",
    "stopped": "TERMINATED",
    "closed to recruitment": "ACTIVE_NOT_RECRUITING",
    "complete": "COMPLETED",
    "enrolling by invitation": "ENROLLING_BY_INVITATION",
}


def status_lookup(raw: str | None) -> str | None:
    """The API v2 status a spelling maps to; None when it is not recognised."""
    if not raw or not raw.strip():
        return "UNKNOWN"
    text = re.sub(r"\s+", " ", raw.strip().lower())
    if text in _STATUS_ALIASES:
        return _STATUS_ALIASES[text]
    key = re.sub(r"[^a-z]+", "_", text).strip("_").upper()
    if key in STATUSES:
        return key
    return None


def normalize_status(raw: str | None) -> str:
    """Map a recruitment status to the ClinicalTrials.gov API v2 vocabulary.

    ICTRP's ``Not recruiting`` does not say whether a trial finished; it maps
    to ACTIVE_NOT_RECRUITING, the closest status that claims no outcome.
    EU-CTR's ``Authorised`` and ICTRP's ``Not Available`` state no
    recruitment status: UNKNOWN (the raw value stays in ``status_raw``).
    """
    if type(raw) is str:
        return _status_of(raw)
    return status_lookup(raw) or "UNKNOWN"


@functools.lru_cache(maxsize=4096)
def _status_of(raw: str) -> str:
    # a few dozen spellings in any registry: each is read once
    return status_lookup(raw) or "UNKNOWN"


_MONTHS = {
    m.lower(): i
    for i, m in enumerate(
        [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
        start=1,
    )
}
_MONTHS.update({k[:3]: v for k, v in list(_MONTHS.items())})
_MONTHS["sept"] = 9


class DateError(ValueError):
    """A date string that names an impossible or unreadable date."""


def parse_date(raw: str | date | datetime | None) -> PartialDate | None:
    """Parse a registry date into a date plus its precision.

    Accepts ``2020-06-17``, ``2020-06``, ``June 2020``, ``June 17, 2020``,
    ``17 February 2020``, ``20200217``, ``17/02/2020`` (ICTRP's day-first
    form), ``2020`` and Excel ``datetime`` values. Empty → None. A string that
    looks like a date but is impossible (``2020-02-30``) raises DateError.
    """
    if type(raw) is str:
        return _date_of(raw)
    return _parse_date(raw)


@functools.lru_cache(maxsize=16384)
def _date_of(raw: str) -> PartialDate | None:
    # registry dates repeat (some thousands of distinct days cover most studies)
    if raw.isascii() and raw[:4].isdigit():
        # API v2's own forms, 2020-06-17 and 2020-06: what _parse_date_text's
        # first and fourth patterns read, without the regexes
        n = len(raw)
        if n == 10 and raw[4] == raw[7] == "-" and raw[5:7].isdigit() and raw[8:].isdigit():
            try:
                return PartialDate(date(int(raw[:4]), int(raw[5:7]), int(raw[8:])), "day")
            except ValueError as exc:
                raise DateError(f"impossible date {raw!r}: {exc}") from None
        if n == 7 and raw[4] == "-" and raw[5:].isdigit():
            try:
                return PartialDate(date(int(raw[:4]), int(raw[5:]), 1), "month")
            except ValueError as exc:
                raise DateError(f"impossible date {raw!r}: {exc}") from None
    return _parse_date(raw)


def _parse_date(raw: str | date | datetime | None) -> PartialDate | None:
    if raw is None:
        return None
    if isinstance(raw, datetime):
        return PartialDate(raw.date(), "day")
    if isinstance(raw, date):
        return PartialDate(raw, "day")
    text = re.sub(r"\s+", " ", str(raw).strip()).rstrip(".")
    if not text or text.lower() in {"n/a", "na", "none", "unknown", "not specified", "-"}:
        return None
    try:
        return _parse_date_text(text)
    except ValueError as exc:
        if isinstance(exc, DateError):
            raise
        raise DateError(f"impossible date {text!r}: {exc}") from None


def _parse_date_text(text: str) -> PartialDate | None:
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ][\d:.]+Z?)?", text)
    if m:
        return PartialDate(date(int(m[1]), int(m[2]), int(m[3])), "day")
    m = re.fullmatch(r"(\d{4})/(\d{1,2})/(\d{1,2})", text)
    if m:
        return PartialDate(date(int(m[1]), int(m[2]), int(m[3])), "day")
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text)
    if m:
        return PartialDate(date(int(m[1]), int(m[2]), int(m[3])), "day")
    m = re.fullmatch(r"(\d{4})-(\d{1,2})", text)
    if m:
        return PartialDate(date(int(m[1]), int(m[2]), 1), "month")
    m = re.fullmatch(r"(\d{4})", text)
    if m:
        return PartialDate(date(int(m[1]), 1, 1), "year")
    m = re.fullmatch(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})(?: [\d:]+(?: [AP]M)?)?", text)
    if m:
        a, b = int(m[1]), int(m[2])
        # ICTRP writes day-first (31/03/2020); its export stamps are US month-first
        # with a time (3/18/2020 6:53:35 PM). A first part over 12 settles it.
        if " " in text and a <= 12:
            return PartialDate(date(int(m[3]), a, b), "day")
        return PartialDate(date(int(m[3]), b, a), "day")
    m = re.fullmatch(r"([A-Za-z]+)\.? (\d{1,2}),? (\d{4})", text)
    if m and m[1].lower() in _MONTHS:
        return PartialDate(date(int(m[3]), _MONTHS[m[1].lower()], int(m[2])), "day")
    m = re.fullmatch(r"(\d{1,2}) ([A-Za-z]+)\.?,? (\d{4})", text)
    if m and m[2].lower() in _MONTHS:
        return PartialDate(date(int(m[3]), _MONTHS[m[2].lower()], int(m[1])), "day")
    m = re.fullmatch(r"([A-Za-z]+)\.?,? (\d{4})", text)
    if m and m[1].lower() in _MONTHS:
        return PartialDate(date(int(m[2]), _MONTHS[m[1].lower()], 1), "month")
    raise DateError(f"unrecognised date {text!r}")


def parse_date_lenient(raw: str | date | datetime | None) -> PartialDate | None:
    """Like :func:`parse_date` but returns None for unreadable text."""
    try:
        return parse_date(raw)
    except DateError:
        return None


def normalize_enrollment(
    raw: str | int | float | None, kind: str | None = None
) -> Enrollment | None:
    """Integer enrollment, the raw text, and ACTUAL/ESTIMATED/UNKNOWN.

    ICTRP's per-group sizes (``control group:15;experimental group:15;``) are
    summed; a plain number is taken as is; text without numbers gives None
    as the count but keeps the raw text.
    """
    if raw is None:
        return None
    if isinstance(raw, float):
        raw = int(raw) if raw == raw else None  # NaN → None
        if raw is None:
            return None
    k = (kind or "UNKNOWN").strip().upper()
    k = {"ANTICIPATED": "ESTIMATED", "ESTIMATE": "ESTIMATED"}.get(k, k)
    if k not in {"ACTUAL", "ESTIMATED"}:
        k = "UNKNOWN"
    if isinstance(raw, int):
        return Enrollment(raw, k, str(raw))
    text = str(raw).strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.0+)?", text):
        return Enrollment(int(float(text)), k, text)
    parts = [p for p in re.split(r"[;；]", text) if p.strip()]
    total = 0
    found = False
    for part in parts:
        nums = re.findall(
            r"(?<![\d.])(\d+)(?![\d.])", part.split(":", 1)[-1] if ":" in part else part
        )
        if nums:
            total += int(nums[0])
            found = True
    return Enrollment(total if found else None, k, text)


def fold(text: str) -> str:
    """A matching key: accents dropped, case folded, punctuation as spaces,
    ``&`` as ``and``, one space between words, a leading ``the`` dropped."""
    if text.isascii():
        plain = text.lower()
    else:
        decomposed = unicodedata.normalize("NFKD", text)
        plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    plain = re.sub(r"[^\w]+", " ", plain.replace("&", " and ")).strip()
    return plain[4:] if plain.startswith("the ") else plain


@dataclass(frozen=True)
class _PlaceTables:
    version: str
    by_key: dict[str, Place]
    by_code: dict[str, Place]


def _vocabulary_error(file: str, message: str) -> Exception:

    return TaxonomyError(
        f"celltrials/data/{file}: {message}", hint=f"Fix {file}; it is validated when loaded."
    )


@functools.cache
def _place_tables() -> _PlaceTables:
    return load_place_tables(
        resources.files("celltrials.data").joinpath("countries.yaml").read_text("utf-8")
    )


def load_place_tables(text: str) -> _PlaceTables:
    """Validate countries.yaml (given as text) and build the lookup tables."""

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _vocabulary_error("countries.yaml", f"not valid YAML ({exc})") from None
    if (
        not isinstance(data, dict)
        or set(data) - {"version", "names", "aliases", "extra", "regions"}
        or "version" not in data
    ):
        raise _vocabulary_error(
            "countries.yaml", "top-level keys must be version, names, aliases, extra, regions"
        )
    for key in ("names", "aliases", "extra", "regions"):
        if not isinstance(data.get(key) or {}, dict):
            raise _vocabulary_error("countries.yaml", f"{key} must be a mapping")
    names: dict[str, str] = data.get("names") or {}
    by_code: dict[str, Place] = {}
    by_key: dict[str, Place] = {}
    for c in pycountry.countries:
        display = names.get(c.alpha_2) or getattr(c, "common_name", None) or c.name
        place = Place("country", display, c.alpha_2, c.alpha_3)
        by_code[c.alpha_2] = place
        for attr in ("name", "official_name", "common_name"):
            value = getattr(c, attr, None)
            if value:
                by_key.setdefault(fold(value), place)
    for code, extra in (data.get("extra") or {}).items():
        if (
            not isinstance(extra, dict)
            or set(extra) - {"name", "alpha_3", "aliases"}
            or "name" not in extra
        ):
            raise _vocabulary_error("countries.yaml", f"extra.{code}: needs name, alpha_3, aliases")
        place = Place("country", extra["name"], code, extra.get("alpha_3"))
        by_code[code] = place
        for alias in [extra["name"], *(extra.get("aliases") or [])]:
            by_key[fold(str(alias))] = place
    for code in names:
        if code not in by_code:
            raise _vocabulary_error(
                "countries.yaml", f"names: {code!r} is not an ISO 3166-1 alpha-2 code"
            )
    for code, aliases in (data.get("aliases") or {}).items():
        if code not in by_code:
            raise _vocabulary_error(
                "countries.yaml", f"aliases: {code!r} is not an ISO 3166-1 alpha-2 code"
            )
        for alias in aliases or []:
            by_key[fold(str(alias))] = by_code[code]
    for region, aliases in (data.get("regions") or {}).items():
        place = Place("region", str(region))
        for alias in [region, *(aliases or [])]:
            key = fold(str(alias))
            if key in by_key and by_key[key].kind == "country":
                raise _vocabulary_error(
                    "countries.yaml", f"region alias {alias!r} is also a country"
                )
            by_key[key] = place
    return _PlaceTables(str(data["version"]), by_key, by_code)


def countries_version() -> str:
    return _place_tables().version


def _lookup_place(text: str) -> Place | None:
    tables = _place_tables()
    place = tables.by_key.get(fold(text))
    if place is None and re.fullmatch(r"[A-Z]{2}", text.strip()):
        place = tables.by_code.get(text.strip())  # an ISO alpha-2 code as such
    return place


@functools.lru_cache(maxsize=8192)
def resolve_places(raw: str) -> tuple[Place, ...] | None:
    """The countries and regions one country-field value names.

    ``Korea, Republic of`` → South Korea (KR/KOR); ``Japan,North
    America,Europe`` (JPRN's checklist) → Japan plus the regions North
    America and Europe. ``()`` for empty text; None when some part names
    neither a country nor a region (``celltrials check`` lists it).
    """
    text = re.sub(r"\s+", " ", raw.strip().strip(".;,")).strip()
    if not text:
        return ()
    place = _lookup_place(text)
    if place is not None:
        return (place,)
    if "," in text:
        parts = [_lookup_place(p) for p in text.split(",") if p.strip()]
        if parts and all(parts):
            return tuple(dict.fromkeys(p for p in parts if p))
    return None


def normalize_country(raw: str) -> str | None:
    """One canonical country name (``Korea, Republic of`` → ``South Korea``);
    None for empty, placeholder (``??``) or region values; unrecognised
    text is kept as given (title-cased if all lower case)."""
    places = resolve_places(raw)
    if places is None:
        text = re.sub(r"\s+", " ", raw.strip().strip(".;,")).strip()
        if not re.search(r"[A-Za-z]", text):
            return None
        return text[0].upper() + text[1:] if text.islower() else text
    countries = [p.name for p in places if p.kind == "country"]
    return countries[0] if countries else None


def is_known_country(text: str) -> bool:
    """Whether ``text`` names a country (ISO 3166 or a listed spelling)."""
    place = _lookup_place(text)
    return place is not None and place.kind == "country"


def country_from_location(location: str) -> str:
    """The country part of a classic-CSV location ("Facility, City, Country").

    Country names with a comma ("Korea, Republic of", "Iran, Islamic Republic
    of") take the last two parts.
    """
    parts = [p.strip() for p in location.split(",")]
    if len(parts) >= 2 and is_known_country(f"{parts[-2]}, {parts[-1]}"):
        return f"{parts[-2]}, {parts[-1]}"
    return parts[-1]


def normalize_countries(values: list[str]) -> list[str]:
    """Canonical, de-duplicated, order-preserving country list (regions and
    placeholders left out; lists in one value split)."""
    out: list[str] = []
    for value in dict.fromkeys(
        values
    ):  # a study lists one country per site: resolve each spelling once
        places = resolve_places(value)
        names = (
            [p.name for p in places if p.kind == "country"]
            if places is not None
            else [normalize_country(value)]
        )
        for c in names:
            if c and c not in out:
                out.append(c)
    return out


def normalize_regions(values: list[str]) -> list[str]:
    """The regions (Asia, Europe, …) named in country-field values, de-duplicated."""
    out: list[str] = []
    for value in values:
        for p in resolve_places(value) or ():
            if p.kind == "region" and p.name not in out:
                out.append(p.name)
    return out


# ------------------------------------------------------------------ study type
STUDY_TYPES = ("interventional", "observational", "expanded_access", "other", "unknown")


def _study_key(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("_", " ").strip().casefold())


@functools.cache
def _study_type_table() -> tuple[str, dict[str, str]]:
    return load_study_types(
        resources.files("celltrials.data").joinpath("study_types.yaml").read_text("utf-8")
    )


def load_study_types(text: str) -> tuple[str, dict[str, str]]:
    """Validate study_types.yaml (given as text): (version, spelling key → study type)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _vocabulary_error("study_types.yaml", f"not valid YAML ({exc})") from None
    if not isinstance(data, dict) or set(data) != {"version", "study_types"}:
        raise _vocabulary_error(
            "study_types.yaml", "top-level keys must be version and study_types"
        )
    table: dict[str, str] = {}
    if not isinstance(data["study_types"], dict):
        raise _vocabulary_error(
            "study_types.yaml", "study_types must map each study type to a list of spellings"
        )
    for canonical, spellings in data["study_types"].items():
        if not isinstance(spellings, list | type(None)):
            raise _vocabulary_error("study_types.yaml", f"{canonical}: spellings must be a list")
        if canonical not in STUDY_TYPES:
            raise _vocabulary_error(
                "study_types.yaml", f"{canonical!r} is not one of {', '.join(STUDY_TYPES)}"
            )
        for spelling in [canonical, *(spellings or [])]:
            key = _study_key(str(spelling))
            if table.get(key, canonical) != canonical:
                raise _vocabulary_error(
                    "study_types.yaml", f"{spelling!r} is listed under {table[key]} and {canonical}"
                )
            table[key] = canonical
    return str(data["version"]), table


def study_type_lookup(raw: str | None) -> str | None:
    """The study type a spelling maps to (``unknown`` for empty text); None
    when it is not in ``data/study_types.yaml``."""
    if raw is None or not raw.strip():
        return "unknown"
    key = _study_key(raw)
    table = _study_type_table()[1]
    if key in table:
        return table[key]
    # the classic CSV appends the design: "Interventional: Allocation: Randomized"
    head = key.split(":", 1)[0].strip()
    return table.get(head) if head != key else None


def normalize_study_type(raw: str | None) -> str:
    """``interventional`` · ``observational`` · ``expanded_access`` · ``other``
    · ``unknown`` (not stated or not recognised)."""
    if type(raw) is str:
        return _study_type_of(raw)
    return study_type_lookup(raw) or "unknown"


@functools.lru_cache(maxsize=4096)
def _study_type_of(raw: str) -> str:
    return study_type_lookup(raw) or "unknown"


# ----------------------------------------------------------------- text repair
_XL_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_BR = re.compile(r"<\s*br\s*/?\s*>", re.I)
_ENTITY = re.compile(r"&(?:#\d{1,6}|#[xX][0-9A-Fa-f]{1,5}|amp|lt|gt|quot|apos|nbsp);")
#: UTF-8 two-byte sequences read as Mac Roman: the lead byte shows as one of
#: these (C2 ¬, C3 √, C4 ƒ, C5 ≈, CE Œ, CF œ), the next as any non-ASCII char
_MAC_ROMAN = re.compile("[¬√ƒ≈Œœ][\u0080-\uffff]")
_ANY_SPACE = re.compile(r"\s+")
#: mis-decoded UTF-8 always shows characters from these blocks (Latin-1,
#: Latin Extended, punctuation, math symbols); text without them needs no ftfy
_MOJIBAKE_CHARS = re.compile("[\u0080-\u024f\u2000-\u22ff]")


def _ftfy_fast_path_ok() -> bool:
    """Whether :data:`_MAYBE_MOJIBAKE` was derived from the installed ftfy's
    heuristic (its ``BADNESS_RE``): otherwise ftfy is always asked."""
    digest = hashlib.sha256(BADNESS_RE.pattern.encode("utf-8")).hexdigest()
    return ftfy.__version__.startswith("6.") and digest == _BADNESS_SHA256


_BADNESS_SHA256 = "9dcc0f2ac90d9ae3c85eb7b9b2c0b8a8e8126153847c2b30c91a0bb263f3b8c4"
#: a necessary condition for ftfy (as configured by :func:`_ftfy_config`) or
#: the Mac Roman round trip to change a text: a C1 control, a surrogate, one
#: of ``Ã Â Œ œ``, or two non-ASCII characters in a row. Every alternative of
#: ftfy 6's mojibake heuristic (``ftfy.badness.BADNESS_RE``) needs one of
#: these, ftfy's other enabled fixers act only on C1 controls and surrogates,
#: and :data:`_MAC_ROMAN` is two non-ASCII characters. Text without any of
#: them (``≥ 18 years``, ``Sjögren``, ``Müller–Lyer``) skips ftfy: the same
#: result, ~15x cheaper (tests/test_text_fast_paths.py checks both paths agree).
_MAYBE_MOJIBAKE = re.compile("[\x80-\x9f\ud800-\udfff\u00c2\u00c3\u0152\u0153]|[^\x00-\x7f]{2}")
_SKIP_FTFY = _ftfy_fast_path_ok()


def _mojibake_free(text: str) -> bool:
    """True when ftfy and the Mac Roman round trip cannot change ``text``
    (a cheap check; False means "ask them")."""
    return (
        text.isascii()
        or not _MOJIBAKE_CHARS.search(text)
        or (_SKIP_FTFY and not _MAYBE_MOJIBAKE.search(text))
    )


@functools.cache
def _ftfy_config() -> Any:

    # only undo mis-decoding; leave quotes, widths, ligatures and line breaks alone
    return ftfy.TextFixerConfig(
        unescape_html=False,
        remove_terminal_escapes=False,
        fix_latin_ligatures=False,
        fix_character_width=False,
        uncurl_quotes=False,
        fix_line_breaks=False,
        remove_control_chars=False,
        normalization=None,
        explain=False,
    )


def _mac_roman_pair(m: re.Match[str]) -> str:
    try:
        fixed = m.group().encode("mac_roman").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return m.group()
    return fixed if len(fixed) == 1 else m.group()


def repair_text(text: str, *, single_line: bool = True) -> tuple[str, tuple[str, ...]]:
    """Undo export damage: Excel's ``_x000D_`` escapes, HTML ``<br>`` and
    entities, mojibake (``ftfy``, then a Mac Roman round trip for what it
    leaves: ``H√¥pitaux`` → ``Hôpitaux``). Returns the text and the kinds of
    repair made (``excel_escape``, ``html``, ``mojibake``); whitespace is
    collapsed (to one line when ``single_line``)."""
    kinds: list[str] = []
    out = text
    if "_x" not in out and "<" not in out and "&" not in out and _mojibake_free(out):
        return text, ()
    if "_x" in out and _XL_ESCAPE.search(out):
        out = _XL_ESCAPE.sub(lambda m: chr(int(m[1], 16)), out)
        kinds.append("excel_escape")
    if "<" in out or "&" in out:
        fixed = _BR.sub("\n", out)
        fixed = _ENTITY.sub(lambda m: html.unescape(m.group()), fixed)
        if fixed != out:
            out = fixed
            kinds.append("html")
    if not _mojibake_free(out):
        fixed = ftfy.fix_text(out, _ftfy_config())
        fixed = _MAC_ROMAN.sub(_mac_roman_pair, fixed)
        if fixed != out:
            out = fixed
            kinds.append("mojibake")
    if not kinds:
        return text, ()
    if single_line:
        out = _ANY_SPACE.sub(" ", out).strip()
    else:
        out = "\n".join(clean_text(line) for line in out.strip().splitlines()).strip()
    return out, tuple(kinds)


def sponsor_key(name: str) -> str:
    """The grouping key of a sponsor name: accents, case, punctuation and
    spacing do not count (``Assistance Publique - Hôpitaux de Paris`` and
    ``Assistance Publique Hopitaux De Paris`` are one sponsor)."""
    return _sponsor_key(name) if type(name) is str else fold(name)


@functools.lru_cache(maxsize=16384)
def _sponsor_key(name: str) -> str:
    # the same sponsors recur across a registry (a few per thousand studies are new)
    return fold(name)


def normalize_sponsor_class(raw: str | None, name: str = "") -> str:
    """``industry`` · ``academic_other`` · ``government`` · ``unknown``.

    API v2 classes (INDUSTRY, NIH, FED, OTHER_GOV, OTHER, NETWORK, INDIV) and
    classic-CSV ``Funded Bys`` (Industry, NIH, U.S. Fed, Other) map directly;
    ICTRP gives only a sponsor name, so the name decides (company suffixes
    → industry, ministries/agencies → government, else academic_other).
    """
    text = (raw or "").strip().upper().replace(".", "").replace(" ", "_")
    if text in {"INDUSTRY"}:
        return "industry"
    if text in {"NIH", "FED", "US_FED", "OTHER_GOV", "GOVERNMENT"}:
        return "government"
    if text in {"OTHER", "NETWORK", "INDIV", "UNIVERSITY", "HOSPITAL"}:
        return "academic_other"
    if name:
        n = name.lower()
        if re.search(
            r"\b(inc|ltd|llc|gmbh|co\.?,? ?ltd|corp|corporation|s\.?a\.?|ag|plc|pharma\w*|biotech\w*|therapeutics|biosciences|biologics|limited|company|bio)\b",
            n,
        ):
            return "industry"
        if re.search(
            r"\b(ministry|national institutes? of health|department of health|government|agency|council)\b",
            n,
        ):
            return "government"
        return "academic_other"
    return "unknown"


_PADDING = re.compile(r"[ \t\r\f\v]{2,}|[\t\r\f\v]")


def clean_text(value: object) -> str:
    """Trim and collapse the runs of padding whitespace registries ship."""
    if type(value) is not str:
        if value is None:
            return ""
        value = value if isinstance(value, str) else str(value)
    text = value.strip()
    # the same verdict as _PADDING.search (a run of padding has two spaces or
    # one of the other padding characters), from C substring scans: ~5x faster
    # (and "" has none)
    if "  " in text or "\t" in text or "\r" in text or "\f" in text or "\v" in text:
        return _PADDING.sub(" ", text)
    return text


# ------------------------------------------------------------ whole records
def _resolve_pairs(value: str) -> tuple[tuple[str, Place], ...]:
    """``(value, place)`` for each place a country-field value names; one
    ``unmapped`` place (kept as given, name "" for placeholders such as
    ``??``) when it names none, for `celltrials check`."""
    resolved = resolve_places(value)
    if resolved is None:
        return ((value, Place("unmapped", normalize_country(value) or "")),)
    return tuple((value, p) for p in resolved)


_place_pairs = functools.lru_cache(maxsize=8192)(_resolve_pairs)

#: single-line text fields repaired on every record
_LINE_FIELDS = ("title", "official_title", "acronym")


def finish_record(rec: ParsedRecord) -> ParsedRecord:
    """Complete a parsed record's normalisation in place (idempotent).

    Repairs export damage in titles, acronym, sponsor names, conditions,
    intervention and arm texts (each repair logged in ``rec.repairs`` with
    the raw value); sets ``study_type`` from ``study_type_raw``; resolves
    ``countries_raw`` into ISO countries and regions (``rec.places``); gives
    each sponsor its raw name and grouping key.
    """
    if rec.finished:
        return rec
    repairs: list[TextRepair] = []

    def fix(field: str, value: str, *, single_line: bool = True) -> str:
        if not value or (
            # what repair_text leaves alone without a look (most registry text)
            value.isascii() and "_x" not in value and "<" not in value and "&" not in value
        ):
            return value
        fixed, kinds = repair_text(value, single_line=single_line)
        if kinds:
            repairs.append(TextRepair(field, value, fixed, kinds))
            return fixed
        return value

    for name in _LINE_FIELDS:
        setattr(rec, name, fix(name, getattr(rec, name)))
    rec.conditions = [c for c in (fix("condition", c) for c in rec.conditions) if c]
    for x in rec.interventions:
        x.name = fix("intervention_name", x.name)
        x.description = fix("intervention_description", x.description, single_line=False)
        x.other_names = [fix("intervention_other_name", n) for n in x.other_names]
    for a in rec.arms:
        a.label = fix("arm_label", a.label)
        a.description = fix("arm_description", a.description, single_line=False)
    for s in rec.sponsors:
        s.name_raw = s.name_raw or s.name
        s.name = fix("sponsor", s.name)
        s.key = sponsor_key(s.name)

    if not rec.study_type_raw and rec.study_type not in STUDY_TYPES:
        rec.study_type_raw = rec.study_type
    rec.study_type = normalize_study_type(rec.study_type_raw)

    raw_places = rec.countries_raw or rec.countries
    rec.countries_raw = list(raw_places)
    places: list[tuple[str, Place]] = []
    countries: dict[str, None] = {}
    regions: dict[str, None] = {}
    done: set[str] = set()
    for value in raw_places:  # a study names one country per site: few distinct values
        pairs = _place_pairs(value) if type(value) is str else _resolve_pairs(value)
        places += pairs
        if value in done:
            continue  # its names are in already (first occurrences keep their order)
        done.add(value)
        for _, p in pairs:
            if p.kind == "region":
                regions[p.name] = None
            elif p.name:
                countries[p.name] = None
    rec.places = places
    rec.countries = list(countries)
    rec.regions = list(regions)
    rec.repairs = repairs
    rec.finished = True
    return rec
