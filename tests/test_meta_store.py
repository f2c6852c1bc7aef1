"""``celltrials meta --from-store``: registry results → study rows → pooled estimate.

Stores are built from the real AACT fixtures (API v2 JSON) and the API v1
MSC archive; expected rows are read from those files with ``json``, and the
pooled Mantel–Haenszel estimates are recomputed here in closed form.
"""

from __future__ import annotations

import csv
import json
import math
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

import celltrials
from celltrials.analysis.landscape import make_filters
from celltrials.analysis.meta_store import TEMPLATES, arm_role, meta_from_store, validate_extracted
from celltrials.cli import cli
from celltrials.errors import AnalysisError
from celltrials.ingest import ingest_paths
from celltrials.store import Store

ROOT = Path(__file__).resolve().parents[1]
AACT = ROOT / ".." / "shared" / "data" / "ctgov-v2-json" / "aact-fixtures"
V1_ZIP = (
    ROOT
    / ".."
    / "shared"
    / "data-extra"
    / "ctgov-v1-studyfields"
    / "msc_studyfields_2022-10-06.zip"
)
pytestmark = pytest.mark.skipif(
    not (AACT.is_dir() and V1_ZIP.is_file()), reason="shared data not available"
)


def aact(nct: str) -> dict[str, Any]:
    return json.loads((AACT / f"{nct}.json").read_text(encoding="utf-8"))


def mh_or(rows: list[tuple[float, float, float, float]]) -> float:
    """Mantel–Haenszel OR from (ai, n1i, ci, n2i), in closed form."""
    r = s = 0.0
    for a, n1, c, n2 in rows:
        b, d, n = n1 - a, n2 - c, n1 + n2
        r += a * d / n
        s += b * c / n
    return math.log(r / s)


@pytest.fixture(scope="module")
def aact_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("aact") / "aact.duckdb"
    with celltrials.open(path) as store:
        assert ingest_paths(store, [AACT]).clean
    return path


@pytest.fixture(scope="module")
def v1_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    from celltrials.labelling import classify_store

    path = tmp_path_factory.mktemp("v1") / "v1.duckdb"
    with celltrials.open(path) as store:
        ingest_paths(store, [V1_ZIP])
        classify_store(store)
        yield store


