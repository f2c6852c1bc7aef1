"""evaluate(): metrics checked against a small example computed by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from celltrials.errors import ConfigError
from celltrials.evaluate import evaluate
from tests.conftest import GOLD

COLS = [
    "registry_id",
    "is_cell_therapy",
    "cell_type",
    "msc_source",
    "origin",
    "product_form",
    "indication_group",
    "therapeutic_area",
]

GOLD_ROWS = [
    ["A", "yes", "msc", "umbilical_cord", "allogeneic", "cells", "immune_mediated", "respiratory"],
    ["B", "yes", "nk;msc", "unspecified", "unspecified", "cells", "immune_mediated", "respiratory"],
    ["C", "no", "", "", "", "", "other", "infectious"],
    ["D", "yes", "car_t", "", "autologous", "cells", "oncology", "hematologic_malignancy"],
]
PRED_ROWS = [
    ["A", "yes", "msc", "umbilical_cord", "allogeneic", "cells", "immune_mediated", "respiratory"],
    ["B", "yes", "msc", "unspecified", "unspecified", "cells", "degenerative", "respiratory"],
    ["C", "yes", "msc", "unspecified", "unspecified", "cells", "other", "infectious"],
    # D is missing: scored as is_cell_therapy = no with empty labels
]


@pytest.fixture()
def result() -> dict:
    gold = pd.DataFrame(GOLD_ROWS, columns=COLS)
    pred = pd.DataFrame(PRED_ROWS, columns=COLS)
    ev = {
        "B": [
            {
                "field": "indication_group",
                "value": "degenerative",
                "source_field": "conditions[0]",
                "text": "Pneumonia",
                "start": 0,
                "end": 9,
            }
        ]
    }
    return evaluate(pred, gold, evidence=ev)


@pytest.mark.unit
def test_is_cell_therapy_by_hand(result: dict) -> None:
    # gold yes = A,B,D; predicted yes = A,B,C (D missing → no): TP 2, FP 1, FN 1
    ict = result["is_cell_therapy"]
    assert (ict["tp"], ict["fp"], ict["fn"]) == (2, 1, 1)
    assert ict["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert ict["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert ict["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert ict["accuracy"] == 0.5  # A, B right; C, D wrong
    assert result["missing"] == ["D"]
    assert result["n_gold"] == 4 and result["n_matched"] == 3


@pytest.mark.unit
def test_product_fields_over_gold_positive_rows(result: dict) -> None:
    # cell_type over A, B, D: A right; B {msc} vs {msc, nk}; D {} vs {car_t}
    acc = result["accuracy"]["cell_type"]
    assert (acc["correct"], acc["n"]) == (1, 3)
    pv = result["per_value"]["cell_type"]
    assert (pv["msc"]["tp"], pv["msc"]["fp"], pv["msc"]["fn"]) == (2, 0, 0)
    assert pv["nk"]["f1"] == 0.0 and pv["nk"]["fn"] == 1
    assert pv["car_t"]["f1"] == 0.0
    assert result["macro_f1"]["cell_type"] == pytest.approx(1 / 3, abs=1e-4)
    # C (gold no) is not scored for msc_source: A, B right, D '' vs '' right
    assert result["accuracy"]["msc_source"] == {"accuracy": 1.0, "correct": 3, "n": 3}


@pytest.mark.unit
def test_indication_over_all_rows(result: dict) -> None:
    acc = result["accuracy"]["indication_group"]
    assert (acc["correct"], acc["n"]) == (2, 4)
    pv = result["per_value"]["indication_group"]
    assert pv["immune_mediated"]["precision"] == 1.0
    assert pv["immune_mediated"]["recall"] == 0.5
    assert pv["immune_mediated"]["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert pv["degenerative"]["fp"] == 1 and pv["degenerative"]["f1"] == 0.0
    assert pv["other"]["f1"] == 1.0
    # (2/3 + 0 + 1 + 0) / 4
    assert result["macro_f1"]["indication_group"] == pytest.approx((2 / 3 + 1) / 4, abs=1e-4)


@pytest.mark.unit
def test_disagreements_carry_evidence(result: dict) -> None:
    d = [
        x
        for x in result["disagreements"]
        if x["registry_id"] == "B" and x["field"] == "indication_group"
    ]
    assert d == [
        {
            "registry_id": "B",
            "field": "indication_group",
            "predicted": "degenerative",
            "gold": "immune_mediated",
            "note": "",
            "evidence": [
                {
                    "field": "indication_group",
                    "value": "degenerative",
                    "source_field": "conditions[0]",
                    "text": "Pneumonia",
                    "start": 0,
                    "end": 9,
                }
            ],
        }
    ]
    # multi-valued fields are compared as sets: order in the cell does not matter
    assert not [x for x in result["disagreements"] if x["registry_id"] == "A"]


@pytest.mark.unit
def test_reads_csv_files_and_checks_columns(tmp_path: Path) -> None:
    g = tmp_path / "g.csv"
    pd.DataFrame(GOLD_ROWS, columns=COLS).to_csv(g, index=False)
    same = evaluate(g, g)
    assert same["is_cell_therapy"]["f1"] == 1.0
    assert all(v["accuracy"] == 1.0 for v in same["accuracy"].values())
    bad = tmp_path / "bad.csv"
    pd.DataFrame([["A", "yes"]], columns=["registry_id", "is_cell_therapy"]).to_csv(
        bad, index=False
    )
    with pytest.raises(ConfigError, match="lacks column"):
        evaluate(bad, g)
    with pytest.raises(ConfigError, match="not found"):
        evaluate(tmp_path / "nope.csv", g)


def test_gold_file_scores_perfectly_against_itself() -> None:
    r = evaluate(GOLD / "dev.csv", GOLD / "dev.csv")
    assert r["is_cell_therapy"]["f1"] == 1.0
    assert r["accuracy"]["cell_type"]["n"] == sum(
        1
        for x in pd.read_csv(GOLD / "dev.csv", dtype=str, keep_default_na=False).to_dict("records")
        if x["is_cell_therapy"] == "yes"
    )
    assert not r["disagreements"]
