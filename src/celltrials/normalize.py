"""Small pure functions that turn registry spellings into one vocabulary.

Each is table-tested with values that really occur in the shared exports.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime
from importlib import resources

import yaml

from celltrials.models import Enrollment, PartialDate

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


def normalize_phase(raw: str | None) -> str:
    """Map any registry phase spelling to the API v2 vocabulary (+ UNKNOWN).

    ``Phase 1|Phase 2`` and ``Phase 2/Phase 3`` are combined phases; ICTRP's
    ``0`` and ``N/A``-style values are NOT_APPLICABLE; EU-CTR's multi-line
    yes/no form keeps the phases marked ``yes``.
    """
    if raw is None:
        return "UNKNOWN"
    text = raw.strip().lower()
    if not text:
        return "UNKNOWN"
    # ClinicalTrials.gov's "Early Phase 1" was formerly "Phase 0"; ChiCTR writes "0"
    if "early phase 1" in text or "early_phase1" in text or text in {"0", "phase 0"}:
        return "EARLY_PHASE1"
    if "human pharmacology" in text or "therapeutic exploratory" in text:
        # EU-CTR: "Human pharmacology (Phase I): no\nTherapeutic exploratory (Phase II): yes ..."
        found = [
            _ROMAN[m.group(1)]
            for m in re.finditer(r"\(phase (i{1,3}|iv)\)\s*:\s*yes", text)
        ]
        return _combine_phases(sorted(set(found)))
    if text in {"n/a", "na", "not applicable", "not_applicable", "none", "retrospective study",
                "not specified", "other"}:
        return "NOT_APPLICABLE" if text != "not specified" else "UNKNOWN"
    nums = re.findall(r"(?:phase\s*|\b)(iv|iii|ii|i|[1-4])\b", text.replace("_", " "))
    digits = sorted({_ROMAN.get(n, n) for n in nums})
    if not digits:
        return "UNKNOWN"
    return _combine_phases(digits)


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
    "authorised": "NOT_YET_RECRUITING",
    "authorized": "NOT_YET_RECRUITING",
    "pending": "NOT_YET_RECRUITING",
    "unknown status": "UNKNOWN",
    "ongoing": "ACTIVE_NOT_RECRUITING",
    "prematurely ended": "TERMINATED",
    "stopped": "TERMINATED",
    "closed to recruitment": "ACTIVE_NOT_RECRUITING",
    "complete": "COMPLETED",
    "enrolling by invitation": "ENROLLING_BY_INVITATION",
}


def normalize_status(raw: str | None) -> str:
    """Map a recruitment status to the ClinicalTrials.gov API v2 vocabulary.

    ICTRP's ``Not recruiting`` does not say whether a trial finished; it maps
    to ACTIVE_NOT_RECRUITING, the closest status that claims no outcome.
    """
    if not raw:
        return "UNKNOWN"
    text = re.sub(r"\s+", " ", raw.strip().lower())
    if text in _STATUS_ALIASES:
        return _STATUS_ALIASES[text]
    key = re.sub(r"[^a-z]+", "_", text).strip("_").upper()
    if key in STATUSES:
        return key
    return "UNKNOWN"


_MONTHS = {m.lower(): i for i, m in enumerate(
    ["January", "February", "March", "April", "May", "June", "July", "August",
     "September", "October", "November", "December"], start=1)}
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


def normalize_enrollment(raw: str | int | float | None, kind: str | None = None) -> Enrollment | None:
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
        nums = re.findall(r"(?<![\d.])(\d+)(?![\d.])", part.split(":", 1)[-1] if ":" in part else part)
        if nums:
            total += int(nums[0])
            found = True
    return Enrollment(total if found else None, k, text)


@functools.cache
def _country_aliases() -> dict[str, str]:
    text = resources.files("celltrials.data").joinpath("countries.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    table: dict[str, str] = {}
    for canonical, aliases in data["countries"].items():
        table[canonical.lower()] = canonical
        for alias in aliases or []:
            table[str(alias).strip().lower()] = canonical
    return table


def normalize_country(raw: str) -> str | None:
    """One canonical country name (``Korea, Republic of`` → ``South Korea``);
    None for empty or placeholder values such as ``??``."""
    text = re.sub(r"\s+", " ", raw.strip().strip(".;,")).strip()
    if not text or not re.search(r"[A-Za-z]", text):
        return None
    canon = _country_aliases().get(text.lower())
    if canon:
        return canon
    return text[0].upper() + text[1:] if text.islower() else text


def is_known_country(text: str) -> bool:
    """Whether ``text`` is a canonical name or a listed spelling of one."""
    return text.strip().lower() in _country_aliases()


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
    """Canonical, de-duplicated, order-preserving country list."""
    out: list[str] = []
    for value in dict.fromkeys(values):  # a study lists one country per site: normalise each spelling once
        c = normalize_country(value)
        if c and c not in out:
            out.append(c)
    return out


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
        if re.search(r"\b(inc|ltd|llc|gmbh|co\.?,? ?ltd|corp|corporation|s\.?a\.?|ag|plc|pharma\w*|biotech\w*|therapeutics|biosciences|biologics|limited|company|bio)\b", n):
            return "industry"
        if re.search(r"\b(ministry|national institutes? of health|department of health|government|agency|council)\b", n):
            return "government"
        return "academic_other"
    return "unknown"


_PADDING = re.compile(r"[ \t\r\f\v]{2,}|[\t\r\f\v]")


def clean_text(value: object) -> str:
    """Trim and collapse the runs of padding whitespace registries ship."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    if not text:
        return ""
    return _PADDING.sub(" ", text) if _PADDING.search(text) else text