def run_cli(db: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["--db", str(db), "meta", "--from-store", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# ------------------------------------------------------------------ AACT fixtures (API v2)


def test_sae_rows_from_aact_fixtures(aact_db: Path, tmp_path: Path) -> None:
    out = run_cli(
        aact_db,
        "--outcome",
        "serious adverse events",
        "--measure",
        "OR",
        "--method",
        "MH",
        "--all-trials",
        "--out",
        str(tmp_path),
    )
    fs = out["from_store"]
    with (tmp_path / "studies.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    # every trial with results is listed, used or not, with its record id
    with_ae = sorted(
        p.stem
        for p in AACT.glob("*.json")
        if (aact(p.stem).get("resultsSection") or {}).get("adverseEventsModule")
    )
    assert sorted(c["record_id"] for c in fs["choices"]) == [
        n for n in with_ae if n != "NCT02278341"
    ]
    by_trial = {c["trial_id"]: c for c in fs["choices"]}
    # arms as the registry names them: placebo = control, the drug = experimental, A->B left out
    # (NCT02278341 and NCT02552212 are one trial, an alias; its record is NCT02552212)
    roles = {g["title"]: g["role"] for g in by_trial["NCT02552212"]["groups"]}
    assert roles == {
        "Placebo (SS)": "control",
        "CZP 200 mg Q2W (SS)": "experimental",
        "Placebo->OL CZP (SS)": None,
        "CZP->OL CZP (SS)": None,
        "SFE OL CZP 200 mg Q2W (SS)": None,
    }
    roles = {g["title"]: g["role"] for g in by_trial["NCT00763412"]["groups"]}
    assert roles == {
        "Placebo": "control",
        "Repaglinide": "experimental",
    }  # protocol arm "2. repaglinide"
    assert by_trial["NCT05594173"]["used"] is not True  # one group of healthy participants
    # each row's counts are the sums of the listed groups' totals in the JSON
    expected = []
    for r in rows:
        groups = {
            g["title"]: g
            for g in aact(r["trial_id"])["resultsSection"]["adverseEventsModule"]["eventGroups"]
        }
        exp = r["experimental_arm"].split(" | ")
        ctl = r["control_arm"].split(" | ")
        tot = [
            sum(int(groups[t][k]) for t in arms)
            for arms in (exp, ctl)
            for k in ("seriousNumAffected", "seriousNumAtRisk")
        ]
        assert [int(r["ai"]), int(r["n1i"]), int(r["ci"]), int(r["n2i"])] == tot
        expected.append(tuple(float(x) for x in tot))
    assert len(rows) == out["k"] == fs["rows"] >= 3
    assert out["estimate"] == pytest.approx(mh_or(expected), rel=1e-12)
    # meta.json beside the CSV is the same object --json printed; the plots are there too
    assert json.loads((tmp_path / "meta.json").read_text(encoding="utf-8")) == out
    svg = (tmp_path / "forest.svg").read_text(encoding="utf-8")
    assert all(r["trial_id"] in svg for r in rows) and "Mantel–Haenszel" in svg
    assert (tmp_path / "funnel.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_json_equals_library(aact_db: Path, tmp_path: Path) -> None:
    out = run_cli(
        aact_db,
        "--outcome",
        "SAE",
        "--measure",
        "RR",
        "--method",
        "MH",
        "--all-trials",
        "--out",
        str(tmp_path / "cli"),
    )
    with celltrials.open(aact_db, read_only=True) as store:
        lib = meta_from_store(
            store,
            "SAE",
            "RR",
            method="MH",
            out_dir=tmp_path / "cli",
            filters=make_filters(scope="all"),
        )
    assert out == lib


def test_outcome_measure_percentages_and_missing(aact_db: Path, tmp_path: Path) -> None:
    # "Percentage of Participants …" (NUMBER, percent of participants) becomes counts when whole
    with celltrials.open(aact_db, read_only=True) as store:
        from celltrials.analysis.meta_store import study_rows_from_store

        table, choices, _ = study_rows_from_store(
            store, "IGA", measure="RR", filters=make_filters(scope="all")
        )
    c = next(c for c in choices if c["trial_id"] == "NCT02210780")
    om = next(
        o
        for o in aact("NCT02210780")["resultsSection"]["outcomeMeasuresModule"]["outcomeMeasures"]
        if "IGA" in o["title"]
    )
    assert c["outcome_title"] == om["title"] and c["converted"].startswith("events = round")
    vals = {
        m["groupId"]: float(m["value"]) for m in om["classes"][0]["categories"][0]["measurements"]
    }
    ns = {x["groupId"]: int(x["value"]) for x in om["denoms"][0]["counts"]}
    titles = {g["id"]: g["title"] for g in om["groups"]}
    row = table[table.trial_id == "NCT02210780"].iloc[0]
    drug = next(g for g, t in titles.items() if "Dupilumab" in t)
    assert int(row["ai"]) == round(vals[drug] * ns[drug] / 100) and int(row["n1i"]) == ns[drug]
    # a trial without such an outcome says so
    other = next(c for c in choices if c["trial_id"] == "NCT00763412")
    assert "no posted outcome measure title contains 'IGA'" in other["reason"]


def test_too_few_rows_and_extra_paper_values(aact_db: Path, tmp_path: Path) -> None:
    # BMI is posted as a mean with a full range (no SD): no usable continuous row
    result = CliRunner().invoke(
        cli,
        [
            "--db",
            str(aact_db),
            "meta",
            "--from-store",
            "--outcome",
            "BMI",
            "--measure",
            "MD",
            "--all-trials",
            "--out",
            str(tmp_path),
        ],
    )
    assert (
        isinstance(result.exception, AnalysisError)
        and "needs at least 2" in result.exception.message
    )
    # values extracted from papers fill the gap (template columns)
    extra = tmp_path / "papers.csv"
    pd.DataFrame(
        [
            {
                "study": "Smith 2020",
                "trial_id": "",
                "source": "doi:10.1000/x1",
                "outcome": "BMI",
                "time_frame": "6 mo",
                "experimental_arm": "MSC",
                "control_arm": "placebo",
                "m1i": 24.1,
                "sd1i": 3.2,
                "n1i": 20,
                "m2i": 25.0,
                "sd2i": 3.5,
                "n2i": 21,
                "notes": "",
            },
            {
                "study": "Lee 2021",
                "trial_id": "NCT00763412",
                "source": "PMID 123",
                "outcome": "BMI",
                "time_frame": "6 mo",
                "experimental_arm": "MSC",
                "control_arm": "placebo",
                "m1i": 30.2,
                "sd1i": 4.0,
                "n1i": 8,
                "m2i": 31.0,
                "sd2i": 4.4,
                "n2i": 8,
                "notes": "table 2",
            },
        ],
        columns=TEMPLATES["continuous"],
    ).to_csv(extra, index=False)
    out = run_cli(
        aact_db,
        "--outcome",
        "BMI",
        "--measure",
        "MD",
        "--method",
        "FE",
        "--all-trials",
        "--extra",
        str(extra),
        "--out",
        str(tmp_path / "ok"),
    )
    assert out["k"] == 2 and [s["study"] for s in out["studies"]] == ["Smith 2020", "Lee 2021"]
    w1, w2 = 1 / (3.2**2 / 20 + 3.5**2 / 21), 1 / (4.0**2 / 8 + 4.4**2 / 8)
    assert out["estimate"] == pytest.approx((w1 * -0.9 + w2 * -0.8) / (w1 + w2), rel=1e-9)
    used = [c for c in out["from_store"]["choices"] if c["source_format"] == "extracted"]
    assert [c["source"] for c in used] == ["doi:10.1000/x1", "PMID 123"]


def test_template_written_and_validated(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    result = CliRunner().invoke(cli, ["meta-template", "binary", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert path.read_text(encoding="utf-8").strip().split(",") == TEMPLATES["binary"]
    given = [
        {
            "study": "A",
            "source": "doi:x",
            "ai": "3",
            "n1i": "10",
            "ci": "2",
            "n2i": "10",
            "trial_id": "NCT01234567",
        },
        {
            "study": "",
            "source": "doi:y",
            "ai": "12",
            "n1i": "10",
            "ci": "x",
            "n2i": "0",
            "trial_id": "banana",
        },
    ]
    bad = pd.DataFrame([{c: r.get(c, "") for c in TEMPLATES["binary"]} for r in given])
    with pytest.raises(AnalysisError) as err:
        validate_extracted(bad, "binary", source="papers.csv")
    msg = err.value.message
    for piece in (
        "row 2 (CSV line 3), column 'study'",
        "column 'trial_id': 'banana'",
        "column 'ci': is not a number",
        "column 'n2i': must be a positive whole number",
        "column 'ai': more events (12)",
    ):
        assert piece in msg, piece
    assert "row 1" not in msg
    with pytest.raises(AnalysisError, match="missing column"):
        validate_extracted(pd.DataFrame({"study": ["a"]}), "continuous")


def test_arm_roles() -> None:
    assert arm_role("Placebo", None, {})[0] == "control"
    assert arm_role("UC-MSCs Group", None, {})[0] == "experimental"
    assert arm_role("AlloCB After Natural History", None, {})[0] is None
    assert arm_role("Cohort A", None, {"cohort a": "EXPERIMENTAL"})[0] == "experimental"
    assert arm_role("Cohort B", "saline infusion", {})[0] == "control"
    assert arm_role("Group 3", "", {})[0] is None


def test_from_store_errors(aact_db: Path, tmp_path: Path) -> None:
    for args, msg in (
        (["--from-store", "--measure", "OR", "--out", str(tmp_path)], "--outcome"),
        (
            [
                "x.csv",
                "--from-store",
                "--outcome",
                "SAE",
                "--measure",
                "OR",
                "--out",
                str(tmp_path),
            ],
            "not both",
        ),
        (["--measure", "OR"], "INPUT.csv"),
        (
            ["--from-store", "--outcome", "SAE", "--measure", "GEN", "--out", str(tmp_path)],
            "cannot build GEN",
        ),
        (
            [
                "--from-store",
                "--outcome",
                "SAE",
                "--measure",
                "OR",
                "--out",
                str(tmp_path),
                "--experimental-arm",
                "(",
            ],
            "regular expression",
        ),
    ):
        result = CliRunner().invoke(cli, ["--db", str(aact_db), "meta", *args])
        assert isinstance(result.exception, AnalysisError), (args, result.output)
        assert msg in result.exception.message


# ------------------------------------------------------------------ API v1 MSC archive (README example)


def v1_json() -> dict[str, dict[str, Any]]:
    with zipfile.ZipFile(V1_ZIP) as zf:
        docs = [json.loads(zf.read(n)) for n in zf.namelist() if n.endswith(".json")]
    return {d["NCTId"][0]: d for d in docs}


def test_msc_sae_example_matches_readme(v1_store: Store, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import sae_example
    finally:
        sys.path.pop(0)
    filters = make_filters(cell_type=["msc"])
    results = {
        m: meta_from_store(
            v1_store,
            "serious adverse events",
            "OR",
            method=m,
            out_dir=tmp_path / m,
            filters=filters,
        )
        for m in ("MH", "PETO")
    }
    mh = results["MH"]
    docs = v1_json()
    rows = []
    with open(mh["from_store"]["studies_csv"], encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            d = docs[r["trial_id"]]
            titles = d["EventGroupTitle"]
            aff = dict(zip(titles, d["EventGroupSeriousNumAffected"], strict=True))
            risk = dict(zip(titles, d["EventGroupSeriousNumAtRisk"], strict=True))
            exp, ctl = r["experimental_arm"].split(" | "), r["control_arm"].split(" | ")
            tot = (
                sum(int(aff[t]) for t in exp),
                sum(int(risk[t]) for t in exp),
                sum(int(aff[t]) for t in ctl),
                sum(int(risk[t]) for t in ctl),
            )
            assert (int(r["ai"]), int(r["n1i"]), int(r["ci"]), int(r["n2i"])) == tot
            assert "msc" in r["cell_type"].split(";")
            rows.append(tuple(float(x) for x in tot))
    assert mh["estimate"] == pytest.approx(mh_or(rows), rel=1e-12)
    # the README shows exactly what scripts/sae_example.py prints for these results
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = sae_example.markdown(results)
    assert block in readme, (
        "README's worked example is out of date: run scripts/sae_example.py --write-readme"
    )
    assert re.search(r"Mantel–Haenszel OR \d\.\d\d \(95% CI", block)
