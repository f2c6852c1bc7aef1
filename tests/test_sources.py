"""Parsers on the real registry exports in ../shared/data.

Expected values are read from the raw files with the standard library
(csv, json, ElementTree, openpyxl), independently of the parsers.
"""

from __future__ import annotations

import csv
import json
import zipfile
from datetime import date
from pathlib import Path
from xml.etree import ElementTree as ET

import openpyxl
import pytest

from celltrials.errors import RecordError
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file, sniff
from tests.conftest import (
    AACT_DIR,
    CAR_JSON,
    DATA,
    GENERAL_JSON,
    ICTRP_CSV,
    ICTRP_XLSX,
    ICTRP_XML,
    MSC_CSV,
    PROCHYMAL_CSV,
    SHARED,
    TESTDATA,
)


def good(path: Path) -> list[ParsedRecord]:
    items = list(parse_file(path))
    bad = [str(i) for i in items if isinstance(i, RecordError)]
    assert not bad, bad
    return [i for i in items if isinstance(i, ParsedRecord)]


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        (MSC_CSV, "ctgov_csv_classic"),
        (GENERAL_JSON, "ctgov_json"),
        (AACT_DIR / "NCT00763412.json", "ctgov_json"),
        (ICTRP_CSV, "ictrp_csv"),
        (ICTRP_XML, "ictrp_xml"),
        (ICTRP_XLSX, "ictrp_xlsx"),
        (TESTDATA / "ctgov_website_export.csv", "ctgov_csv"),
        (SHARED / "data-extra" / "aml-mrd-ctg-csv" / "ctg-studies.csv", "ctgov_csv"),
    ],
)
def test_sniff_by_content(path: Path, fmt: str, tmp_path: Path) -> None:
    assert sniff(path).format == fmt
    # the extension is not trusted: the same bytes under a misleading name
    disguised = tmp_path / "export.txt"
    disguised.write_bytes(path.read_bytes())
    assert sniff(disguised).format == fmt


def test_classic_csv_every_row_and_fields() -> None:
    rows = csv_rows(MSC_CSV)
    records = good(MSC_CSV)
    assert len(records) == len(rows) == 1389
    assert [r.record_id for r in records] == [row["NCT Number"] for row in rows]
    by_id = {r.record_id: r for r in good(PROCHYMAL_CSV)}
    rec = by_id["NCT00294112"]  # Prochymal for Crohn's disease
    assert rec.title.startswith("Prochymal™ Adult Human Mesenchymal Stem Cells")
    assert rec.phase == "PHASE2"
    assert rec.status == "COMPLETED"
    assert rec.enrollment is not None and rec.enrollment.count == 10
    assert [i.type for i in rec.interventions] == ["DRUG", "DRUG"]
    assert rec.interventions[0].name == "Prochymal™ adult human mesenchymal stem cells"
    assert rec.sponsors[0].name == "Mesoblast, Inc." and rec.sponsors[0].sponsor_class == "industry"
    assert rec.conditions == ["Crohn's Disease"]


def test_classic_csv_countries_from_locations() -> None:
    rows = {r["NCT Number"]: r for r in csv_rows(MSC_CSV)}
    for rec in good(MSC_CSV):
        expected = {
            loc.rsplit(",", 1)[-1].strip()
            for loc in rows[rec.record_id]["Locations"].split("|")
            if loc.strip()
        }
        expected = {
            "Korea" if c == "Republic of" else "Iran" if c == "Islamic Republic of" else c
            for c in expected
        }
        # canonical names may differ in spelling (Korea, Republic of → South Korea) but not in number
        assert len(rec.countries) == len(expected)
        assert "Republic of" not in rec.countries and "Islamic Republic of" not in rec.countries


def test_classic_csv_other_ids_give_eudract_numbers() -> None:
    rec = next(
        r
        for r in good(MSC_CSV)
        if "2013-005407-14" in csv_rows(MSC_CSV)[r.position - 1]["Other IDs"]
    )
    assert "EU:2013-005407-14" in {i.key for i in rec.ids}
    # organisation ids are not registry ids
    assert all(i.registry != "other" for i in rec.ids)


