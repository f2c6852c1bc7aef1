"""Tests for ClinicalTrials.gov results parsing on the real AACT fixture files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from celltrials.analysis.results import (
    EXPORT_COLUMNS,
    TABLES,
    export_outcomes,
    parse_results,
    results_for_store,
)
from celltrials.errors import AnalysisError

FIXTURES = Path(__file__).parents[1] / ".." / "shared" / "data" / "ctgov-v2-json" / "aact-fixtures"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared registry data not available")


def load(nct: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{nct}.json").read_text(encoding="utf-8"))


def n_measurements(study: dict[str, Any]) -> int:
    oms = study["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"]
    return sum(
        len(cat["measurements"])
        for om in oms
        for cls in om.get("classes", [])
        for cat in cls.get("categories", [])
    )


def test_outcome_value_and_n_for_a_group() -> None:
    study = load("NCT02210780")
    om = study["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"][0]
    group = om["groups"][1]
    meas = next(
        m for m in om["classes"][0]["categories"][0]["measurements"] if m["groupId"] == group["id"]
    )
    denom = next(c for c in om["denoms"][0]["counts"] if c["groupId"] == group["id"])

    out = parse_results(study)["outcomes"]
    row = out[(out.outcome_index == 1) & (out.group_id == group["id"])]
    assert len(row) == 1
    r = row.iloc[0]
    assert r.nct_id == "NCT02210780"
    assert r.outcome_type == om["type"]
    assert r.outcome_title == om["title"]
    assert r.time_frame == om["timeFrame"]
    assert r.units == om["unitOfMeasure"]
    assert r.param_type == om["paramType"]
    assert r.group_title == group["title"]
    assert r.value == float(meas["value"])
    assert r.value_raw == meas["value"]
    assert r.n == int(denom["value"])


def test_class_level_denoms_override_outcome_denoms() -> None:
    study = load("NCT02210780")
    oms = study["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"]
    idx, om = next(
        (i, om) for i, om in enumerate(oms) if any("denoms" in c for c in om.get("classes", []))
    )
    cls = next(c for c in om["classes"] if "denoms" in c)
    count = cls["denoms"][0]["counts"][0]
    outer = next(c for c in om["denoms"][0]["counts"] if c["groupId"] == count["groupId"])
    assert count["value"] != outer["value"]  # the fixture really differs

    out = parse_results(study)["outcomes"]
    rows = out[
        (out.outcome_index == idx + 1)
        & (out.class_title == cls.get("title"))
        & (out.group_id == count["groupId"])
    ]
    assert len(rows) >= 1
    assert (rows.n == int(count["value"])).all()


def test_range_dispersion_limits_and_class_titles() -> None:
    study = load("NCT00763412")
    oms = study["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"]
    om = next(o for o in oms if o.get("dispersionType") == "Full Range")
    meas = om["classes"][0]["categories"][0]["measurements"][0]
    out = parse_results(study)["outcomes"]
    r = out[
        (out.outcome_title == om["title"])
        & (out.group_id == meas["groupId"])
        & (out.class_title.fillna("") == om["classes"][0].get("title", ""))
    ].iloc[0]
    assert r.dispersion_type == "Full Range"
    assert r.lower_limit == float(meas["lowerLimit"])
    assert r.upper_limit == float(meas["upperLimit"])
    assert math.isnan(r.dispersion_value)


@pytest.mark.parametrize("nct", ["NCT00763412", "NCT02210780", "NCT02278341", "NCT05594173"])
def test_one_outcome_row_per_measurement(nct: str) -> None:
    study = load(nct)
    tables = parse_results(study)
    assert set(tables) == set(TABLES)
    assert len(tables["outcomes"]) == n_measurements(study)
    for name, df in tables.items():
        assert list(df.columns) == TABLES[name]


def test_analyses() -> None:
    study = load("NCT02210780")
    oms = study["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"]
    idx, om = next((i, om) for i, om in enumerate(oms) if om.get("analyses"))
    a = om["analyses"][0]
    df = parse_results(study)["analyses"]
    assert len(df) == sum(len(o.get("analyses", [])) for o in oms)
    r = df[df.outcome_index == idx + 1].iloc[0]
    assert r.outcome_title == om["title"]
    assert r.group_ids == ",".join(a["groupIds"])
    assert r.param_type == a["paramType"]
    assert r.param_value == float(a["paramValue"])
    assert r.ci_low == float(a["ciLowerLimit"])
    assert r.ci_high == float(a["ciUpperLimit"])
    assert r.p_value == a["pValue"]
    assert r.statistical_method == a["statisticalMethod"]


def test_adverse_events() -> None:
    study = load("NCT02210780")
    ae = study["resultsSection"]["adverseEventsModule"]
    ev = ae["seriousEvents"][0]
    st = ev["stats"][1]
    group_title = next(g["title"] for g in ae["eventGroups"] if g["id"] == st["groupId"])
    df = parse_results(study)["adverse_events"]
    assert len(df) == sum(
        len(e["stats"]) for e in ae.get("seriousEvents", []) + ae.get("otherEvents", [])
    )
    r = df[
        (df.event_type == "serious") & (df.term == ev["term"]) & (df.group_id == st["groupId"])
    ].iloc[0]
    assert r.organ_system == ev["organSystem"]
    assert r.group_title == group_title
    assert r.num_affected == st["numAffected"]
    assert r.num_at_risk == st["numAtRisk"]
    assert set(df.event_type) == {"serious", "other"}


def test_participant_flow_and_baseline() -> None:
    study = load("NCT02210780")
    res = study["resultsSection"]
    period = res["participantFlowModule"]["periods"][0]
    started = next(m for m in period["milestones"] if m["type"] == "STARTED")
    ach = started["achievements"][0]
    tables = parse_results(study)
    flow = tables["participant_flow"]
    r = flow[(flow.type == "STARTED") & (flow.group_id == ach["groupId"])].iloc[0]
    assert r.kind == "milestone"
    assert r.period == period["title"]
    assert r.num_subjects == int(ach["numSubjects"])
    drop = period["dropWithdraws"][0]
    d = flow[
        (flow.kind == "drop_withdraw")
        & (flow.type == drop["type"])
        & (flow.group_id == drop["reasons"][0]["groupId"])
    ]
    assert d.iloc[0].num_subjects == int(drop["reasons"][0]["numSubjects"])

    bl = res["baselineCharacteristicsModule"]
    measure = next(
        m
        for m in bl["measures"]
        if any(c.get("title") for cls in m["classes"] for c in cls["categories"])
    )
    cat = next(c for c in measure["classes"][0]["categories"] if c.get("title"))
    meas = cat["measurements"][0]
    total = next(c for c in bl["denoms"][0]["counts"] if c["groupId"] == meas["groupId"])
    base = tables["baseline"]
    r = base[
        (base.measure_title == measure["title"])
        & (base.category_title == cat["title"])
        & (base.group_id == meas["groupId"])
    ].iloc[0]
    assert r.value == float(meas["value"])
    assert r.n == int(total["value"])


def test_study_without_results_gives_empty_tables() -> None:
    study = load("NCT00465816")
    assert "resultsSection" not in study
    tables = parse_results(study)
    assert all(df.empty for df in tables.values())
    assert list(tables["outcomes"].columns) == TABLES["outcomes"]


def test_bad_input() -> None:
    with pytest.raises(AnalysisError, match="study object"):
        parse_results([1, 2])  # type: ignore[arg-type]
    with pytest.raises(AnalysisError, match="resultsSection"):
        parse_results(
            {"protocolSection": {"identificationModule": {"nctId": "NCT1"}}, "resultsSection": [1]}
        )


# ------------------------------------------------------------------ store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import celltrials
    from celltrials.ingest import ingest_paths

    db = celltrials.open(str(tmp_path_factory.mktemp("store") / "t.duckdb"))
    ingest_paths(db, [FIXTURES])
    yield db
    db.close()


def test_results_for_store_matches_the_file(store: Any) -> None:
    got = results_for_store(store, "NCT02210780")
    want = parse_results(load("NCT02210780"))
    for name in TABLES:
        pd.testing.assert_frame_equal(got[name], want[name])
    # a bare DuckDB connection works too
    got = results_for_store(store.con, "nct02210780")
    assert len(got["outcomes"]) == n_measurements(load("NCT02210780"))


def test_results_for_store_unknown_trial(store: Any) -> None:
    with pytest.raises(AnalysisError, match="NCT99999999"):
        results_for_store(store, "NCT99999999")


def test_export_outcomes(store: Any, tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    n = export_outcomes(store, path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == EXPORT_COLUMNS
    assert len(rows) == n
    # one row per measurement of each distinct trial with results (two fixture files
    # hold versions of NCT02552212 with the same results)
    files = ["NCT00763412", "NCT02210780", "NCT02552212", "NCT05594173"]
    assert n == sum(n_measurements(load(f)) for f in files)
    assert {r["trial"] for r in rows} == set(files)

    study = load("NCT02210780")
    om = study["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"][0]
    meas = om["classes"][0]["categories"][0]["measurements"][0]
    group = next(g for g in om["groups"] if g["id"] == meas["groupId"])
    denom = next(c for c in om["denoms"][0]["counts"] if c["groupId"] == meas["groupId"])
    hit = [
        r
        for r in rows
        if r["trial"] == "NCT02210780"
        and r["outcome title"] == om["title"]
        and r["group"] == group["title"]
    ]
    assert len(hit) == 1
    assert hit[0]["value"] == meas["value"]
    assert hit[0]["n"] == denom["value"]
    assert hit[0]["time frame"] == om["timeFrame"]
    assert hit[0]["units"] == om["unitOfMeasure"]


# ------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    import celltrials
    from celltrials.ingest import ingest_paths

    path = str(tmp_path_factory.mktemp("clistore") / "c.duckdb")
    with celltrials.open(path) as db:
        ingest_paths(db, [FIXTURES])
    return path


def test_cli_results_json_equals_library(db_path: str) -> None:
    from click.testing import CliRunner

    from celltrials.analysis.results import tables_to_records
    from celltrials.cli import cli

    result = CliRunner().invoke(cli, ["--db", db_path, "results", "NCT02210780", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got == tables_to_records(parse_results(load("NCT02210780")))
    assert got["outcomes"][0]["n"] == int(
        load("NCT02210780")["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"][0][
            "denoms"
        ][0]["counts"][0]["value"]
    )


def test_cli_results_tables_and_export(db_path: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from celltrials.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["--db", db_path, "results", "NCT02210780"])
    assert result.exit_code == 0, result.output
    title = load("NCT02210780")["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"][0][
        "title"
    ]
    assert "[primary]" in result.output
    assert "83.7" in result.output and "Placebo qw" in result.output
    assert "Adverse events" in result.output and title.split()[0] in result.output

    result = runner.invoke(cli, ["--db", db_path, "results", "NCT00465816"])
    assert result.exit_code == 0 and "no results posted" in result.output

    out = tmp_path / "all.csv"
    result = runner.invoke(cli, ["--db", db_path, "results", "--export", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    with out.open(newline="", encoding="utf-8") as fh:
        assert summary == {"path": str(out), "rows": len(list(csv.DictReader(fh)))}

    result = runner.invoke(cli, ["--db", db_path, "results"])
    assert isinstance(result.exception, AnalysisError)
