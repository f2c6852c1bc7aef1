"""Bad, odd and valid-but-unusual input built from real records of
../shared/data: every defect is a finding naming file, record and reason
(never a traceback, never a wrong value stored), and valid input in an
unusual encoding or name is read.

Expected values come from reading the same files with json/csv/zipfile here.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest

import celltrials
from celltrials.ingest import Finding, IngestAborted, IngestReport, ingest_paths
from celltrials.registry_ids import canonical_id, fold_id
from celltrials.sources.validate import MAX_ENROLLMENT
from tests.conftest import (
    AACT_DIR,
    GENERAL_JSON,
    ICTRP_CSV,
    ICTRP_XLSX,
    ICTRP_XML,
    MSC_CSV,
    ictrp_xlsx_rows,
)

STUDIES: list[dict[str, Any]] = json.loads(GENERAL_JSON.read_bytes())


def study(i: int = 0) -> dict[str, Any]:
    return copy.deepcopy(STUDIES[i])


def nct(s: dict[str, Any]) -> str:
    return str(s["protocolSection"]["identificationModule"]["nctId"])


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def ingest(tmp: Path, *paths: Path | str, skip_bad: bool = True) -> tuple[IngestReport, Path]:
    db = tmp / "t.duckdb"
    with celltrials.open(db) as store:
        report = ingest_paths(store, list(paths), skip_bad=skip_bad)
    return report, db


def errors(report: IngestReport) -> list[Finding]:
    return [f for f in report.findings if f.severity == "error"]


def stored_ids(db: Path) -> list[str]:
    with celltrials.open(db, read_only=True) as store:
        return sorted(r[0] for r in store.con.execute("SELECT record_id FROM records").fetchall())


# ------------------------------------------------------------------ API JSON types
WRONG_TYPES = [
    # (what, mutate, the field the finding must name)
    (
        "conditions as a string",
        lambda p: p["conditionsModule"].__setitem__("conditions", "Lymphoma"),
        "protocolSection.conditionsModule.conditions: expected a list, found string",
    ),
    (
        "keywords as a number",
        lambda p: p["conditionsModule"].__setitem__("keywords", 7),
        "protocolSection.conditionsModule.keywords: expected a list, found integer",
    ),
    (
        "phases as an object",
        lambda p: p["designModule"].__setitem__("phases", {"PHASE2": True}),
        "protocolSection.designModule.phases: expected a list, found object",
    ),
    (
        "identificationModule as a list",
        lambda p: p.__setitem__("identificationModule", [p["identificationModule"]]),
        "protocolSection.identificationModule: expected an object, found list",
    ),
    (
        "leadSponsor as a string",
        lambda p: p["sponsorCollaboratorsModule"].__setitem__("leadSponsor", "Acme"),
        "protocolSection.sponsorCollaboratorsModule.leadSponsor: expected an object, found string",
    ),
    (
        "an intervention as a string",
        lambda p: p["armsInterventionsModule"].__setitem__("interventions", ["Drug: x"]),
        "protocolSection.armsInterventionsModule.interventions[0]: expected an object, found string",
    ),
    (
        "briefTitle as a list",
        lambda p: p["identificationModule"].__setitem__("briefTitle", ["a", "b"]),
        "protocolSection.identificationModule.briefTitle: expected a string, found list",
    ),
    (
        "enrollment count as text",
        lambda p: p["designModule"].__setitem__("enrollmentInfo", {"count": "thirty"}),
        "protocolSection.designModule.enrollmentInfo.count: expected a integer, found string",
    ),
    (
        "start date as a number",
        lambda p: p["statusModule"].__setitem__("startDateStruct", {"date": 2020}),
        "protocolSection.statusModule.startDateStruct.date: expected a string, found integer",
    ),
    (
        "statusModule as a string",
        lambda p: p.__setitem__("statusModule", "RECRUITING"),
        "protocolSection.statusModule: expected an object, found string",
    ),
]


@pytest.mark.parametrize(("what", "mutate", "reason"), WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES])
def test_wrong_json_types_are_named_findings(
    tmp_path: Path, what: str, mutate: Any, reason: str
) -> None:
    bad = study(1)
    mutate(bad["protocolSection"])
    path = write_json(tmp_path / "studies.json", [study(0), bad, study(2)])
    report, db = ingest(tmp_path, path)
    [f] = errors(report)
    rid = (
        None if "identificationModule:" in reason else nct(STUDIES[1])
    )  # the id itself is unreachable there
    assert (f.path, f.position, f.record_id, f.reason) == (str(path), 2, rid, reason)
    assert stored_ids(db) == sorted(
        [nct(STUDIES[0]), nct(STUDIES[2])]
    )  # the good ones, nothing else


def test_strict_mode_names_the_record_and_stores_nothing(tmp_path: Path) -> None:
    bad = study(1)
    bad["protocolSection"]["conditionsModule"]["conditions"] = "Lymphoma"
    path = write_json(tmp_path / "studies.json", [study(0), bad])
    with pytest.raises(IngestAborted) as info:
        ingest(tmp_path, path, skip_bad=False)
    assert info.value.finding.position == 2 and info.value.finding.record_id == nct(STUDIES[1])
    with celltrials.open(tmp_path / "t.duckdb", read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM records").fetchone() == (0,)


# ------------------------------------------------------------------ enrollment bounds
@pytest.mark.parametrize(
    ("count", "stored"),
    [
        (-5, None),
        (2**31, None),
        (10**20, None),
        (MAX_ENROLLMENT, MAX_ENROLLMENT),
        (0, 0),
        (30.0, 30),
    ],
)
def test_enrollment_bounds(tmp_path: Path, count: Any, stored: int | None) -> None:
    s = study(3)
    s["protocolSection"]["designModule"]["enrollmentInfo"] = {"count": count, "type": "ACTUAL"}
    path = write_json(tmp_path / "one.json", s)
    report, db = ingest(tmp_path, path)
    if stored is None:
        [f] = errors(report)
        assert f.record_id == nct(s) and f.reason.startswith("enrollment ")
        assert ("negative" if count < 0 else "outside 0 to 2,147,483,647") in f.reason
        assert stored_ids(db) == []
    else:
        assert errors(report) == []
        with celltrials.open(db, read_only=True) as store:
            assert store.con.execute("SELECT enrollment FROM records").fetchone() == (stored,)


def _ictrp_rows(n: int) -> tuple[list[str], list[dict[str, str]]]:
    with ICTRP_CSV.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), [
            row for _, row in zip(range(n), reader, strict=False)
        ]


def _write_ictrp_csv(path: Path, fields: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("size", ["-40", "1E+30", "9999999999", "inf"])
def test_absurd_target_sizes_are_findings(tmp_path: Path, size: str) -> None:
    fields, rows = _ictrp_rows(3)
    rows[1]["Target size"] = size
    report, db = ingest(tmp_path, _write_ictrp_csv(tmp_path / "i.csv", fields, rows))
    found = errors(report)
    if size == "inf":  # words are kept as raw text with no count, as before
        assert found == []
        with celltrials.open(db, read_only=True) as store:
            assert store.con.execute(
                "SELECT enrollment, enrollment_raw FROM records WHERE record_id = ?",
                [rows[1]["TrialID"]],
            ).fetchone() == (None, "inf")
        return
    [f] = found
    assert (f.position, f.record_id) == (2, rows[1]["TrialID"]) and "enrollment" in f.reason
    assert rows[1]["TrialID"] not in stored_ids(db)


def test_xlsx_absurd_target_size_is_a_finding(tmp_path: Path) -> None:
    rows = [list(r) for r in ictrp_xlsx_rows()[:4]]
    header = [str(h) for h in rows[0]]
    col = next(i for i, h in enumerate(header) if h.replace("_", " ").lower() == "target size")
    rows[2][col] = 1e30  # a number cell, as Excel stores it
    wb = openpyxl.Workbook()
    for r in rows:
        wb.active.append(r)
    path = tmp_path / "t.xlsx"
    wb.save(path)
    report, db = ingest(tmp_path, path)
    [f] = errors(report)
    assert f.position == 2 and "enrollment" in f.reason
    assert len(stored_ids(db)) == 2


# ------------------------------------------------------------------ ids
def test_unicode_digits_in_nct_ids_fold_and_merge(tmp_path: Path) -> None:
    s = study(4)
    ascii_id = nct(s)
    full = ascii_id[:3].translate({ord(c): 0xFF00 + ord(c) - 0x20 for c in "NCT"}) + "".join(
        chr(0xFF10 + int(d)) for d in ascii_id[3:]
    )
    arabic = "NCT" + "".join(chr(0x0660 + int(d)) for d in ascii_id[3:])
    assert fold_id(full) == ascii_id and fold_id(arabic) == ascii_id
    assert canonical_id(arabic).key == ascii_id  # type: ignore[union-attr]
    v1, v2 = study(4), study(4)
    v1["protocolSection"]["identificationModule"]["nctId"] = full
    v1["protocolSection"]["identificationModule"]["briefTitle"] += " (v1)"
    v2["protocolSection"]["identificationModule"]["nctId"] = arabic
    v2["protocolSection"]["identificationModule"]["briefTitle"] += " (v2)"
    report, db = ingest(tmp_path, write_json(tmp_path / "a.json", [s, v1, v2]))
    assert errors(report) == []
    with celltrials.open(db, read_only=True) as store:
        assert store.con.execute("SELECT DISTINCT record_id FROM records").fetchall() == [
            (ascii_id,)
        ]
        assert store.con.execute("SELECT count(*) FROM records").fetchone() == (
            3,
        )  # three versions kept
        assert store.con.execute("SELECT trial_id FROM trials").fetchall() == [(ascii_id,)]


@pytest.mark.parametrize(
    "trial_id", ["<script>alert(1)</script>", "hello world", "!!!", "=1+1", "ABC", "x" * 200]
)
def test_ictrp_trial_id_must_look_like_a_registry_id(tmp_path: Path, trial_id: str) -> None:
    fields, rows = _ictrp_rows(3)
    rows[0]["TrialID"] = trial_id
    report, db = ingest(tmp_path, _write_ictrp_csv(tmp_path / "i.csv", fields, rows))
    [f] = errors(report)
    assert f.position == 1 and "is not a registry id" in f.reason
    assert stored_ids(db) == sorted(r["TrialID"] for r in rows[1:])


def test_real_trial_ids_of_every_ictrp_file_are_accepted(tmp_path: Path) -> None:
    report, _ = ingest(tmp_path, ICTRP_CSV, ICTRP_XML, ICTRP_XLSX)
    assert errors(report) == []


# ------------------------------------------------------------------ nesting
def test_deep_nesting_is_a_finding_and_skip_bad_keeps_the_rest(tmp_path: Path) -> None:
    bad = study(5)
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]
    bad["protocolSection"]["oversightModule"] = {"nested": deep}
    path = write_json(tmp_path / "deep.json", [study(0), bad])
    report, db = ingest(tmp_path, path)
    [f] = errors(report)
    assert (f.position, f.record_id) == (2, nct(bad)) and "levels deep" in f.reason
    assert stored_ids(db) == [nct(STUDIES[0])]
    strict = tmp_path / "strict"
    strict.mkdir()
    with pytest.raises(IngestAborted) as info:
        ingest(strict, path, skip_bad=False)
    assert info.value.finding.record_id == nct(bad)


# ------------------------------------------------------------------ CSV sizes
def test_csv_field_over_131072_characters_is_read(tmp_path: Path) -> None:
    with MSC_CSV.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = [r for _, r in zip(range(3), reader, strict=False)]
    sites = [
        f"Site {i}, City {i}, Country {i % 7}" for i in range(7000)
    ]  # a real 7,000-site list's shape
    rows[1]["Locations"] = "|".join(sites)
    assert len(rows[1]["Locations"]) > 131_072
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    report, db = ingest(tmp_path, path, skip_bad=False)
    assert errors(report) == []
    assert stored_ids(db) == sorted(r["NCT Number"] for r in rows)


# ------------------------------------------------------------------ zip members
def _zip_of_real_studies(
    path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED
) -> None:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _patch_member(path: Path, name: str, patch: Any) -> None:
    """Rewrite bytes of one member in place (local header or data)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    raw = bytearray(path.read_bytes())
    patch(raw, info)
    path.write_bytes(bytes(raw))