def test_api_json_array_matches_raw() -> None:
    raw = json.loads(GENERAL_JSON.read_text())
    records = good(GENERAL_JSON)
    assert [r.record_id for r in records] == [
        s["protocolSection"]["identificationModule"]["nctId"] for s in raw
    ]
    first, rec = raw[0]["protocolSection"], records[0]
    assert rec.title == first["identificationModule"]["briefTitle"]
    assert rec.phase == "PHASE3" and first["designModule"]["phases"] == ["PHASE3"]
    assert rec.enrollment is not None
    assert rec.enrollment.count == first["designModule"]["enrollmentInfo"]["count"]
    assert rec.enrollment.kind == first["designModule"]["enrollmentInfo"]["type"]
    assert {i.key for i in rec.ids} == {"NCT05925803", "EU:2023-505976-31"}
    assert rec.mesh_terms == [
        m["term"] for m in raw[0]["derivedSection"]["conditionBrowseModule"]["meshes"]
    ]


def test_api_json_single_study_with_results() -> None:
    raw = json.loads((AACT_DIR / "NCT00763412.json").read_text())
    (rec,) = good(AACT_DIR / "NCT00763412.json")
    assert rec.record_id == "NCT00763412"
    assert rec.has_results == ("resultsSection" in raw)
    arms = raw["protocolSection"]["armsInterventionsModule"]["armGroups"]
    assert [a.label for a in rec.arms] == [a["label"] for a in arms]


def _studies() -> list[dict]:
    return json.loads(GENERAL_JSON.read_text())[:7]


def test_api_page_shape(tmp_path: Path) -> None:
    page = tmp_path / "page.json"
    page.write_text(json.dumps({"studies": _studies(), "nextPageToken": "abc", "totalCount": 50}))
    assert [r.record_id for r in good(page)] == [
        s["protocolSection"]["identificationModule"]["nctId"] for s in _studies()
    ]


def test_ndjson_shape(tmp_path: Path) -> None:
    nd = tmp_path / "studies.ndjson"
    nd.write_text("\n".join(json.dumps(s) for s in _studies()) + "\n")
    assert sniff(nd).format == "ctgov_ndjson"
    assert len(good(nd)) == 7


def test_zip_of_study_files(tmp_path: Path) -> None:
    z = tmp_path / "ctg-studies.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for s in _studies():
            nct = s["protocolSection"]["identificationModule"]["nctId"]
            zf.writestr(f"ctg-studies/{nct}.json", json.dumps(s))
    assert sniff(z).format == "ctgov_zip"
    assert sorted(r.record_id for r in good(z)) == sorted(
        s["protocolSection"]["identificationModule"]["nctId"] for s in _studies()
    )


def test_reconstructed_car_file_all_studies() -> None:
    raw = json.loads(CAR_JSON.read_text())
    records = good(CAR_JSON)
    assert len(records) == len(raw) == 2052
    china = sum(
        1
        for s in raw
        if any(
            loc.get("country") == "China"
            for loc in s["protocolSection"].get("contactsLocationsModule", {}).get("locations", [])
        )
    )
    assert sum(1 for r in records if "China" in r.countries) == china


def test_website_csv_agrees_with_api_json() -> None:
    csv_recs = {r.record_id: r for r in good(TESTDATA / "ctgov_website_export.csv")}
    json_recs = {r.record_id: r for r in good(GENERAL_JSON)}
    assert len(csv_recs) == 3
    for nct, c in csv_recs.items():
        j = json_recs[nct]
        assert c.source_format == "ctgov_csv"
        assert (c.title, c.status, c.phase, c.start_date, c.last_update) == (
            j.title,
            j.status,
            j.phase,
            j.start_date,
            j.last_update,
        )
        assert c.enrollment and j.enrollment and c.enrollment.count == j.enrollment.count
        assert [(i.type, i.name) for i in c.interventions] == [
            (i.type, i.name) for i in j.interventions
        ]
        assert {i.key for i in c.ids} == {i.key for i in j.ids}
        assert set(c.countries) <= set(j.countries)


