"""Normalisers, table-driven with values that occur in the shared exports."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celltrials.normalize import (
    DateError,
    country_from_location,
    normalize_countries,
    normalize_country,
    normalize_enrollment,
    normalize_phase,
    normalize_sponsor_class,
    normalize_status,
    parse_date,
)

pytestmark = pytest.mark.unit

EUCTR_PHASE_III = (
    "Human pharmacology (Phase I): no\nTherapeutic exploratory (Phase II): no\n"
    "Therapeutic confirmatory - (Phase III): yes\nTherapeutic use (Phase IV): no\n"
)
EUCTR_PHASE_II_III = (
    "Human pharmacology (Phase I): no\nTherapeutic exploratory (Phase II): yes\n"
    "Therapeutic confirmatory - (Phase III): yes\nTherapeutic use (Phase IV): no\n"
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Phase 1|Phase 2", "PHASE1_PHASE2"),  # classic CSV
        ("Phase 2|Phase 3", "PHASE2_PHASE3"),
        ("Phase 2/Phase 3", "PHASE2_PHASE3"),  # ICTRP
        ("Phase 1/Phase 2", "PHASE1_PHASE2"),
        ("Early Phase 1", "EARLY_PHASE1"),
        ("0", "EARLY_PHASE1"),  # ChiCTR phase 0 = CT.gov's Early Phase 1
        ("4", "PHASE4"),  # ChiCTR
        ("Phase 4", "PHASE4"),
        ("N/A", "NOT_APPLICABLE"),
        ("Not Applicable", "NOT_APPLICABLE"),
        ("Retrospective study", "NOT_APPLICABLE"),
        ("PHASE1|PHASE2", "PHASE1_PHASE2"),  # current website CSV
        ("PHASE3", "PHASE3"),
        ("NA", "NOT_APPLICABLE"),
        (EUCTR_PHASE_III, "PHASE3"),
        (EUCTR_PHASE_II_III, "PHASE2_PHASE3"),
        ("Phase II", "PHASE2"),
        ("", "UNKNOWN"),
        (None, "UNKNOWN"),
        ("New Treatment Measure Clinical Study", "NOT_APPLICABLE"),  # ChiCTR non-drug category
    ],
)
def test_normalize_phase(raw: str | None, expected: str) -> None:
    assert normalize_phase(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Completed", "COMPLETED"),
        ("Unknown status", "UNKNOWN"),
        ("Active, not recruiting", "ACTIVE_NOT_RECRUITING"),
        ("Not yet recruiting", "NOT_YET_RECRUITING"),
        ("Enrolling by invitation", "ENROLLING_BY_INVITATION"),
        ("Withdrawn", "WITHDRAWN"),
        ("Terminated", "TERMINATED"),
        ("Recruiting", "RECRUITING"),
        ("Not Recruiting", "ACTIVE_NOT_RECRUITING"),  # ICTRP
        ("Not recruiting", "ACTIVE_NOT_RECRUITING"),
        ("Authorised", "UNKNOWN"),  # EU-CTR via ICTRP: authorised, recruitment not stated
        ("ACTIVE_NOT_RECRUITING", "ACTIVE_NOT_RECRUITING"),  # API v2
        ("", "UNKNOWN"),
    ],
)
def test_normalize_status(raw: str, expected: str) -> None:
    assert normalize_status(raw) == expected


@pytest.mark.parametrize(
    ("raw", "value", "precision"),
    [
        ("June 2020", date(2020, 6, 1), "month"),
        ("2020-06-17", date(2020, 6, 17), "day"),
        ("2020-06", date(2020, 6, 1), "month"),
        ("17 February 2020", date(2020, 2, 17), "day"),
        ("20200217", date(2020, 2, 17), "day"),
        ("August 24, 2021", date(2021, 8, 24), "day"),  # classic CSV First Posted
        ("31/03/2020", date(2020, 3, 31), "day"),  # ICTRP Date registration
        ("2020/02/01", date(2020, 2, 1), "day"),  # ICTRP JPRN enrolment date
        ("3/18/2020 6:53:35 PM", date(2020, 3, 18), "day"),  # ICTRP export stamp
        ("2020", date(2020, 1, 1), "year"),
    ],
)
def test_parse_date(raw: str, value: date, precision: str) -> None:
    parsed = parse_date(raw)
    assert parsed is not None
    assert (parsed.value, parsed.precision) == (value, precision)


@pytest.mark.parametrize("raw", ["", "  ", None, "N/A"])
def test_parse_date_empty(raw: str | None) -> None:
    assert parse_date(raw) is None


@pytest.mark.parametrize(
    "raw", ["2020-02-30", "31/02/2020", "February 30, 2020", "2020-13", "soon"]
)
def test_parse_date_impossible(raw: str) -> None:
    with pytest.raises(DateError):
        parse_date(raw)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)))
def test_parse_date_roundtrips_every_format(d: date) -> None:
    month = d.strftime("%B")
    for text in (
        d.isoformat(),
        d.strftime("%Y%m%d"),
        f"{d.day} {month} {d.year}",
        f"{month} {d.day}, {d.year}",
    ):
        parsed = parse_date(text)
        assert parsed is not None and parsed.value == d and parsed.precision == "day"


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        ("control group:15;experimental group:15;", 30),  # ICTRP / ChiCTR
        ("Case series:100;", 100),
        ("Experimental group:30;Control group:30;", 60),
        ("survival group:none;died:none;", None),
        ("500", 500),
        ("10", 10),
        (42, 42),
    ],
)
def test_normalize_enrollment(raw: str | int, count: int | None) -> None:
    e = normalize_enrollment(raw)
    assert e is not None
    assert e.count == count
    assert e.raw == str(raw)


def test_normalize_enrollment_kind() -> None:
    assert normalize_enrollment(120, "ESTIMATED").kind == "ESTIMATED"  # type: ignore[union-attr]
    assert normalize_enrollment(120, "ANTICIPATED").kind == "ESTIMATED"  # type: ignore[union-attr]
    assert normalize_enrollment(120, "ACTUAL").kind == "ACTUAL"  # type: ignore[union-attr]
    assert normalize_enrollment("") is None


@given(st.lists(st.integers(min_value=0, max_value=100000), min_size=1, max_size=6))
def test_enrollment_sums_groups(sizes: list[int]) -> None:
    text = "".join(f"group {i}:{n};" for i, n in enumerate(sizes))
    e = normalize_enrollment(text)
    assert e is not None and e.count == sum(sizes)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Korea, Republic of", "South Korea"),
        ("South Korea", "South Korea"),
        ("Korea, Republic Of", "South Korea"),
        ("Iran (Islamic Republic of)", "Iran"),
        ("Iran, Islamic Republic of", "Iran"),
        ("United States of America", "United States"),
        ("The Netherlands", "Netherlands"),
        ("Viet Nam", "Vietnam"),
        ("Russian Federation", "Russia"),
        ("Czech Republic", "Czechia"),
        ("Turkey (Türkiye)", "Turkey"),
        ("Taiwan, Province Of China", "Taiwan"),
        ("china", "China"),
        ("Chian", "China"),
        ("France", "France"),
        ("??", None),
        ("", None),
    ],
)
def test_normalize_country(raw: str, expected: str | None) -> None:
    assert normalize_country(raw) == expected


@pytest.mark.parametrize(
    ("location", "country"),
    [  # classic CSV "Locations" entries
        ("Uppsala University Hospital, Uppsala, Sweden", "Sweden"),
        ("Seoul National University Hospital, Seoul, Korea, Republic of", "Korea, Republic of"),
        ("Royan Institute, Tehran, Iran, Islamic Republic of", "Iran, Islamic Republic of"),
        (
            "Medical Surgical Associates Center, St. John's, Antigua and Barbuda",
            "Antigua and Barbuda",
        ),
        ("Sweden", "Sweden"),
    ],
)
def test_country_from_location(location: str, country: str) -> None:
    assert country_from_location(location) == country


def test_normalize_countries_dedups_keeping_order() -> None:
    assert normalize_countries(
        ["United States", "Canada", "United States", "Korea, Republic of", "South Korea"]
    ) == ["United States", "Canada", "South Korea"]


@pytest.mark.parametrize(
    ("raw", "name", "expected"),
    [
        ("INDUSTRY", "Mesoblast", "industry"),
        ("Industry", "", "industry"),  # classic CSV Funded Bys
        ("NIH", "National Cancer Institute (NCI)", "government"),
        ("U.S. Fed", "", "government"),
        ("FED", "", "government"),
        ("OTHER_GOV", "", "government"),
        ("OTHER", "Zhongnan Hospital", "academic_other"),
        ("NETWORK", "", "academic_other"),
        (None, "Hebei Senlang Biotechnology Inc., Ltd.", "industry"),  # ICTRP gives names only
        (None, "Zhongnan Hospital of Wuhan University", "academic_other"),
        (None, "Ministry of Health, Brazil", "government"),
        (None, "", "unknown"),
    ],
)
def test_normalize_sponsor_class(raw: str | None, name: str, expected: str) -> None:
    assert normalize_sponsor_class(raw, name) == expected