def _data_offset(raw: bytearray, info: zipfile.ZipInfo) -> int:
    off = info.header_offset
    n, m = (
        int.from_bytes(raw[off + 26 : off + 28], "little"),
        int.from_bytes(raw[off + 28 : off + 30], "little"),
    )
    return off + 30 + n + m


def _bad_crc(raw: bytearray, info: zipfile.ZipInfo) -> None:
    raw[_data_offset(raw, info) + info.compress_size // 2] ^= (
        0xFF  # stored data changed: CRC mismatch
    )


def _corrupt_deflate(raw: bytearray, info: zipfile.ZipInfo) -> None:
    start = _data_offset(raw, info)
    raw[start : start + 8] = b"\xff" * 8


def _encrypted(raw: bytearray, info: zipfile.ZipInfo) -> None:
    raw[info.header_offset + 6] |= 0x1
    cd = raw.rfind(b"PK\x01\x02" + raw[info.header_offset + 4 : info.header_offset + 6])
    cd = raw.find(b"PK\x01\x02")
    while cd != -1:
        name_len = int.from_bytes(raw[cd + 28 : cd + 30], "little")
        if raw[cd + 46 : cd + 46 + name_len].decode() == info.filename:
            raw[cd + 8] |= 0x1
        cd = raw.find(b"PK\x01\x02", cd + 4)


