"""Complete normalisation (issue 11): every raw value of every normalised
field in ../shared/data maps, or is a reviewed unmappable value; the raw
values quoted in the issue map as a reviewer expects.

The enumerating test reads the exports with its own readers (csv, json,
ElementTree, openpyxl), not with celltrials' parsers.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from xml.etree import ElementTree as ET

import pytest

from celltrials.models import ParsedRecord, Sponsor
from celltrials.normalize import (
    finish_record,
    normalize_countries,
    normalize_phase,
    normalize_regions,
    normalize_status,
    normalize_study_type,
    phase_lookup,
    repair_text,
    resolve_places,
    sponsor_key,
    status_lookup,
    study_type_lookup,
)
from celltrials.quality import reviewed_unmappable
from tests.conftest import DATA, ICTRP_CSV, ICTRP_XLSX, ICTRP_XML, ictrp_xlsx_rows

# ------------------------------------------------------- independent readers
Value = tuple[str, str, str]  # (field, raw value, file name)


def _ictrp_rows() -> Iterator[tuple[str, dict[str, object]]]:
    with ICTRP_CSV.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            yield ICTRP_CSV.name, {k.strip().lower().replace(" ", "_"): v for k, v in row.items()}
    for trial in ET.parse(ICTRP_XML).getroot().iter("Trial"):
        yield ICTRP_XML.name, {child.tag.strip().lower(): child.text or "" for child in trial}
    rows = ictrp_xlsx_rows(data_only=True)
    header = [str(h).strip().lower().replace(" ", "_") for h in rows[0]]
    for values in rows[1:]:
        yield ICTRP_XLSX.name, dict(zip(header, values, strict=False))


def _text(v: object) -> str:
    if isinstance(v, dt.datetime):
        return v.isoformat()  # how a cell Excel turned into a date reaches us
    return "" if v is None else str(v)


def raw_values() -> Iterator[Value]:
    for name, row in _ictrp_rows():
        yield "study_type", _text(row.get("study_type")), name
        yield "phase", _text(row.get("phase")), name
        yield "status", _text(row.get("recruitment_status")), name
        for part in _text(row.get("countries")).replace("\n", ";").split(";"):
            yield "country", part, name
    for path in sorted((DATA / "ctgov-classic-csv").glob("*.csv")):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                yield "study_type", row["Study Type"], path.name
                yield "phase", row["Phases"], path.name
                yield "status", row["Status"], path.name
                for loc in row["Locations"].split("|"):
                    parts = [p.strip() for p in loc.split(",")]
                    # "Facility, City, Korea, Republic of": the country may hold a comma
                    two = ", ".join(parts[-2:])
                    yield (
                        "country",
                        two if len(parts) > 1 and resolve_places(two) else parts[-1],
                        path.name,
                    )
    for path in sorted((DATA / "ctgov-v2-json").rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for study in doc if isinstance(doc, list) else [doc]:
            ps = study.get("protocolSection", {})
            yield "study_type", ps.get("designModule", {}).get("studyType", ""), path.name
            yield "phase", "|".join(ps.get("designModule", {}).get("phases", [])), path.name
            yield "status", ps.get("statusModule", {}).get("overallStatus", ""), path.name
            for loc in ps.get("contactsLocationsModule", {}).get("locations", []):
                yield "country", loc.get("country", ""), path.name


def _maps(field: str, raw: str) -> bool:
    if field == "study_type":
        return study_type_lookup(raw) is not None
    if field == "phase":
        return phase_lookup(raw) is not None
    if field == "status":
        return status_lookup(raw) is not None
    return resolve_places(raw) is not None


def test_every_raw_value_in_the_shared_exports_maps_or_is_reviewed() -> None:
    reviewed = reviewed_unmappable()
    seen: dict[tuple[str, str], str] = {}
    for field, raw, name in raw_values():
        if raw.strip():
            seen.setdefault((field, raw), name)
    by_field = {
        f: sum(1 for k in seen if k[0] == f) for f in ("study_type", "phase", "status", "country")
    }
    assert (
        by_field["study_type"] >= 30 and by_field["phase"] >= 60 and by_field["country"] >= 250
    ), by_field
    bad = sorted(
        (f, raw, name)
        for (f, raw), name in seen.items()
        if not _maps(f, raw) and (f, raw) not in reviewed
    )
    assert bad == [], f"{len(bad)} raw values map to nothing and are not reviewed: {bad[:20]}"
    # every reviewed entry names a value that really occurs and really does not map
    for (f, raw), reason in reviewed.items():
        assert (f, raw) in seen, f"reviewed value {f}={raw!r} does not occur in ../shared/data"
        assert not _maps(f, raw), f"reviewed value {f}={raw!r} maps after all"
        assert len(reason) > 10


# ------------------------------------------------------- values the issue quotes
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("INTERVENTIONAL", "interventional"),
        ("Interventional", "interventional"),
        ("Interventional study", "interventional"),
        ("interventional", "interventional"),
        ("Interventional clinical trial of medicinal product", "interventional"),
        ("Intervention", "interventional"),
        ("Observational [Patient Registry]", "observational"),
        ("OBSERVATIONAL", "observational"),
        ("Epidemilogical research", "observational"),
        ("PMS", "observational"),
        ("EXPANDED_ACCESS", "expanded_access"),
        ("Expanded Access:Individual Patients", "expanded_access"),  # classic CSV appends the kind
        ("Diagnostic test", "other"),
        ("Health services reaserch", "other"),
        ("Basic Science", "other"),
        ("", "unknown"),
        ("Unknown", "unknown"),
    ],
)
def test_study_type(raw: str, expected: str) -> None:
    assert normalize_study_type(raw) == expected
    assert study_type_lookup(raw) == expected


def test_unrecognised_study_type_is_reported_not_guessed() -> None:
    assert study_type_lookup("Quasi-experimental") is None
    assert normalize_study_type("Quasi-experimental") == "unknown"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2020-03-02T00:00:00", "PHASE2_PHASE3"),  # Excel's date for "2-3"
        ("2020-02-01T00:00:00", "PHASE1_PHASE2"),  # Excel's date for "1-2"
        ("2020-02-01", "PHASE1_PHASE2"),
        ("2-3", "PHASE2_PHASE3"),
        ("1-2", "PHASE1_PHASE2"),
        ("IIb", "PHASE2"),
        ("II-III", "PHASE2_PHASE3"),
        ("Phase-3", "PHASE3"),
        ("0 (exploratory trials)", "EARLY_PHASE1"),
        ("Post Marketing Surveillance", "PHASE4"),
        ("Diagnostic New Technique Clincal Study", "NOT_APPLICABLE"),
        ("Not selected", "UNKNOWN"),
        (
            "Human pharmacology (Phase I): yes\nTherapeutic exploratory (Phase II): yes\n"
            "Therapeutic confirmatory - (Phase III): no\nTherapeutic use (Phase IV): no\n",
            "PHASE1_PHASE2",
        ),
    ],
)
def test_phase(raw: str, expected: str) -> None:
    assert phase_lookup(raw) == expected
    assert normalize_phase(raw) == expected


@pytest.mark.parametrize(
    "raw", ["2020-03-01T00:00:00", "2020-02-02", "2020-12-25T00:00:00", "2020-03-02T10:30:00"]
)
def test_other_dates_in_the_phase_field_stay_unmapped(raw: str) -> None:
    assert phase_lookup(raw) is None and normalize_phase(raw) == "UNKNOWN"


def test_excel_dated_phases_are_the_ranges_the_csv_and_xml_exports_give() -> None:
    """The rule behind reading 2020-03-02 as 2-3, from the data: each trial
    whose CSV/XML phase is "1-2" or "2-3" has a date in the XLSX export, day
    = first phase, month = second."""
    ranges: dict[str, str] = {}
    with ICTRP_CSV.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["Phase"].strip() in {"1-2", "2-3"}:
                ranges[row["TrialID"].strip()] = row["Phase"].strip()
    for trial in ET.parse(ICTRP_XML).getroot().iter("Trial"):
        phase = (trial.findtext("Phase") or "").strip()
        if phase in {"1-2", "2-3"}:
            ranges[(trial.findtext("TrialID") or "").strip()] = phase
    dated: dict[str, dt.datetime] = {}
    rows = ictrp_xlsx_rows(data_only=True)
    header = list(rows[0])
    tid, ph = header.index("TrialID"), header.index("Phase")
    for values in rows[1:]:
        if isinstance(values[ph], dt.datetime):
            dated[str(values[tid]).strip()] = values[ph]
    both = sorted(set(ranges) & set(dated))
    assert len(both) >= 9
    for trial_id in both:
        first, second = ranges[trial_id].split("-")
        assert (dated[trial_id].day, dated[trial_id].month) == (int(first), int(second)), trial_id
        assert normalize_phase(dated[trial_id].isoformat()) == normalize_phase(ranges[trial_id])
    assert len(dated) == 68  # 20 × 2020-02-01 + 48 × 2020-03-02 in the XLSX, all read back
    assert all(
        phase_lookup(d.isoformat()) in {"PHASE1_PHASE2", "PHASE2_PHASE3"} for d in dated.values()
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Not Available", "UNKNOWN"),  # ICTRP: the register gave no status
        ("Authorised", "UNKNOWN"),  # EU-CTR: authorised, recruitment not stated
        ("Not Recruiting", "ACTIVE_NOT_RECRUITING"),
        ("Unknown status", "UNKNOWN"),
    ],
)
def test_status(raw: str, expected: str) -> None:
    assert status_lookup(raw) == expected
    assert normalize_status(raw) == expected


def test_unrecognised_status_is_reported() -> None:
    assert status_lookup("Closed follow-up") is None


@pytest.mark.parametrize(
    ("raw", "countries", "regions"),
    [
        ("ASIA", [], ["Asia"]),
        ("EUROPE", [], ["Europe"]),
        ("South America", [], ["South America"]),
        ("Japan,North America,Europe", ["Japan"], ["North America", "Europe"]),
        ("Japan,Asia(except Japan),Australia,Europe", ["Japan", "Australia"], ["Asia", "Europe"]),
        ("MALAYSIA", ["Malaysia"], []),
        ("Korea, North", ["North Korea"], []),
        ("Korea, South", ["South Korea"], []),
        ("Korea, Republic of", ["South Korea"], []),
        ("Iran (Islamic Republic of)", ["Iran"], []),
        ("Turkey (Türkiye)", ["Turkey"], []),
        ("Reunion", ["Réunion"], []),
        ("Congo, Democratic Republic", ["Democratic Republic of the Congo"], []),
        ("The Netherlands", ["Netherlands"], []),
        ("USA", ["United States"], []),
        ("Kosovo", ["Kosovo"], []),
    ],
)
def test_countries_and_regions(raw: str, countries: list[str], regions: list[str]) -> None:
    assert normalize_countries([raw]) == countries
    assert normalize_regions([raw]) == regions


@pytest.mark.parametrize(
    ("raw", "iso2", "iso3"),
    [
        ("MALAYSIA", "MY", "MYS"),
        ("Korea, North", "KP", "PRK"),
        ("Viet Nam", "VN", "VNM"),
        ("Czech Republic", "CZ", "CZE"),
        ("Wuhan", "CN", "CHN"),
        ("Kosovo", "XK", "XKX"),
    ],
)
def test_countries_carry_iso_codes(raw: str, iso2: str, iso3: str) -> None:
    places = resolve_places(raw)
    assert places is not None and len(places) == 1
    assert (places[0].kind, places[0].iso2, places[0].iso3) == ("country", iso2, iso3)


def test_unknown_place_is_none_and_kept_as_given_on_the_record() -> None:
    assert resolve_places("Atlantis") is None
    rec = finish_record(_record(countries_raw=["Atlantis", "France", "??", "EUROPE"]))
    assert rec.countries == ["Atlantis", "France"]
    assert rec.regions == ["Europe"]
    kinds = [(raw, p.kind, p.iso2) for raw, p in rec.places]
    assert kinds == [
        ("Atlantis", "unmapped", None),
        ("France", "country", "FR"),
        ("??", "unmapped", None),
        ("EUROPE", "region", None),
    ]


# ----------------------------------------------------------------- text repair
@pytest.mark.parametrize(
    ("raw", "fixed", "kinds"),
    [
        (
            "Assistance Publique - H√¥pitaux de Paris",
            "Assistance Publique - Hôpitaux de Paris",
            ("mojibake",),
        ),
        # as the WHO XLSX really has it: UTF-8 "ô" (C3 B4) read as Mac Roman "√¥" (U+221A U+00A5)
        (
            "Assistance Publique - H\u221a\u00a5pitaux de Paris",
            "Assistance Publique - Hôpitaux de Paris",
            ("mojibake",),
        ),
        (
            "Fondation M\u221a\u00a9diterran\u221a\u00a9e Infection",
            "Fondation Méditerranée Infection",
            ("mojibake",),
        ),
        ("Fondation M√©diterran√©e Infection", "Fondation Méditerranée Infection", ("mojibake",)),
        (
            "Universit√§t Leipzig",
            "Universität Leipzig",
            ("mojibake",),
        ),  # ftfy leaves this one; Mac Roman round trip
        ("hUC-MSC (1√ó10^6/kg)", "hUC-MSC (1×10^6/kg)", ("mojibake",)),
        (
            "AUSTRALIAN CARDIOVASCULAR COVID-19 REGISTRY (AUS-COVID) _x000D_\n",
            "AUSTRALIAN CARDIOVASCULAR COVID-19 REGISTRY (AUS-COVID)",
            ("excel_escape",),
        ),
        ("Efficacy study<br>of MSC", "Efficacy study of MSC", ("html",)),
        ("Tokyo Women&#39;s Medical University", "Tokyo Women's Medical University", ("html",)),
        ("Zhongnan Hospital of Wuhan University", "Zhongnan Hospital of Wuhan University", ()),
        (
            "Hôpital Européen Georges-Pompidou",
            "Hôpital Européen Georges-Pompidou",
            (),
        ),  # correct text untouched
        ("人脐带间充质干细胞治疗", "人脐带间充质干细胞治疗", ()),
        ("“Quoted” – dash", "“Quoted” – dash", ()),
    ],
)
def test_repair_text(raw: str, fixed: str, kinds: tuple[str, ...]) -> None:
    assert repair_text(raw) == (fixed, kinds)


def test_multiline_repair_keeps_lines() -> None:
    text, kinds = repair_text(
        "Group A:_x000D_<br>MSC 1√ó10^6/kg<br>Group B: saline", single_line=False
    )
    assert text == "Group A:\nMSC 1×10^6/kg\nGroup B: saline"
    assert kinds == ("excel_escape", "html", "mojibake")


def test_sponsor_spellings_group_under_one_key() -> None:
    spellings = [
        "Assistance Publique - H√¥pitaux de Paris",
        "Assistance Publique - Hôpitaux de Paris",
        "ASSISTANCE PUBLIQUE - HÔPITAUX DE PARIS",
        "Assistance Publique Hopitaux De Paris",
        " Assistance  Publique - Hôpitaux de Paris. ",
    ]
    recs = [
        finish_record(_record(sponsors=[Sponsor(s, "lead", "academic_other")])) for s in spellings
    ]
    assert {r.sponsors[0].key for r in recs} == {
        sponsor_key("Assistance Publique - Hôpitaux de Paris")
    }
    assert recs[0].sponsors[0].name == "Assistance Publique - Hôpitaux de Paris"
    assert recs[0].sponsors[0].name_raw == spellings[0]
    assert [(r.field, r.kinds) for r in recs[0].repairs] == [("sponsor", ("mojibake",))]
    assert sponsor_key("Mesoblast, Inc.") != sponsor_key("Mesoblast International Sàrl")


def test_finish_record_is_idempotent() -> None:
    rec = _record(
        title="A _x000D_ title", study_type_raw="Interventional study", countries_raw=["MALAYSIA"]
    )
    finish_record(rec)
    finish_record(rec)
    assert rec.title == "A title" and len(rec.repairs) == 1
    assert rec.study_type == "interventional" and rec.study_type_raw == "Interventional study"
    assert rec.countries == ["Malaysia"] and rec.countries_raw == ["MALAYSIA"]


def _record(**fields: object) -> ParsedRecord:
    return ParsedRecord(
        channel="ictrp",
        source_format="ictrp_csv",
        record_id="X1",
        registry="other",
        raw={},
        **fields,
    )  # type: ignore[arg-type]


# ------------------------------------------------ vocabulary files are validated
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('version: "1"\nnames: {ZZ: Nowhere}\n', "'ZZ' is not an ISO 3166-1 alpha-2 code"),
        ('version: "1"\naliases: {QQ: [Somewhere]}\n', "'QQ' is not an ISO 3166-1 alpha-2 code"),
        ('version: "1"\nregions: {Asia: [China]}\n', "region alias 'China' is also a country"),
        ('version: "1"\ncountry: {}\n', "top-level keys"),
        ("names: {}\n", "top-level keys"),
        ('version: "1"\nnames: [a, b]\n', "names must be a mapping"),
        ('version: "1"\nnames: {a: [\n', "not valid YAML"),
    ],
)
def test_countries_yaml_is_validated(text: str, message: str) -> None:
    from celltrials.errors import TaxonomyError
    from celltrials.normalize import load_place_tables

    with pytest.raises(TaxonomyError, match=r"countries\.yaml") as info:
        load_place_tables(text)
    assert message in str(info.value) and info.value.hint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'version: "1"\nstudy_types: {quasi_experimental: [Quasi]}\n',
            "'quasi_experimental' is not one of",
        ),
        (
            'version: "1"\nstudy_types: {interventional: [Cohort], observational: [cohort]}\n',
            "'cohort' is listed under interventional and observational",
        ),
        ('version: "1"\nstudy_types: {interventional: Cohort}\n', "spellings must be a list"),
        ("study_types: {}\n", "top-level keys"),
    ],
)
def test_study_types_yaml_is_validated(text: str, message: str) -> None:
    from celltrials.errors import TaxonomyError
    from celltrials.normalize import load_study_types

    with pytest.raises(TaxonomyError, match=r"study_types\.yaml") as info:
        load_study_types(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'version: "1"\nvalues: [{field: sponsor, raw: x, reason: because it is}]\n',
            "field must be one of",
        ),
        ('version: "1"\nvalues: [{field: country, raw: "??", reason: " "}]\n', "needs a reason"),
        (
            'version: "1"\nvalues: [{field: country, raw: "??"}]\n',
            "needs exactly field, raw, reason",
        ),
        ("values: []\n", "top-level keys"),
    ],
)
def test_unmappable_yaml_is_validated(text: str, message: str) -> None:
    from celltrials.errors import TaxonomyError
    from celltrials.quality import load_unmappable

    with pytest.raises(TaxonomyError, match=r"unmappable\.yaml") as info:
        load_unmappable(text)
    assert message in str(info.value)


def test_shipped_vocabulary_files_load_with_versions() -> None:
    from celltrials.normalize import countries_version, load_study_types
    from celltrials.quality import unmappable_version

    assert countries_version() and unmappable_version()
    version, table = load_study_types('version: "9"\nstudy_types: {other: [Misc]}\n')
    assert version == "9" and table == {"other": "other", "misc": "other"}
