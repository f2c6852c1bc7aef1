"""meta-analysis at the edges of double precision: absurd inputs are a clear
AnalysisError, huge-but-representable ones are computed, identical effects
raise no numpy warnings (pytest runs with filterwarnings=error)."""

from __future__ import annotations

import pandas as pd
import pytest

from celltrials.analysis.meta import meta_analysis
from celltrials.errors import AnalysisError
from tests.conftest import TESTDATA

BCG = TESTDATA / "dat_bcg.csv"
COLS = {"ai": "tpos", "bi": "tneg", "ci": "cpos", "di": "cneg"}


@pytest.mark.parametrize(
    "cells",
    [
        {"tpos": 1e308, "tneg": 1e308},
        {"tneg": 1e308, "cneg": 1e308, "cpos": 1e308},
        {"tpos": 1e308, "tneg": 1e308, "cpos": 1e308, "cneg": 1e308},
    ],
)
def test_counts_of_1e308_are_a_clear_error(cells: dict[str, float]) -> None:
    df = pd.read_csv(BCG)
    for col, v in cells.items():
        df[col] = df[col].astype(float)
        df.loc[0, col] = v
    with pytest.raises(AnalysisError, match="too large"):
        meta_analysis(df, "RR", columns=COLS)


def test_one_huge_but_representable_count_is_computed() -> None:
    import math

    df = pd.read_csv(BCG)
    df["tpos"] = df["tpos"].astype(float)
    df.loc[0, "tpos"] = 1e308  # risk 1e308 / (1e308 + 119) == 1.0 in doubles
    res = meta_analysis(df, "RR", columns=COLS, method="FE")
    assert math.isfinite(res["estimate"]) and math.isfinite(res["se"])


@pytest.mark.parametrize("method", ["FE", "DL", "REML", "PM", "ML"])
def test_effects_whose_squares_overflow_are_a_clear_error(method: str) -> None:
    df = pd.DataFrame({"yi": [1e200, -1e200, 3e200], "vi": [1e-300, 1e-300, 1.0]})
    with pytest.raises(AnalysisError, match="too large"):
        meta_analysis(df, "GEN", method=method)


def test_effects_of_1e50_are_computed() -> None:
    yi = [1e50, 2e50, 3e50, 4e50, 5e50]
    res = meta_analysis(pd.DataFrame({"yi": yi, "vi": [0.1] * 5}), "GEN", method="FE")
    assert res["estimate"] == pytest.approx(
        sum(yi) / len(yi), rel=1e-12
    )  # equal weights: the plain mean


@pytest.mark.parametrize("method", ["FE", "DL", "REML", "PM", "ML"])
@pytest.mark.parametrize("test", ["z", "knha"])
def test_identical_effects_give_no_warnings(method: str, test: str) -> None:
    res = meta_analysis(
        pd.DataFrame({"yi": [0.5] * 5, "vi": [0.1] * 5}),
        "GEN",
        method=method,
        test=test,
        leave_one_out=True,
    )
    assert res["estimate"] == pytest.approx(0.5)
    assert res["i2"] in (0.0, None) and (res["tau2"] or 0.0) == 0.0