def _unknown_method(raw: bytearray, info: zipfile.ZipInfo) -> None:
    raw[info.header_offset + 8 : info.header_offset + 10] = (99).to_bytes(2, "little")
    cd = raw.find(b"PK\x01\x02")
    while cd != -1:
        name_len = int.from_bytes(raw[cd + 28 : cd + 30], "little")
        if raw[cd + 46 : cd + 46 + name_len].decode() == info.filename:
            raw[cd + 10 : cd + 12] = (99).to_bytes(2, "little")
        cd = raw.find(b"PK\x01\x02", cd + 4)


@pytest.mark.parametrize(
    ("damage", "method", "words"),
    [
        (_bad_crc, zipfile.ZIP_STORED, "damaged zip member"),
        (_corrupt_deflate, zipfile.ZIP_DEFLATED, "damaged zip member"),
        (_encrypted, zipfile.ZIP_DEFLATED, "encrypted"),
        (_unknown_method, zipfile.ZIP_DEFLATED, "compression method"),
    ],
)
def test_damaged_zip_member_is_a_finding_and_the_others_are_read(
    tmp_path: Path, damage: Any, method: int, words: str
) -> None:
    files = sorted(AACT_DIR.glob("*.json"))[:3]
    members = {f.name: f.read_bytes() for f in files}
    path = tmp_path / "studies.zip"
    _zip_of_real_studies(path, members, method)
    _patch_member(path, files[1].name, damage)
    report, db = ingest(tmp_path, path)
    [f] = errors(report)
    assert f.path == f"{path}!{files[1].name}" and words in f.reason
    want = sorted(nct(json.loads(members[n])) for n in (files[0].name, files[2].name))
    assert stored_ids(db) == want


