"""Archived ClinicalTrials.gov formats: API v1 study fields and legacy ``<clinical_study>`` XML.

Read in place from ``../shared/data-extra``; every expected number is
computed here from the files with ``zipfile``/``json``/``ElementTree``.
"""

from __future__ import annotations

import csv
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner

import celltrials
from celltrials.analysis.results import parse_results, results_for_store
from celltrials.cli import cli
from celltrials.errors import DataFileError, RecordError
from celltrials.ingest import ingest_paths
from celltrials.sources import ctgov_v1, parse_file, sniff
from celltrials.store import Store
from tests.conftest import stored_json

EXTRA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data-extra"
V1_ZIP = EXTRA / "ctgov-v1-studyfields" / "msc_studyfields_2022-10-06.zip"
XML_DIR = EXTRA / "bcell-lymphoma-2018" / "danko711" / "search_result"
pytestmark = pytest.mark.skipif(not V1_ZIP.is_file(), reason="shared data-extra not available")


def v1_members() -> Iterator[tuple[str, dict[str, Any]]]:
    with zipfile.ZipFile(V1_ZIP) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith(".json"):
                yield name, json.loads(zf.read(name))


@pytest.fixture(scope="module")
def v1_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Any]]:
    path = tmp_path_factory.mktemp("v1") / "v1.duckdb"
    with celltrials.open(path) as store:
        report = ingest_paths(store, [V1_ZIP])
        yield store, report


@pytest.fixture(scope="module")
def xml_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    # the 188 files zipped as they are (one transaction instead of 188; the folder
    # and single-file paths go through the same parser, see test_xml_single_files)
    tmp = tmp_path_factory.mktemp("xml")
    archive = tmp / "search_result.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(XML_DIR.glob("*.xml")):
            zf.write(f, f.name)
    with celltrials.open(tmp / "xml.duckdb") as store:
        report = ingest_paths(store, [archive])
        assert report.clean and [f.format for f in report.files] == ["ctgov_xml_zip"]
        assert report.n_new == 188
        yield store


# ------------------------------------------------------------------ API v1 study fields


def test_v1_archive_ingests_completely(v1_store: tuple[Store, Any]) -> None:
    store, report = v1_store
    members = list(v1_members())
    ncts = Counter(d["NCTId"][0] for _, d in members)
    assert len(members) == 1536
    # the archive's NCT04400032.json holds NCT02421484's record (the scraper saved it twice):
    # 1,536 files, 1,535 distinct studies; the second copy is the same content, so "unchanged"
    misnamed = [(name, d["NCTId"][0]) for name, d in members if not name.startswith(d["NCTId"][0])]
    assert misnamed == [("NCT04400032.json", "NCT02421484")]
    assert report.clean
    assert [f.format for f in report.files] == ["ctgov_v1_zip"]
    assert (
        report.n_records == 1536
        and report.n_new == len(ncts) == 1535
        and report.files[0].n_unchanged == 1
    )
    stored = dict(store.con.execute("SELECT record_id, source_format FROM records").fetchall())
    assert set(stored) == set(ncts) and set(stored.values()) == {"ctgov_v1_json"}
    assert store.con.execute("SELECT count(*) FROM trials").fetchone()[0] == 1535


def test_v1_fields_match_the_json(v1_store: tuple[Store, Any]) -> None:
    store, _ = v1_store
    rows = {
        r[0]: r[1:]
        for r in store.con.execute(
            "SELECT record_id, title, why_stopped, status_raw, has_results, raw FROM records"
        ).fetchall()
    }
    why = {}
    for _, d in v1_members():
        nct = d["NCTId"][0]
        title, why_stopped, status_raw, has_results, raw = rows[nct]
        assert title == " ".join(d["BriefTitle"][0].split())
        assert status_raw == d["OverallStatus"][0]
        assert has_results == bool(d.get("ResultsFirstPostDate"))
        assert stored_json(raw) == dict(d.items())  # kept verbatim
        if d.get("WhyStopped"):
            why[nct] = " ".join(d["WhyStopped"][0].split())
            assert why_stopped == why[nct]
    assert len(why) == 107
    assert sum(1 for r in rows.values() if r[3]) == 50


