"""The normalised record every parser produces and the store keeps.

A *record* is one registry's description of a trial as it arrived in one
file or API page; a *trial* is one real-world study after merging the
records that share a registry id (see :mod:`celltrials.dedup`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

#: the channel a record came through; ids from one channel version each other
CHANNEL_CTGOV = "ctgov"
CHANNEL_ICTRP = "ictrp"


@dataclass(frozen=True, slots=True)
class PartialDate:
    """A registry date with the precision it was given in."""

    value: date
    precision: str  # "day" | "month" | "year"

    def isoformat(self) -> str:
        if self.precision == "year":
            return f"{self.value.year:04d}"
        if self.precision == "month":
            return f"{self.value.year:04d}-{self.value.month:02d}"
        return self.value.isoformat()


@dataclass(frozen=True, slots=True)
class Enrollment:
    count: int | None
    kind: str  # "ACTUAL" | "ESTIMATED" | "UNKNOWN"
    raw: str


@dataclass(slots=True)
class Intervention:
    type: str = ""
    name: str = ""
    description: str = ""
    other_names: list[str] = field(default_factory=list)
    arm_labels: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Arm:
    label: str = ""
    type: str = ""  # EXPERIMENTAL, ACTIVE_COMPARATOR, PLACEBO_COMPARATOR, ...
    description: str = ""
    intervention_names: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Sponsor:
    name: str
    role: str  # "lead" | "collaborator"
    sponsor_class: str  # "industry" | "academic_other" | "government" | "unknown"
    #: the name as the registry wrote it (before text repair)
    name_raw: str = ""
    #: grouping key: case, accents, punctuation and spacing folded
    key: str = ""


@dataclass(frozen=True, slots=True)
class Place:
    """A country (ISO 3166-1 codes) or a region named in a country field.

    ``kind`` is ``country``, ``region`` or ``unmapped`` (text that names
    neither; kept as given, codes None)."""

    kind: str
    name: str
    iso2: str | None = None
    iso3: str | None = None


@dataclass(frozen=True, slots=True)
class TextRepair:
    """One repaired text value: where, what it was, what it became, and why."""

    field: str  # title, official_title, acronym, sponsor, condition, intervention_name, ...
    raw: str
    repaired: str
    kinds: tuple[str, ...]  # excel_escape | html | mojibake


@dataclass(slots=True)
class Outcome:
    kind: str  # "primary" | "secondary" | "other"
    measure: str
    time_frame: str = ""
    description: str = ""


@dataclass(slots=True)
class RegistryId:
    """An id naming this trial. ``key`` is the canonical form used for merging
    (``NCT01234567``, ``EUDRACT:2020-001162-12``, ``ChiCTR2000029580``)."""

    key: str
    raw: str
    registry: str  # ctgov | euctr | chictr | isrctn | anzctr | ... | other
    is_primary: bool = False


@dataclass(slots=True)
class ParsedRecord:
    channel: str  # CHANNEL_CTGOV | CHANNEL_ICTRP
    source_format: (
        str  # ctgov_json | ctgov_csv_classic | ctgov_csv | ictrp_csv | ictrp_xml | ictrp_xlsx
    )
    record_id: str  # the id as the registry record states it (ICTRP TrialID, NCT id)
    registry: str  # registry that issued record_id
    raw: dict[str, Any]
    ids: list[RegistryId] = field(default_factory=list)
    title: str = ""
    official_title: str = ""
    acronym: str = ""
    brief_summary: str = ""
    detailed_description: str = ""
    keywords: list[str] = field(default_factory=list)
    status: str = "UNKNOWN"
    status_raw: str = ""
    why_stopped: str = ""
    phase: str = "UNKNOWN"
    phase_raw: str = ""
    #: interventional | observational | expanded_access | other | unknown
    study_type: str = ""
    study_type_raw: str = ""
    start_date: PartialDate | None = None
    completion_date: PartialDate | None = None
    registration_date: PartialDate | None = None
    last_update: PartialDate | None = None
    enrollment: Enrollment | None = None
    conditions: list[str] = field(default_factory=list)
    mesh_terms: list[str] = field(default_factory=list)
    mesh_ancestors: list[str] = field(default_factory=list)
    interventions: list[Intervention] = field(default_factory=list)
    arms: list[Arm] = field(default_factory=list)
    #: canonical country names (regions and placeholders left out)
    countries: list[str] = field(default_factory=list)
    #: the registry's country-field values as given (a value may list several)
    countries_raw: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    #: (raw value, place) for every country/region/unmapped value, in order
    places: list[tuple[str, Place]] = field(default_factory=list)
    sponsors: list[Sponsor] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    eligibility: str = ""
    has_results: bool = False
    url: str = ""
    #: 1-based position of the record in its file (row / array index)
    position: int = 0
    repairs: list[TextRepair] = field(default_factory=list)
    #: set by :func:`celltrials.normalize.finish_record`
    finished: bool = False