# ------------------------------------------------------------------ corrupt xlsx
def test_corrupt_xlsx_is_a_file_finding(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.xlsx"
    truncated.write_bytes(ICTRP_XLSX.read_bytes()[: ICTRP_XLSX.stat().st_size // 2])
    sheet = tmp_path / "bad_sheet.xlsx"
    with (
        zipfile.ZipFile(ICTRP_XLSX) as src,
        zipfile.ZipFile(sheet, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 3]  # the sheet XML breaks off mid-row
            dst.writestr(item, data)
    report, db = ingest(tmp_path, truncated, sheet)
    found = errors(report)
    assert [f.path for f in found] == [str(truncated), str(sheet)]
    assert "zip" in found[0].reason or "Excel" in found[0].reason
    assert "Excel sheet" in found[1].reason
    assert stored_ids(db) == []  # the half-read sheet left nothing behind


# ------------------------------------------------------------------ valid, unusual input
def test_utf8_bom_json_and_ndjson_are_read(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    arr = tmp_path / "bom.json"
    arr.write_bytes(bom + json.dumps(STUDIES[:3]).encode())
    nd = tmp_path / "bom.ndjson"
    nd.write_bytes(bom + b"\n".join(json.dumps(s).encode() for s in STUDIES[3:6]) + b"\n")
    report, db = ingest(tmp_path, arr, nd, skip_bad=False)
    assert errors(report) == []
    assert stored_ids(db) == sorted(nct(s) for s in STUDIES[:6])


def test_utf16_xml_is_read(tmp_path: Path) -> None:
    text = ICTRP_XML.read_bytes().decode("utf-8-sig")
    if text.startswith("<?xml"):
        text = text.split("?>", 1)[1]
    path = tmp_path / "utf16.xml"
    path.write_bytes(('<?xml version="1.0" encoding="UTF-16"?>' + text).encode("utf-16"))
    from xml.etree import ElementTree as ET

    want = sorted(
        {(t.findtext("TrialID") or "").strip() for t in ET.parse(ICTRP_XML).getroot().iter("Trial")}
    )
    report, db = ingest(tmp_path, path, skip_bad=False)
    assert errors(report) == []
    assert sorted(set(stored_ids(db))) == want


def test_real_xlsx_named_csv_is_read_by_content(tmp_path: Path) -> None:
    # (found by the fuzzer: openpyxl rejected a real XLSX for its .csv extension)
    path = tmp_path / "looks_like.csv"
    shutil.copy(ICTRP_XLSX, path)
    rows = ictrp_xlsx_rows()
    col = [str(h) for h in rows[0]].index("TrialID")
    want = {str(r[col]).strip() for r in rows[1:] if r[col]}
    report, db = ingest(tmp_path, path, skip_bad=False)
    assert errors(report) == [] and report.files[0].format == "ictrp_xlsx"
    assert set(stored_ids(db)) == want


# ------------------------------------------------------------------ folders
def test_symlink_loops_terminate_for_folders_and_globs(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    write_json(root / "a.json", STUDIES[0])
    write_json(root / "sub" / "b.json", STUDIES[1])
    os.symlink(root, root / "sub" / "loop")  # sub/loop -> data: a cycle
    os.symlink(".", root / "self")
    for i, arg in enumerate((root, f"{root}/**/*.json", f"{root}/**")):
        (tmp_path / f"run{i}").mkdir()
        report, db = ingest(tmp_path / f"run{i}", arg)
        assert errors(report) == []
        assert stored_ids(db) == sorted([nct(STUDIES[0]), nct(STUDIES[1])])


def test_non_utf8_file_name_in_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    write_json(root / "ok.json", STUDIES[0])
    bad_name = os.fsdecode(b"caf\xe9-\xff.json")  # Latin-1 bytes: not UTF-8
    (root / bad_name).write_bytes(json.dumps(STUDIES[1]).encode())
    (root / os.fsdecode(b"notes-\xff.txt")).write_text("a note", encoding="utf-8")
    report, db = ingest(tmp_path, root, skip_bad=False)
    assert errors(report) == []
    assert stored_ids(db) == sorted([nct(STUDIES[0]), nct(STUDIES[1])])
    json.dumps(report.to_dict()).encode("utf-8")  # printable / serialisable
    assert any("\\xff" in f.path for f in report.findings)  # the skipped note, named readably