def test_v1_stop_reasons_reach_the_report(v1_store: tuple[Store, Any], tmp_path: Path) -> None:
    store, _ = v1_store
    db = tmp_path / "copy.duckdb"
    store.con.execute("CHECKPOINT")
    import shutil

    shutil.copy(store.path, db)
    result = CliRunner().invoke(
        cli,
        [
            "--db",
            str(db),
            "report",
            "--all-trials",
            "--no-figures",
            "--out",
            str(tmp_path / "rep"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    with (tmp_path / "rep" / "tables" / "stopped_reasons.csv").open(encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    got = Counter()
    for r in table:
        if r["reason"] != "(no reason given)":
            for t in r["trial_ids"].split(";"):
                got[(r["status"], r["reason"], t)] += 1
    expected = Counter()
    status_map = {"Terminated": "TERMINATED", "Withdrawn": "WITHDRAWN", "Suspended": "SUSPENDED"}
    for _, d in v1_members():
        st = d["OverallStatus"][0]
        if st in status_map and d.get("WhyStopped"):
            expected[(status_map[st], " ".join(d["WhyStopped"][0].split()), d["NCTId"][0])] = 1
    assert expected and set(got) == set(expected)


def test_v1_event_groups_and_serious_events(v1_store: tuple[Store, Any]) -> None:
    store, _ = v1_store
    n_trials = 0
    for _, d in v1_members():
        if not d.get("EventGroupId"):
            continue
        n_trials += 1
        t = results_for_store(store, d["NCTId"][0])
        eg = t["event_groups"]
        assert eg["group_id"].tolist() == d["EventGroupId"]
        assert eg["serious_num_affected"].tolist() == [
            int(x) for x in d["EventGroupSeriousNumAffected"]
        ]
        assert eg["serious_num_at_risk"].tolist() == [
            int(x) for x in d["EventGroupSeriousNumAtRisk"]
        ]
        ae = t["adverse_events"]
        serious = ae[ae.event_type == "serious"]
        if d.get("SeriousEventTerm"):
            # every statistic of every serious term is kept, in order
            assert serious["num_affected"].tolist() == [
                int(x) for x in d["SeriousEventStatsNumAffected"]
            ]
            assert serious["group_id"].tolist() == d["SeriousEventStatsGroupId"]
            assert list(dict.fromkeys(serious["term"])) == list(
                dict.fromkeys(d["SeriousEventTerm"])
            )
    assert n_trials == 50  # SOURCE.txt: 50 with serious-adverse-event counts by arm


def test_v1_outcomes_where_unambiguous(v1_store: tuple[Store, Any]) -> None:
    store, _ = v1_store
    d = next(d for _, d in v1_members() if d["NCTId"][0] == "NCT01270139")
    assert len(d["OutcomeMeasureTitle"]) == 18 and not d.get("OutcomeClassTitle")
    out = results_for_store(store, "NCT01270139")["outcomes"]
    assert out["value_raw"].tolist() == d["OutcomeMeasurementValue"]
    assert out["group_id"].tolist() == d["OutcomeMeasurementGroupId"]
    assert out["outcome_title"].drop_duplicates().tolist() == d["OutcomeMeasureTitle"]
    assert ctgov_v1.conversion_notes(d) == [n for n in ctgov_v1.conversion_notes(d) if "not" in n]


def test_v1_ambiguous_measures_kept_without_values(v1_store: tuple[Store, Any]) -> None:
    store, _ = v1_store
    d = next(d for _, d in v1_members() if d["NCTId"][0] == "NCT00587990")
    notes = ctgov_v1.conversion_notes(d)
    assert any("cannot be attributed" in n for n in notes)
    out = results_for_store(store, "NCT00587990")["outcomes"]
    # every posted measure is listed with its groups and denominators, no value invented
    assert out["outcome_title"].drop_duplicates().tolist() == d["OutcomeMeasureTitle"]
    assert out["value"].isna().all()
    assert set(out["comment"]) == {ctgov_v1.UNATTRIBUTED}
    assert out["n"].tolist() == [int(x) for x in d["OutcomeDenomCountValue"]]


def test_v1_single_file_sniffed_and_bad_record_named(tmp_path: Path) -> None:
    _, d = next(v1_members())
    one = tmp_path / "one.json"
    one.write_text(json.dumps(d), encoding="utf-8")
    assert sniff(one).format == "ctgov_v1_json"
    recs = list(parse_file(one))
    assert len(recs) == 1 and recs[0].record_id == d["NCTId"][0]
    wrapped = tmp_path / "api.json"
    bad = {k: v for k, v in d.items() if k != "NCTId"}
    bad["BriefTitle"] = ["no id"]
    wrapped.write_text(
        json.dumps({"StudyFieldsResponse": {"StudyFields": [d, {**bad, "NCTId": []}]}}),
        encoding="utf-8",
    )
    items = list(parse_file(wrapped))
    assert items[0].record_id == d["NCTId"][0]
    assert (
        isinstance(items[1], RecordError) and items[1].position == 2 and "nctId" in items[1].message
    )
    notv1 = tmp_path / "x.json"
    notv1.write_text(json.dumps({"Rank": 1, "Something": ["x"]}), encoding="utf-8")
    with pytest.raises(DataFileError, match="API v1"):
        list(parse_file(notv1))


# ------------------------------------------------------------------ legacy XML


def xml_docs() -> Iterator[ET.Element]:
    for p in sorted(XML_DIR.glob("*.xml")):
        yield ET.parse(p).getroot()


def test_xml_ingests_completely(xml_store: Store) -> None:
    roots = list(xml_docs())
    assert len(roots) == 188
    stored = {
        r[0]: r[1:]
        for r in xml_store.con.execute(
            "SELECT record_id, title, why_stopped, has_results, source_format FROM records"
        ).fetchall()
    }
    assert set(stored) == {r.findtext("id_info/nct_id") for r in roots}
    n_why = 0
    for r in roots:
        title, why, has_results, fmt = stored[r.findtext("id_info/nct_id")]
        assert fmt == "ctgov_xml"
        assert title == " ".join(r.findtext("brief_title").split())
        assert has_results == (r.find("clinical_results") is not None)
        if r.findtext("why_stopped"):
            n_why += 1
            assert why == " ".join(r.findtext("why_stopped").split())
    assert n_why == 21 and sum(1 for v in stored.values() if v[2]) == 28


def test_xml_results_tables(xml_store: Store) -> None:
    n = 0
    for r in xml_docs():
        res = r.find("clinical_results")
        if res is None:
            continue
        n += 1
        t = results_for_store(xml_store, r.findtext("id_info/nct_id"))
        measurements = res.findall(
            "outcome_list/outcome/measure/class_list/class/category_list/category/"
            "measurement_list/measurement"
        )
        assert len(t["outcomes"]) == len(measurements)
        assert t["outcomes"]["value_raw"].tolist() == [m.get("value") for m in measurements]
        # "Total, serious adverse events" becomes the event groups' totals; the other rows are terms
        totals = {
            c.get("group_id"): (int(c.get("subjects_affected")), int(c.get("subjects_at_risk")))
            for cat in res.findall("reported_events/serious_events/category_list/category")
            if cat.findtext("title") == "Total"
            for c in cat.findall("event_list/event/counts")
        }
        eg = t["event_groups"]
        got = {
            g: (a, k)
            for g, a, k in zip(
                eg.group_id, eg.serious_num_affected, eg.serious_num_at_risk, strict=True
            )
            if a is not None and a == a
        }
        assert got == totals
        terms = [
            e
            for cat in res.findall("reported_events/serious_events/category_list/category")
            if cat.findtext("title") != "Total"
            for e in cat.findall("event_list/event")
        ]
        serious = t["adverse_events"][t["adverse_events"].event_type == "serious"]
        assert len(serious) == sum(len(e.findall("counts")) for e in terms)
        flow = res.findall(
            "participant_flow/period_list/period/milestone_list/milestone/participants_list/participants"
        )
        assert (t["participant_flow"]["kind"] == "milestone").sum() == len(flow)
    assert n == 28


def test_xml_parse_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text(
        "<?xml version='1.0'?><clinical_study><id_info><nct_id>NCT0</nct_id>", encoding="utf-8"
    )
    assert sniff(bad).format == "ctgov_xml"
    items = list(parse_file(bad))
    assert len(items) == 1 and isinstance(items[0], RecordError)
    assert items[0].path == str(bad) and "malformed XML" in items[0].message
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><clinical_study>&a;</clinical_study>',
        encoding="utf-8",
    )
    items = list(parse_file(bomb))
    assert isinstance(items[0], RecordError) and "entities" in items[0].message


def test_xml_single_files(tmp_path: Path) -> None:
    files = sorted(XML_DIR.glob("*.xml"))[:3]
    with celltrials.open(tmp_path / "t.duckdb") as store:
        report = ingest_paths(store, files)
        assert [f.format for f in report.files] == ["ctgov_xml"] * 3 and report.n_new == 3
        got = sorted(r[0] for r in store.con.execute("SELECT record_id FROM records").fetchall())
    assert got == [f.stem for f in files]


def test_parse_results_reads_converted_objects() -> None:
    # the v1 conversion and parse_results agree with a direct count of the v1 lists
    for _, d in v1_members():
        if d.get("EventGroupId"):
            t = parse_results(ctgov_v1.to_v2(d))
            assert len(t["event_groups"]) == len(d["EventGroupId"])
            break


def test_v1_outcome_attribution_counts() -> None:
    # 49 trials post outcome values (counted from the lists); the re-assembly attributes every
    # measurement in 19 of them (README) and never attributes a value it cannot place
    with_values = attributed = 0
    for _, d in v1_members():
        if not d.get("OutcomeMeasurementValue"):
            continue
        with_values += 1
        notes = ctgov_v1.conversion_notes(d)
        out = parse_results(ctgov_v1.to_v2(d))["outcomes"]
        if not any(n.startswith("outcome measurements") for n in notes):
            attributed += 1
            assert out["value_raw"].tolist() == d["OutcomeMeasurementValue"]
        else:
            assert out["value_raw"].isna().all()
    assert (with_values, attributed) == (49, 19)


def test_v1_results_cli_says_why_values_are_empty(
    v1_store: tuple[Store, Any], tmp_path: Path
) -> None:
    import shutil

    store, _ = v1_store
    store.con.execute("CHECKPOINT")
    db = tmp_path / "copy.duckdb"
    shutil.copy(store.path, db)
    result = CliRunner().invoke(cli, ["--db", str(db), "results", "NCT00587990"])
    assert result.exit_code == 0, result.output
    assert "API v1 study-fields archive" in " ".join(result.output.split())
    assert "Adverse-event groups (totals)" in result.output
    result = CliRunner().invoke(cli, ["--db", str(db), "results", "NCT01270139"])
    assert "API v1 study-fields archive" not in " ".join(result.output.split())


def test_malformed_v1_and_xml_are_findings_not_crashes() -> None:
    # every field of real v1 studies replaced by values of the wrong shape, and real XML
    # cut short: parsing and the results tables either work or raise a CelltrialsError
    import copy
    import random

    from celltrials.errors import CelltrialsError
    from celltrials.sources import ctgov_xml

    rng = random.Random(16)
    wrong: list[Any] = [
        None,
        "text",
        5,
        {"a": 1},
        [None],
        [1, 2],
        [[]],
        [{"x": 1}],
        [""] * 3,
        [True],
    ]
    docs = [d for _, d in v1_members()][::8]
    n_bad = 0
    for d in docs:
        for _ in range(3):
            x = copy.deepcopy(d)
            for k in rng.sample(sorted(x), 3):
                x[k] = rng.choice(wrong)
            try:
                ctgov_v1.parse_study(x)
                parse_results(ctgov_v1.to_v2(x))
            except CelltrialsError:
                n_bad += 1
    assert n_bad > 0
    for path in sorted(XML_DIR.glob("*.xml"))[:20]:
        text = path.read_text(encoding="utf-8")
        for cut in (len(text) // 3, len(text) // 2, len(text) - 30):
            with pytest.raises(RecordError):
                ctgov_xml.parse_text(text[:cut])