def test_real_website_csv_20_columns() -> None:
    path = SHARED / "data-extra" / "aml-mrd-ctg-csv" / "ctg-studies.csv"
    rows = csv_rows(path)
    recs = good(path)
    assert len(recs) == len(rows) == 245
    r = recs[0]
    assert r.record_id == rows[0]["NCT Number"]
    assert r.status == rows[0]["Study Status"]
    assert r.interventions[0].type == rows[0]["Interventions"].split(":")[0]


def test_ictrp_csv_rows_and_fields() -> None:
    rows = csv_rows(ICTRP_CSV)
    recs = good(ICTRP_CSV)
    assert len(recs) == len(rows) == 1135
    by_id = {r.record_id: r for r in recs}
    row = next(r for r in rows if r["TrialID"] == "ChiCTR2000029953")
    rec = by_id["ChiCTR2000029953"]
    assert rec.registry == "chictr" and rec.channel == "ictrp"
    assert rec.title == row["Public title"].strip()
    assert rec.registration_date is not None and rec.registration_date.value == date(2020, 2, 17)
    registers = {r["Source Register"] for r in rows}
    assert {
        "ChiCTR",
        "ClinicalTrials.gov",
        "EU Clinical Trials Register",
        "ANZCTR",
        "ISRCTN",
        "IRCT",
        "JPRN",
    } <= registers
    # every ClinicalTrials.gov relay is recognised as an NCT record
    nct_rows = [r for r in rows if r["Source Register"] == "ClinicalTrials.gov"]
    assert sum(1 for r in recs if r.registry == "ctgov") == len(nct_rows)


def test_ictrp_enrollment_sums_groups() -> None:
    rows = {r["TrialID"]: r for r in csv_rows(ICTRP_CSV)}
    grouped = [r for r in good(ICTRP_CSV) if ";" in rows[r.record_id]["Target size"]]
    assert grouped
    for rec in grouped:
        nums = [
            int(p.split(":")[-1])
            for p in rows[rec.record_id]["Target size"].split(";")
            if p.strip() and p.split(":")[-1].strip().isdigit()
        ]
        if len(nums) == len(
            [p for p in rows[rec.record_id]["Target size"].split(";") if p.strip()]
        ):
            assert rec.enrollment is not None and rec.enrollment.count == sum(nums)


def test_ictrp_xml_matches_csv_layout() -> None:
    root = ET.parse(ICTRP_XML).getroot()
    ids = [t.findtext("TrialID").strip() for t in root.iter("Trial")]  # type: ignore[union-attr]
    recs = good(ICTRP_XML)
    assert [r.record_id for r in recs] == ids and len(ids) == 578


def test_ictrp_xlsx_dates_and_member_states() -> None:
    wb = openpyxl.load_workbook(ICTRP_XLSX, read_only=True)
    rows = list(wb.worksheets[0].iter_rows(values_only=True))
    wb.close()
    recs = good(ICTRP_XLSX)
    assert len(recs) == len(rows) - 1 == 4098
    first = recs[0]
    assert first.record_id == rows[1][0]
    assert (
        first.last_update is not None and first.last_update.value == rows[1][1].date()
    )  # Excel date
    # EU-CTR trials appear once per member state (EUCTR2020-001264-28-DE, -BG, …)
    per_state = [str(r[0]) for r in rows[1:] if str(r[0]).startswith("EUCTR")]
    number = max({x[5:19] for x in per_state}, key=lambda n: sum(x[5:19] == n for x in per_state))
    eu = [r for r in recs if r.record_id.startswith(f"EUCTR{number}-")]
    assert len(eu) == sum(x[5:19] == number for x in per_state) > 1
    assert {i.key for r in eu for i in r.ids if i.is_primary} == {f"EU:{number}"}


def test_chictr_interventions_keep_group_labels() -> None:
    rec = next(r for r in good(ICTRP_CSV) if r.record_id == "ChiCTR2000029580")
    labels = [lbl for i in rec.interventions for lbl in i.arm_labels]
    assert labels, rec.interventions
    assert any(
        "mesenchymal" in i.name.lower() or "msc" in i.name.lower() for i in rec.interventions
    )


def test_data_folder_sources_listed() -> None:
    listed = (DATA / "SOURCES.md").read_text()
    for p in (MSC_CSV, GENERAL_JSON, ICTRP_CSV, ICTRP_XML, ICTRP_XLSX):
        assert p.name in listed
