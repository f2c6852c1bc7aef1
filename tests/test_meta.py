"""Tests for ``celltrials meta``: published metafor values (dat.bcg) and closed forms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from celltrials.analysis.meta import effect_sizes, fit, meta_analysis, meta_analysis_csv
from celltrials.analysis.plots_meta import write_plots
from celltrials.cli import cli
from celltrials.errors import AnalysisError

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
BCG = DATA / "dat_bcg.csv"
BCG_COLS = ["--col", "ai=tpos", "--col", "bi=tneg", "--col", "ci=cpos", "--col", "di=cneg"]
BCG_MAP = {"ai": "tpos", "bi": "tneg", "ci": "cpos", "di": "cneg"}
Z = stats.norm.ppf(0.975)


def run_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["meta", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def write_csv(tmp_path: Path, rows: dict[str, list], name: str = "in.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def fe_pool(y: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    w = 1 / v
    return float((w * y).sum() / w.sum()), math.sqrt(1 / w.sum())


def dl_tau2(y: np.ndarray, v: np.ndarray) -> float:
    w = 1 / v
    mu = (w * y).sum() / w.sum()
    q = (w * (y - mu) ** 2).sum()
    c = w.sum() - (w**2).sum() / w.sum()
    return max(0.0, float((q - (len(y) - 1)) / c))


# ------------------------------------------------------------ published: metafor dat.bcg


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (
            "REML",
            {
                "estimate": -0.7145,
                "se": 0.1798,
                "ci_low": -1.0669,
                "ci_high": -0.3622,
                "tau2": 0.3132,
                "q": 152.2330,
            },
        ),
        ("DL", {"estimate": -0.7141, "se": 0.1787, "tau2": 0.3088, "q": 152.2330}),
        ("FE", {"estimate": -0.4303, "se": 0.0405, "tau2": 0.0, "q": 152.2330}),
    ],
)
def test_bcg_published_values_through_cli(method: str, expected: dict[str, float]) -> None:
    out = run_json(str(BCG), "--measure", "RR", "--method", method, *BCG_COLS)
    assert out["k"] == 13
    assert out["q_df"] == 12
    for key, value in expected.items():
        assert round(out[key], 4) == value, key
    if method == "REML":
        assert round(out["i2"], 2) == 92.22
        assert round(out["h2"], 2) == 12.86
    # back-transformed = exp of the analysis scale
    assert out["back_transformed"]["estimate"] == pytest.approx(math.exp(out["estimate"]))


def test_bcg_knapp_hartung_closed_form() -> None:
    # Knapp-Hartung on dat.bcg: the REML tau² is the published 0.3132; SE and CI then
    # follow in closed form from the log risk ratios computed here from the counts.
    out = run_json(str(BCG), "--measure", "RR", "--test", "knha", *BCG_COLS)
    assert round(out["tau2"], 4) == 0.3132
    d = pd.read_csv(BCG)
    y = np.log((d.tpos / (d.tpos + d.tneg)) / (d.cpos / (d.cpos + d.cneg))).to_numpy()
    v = (1 / d.tpos - 1 / (d.tpos + d.tneg) + 1 / d.cpos - 1 / (d.cpos + d.cneg)).to_numpy()
    w = 1 / (v + out["tau2"])
    mu = (w * y).sum() / w.sum()
    k = len(y)
    se = math.sqrt((w * (y - mu) ** 2).sum() / ((k - 1) * w.sum()))
    t = stats.t.ppf(0.975, k - 1)
    assert out["estimate"] == pytest.approx(mu, rel=1e-10)
    assert out["se"] == pytest.approx(se, rel=1e-10)
    assert out["ci_low"] == pytest.approx(mu - t * se, rel=1e-10)
    assert out["ci_high"] == pytest.approx(mu + t * se, rel=1e-10)


def test_cli_json_equals_library() -> None:
    lib = meta_analysis_csv(BCG, "RR", method="REML", columns=BCG_MAP, leave_one_out=True)
    out = run_json(str(BCG), "--measure", "RR", *BCG_COLS, "--leave-one-out")
    assert out == lib
    for key in (
        "measure",
        "method",
        "k",
        "estimate",
        "se",
        "ci_low",
        "ci_high",
        "pi_low",
        "pi_high",
        "tau2",
        "i2",
        "h2",
        "q",
        "q_df",
        "q_p",
        "back_transformed",
    ):
        assert key in out
    assert set(out["back_transformed"]) >= {"estimate", "ci_low", "ci_high"}


def test_cli_rich_output() -> None:
    result = CliRunner().invoke(cli, ["meta", str(BCG), "--measure", "RR", *BCG_COLS])
    assert result.exit_code == 0, result.output
    assert "-0.7145" in result.output
    assert "152.2330" in result.output


# ------------------------------------------------------------ effect sizes, closed forms

TWO_BY_TWO = {
    "study": ["A", "B", "C"],
    "ai": [12, 5, 30],
    "bi": [88, 45, 170],
    "ci": [20, 9, 41],
    "di": [80, 41, 159],
}


def _arrays() -> tuple[np.ndarray, ...]:
    return tuple(np.array(TWO_BY_TWO[c], dtype=float) for c in ("ai", "bi", "ci", "di"))


def test_rr_closed_form_and_fe_pooling(tmp_path: Path) -> None:
    a, b, c, d = _arrays()
    n1, n2 = a + b, c + d
    y = np.log(a / n1) - np.log(c / n2)
    v = 1 / a - 1 / n1 + 1 / c - 1 / n2
    out = run_json(str(write_csv(tmp_path, TWO_BY_TWO)), "--measure", "RR", "--method", "FE")
    assert [s["yi"] for s in out["studies"]] == pytest.approx(y.tolist(), rel=1e-12)
    assert [s["vi"] for s in out["studies"]] == pytest.approx(v.tolist(), rel=1e-12)
    mu, se = fe_pool(y, v)
    assert out["estimate"] == pytest.approx(mu, rel=1e-12)
    assert out["se"] == pytest.approx(se, rel=1e-12)
    assert out["ci_low"] == pytest.approx(mu - Z * se, rel=1e-12)
    assert out["back_transformed"]["ci_high"] == pytest.approx(math.exp(mu + Z * se), rel=1e-12)
    w = 1 / v
    q = float((w * (y - mu) ** 2).sum())
    assert out["q"] == pytest.approx(q, rel=1e-12)
    assert out["i2"] == pytest.approx(max(0.0, 100 * (q - 2) / q), abs=1e-10)
    assert out["q_p"] == pytest.approx(math.exp(-q / 2), rel=1e-9)  # chi2 sf with 2 df
    assert [s["study"] for s in out["studies"]] == ["A", "B", "C"]


def test_or_and_dl_closed_form(tmp_path: Path) -> None:
    a, b, c, d = _arrays()
    y = np.log(a * d / (b * c))
    v = 1 / a + 1 / b + 1 / c + 1 / d
    out = run_json(str(write_csv(tmp_path, TWO_BY_TWO)), "--measure", "OR", "--method", "DL")
    assert [s["yi"] for s in out["studies"]] == pytest.approx(y.tolist(), rel=1e-12)
    tau2 = dl_tau2(y, v)
    assert out["tau2"] == pytest.approx(tau2, abs=1e-12)
    mu, se = fe_pool(y, v + tau2)
    assert out["estimate"] == pytest.approx(mu, rel=1e-12)
    assert out["pi_low"] == pytest.approx(mu - Z * math.sqrt(se**2 + tau2), rel=1e-12)


def test_dl_positive_tau2_closed_form() -> None:
    y = np.array([0.1, 0.9, -0.4, 0.5])
    v = np.array([0.04, 0.05, 0.03, 0.06])
    res = fit(y, v, method="DL")
    tau2 = dl_tau2(y, v)
    assert tau2 > 0
    assert res["tau2"] == pytest.approx(tau2, rel=1e-12)
    # for DL, I² from tau² equals the Q-based (Q - df) / Q
    assert res["i2"] == pytest.approx(100 * (res["q"] - 3) / res["q"], rel=1e-10)
    assert res["h2"] == pytest.approx(res["q"] / 3, rel=1e-10)


def test_rd_and_events_totals_form(tmp_path: Path) -> None:
    a, b, c, d = _arrays()
    n1, n2 = a + b, c + d
    p1, p2 = a / n1, c / n2
    out = run_json(str(write_csv(tmp_path, TWO_BY_TWO)), "--measure", "RD", "--method", "FE")
    assert [s["yi"] for s in out["studies"]] == pytest.approx((p1 - p2).tolist(), rel=1e-12)
    assert [s["vi"] for s in out["studies"]] == pytest.approx(
        (p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2).tolist(), rel=1e-12
    )
    assert out["back_transformed"] is None
    totals = {
        "study": TWO_BY_TWO["study"],
        "ev_t": TWO_BY_TWO["ai"],
        "n_t": n1.astype(int).tolist(),
        "ev_c": TWO_BY_TWO["ci"],
        "n_c": n2.astype(int).tolist(),
    }
    path = write_csv(tmp_path, totals, "totals.csv")
    out2 = run_json(
        str(path),
        "--measure",
        "RD",
        "--method",
        "FE",
        "--col",
        "ai=ev_t",
        "--col",
        "n1i=n_t",
        "--col",
        "ci=ev_c",
        "--col",
        "n2i=n_c",
    )
    assert out2["estimate"] == pytest.approx(out["estimate"], rel=1e-12)


def test_md_closed_form(tmp_path: Path) -> None:
    rows = {
        "m1i": [10.0, 12.5],
        "sd1i": [2.0, 3.0],
        "n1i": [20, 35],
        "m2i": [8.0, 11.0],
        "sd2i": [2.5, 2.0],
        "n2i": [22, 30],
    }
    out = run_json(str(write_csv(tmp_path, rows)), "--measure", "MD", "--method", "FE")
    y = np.array([2.0, 1.5])
    v = np.array([4 / 20 + 6.25 / 22, 9 / 35 + 4 / 30])
    mu, se = fe_pool(y, v)
    assert out["estimate"] == pytest.approx(mu, rel=1e-12)
    assert out["se"] == pytest.approx(se, rel=1e-12)


def test_smd_hedges_g_exact_correction(tmp_path: Path) -> None:
    rows = {
        "m1i": [10.0, 12.5, 7.0],
        "sd1i": [2.0, 3.0, 1.5],
        "n1i": [6, 35, 10],
        "m2i": [8.0, 11.0, 7.5],
        "sd2i": [2.5, 2.0, 1.0],
        "n2i": [5, 30, 12],
    }
    out = run_json(str(write_csv(tmp_path, rows)), "--measure", "SMD", "--method", "FE")
    for i, s in enumerate(out["studies"]):
        n1, n2 = rows["n1i"][i], rows["n2i"][i]
        m = n1 + n2 - 2
        sp = math.sqrt(((n1 - 1) * rows["sd1i"][i] ** 2 + (n2 - 1) * rows["sd2i"][i] ** 2) / m)
        j = math.gamma(m / 2) / (math.sqrt(m / 2) * math.gamma((m - 1) / 2))
        g = j * (rows["m1i"][i] - rows["m2i"][i]) / sp
        assert s["yi"] == pytest.approx(g, rel=1e-12)
        assert s["vi"] == pytest.approx(1 / n1 + 1 / n2 + g**2 / (2 * (n1 + n2)), rel=1e-12)
    # the exact correction differs from the 1 - 3/(4m - 1) approximation for small samples
    assert out["studies"][0]["yi"] != pytest.approx(
        (1 - 3 / (4 * 9 - 1)) * 2 / math.sqrt((5 * 4 + 4 * 6.25) / 9), rel=1e-6
    )


def test_plo_pr_single_arm(tmp_path: Path) -> None:
    rows = {"xi": [12, 30, 7], "ni": [40, 80, 35]}
    path = write_csv(tmp_path, rows)
    x, n = np.array(rows["xi"], float), np.array(rows["ni"], float)
    out = run_json(str(path), "--measure", "PLO", "--method", "FE")
    y, v = np.log(x / (n - x)), 1 / x + 1 / (n - x)
    mu, se = fe_pool(y, v)
    assert out["estimate"] == pytest.approx(mu, rel=1e-12)
    assert out["back_transformed"]["estimate"] == pytest.approx(1 / (1 + math.exp(-mu)), rel=1e-12)
    assert out["back_transformed"]["ci_low"] == pytest.approx(
        1 / (1 + math.exp(-(mu - Z * se))), rel=1e-12
    )
    out = run_json(str(path), "--measure", "PR", "--method", "FE")
    p = x / n
    mu, se = fe_pool(p, p * (1 - p) / n)
    assert out["estimate"] == pytest.approx(mu, rel=1e-12)
    assert out["back_transformed"] is None


def test_gen_vi_and_sei_agree(tmp_path: Path) -> None:
    y, se = [0.2, -0.1, 0.4, 0.05], [0.1, 0.2, 0.15, 0.12]
    a = run_json(str(write_csv(tmp_path, {"yi": y, "sei": se}, "a.csv")), "--measure", "GEN")
    b = run_json(
        str(write_csv(tmp_path, {"yi": y, "vi": [s**2 for s in se]}, "b.csv")), "--measure", "GEN"
    )
    assert a["estimate"] == pytest.approx(b["estimate"], rel=1e-10)
    assert a["tau2"] == pytest.approx(b["tau2"], rel=1e-8, abs=1e-12)


# ------------------------------------------------------------ tau² estimators, KNHA


def test_equal_variance_closed_forms_reml_ml_pm() -> None:
    # with equal v, REML = PM = DL = S/(k-1) - v and ML = S/k - v  (S = sum (y - ybar)²)
    y = np.array([0.3, -0.2, 0.8, 0.1, 0.5, -0.4])
    v = np.full(6, 0.02)
    s = float(((y - y.mean()) ** 2).sum())
    assert fit(y, v, method="REML")["tau2"] == pytest.approx(s / 5 - 0.02, rel=1e-9)
    assert fit(y, v, method="PM")["tau2"] == pytest.approx(s / 5 - 0.02, rel=1e-6)
    assert fit(y, v, method="DL")["tau2"] == pytest.approx(s / 5 - 0.02, rel=1e-12)
    assert fit(y, v, method="ML")["tau2"] == pytest.approx(s / 6 - 0.02, rel=1e-9)
    # homogeneous data: tau² truncated at 0
    assert fit(np.array([0.1, 0.11, 0.09]), np.full(3, 1.0), method="REML")["tau2"] == 0.0


def test_knapp_hartung_closed_form(tmp_path: Path) -> None:
    y = np.array([0.1, 0.9, -0.4, 0.5])
    v = np.array([0.04, 0.05, 0.03, 0.06])
    out = run_json(
        str(write_csv(tmp_path, {"yi": y, "vi": v})),
        "--measure",
        "GEN",
        "--method",
        "DL",
        "--test",
        "knha",
    )
    tau2 = dl_tau2(y, v)
    w = 1 / (v + tau2)
    mu = (w * y).sum() / w.sum()
    se = math.sqrt((w * (y - mu) ** 2).sum() / (3 * w.sum()))
    t = stats.t.ppf(0.975, 3)
    assert out["se"] == pytest.approx(se, rel=1e-10)
    assert out["ci_low"] == pytest.approx(mu - t * se, rel=1e-10)
    assert out["pi_high"] == pytest.approx(mu + t * math.sqrt(se**2 + tau2), rel=1e-10)
    assert out["p"] == pytest.approx(2 * stats.t.sf(abs(mu / se), 3), rel=1e-8)


# ------------------------------------------------------------ subgroups, leave-one-out, Egger


def test_subgroups_fixed_effect_partition_of_q(tmp_path: Path) -> None:
    rows = {
        "study": list("ABCDEF"),
        "yi": [0.1, 0.3, 0.2, 0.9, 1.1, 0.7],
        "vi": [0.02, 0.03, 0.04, 0.05, 0.02, 0.03],
        "arm": ["x", "x", "x", "y", "y", "y"],
    }
    out = run_json(
        str(write_csv(tmp_path, rows)), "--measure", "GEN", "--method", "FE", "--by", "arm"
    )
    sg = out["subgroups"]
    y, v = np.array(rows["yi"]), np.array(rows["vi"])
    for g, sl in (("x", slice(0, 3)), ("y", slice(3, 6))):
        group = next(gr for gr in sg["groups"] if gr["group"] == g)
        assert group["estimate"] == pytest.approx(fe_pool(y[sl], v[sl])[0], rel=1e-12)
    # fixed effect: Q_total = Q_within(x) + Q_within(y) + Q_between
    q_within = sum(gr["q"] for gr in sg["groups"])
    assert sg["q_between"] == pytest.approx(out["q"] - q_within, rel=1e-10)
    assert sg["q_between_df"] == 1
    assert sg["q_between_p"] == pytest.approx(stats.chi2.sf(sg["q_between"], 1), rel=1e-12)
    assert [s["group"] for s in out["studies"]] == rows["arm"]


def test_leave_one_out(tmp_path: Path) -> None:
    y = np.array([0.1, 0.9, -0.4, 0.5])
    v = np.array([0.04, 0.05, 0.03, 0.06])
    out = run_json(
        str(write_csv(tmp_path, {"study": list("ABCD"), "yi": y, "vi": v})),
        "--measure",
        "GEN",
        "--method",
        "DL",
        "--leave-one-out",
    )
    assert [r["omitted"] for r in out["leave_one_out"]] == list("ABCD")
    for i, row in enumerate(out["leave_one_out"]):
        keep = np.arange(4) != i
        tau2 = dl_tau2(y[keep], v[keep])
        mu, _ = fe_pool(y[keep], v[keep] + tau2)
        assert row["k"] == 3
        assert row["tau2"] == pytest.approx(tau2, abs=1e-12)
        assert row["estimate"] == pytest.approx(mu, rel=1e-12)


def test_egger_closed_form() -> None:
    data = pd.DataFrame(
        {"yi": [0.5, 0.3, 0.9, 0.1, 0.7, 0.2], "sei": [0.3, 0.15, 0.4, 0.1, 0.35, 0.12]}
    )
    out = meta_analysis(data, "GEN")
    se = data["sei"].to_numpy()
    zs, prec = data["yi"].to_numpy() / se, 1 / se
    x = np.column_stack([np.ones(6), prec])
    beta = np.linalg.solve(x.T @ x, x.T @ zs)
    resid = zs - x @ beta
    sigma2 = (resid @ resid) / 4
    se_b0 = math.sqrt(sigma2 * np.linalg.inv(x.T @ x)[0, 0])
    e = out["egger"]
    assert e["intercept"] == pytest.approx(beta[0], rel=1e-10)
    assert e["se"] == pytest.approx(se_b0, rel=1e-10)
    assert e["df"] == 4
    assert e["p"] == pytest.approx(2 * stats.t.sf(abs(beta[0] / se_b0), 4), rel=1e-8)


# ------------------------------------------------------------ zero cells and bad input


def test_zero_cell_continuity_correction_only_for_that_study(tmp_path: Path) -> None:
    rows = {"study": ["Z", "N"], "ai": [0, 6], "bi": [20, 14], "ci": [3, 4], "di": [17, 16]}
    out = run_json(str(write_csv(tmp_path, rows)), "--measure", "OR", "--method", "FE")
    z, n = out["studies"]
    assert z["yi"] == pytest.approx(math.log(0.5 * 17.5 / (20.5 * 3.5)), rel=1e-12)
    assert z["vi"] == pytest.approx(1 / 0.5 + 1 / 20.5 + 1 / 3.5 + 1 / 17.5, rel=1e-12)
    assert n["yi"] == pytest.approx(math.log(6 * 16 / (14 * 4)), rel=1e-12)  # untouched
    assert out["continuity_corrected"] == ["Z"]
    out = run_json(str(write_csv(tmp_path, rows)), "--measure", "RR", "--method", "FE")
    assert out["studies"][0]["yi"] == pytest.approx(math.log((0.5 / 21) / (3.5 / 21)), rel=1e-12)
    assert out["studies"][1]["yi"] == pytest.approx(math.log((6 / 20) / (4 / 20)), rel=1e-12)


def _error(args: list[str]) -> AnalysisError:
    result = CliRunner().invoke(cli, ["meta", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, AnalysisError), result.output
    return result.exception


def test_missing_columns(tmp_path: Path) -> None:
    err = _error([str(write_csv(tmp_path, {"ai": [1, 2], "bi": [3, 4]})), "--measure", "RR"])
    assert "ci" in err.message and "di" in err.message and "missing" in err.message
    err = _error([str(BCG), "--measure", "RR", "--col", "ai=tpos"])
    assert "missing" in err.message


def test_non_numeric_cell_names_row_and_column(tmp_path: Path) -> None:
    rows = {"yi": ["0.1", "0.2", "abc"], "vi": ["0.01", "0.02", "0.03"]}
    err = _error([str(write_csv(tmp_path, rows)), "--measure", "GEN"])
    assert "row 3" in err.message and "'yi'" in err.message and "abc" in err.message
    rows = {"yi": ["0.1", "", "0.3"], "vi": ["0.01", "0.02", "0.03"]}
    err = _error([str(write_csv(tmp_path, rows)), "--measure", "GEN"])
    assert "row 2" in err.message and "empty" in err.message


def test_negative_variance(tmp_path: Path) -> None:
    err = _error(
        [str(write_csv(tmp_path, {"yi": [0.1, 0.2], "vi": [0.01, -0.02]})), "--measure", "GEN"]
    )
    assert "row 2" in err.message and "negative" in err.message
    err = _error(
        [str(write_csv(tmp_path, {"yi": [0.1, 0.2], "sei": [-0.1, 0.2]})), "--measure", "GEN"]
    )
    assert "row 1" in err.message and "'sei'" in err.message


def test_fewer_than_two_studies(tmp_path: Path) -> None:
    err = _error([str(write_csv(tmp_path, {"yi": [0.1], "vi": [0.01]})), "--measure", "GEN"])
    assert "at least 2 studies" in err.message


def test_other_bad_inputs(tmp_path: Path) -> None:
    err = _error(
        [
            str(write_csv(tmp_path, {"ai": [5, 2], "n1i": [4, 10], "ci": [1, 2], "n2i": [10, 10]})),
            "--measure",
            "RR",
        ]
    )
    assert "ai > n1i" in err.message
    err = _error(
        [
            str(write_csv(tmp_path, {"ai": [-1, 2], "bi": [3, 4], "ci": [1, 2], "di": [3, 3]})),
            "--measure",
            "OR",
        ]
    )
    assert "negative" in err.message
    err = _error([str(BCG), "--measure", "RR", "--col", "zz=tpos"])
    assert "unknown column role" in err.message
    err = _error([str(BCG), "--measure", "RR", *BCG_COLS, "--by", "nope"])
    assert "nope" in err.message
    err = _error([str(tmp_path / "absent.csv"), "--measure", "RR"])
    assert "no such file" in err.message
    with pytest.raises(AnalysisError, match="unknown measure"):
        effect_sizes(pd.DataFrame({"yi": ["1"]}), "XX")


def test_cli_main_prints_message_and_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from celltrials.cli import main

    path = write_csv(tmp_path, {"yi": [0.1], "vi": [0.01]})
    with pytest.raises(SystemExit) as exc:
        main(["meta", str(path), "--measure", "GEN"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "at least 2 studies" in err and "Hint:" in err


# ------------------------------------------------------------ plots


def test_plots_written(tmp_path: Path) -> None:
    out = run_json(str(BCG), "--measure", "RR", *BCG_COLS, "--plot-dir", str(tmp_path / "plots"))
    assert out["k"] == 13
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["forest.png", "forest.svg", "funnel.png", "funnel.svg"]
    assert (tmp_path / "plots" / "forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "plots" / "forest.svg").read_text()
    assert "Random-effects model (REML)" in svg and "Risk ratio" in svg


def test_plots_for_each_measure_kind(tmp_path: Path) -> None:
    for measure, rows in (
        ("PLO", {"xi": [12, 30, 0], "ni": [40, 80, 35]}),
        ("GEN", {"yi": [0.2, -0.1, 0.4], "sei": [0.1, 0.2, 0.15]}),
    ):
        res = meta_analysis(pd.DataFrame(rows).astype(str), measure, method="FE")
        paths = write_plots(res, tmp_path / measure)
        assert all(p.stat().st_size > 1000 for p in paths)


def test_json_is_strict_when_statistics_are_undefined(tmp_path: Path) -> None:
    # identical effects: Knapp–Hartung scale 0 -> undefined test statistic; subgroup of 1 -> no Q p-value
    rows = {"yi": [0.2, 0.2, 0.2], "vi": [0.01, 0.02, 0.03], "g": ["a", "a", "b"]}
    result = CliRunner().invoke(
        cli,
        [
            "meta",
            str(write_csv(tmp_path, rows)),
            "--measure",
            "GEN",
            "--test",
            "knha",
            "--by",
            "g",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(
        result.output, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")
    )
    assert out["estimate"] == pytest.approx(0.2)
    assert out["tau2"] == 0.0
    single = next(g for g in out["subgroups"]["groups"] if g["group"] == "b")
    assert single["k"] == 1 and single["q_p"] is None and single["estimate"] == pytest.approx(0.2)
