"""``celltrials meta`` against metafor's published numbers (round 2).

Every expected number names its source:

* metafor documentation examples (pkgdown pages ``docs/reference/*.html`` of
  github.com/wviechtb/metafor, version 5.1-12, i.e. the output printed by
  ``example(rma.mh)``, ``example(rma.peto)``, ``example(rma.uni)``,
  ``example(confint.rma)``, ``example(update.rma)``, ``example(pairmat)``,
  ``example(regplot)``);
* metafor's test suite (``tests/testthat/test_*.r`` in the same repository),
  which checks at a relative tolerance of 0.01 (``settings.r``).

Datasets are metadat's (github.com/wviechtb/metadat ``data-raw/*.txt``)
written as CSV in ``tests/data`` (see ``tests/data/README.md``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from celltrials.analysis.meta import meta_analysis, meta_analysis_csv, read_table
from celltrials.cli import cli
from celltrials.errors import AnalysisError

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
BCG = DATA / "dat_bcg.csv"
BCG_COLS = ["--col", "ai=tpos", "--col", "bi=tneg", "--col", "ci=cpos", "--col", "di=cneg"]
BCG_MAP = {"ai": "tpos", "bi": "tneg", "ci": "cpos", "di": "cneg"}
METAFOR_TOL = 0.01  # metafor's own test tolerance (tests/testthat/settings.r)


def run_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["meta", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def r4(x: float) -> float:
    return round(x, 4)


# ------------------------------------------------------------------ Mantel–Haenszel and Peto


def test_mh_or_bcg_published() -> None:
    # docs/reference/rma.mh.html: rma.mh(measure="OR", ai=tpos, bi=tneg, ci=cpos, di=cneg, data=dat.bcg)
    out = run_json(str(BCG), "--measure", "OR", "--method", "MH", *BCG_COLS)
    assert (r4(out["estimate"]), r4(out["se"]), r4(out["stat"])) == (-0.4734, 0.0410, -11.5444)
    assert (r4(out["ci_low"]), r4(out["ci_high"])) == (-0.5538, -0.3930)
    bt = out["back_transformed"]
    assert (r4(bt["estimate"]), r4(bt["ci_low"]), r4(bt["ci_high"])) == (0.6229, 0.5748, 0.6750)
    assert (r4(out["q"]), out["q_df"]) == (163.9426, 12)
    assert (round(out["i2"], 2), round(out["h2"], 2)) == (92.68, 13.66)
    assert r4(out["cmh"]) == 135.6889
    assert (r4(out["tarone"]), out["tarone_df"]) == (171.7567, 12)
    assert out["tau2"] == 0.0 and out["tau2_ci_low"] is None
    assert out["drop00"] is True and out["continuity_corrected"] == []


def test_mh_rr_and_rd_bcg_published() -> None:
    # docs/reference/rma.mh.html (RR) and tests/testthat/test_misc_metan_vs_rma.mh_with_dat.bcg.r (RR, RD)
    out = run_json(str(BCG), "--measure", "RR", "--method", "MH", *BCG_COLS)
    assert (r4(out["estimate"]), r4(out["se"]), r4(out["stat"])) == (-0.4537, 0.0393, -11.5338)
    assert (r4(out["q"]), round(out["i2"], 2), round(out["h2"], 2)) == (152.5676, 92.13, 12.71)
    bt = out["back_transformed"]
    assert (r4(bt["estimate"]), r4(bt["ci_low"]), r4(bt["ci_high"])) == (0.6353, 0.5881, 0.6862)
    out = run_json(str(BCG), "--measure", "RD", "--method", "MH", *BCG_COLS)
    assert (r4(out["estimate"]), r4(out["ci_low"]), r4(out["ci_high"])) == (
        -0.0033,
        -0.0039,
        -0.0027,
    )
    assert (r4(out["stat"]), r4(out["q"])) == (-11.4708, 386.7759)


def test_peto_bcg_published() -> None:
    # docs/reference/rma.peto.html: rma.peto(ai=tpos, bi=tneg, ci=cpos, di=cneg, data=dat.bcg)
    out = run_json(str(BCG), "--measure", "OR", "--method", "PETO", *BCG_COLS)
    assert (r4(out["estimate"]), r4(out["se"]), r4(out["stat"])) == (-0.4744, 0.0407, -11.6689)
    assert (r4(out["ci_low"]), r4(out["ci_high"])) == (-0.5541, -0.3948)
    assert (r4(out["q"]), round(out["i2"], 2), round(out["h2"], 2)) == (167.7302, 92.85, 13.98)
    bt = out["back_transformed"]
    assert (r4(bt["estimate"]), r4(bt["ci_low"]), r4(bt["ci_high"])) == (0.6222, 0.5746, 0.6738)


def test_peto_yusuf1985_sparse_table6() -> None:
    # tests/testthat/test_analysis_example_yusuf1985.r: rma.peto(..., subset=(table=="6")) gives
    # OR .9332 [.7385, 1.1792] (Yusuf et al. 1985, p. 107). Table 6 has three double-zero trials
    # (Pitt, Hutton, Yusuf); metafor's rma.peto drops them from the heterogeneity test (drop00).
    # The "Snow 1" row of metadat's table 6 is NA in every count and is not in the CSV.
    out = run_json(
        str(DATA / "dat_yusuf1985_table6.csv"),
        "--measure",
        "OR",
        "--method",
        "PETO",
        "--label",
        "trial",
    )
    bt = out["back_transformed"]
    assert (r4(bt["estimate"]), r4(bt["ci_low"]), r4(bt["ci_high"])) == (0.9332, 0.7385, 1.1792)
    assert out["dropped_00"] == ["Pitt", "Hutton", "Yusuf"]
    assert out["k"] == 21 and out["q_df"] == 17
    # every trial (also the 0/0 ones) gets a Peto weight = V_i / sum V; 0/0 trials have V = 0
    df = pd.read_csv(DATA / "dat_yusuf1985_table6.csv")
    xt, n1, n2 = df.ai + df.ci, df.n1i, df.n2i
    n = n1 + n2
    var = xt * (n - xt) * n1 * n2 / (n**2 * (n - 1))
    assert [s["weight"] for s in out["studies"]] == pytest.approx(
        (100 * var / var.sum()).tolist(), rel=1e-10
    )


def test_drop00_nielweise2007() -> None:
    # tests/testthat/test_analysis_example_stijnen2010.r: rma(measure="OR", ..., drop00=TRUE) on
    # dat.nielweise2007 gives -0.9804 (SE 0.2435), tau 0.1886, OR .3752 [.2328, .6046]
    # (Stijnen et al. 2010, Table III). Yucel 2004 has 0/118 vs 0/105 and is dropped.
    path = str(DATA / "dat_nielweise2007.csv")
    out = run_json(path, "--measure", "OR", "--drop00", "--label", "author")
    assert (r4(out["estimate"]), r4(out["se"]), r4(math.sqrt(out["tau2"]))) == (
        -0.9804,
        0.2435,
        0.1886,
    )
    bt = out["back_transformed"]
    assert (r4(bt["estimate"]), r4(bt["ci_low"]), r4(bt["ci_high"])) == (0.3752, 0.2328, 0.6046)
    assert out["k"] == 17 and out["dropped_00"] == ["Yucel"]
    yucel = next(s for s in out["studies"] if s["study"] == "Yucel")
    assert yucel["yi"] is None and yucel["weight"] == 0.0
    # without drop00 (escalc's default) the double-zero study stays with +0.5: the issue's -0.960
    keep = run_json(path, "--measure", "OR", "--label", "author")
    assert keep["k"] == 18 and round(keep["estimate"], 3) == -0.960


def test_continuity_options_closed_form(tmp_path: Path) -> None:
    rows = {
        "study": ["Z", "N", "D"],
        "ai": [0, 6, 0],
        "bi": [20, 14, 10],
        "ci": [3, 4, 0],
        "di": [17, 16, 12],
    }
    path = tmp_path / "z.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    # --to all --add 1: every cell of every study gets 1
    out = run_json(
        str(path), "--measure", "OR", "--method", "FE", "--add", "1", "--to", "all", "--keep00"
    )
    a, b, c, d = (np.array(rows[k], float) + 1 for k in ("ai", "bi", "ci", "di"))
    assert [s["yi"] for s in out["studies"]] == pytest.approx(
        np.log(a * d / (b * c)).tolist(), rel=1e-12
    )
    assert out["continuity_corrected"] == ["Z", "N", "D"]
    # --to if0all: all studies corrected because one has a zero; D dropped with --drop00
    out = run_json(str(path), "--measure", "OR", "--method", "FE", "--to", "if0all", "--drop00")
    assert out["dropped_00"] == ["D"] and out["continuity_corrected"] == ["Z", "N"]
    assert out["studies"][1]["yi"] == pytest.approx(math.log(6.5 * 16.5 / (14.5 * 4.5)), rel=1e-12)
    # --to none with a zero cell: the log OR is undefined, named
    result = CliRunner().invoke(cli, ["meta", str(path), "--measure", "OR", "--to", "none"])
    assert result.exit_code != 0 and isinstance(result.exception, AnalysisError)
    assert "row 1" in result.exception.message and "undefined" in result.exception.message


def test_mh_raw_counts_closed_form(tmp_path: Path) -> None:
    # MH OR = sum(a d / n) / sum(b c / n) on the uncorrected counts, also with a zero cell
    rows = {"ai": [0, 6, 3], "bi": [20, 14, 27], "ci": [3, 4, 5], "di": [17, 16, 25]}
    path = tmp_path / "mh.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    a, b, c, d = (np.array(rows[k], float) for k in ("ai", "bi", "ci", "di"))
    n = a + b + c + d
    out = run_json(str(path), "--measure", "OR", "--method", "MH")
    assert out["estimate"] == pytest.approx(
        math.log((a * d / n).sum() / (b * c / n).sum()), rel=1e-12
    )
    assert out["continuity_corrected"] == ["Study 1"]  # only the per-study value shown/used for Q


def test_sparse_method_errors(tmp_path: Path) -> None:
    for args, msg in (
        (["--measure", "SMD", "--method", "MH"], "MH works with"),
        (["--measure", "RR", "--method", "PETO"], "--measure OR"),
        (["--measure", "OR", "--method", "MH", "--test", "knha"], "knha"),
        (["--measure", "OR", "--method", "PETO", "--mods", "ablat"], "--mods"),
    ):
        result = CliRunner().invoke(cli, ["meta", str(BCG), *BCG_COLS, *args])
        assert result.exit_code != 0 and isinstance(result.exception, AnalysisError), args
        assert msg in result.exception.message


# ------------------------------------------------------------------ tau² uncertainty


def test_tau2_qprofile_ci_bcg_reml_published() -> None:
    # docs/reference/confint.rma.html: confint(rma(yi, vi, data=dat, method="REML")) on dat.bcg (log RR):
    # tau^2 0.3132 [0.1197, 1.1115]; I^2 92.2214 [81.9177, 97.6781]; H^2 12.8558 [5.5303, 43.0680]
    # and docs/reference/rma.uni.html: tau^2 0.3132 (SE = 0.1664).
    out = run_json(str(BCG), "--measure", "RR", *BCG_COLS)
    assert (r4(out["tau2"]), r4(out["tau2_se"])) == (0.3132, 0.1664)
    assert (r4(out["tau2_ci_low"]), r4(out["tau2_ci_high"])) == (0.1197, 1.1115)
    assert out["tau2_ci_method"] == "Q-profile"
    assert r4(out["i2"]) == 92.2214 and r4(out["h2"]) == 12.8558
    # metafor finds the bounds with uniroot(tol = .Machine$double.eps^0.25 ≈ 1.2e-4); the exact roots
    # differ from its printed I²/H² bounds in the 3rd decimal, so these use a 1e-3 relative tolerance
    assert out["i2_ci_low"] == pytest.approx(81.9177, rel=1e-3)
    assert out["i2_ci_high"] == pytest.approx(97.6781, rel=1e-3)
    assert out["h2_ci_low"] == pytest.approx(5.5303, rel=1e-3)
    assert out["h2_ci_high"] == pytest.approx(43.0680, rel=1e-3)


def test_tau2_qprofile_ci_dl_and_mods_published() -> None:
    # tests/testthat/test_misc_confint.r: DL on dat.bcg, tau^2 0.3088 [0.1197, 1.1115], I^2 92.1173
    out = run_json(str(BCG), "--measure", "RR", "--method", "DL", *BCG_COLS)
    assert (r4(out["tau2"]), r4(out["tau2_ci_low"]), r4(out["tau2_ci_high"]), r4(out["i2"])) == (
        0.3088,
        0.1197,
        1.1115,
        92.1173,
    )
    # docs/reference/confint.rma.html: mods = ~ ablat, tau^2 0.0764 [0.0167, 0.7849], I^2 [32.1080, 95.6976]
    out = run_json(str(BCG), "--measure", "RR", "--mods", "ablat", *BCG_COLS)
    reg = out["meta_regression"]
    assert r4(reg["tau2"]) == 0.0764
    assert reg["tau2_ci_low"] == pytest.approx(0.0167, abs=1e-4)
    assert reg["tau2_ci_high"] == pytest.approx(0.7849, abs=1.5e-4)  # uniroot tolerance, see above
    assert reg["i2_ci_low"] == pytest.approx(32.1080, rel=1e-3)
    assert reg["i2_ci_high"] == pytest.approx(95.6976, rel=1e-3)


def test_tau2_se_viechtbauer2005() -> None:
    # tests/testthat/test_analysis_example_viechtbauer2005.r, example 1 (Viechtbauer 2005, p. 271)
    data = pd.DataFrame(
        {
            "yi": [-0.581, 0.530, 0.771, 1.031, 0.553, 0.295, 0.078, 0.573, -0.176, -0.232],
            "vi": [0.023, 0.052, 0.060, 0.115, 0.095, 0.203, 0.200, 0.211, 0.051, 0.040],
        }
    ).astype(str)
    expected = {
        "DL": (0.2768, 80.4447, 5.1137, 0.1841),
        "ML": (0.1967, 74.5098, 3.9231, 0.1255),
        "REML": (0.2232, 76.8399, 4.3178, 0.1464),
    }
    for method, (tau2, i2, h2, se) in expected.items():
        out = meta_analysis(data, "GEN", method=method)
        assert (r4(out["tau2"]), r4(out["i2"]), r4(out["h2"]), r4(out["tau2_se"])) == (
            tau2,
            i2,
            h2,
            se,
        ), method


def test_tau2_profile_likelihood_collins1985b() -> None:
    # tests/testthat/test_analysis_example_viechtbauer2007a.r (Viechtbauer 2007a, Table II):
    # tau^2 DL .2297, ML .2386, REML .3008; Q-profile CI (DL) [.0723, 2.2027];
    # profile-likelihood CI ML [.0266, 1.1308], REML [.0427, 1.4747]
    cols = {"ai": "pre.xti", "n1i": "pre.nti", "ci": "pre.xci", "n2i": "pre.nci"}
    path = DATA / "dat_collins1985b.csv"
    dl = meta_analysis_csv(path, "OR", method="DL", columns=cols)
    assert (r4(dl["tau2"]), r4(dl["tau2_ci_low"]), r4(dl["tau2_ci_high"])) == (
        0.2297,
        0.0723,
        2.2027,
    )
    ml = meta_analysis_csv(path, "OR", method="ML", columns=cols, tau2_ci="PL")
    assert r4(ml["tau2"]) == 0.2386 and ml["tau2_ci_method"] == "profile likelihood"
    assert ml["tau2_ci_low"] == pytest.approx(0.0266, abs=1.5e-4)  # uniroot tolerance
    assert r4(ml["tau2_ci_high"]) == 1.1308
    reml = meta_analysis_csv(path, "OR", method="REML", columns=cols, tau2_ci="PL")
    assert (r4(reml["tau2"]), r4(reml["tau2_ci_low"]), r4(reml["tau2_ci_high"])) == (
        0.3008,
        0.0427,
        1.4747,
    )
    with pytest.raises(AnalysisError, match="profile-likelihood"):
        meta_analysis_csv(path, "OR", method="DL", columns=cols, tau2_ci="PL")


def test_tau2_ci_null_when_homogeneous() -> None:
    data = pd.DataFrame({"yi": [0.1, 0.1001, 0.0999], "vi": [1.0, 1.0, 1.0]}).astype(str)
    out = meta_analysis(data, "GEN", method="REML")
    assert out["tau2"] == 0.0 and out["tau2_ci_low"] == 0.0 and out["tau2_ci_high"] == 0.0
    fe = meta_analysis(data, "GEN", method="FE")
    assert fe["tau2_se"] is None and fe["tau2_ci_low"] is None


# ------------------------------------------------------------------ meta-regression


COEF_KEYS = {"name", "estimate", "se", "ci_low", "ci_high", "stat", "p"}


def test_metareg_ablat_year_published() -> None:
    # docs/reference/rma.uni.html: rma(yi, vi, mods = ~ ablat + year, data=dat) on dat.bcg (log RR)
    out = run_json(str(BCG), "--measure", "RR", "--mods", "ablat,year", *BCG_COLS)
    coefs = out["coefficients"]
    assert [c["name"] for c in coefs] == ["intercept", "ablat", "year"]
    assert all(set(c) == COEF_KEYS for c in coefs)
    expected = [
        (-3.5455, 29.0959, -0.1219, 0.9030, -60.5724, 53.4814),
        (-0.0280, 0.0102, -2.7371, 0.0062, -0.0481, -0.0080),
        (0.0019, 0.0147, 0.1299, 0.8966, -0.0269, 0.0307),
    ]
    for c, exp in zip(coefs, expected, strict=True):
        assert (
            tuple(r4(c[k]) for k in ("estimate", "se", "stat", "p", "ci_low", "ci_high")) == exp
        ), c["name"]
    assert (r4(out["qm"]), out["qm_df"], r4(out["qm_p"])) == (12.2043, 2, 0.0022)
    assert (r4(out["qe"]), out["qe_df"], r4(out["qe_p"])) == (28.3251, 10, 0.0016)
    assert round(out["r2"], 2) == 64.63
    reg = out["meta_regression"]
    assert (r4(reg["tau2"]), r4(reg["tau2_se"]), round(reg["i2"], 2), round(reg["h2"], 2)) == (
        0.1108,
        0.0845,
        71.98,
        3.57,
    )
    # the pooled (intercept-only) model is unchanged at the top level
    assert r4(out["estimate"]) == -0.7145


def test_metareg_ablat_reml_and_ml_published() -> None:
    # docs/reference/update.rma.html: mods = ~ ablat, REML: tau^2 0.076 (SE 0.059), I^2 68.39%, H^2 3.16,
    # R^2 75.62%, QE(11) = 30.733, QM(1) = 16.357; intrcpt 0.251 (0.249), ablat -0.029 (0.007).
    # ML: tau^2 0.034 (SE 0.028), I^2 49.33%, R^2 87.73%, QM 28.911; intrcpt 0.282 (0.187), ablat -0.030.
    # (4-decimal tau^2 0.0764 and SE 0.0591: docs/reference/confint.rma.html and metafor's print.)
    out = run_json(str(BCG), "--measure", "RR", "--mods", "ablat", *BCG_COLS)
    reg = out["meta_regression"]
    assert (r4(reg["tau2"]), round(reg["i2"], 2), round(reg["h2"], 2), round(out["r2"], 2)) == (
        0.0764,
        68.39,
        3.16,
        75.62,
    )
    assert round(reg["tau2_se"], 3) == 0.059
    assert (round(out["qe"], 3), round(out["qm"], 3)) == (30.733, 16.357)
    assert [(round(c["estimate"], 3), round(c["se"], 3)) for c in out["coefficients"]] == [
        (0.251, 0.249),
        (-0.029, 0.007),
    ]
    ml = run_json(str(BCG), "--measure", "RR", "--mods", "ablat", "--method", "ML", *BCG_COLS)
    reg = ml["meta_regression"]
    assert (
        round(reg["tau2"], 3),
        round(reg["tau2_se"], 3),
        round(reg["i2"], 2),
        round(ml["r2"], 2),
    ) == (0.034, 0.028, 49.33, 87.73)
    assert round(ml["qm"], 3) == 28.911
    assert [(round(c["estimate"], 3), round(c["se"], 3)) for c in ml["coefficients"]] == [
        (0.282, 0.187),
        (-0.030, 0.005),
    ]


def test_metareg_categorical_dummy_coding_published() -> None:
    # docs/reference/rma.uni.html: rma(yi, vi, mods = ~ alloc + year + ablat, data=dat) (alternate = reference)
    out = run_json(str(BCG), "--measure", "RR", "--mods", "alloc,year,ablat", *BCG_COLS)
    names = [c["name"] for c in out["coefficients"]]
    assert names == ["intercept", "alloc=random", "alloc=systematic", "year", "ablat"]
    coding = out["meta_regression"]["coding"]["alloc"]
    assert coding["reference"] == "alternate" and coding["dummies"] == [
        "alloc=random",
        "alloc=systematic",
    ]
    expected = [
        (-14.4984, 38.3943),
        (-0.3421, 0.4180),
        (0.0101, 0.4467),
        (0.0075, 0.0194),
        (-0.0236, 0.0132),
    ]
    assert [(r4(c["estimate"]), r4(c["se"])) for c in out["coefficients"]] == expected
    reg = out["meta_regression"]
    assert (
        r4(reg["tau2"]),
        r4(reg["tau2_se"]),
        round(out["r2"], 2),
        r4(out["qe"]),
        out["qe_df"],
    ) == (0.1796, 0.1425, 42.67, 26.2030, 8)


def test_metareg_knapp_hartung_f_published() -> None:
    # tests/testthat/test_misc_anova.r: rma(yi, vi, mods = ~ ablat + alloc, test="knha"):
    # anova(res, btt=2) F = 8.2194, p = 0.0186 — a single coefficient's F is its t²
    out = run_json(
        str(BCG), "--measure", "RR", "--mods", "ablat,alloc", "--test", "knha", *BCG_COLS
    )
    ablat = next(c for c in out["coefficients"] if c["name"] == "ablat")
    assert ablat["stat"] ** 2 == pytest.approx(8.2194, abs=1e-4)
    assert ablat["p"] == pytest.approx(0.0186, abs=1e-4)
    reg = out["meta_regression"]
    assert reg["qm_test"] == "F" and out["qm_df"] == 3 and reg["qm_df2"] == 9
    # the omnibus F with (3, 9) df is what its p-value says
    from scipy import stats

    assert out["qm_p"] == pytest.approx(stats.f.sf(out["qm"], 3, 9), rel=1e-12)


def test_subgroups_common_tau2_published() -> None:
    # docs/reference/pairmat.html: rma(yi, vi, mods = ~ 0 + alloc) on dat.bcg: tau^2 0.3615 (SE 0.2111);
    # alternate -0.5180 [-1.3827, 0.3468], random -0.9658 [-1.4896, -0.4420], systematic -0.4289
    # [-1.1050, 0.2472]; docs/reference/regplot.html: mods = ~ alloc, QM(df = 2) = 1.7675, p = 0.4132
    out = run_json(str(BCG), "--measure", "RR", "--by", "alloc", "--by-tau2", "common", *BCG_COLS)
    sg = out["subgroups"]
    assert sg["tau2_model"] == "common" and r4(sg["tau2_common"]) == 0.3615
    got = {g["group"]: (r4(g["estimate"]), r4(g["ci_low"]), r4(g["ci_high"])) for g in sg["groups"]}
    assert got == {
        "alternate": (-0.5180, -1.3827, 0.3468),
        "random": (-0.9658, -1.4896, -0.4420),
        "systematic": (-0.4289, -1.1050, 0.2472),
    }
    assert (r4(sg["q_between"]), sg["q_between_df"], r4(sg["q_between_p"])) == (1.7675, 2, 0.4132)
    separate = run_json(str(BCG), "--measure", "RR", "--by", "alloc", *BCG_COLS)["subgroups"]
    assert separate["tau2_model"] == "separate" and separate["tau2_common"] is None
    fixed = run_json(str(BCG), "--measure", "OR", "--method", "MH", "--by", "alloc", *BCG_COLS)[
        "subgroups"
    ]
    assert fixed["tau2_model"] == "fixed effect (no tau²)"
    result = CliRunner().invoke(
        cli,
        [
            "meta",
            str(BCG),
            "--measure",
            "OR",
            "--method",
            "MH",
            "--by",
            "alloc",
            "--by-tau2",
            "common",
            *BCG_COLS,
        ],
    )
    assert isinstance(result.exception, AnalysisError) and "--by-tau2 separate" in (
        result.exception.hint or ""
    )


def test_metareg_bad_input(tmp_path: Path) -> None:
    df = read_table(BCG)
    df.loc[3, "ablat"] = ""
    path = tmp_path / "bcg.csv"
    df.to_csv(path, index=False)
    result = CliRunner().invoke(
        cli, ["meta", str(path), "--measure", "RR", "--mods", "ablat", *BCG_COLS]
    )
    assert isinstance(result.exception, AnalysisError)
    assert "row 4" in result.exception.message and "'ablat'" in result.exception.message
    for mods, msg in (("nope", "not in the input"), ("ablat,ablat", "collinear")):
        result = CliRunner().invoke(
            cli, ["meta", str(BCG), "--measure", "RR", "--mods", mods, *BCG_COLS]
        )
        assert isinstance(result.exception, AnalysisError) and msg in result.exception.message
    result = CliRunner().invoke(
        cli, ["meta", str(BCG), "--measure", "RR", "--mods", "alloc:num", *BCG_COLS]
    )
    assert (
        isinstance(result.exception, AnalysisError) and "not a number" in result.exception.message
    )


def test_cli_json_equals_library_round2() -> None:
    lib = meta_analysis_csv(
        BCG,
        "RR",
        columns=BCG_MAP,
        mods="ablat,alloc",
        by="alloc",
        by_tau2="common",
        test="knha",
        leave_one_out=True,
    )
    out = run_json(
        str(BCG),
        "--measure",
        "RR",
        *BCG_COLS,
        "--mods",
        "ablat,alloc",
        "--by",
        "alloc",
        "--by-tau2",
        "common",
        "--test",
        "knha",
        "--leave-one-out",
    )
    assert out == lib
    for key in (
        "tau2_ci_low",
        "tau2_ci_high",
        "i2_ci_low",
        "i2_ci_high",
        "h2_ci_low",
        "h2_ci_high",
        "tau2_se",
        "coefficients",
        "qm",
        "qm_df",
        "qm_p",
        "qe",
        "qe_df",
        "qe_p",
        "r2",
    ):
        assert key in out
    mh = meta_analysis_csv(BCG, "OR", method="MH", columns=BCG_MAP)
    assert run_json(str(BCG), "--measure", "OR", "--method", "MH", *BCG_COLS) == mh


def test_cli_rich_output_round2() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "meta",
            str(BCG),
            "--measure",
            "RR",
            *BCG_COLS,
            "--mods",
            "alloc,ablat",
            "--label",
            "author",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "reference level 'alternate'" in result.output and "QM(3)" in result.output
    assert "0.1197" in result.output  # tau² CI
    result = CliRunner().invoke(
        cli, ["meta", str(BCG), "--measure", "OR", "--method", "MH", *BCG_COLS]
    )
    assert result.exit_code == 0 and "135.6889" in result.output and "171.7567" in result.output


# ------------------------------------------------------------------ more measures


def test_irln_irr_nielweise2008_published() -> None:
    # tests/testthat/test_analysis_example_stijnen2010.r (Stijnen et al. 2010, Tables VII, VIII);
    # person-time per 1000 days as in that test
    df = read_table(DATA / "dat_nielweise2008.csv")
    df["t2k"] = (df["t2i"].astype(float) / 1000).astype(str)
    out = meta_analysis(df, "IRLN", columns={"xi": "x2i", "ti": "t2k"})
    assert (r4(out["estimate"]), r4(out["se"]), r4(out["tau2"])) == (1.4676, 0.2425, 0.3699)
    bt = out["back_transformed"]
    assert (r4(bt["estimate"]), r4(bt["ci_low"]), r4(bt["ci_high"])) == (4.3389, 2.6973, 6.9795)
    out = meta_analysis(df, "IRR")
    assert (r4(out["estimate"]), r4(out["se"]), r4(math.sqrt(out["tau2"]))) == (
        -0.3963,
        0.2268,
        0.3060,
    )
    bt = out["back_transformed"]
    assert (r4(bt["estimate"]), r4(bt["ci_low"]), r4(bt["ci_high"])) == (0.6728, 0.4314, 1.0494)


def test_mh_irr_closed_form() -> None:
    df = read_table(DATA / "dat_nielweise2008.csv")
    x1, t1, x2, t2 = (df[c].astype(float).to_numpy() for c in ("x1i", "t1i", "x2i", "t2i"))
    tt = t1 + t2
    r, s = (x1 * t2 / tt).sum(), (x2 * t1 / tt).sum()
    out = meta_analysis(df, "IRR", method="MH")
    assert out["estimate"] == pytest.approx(math.log(r / s), rel=1e-12)
    assert out["se"] == pytest.approx(
        math.sqrt((t1 / tt * t2 / tt * (x1 + x2)).sum() / (r * s)), rel=1e-12
    )


def test_zcor_rom_smdh_pft_closed_forms(tmp_path: Path) -> None:
    # metafor escalc (R/escalc.r, 5.1-12): ZCOR atanh(r), 1/(n-3); ROM with its default bias correction;
    # SMDH (Bonett); PFT 1/2(asin sqrt(x/(n+1)) + asin sqrt((x+1)/(n+1))), 1/(4n+2)
    cor = meta_analysis(
        pd.DataFrame({"ri": [0.3, 0.5, 0.1], "ni": [40, 25, 100]}).astype(str), "ZCOR", method="FE"
    )
    assert [s["yi"] for s in cor["studies"]] == pytest.approx(
        [math.atanh(0.3), math.atanh(0.5), math.atanh(0.1)]
    )
    assert [s["vi"] for s in cor["studies"]] == pytest.approx([1 / 37, 1 / 22, 1 / 97])
    assert cor["back_transformed"]["estimate"] == pytest.approx(math.tanh(cor["estimate"]))
    means = {
        "m1i": [10.0, 12.0],
        "sd1i": [2.0, 3.0],
        "n1i": [20, 30],
        "m2i": [8.0, 11.0],
        "sd2i": [2.5, 2.0],
        "n2i": [22, 28],
    }
    rom = meta_analysis(pd.DataFrame(means).astype(str), "ROM", method="FE")
    smdh = meta_analysis(pd.DataFrame(means).astype(str), "SMDH", method="FE")
    for i in range(2):
        m1, s1, n1, m2, s2, n2 = (means[k][i] for k in ("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"))
        assert rom["studies"][i]["yi"] == pytest.approx(
            math.log(m1 / m2) + 0.5 * (s1**2 / (n1 * m1**2) - s2**2 / (n2 * m2**2)), rel=1e-12
        )
        assert rom["studies"][i]["vi"] == pytest.approx(
            s1**2 / (n1 * m1**2) + s2**2 / (n2 * m2**2), rel=1e-12
        )
        m = n1 + n2 - 2
        cm = math.gamma(m / 2) / (math.sqrt(m / 2) * math.gamma((m - 1) / 2))
        sdp = math.sqrt((s1**2 + s2**2) / 2)
        g = cm * (m1 - m2) / sdp
        assert smdh["studies"][i]["yi"] == pytest.approx(g, rel=1e-12)
        v = (
            g**2 * (s1**4 / (n1 - 1) + s2**4 / (n2 - 1)) / (8 * sdp**4)
            + (s1**2 / (n1 - 1) + s2**2 / (n2 - 1)) / sdp**2
        )
        assert smdh["studies"][i]["vi"] == pytest.approx(v, rel=1e-12)
    assert rom["back_transformed"]["estimate"] == pytest.approx(math.exp(rom["estimate"]))
    props = {"xi": [0, 5, 12], "ni": [20, 40, 30]}
    pft = meta_analysis(pd.DataFrame(props).astype(str), "PFT", method="FE")
    for i, (x, n) in enumerate(zip(props["xi"], props["ni"], strict=True)):
        assert pft["studies"][i]["yi"] == pytest.approx(
            0.5 * (math.asin(math.sqrt(x / (n + 1))) + math.asin(math.sqrt((x + 1) / (n + 1)))),
            rel=1e-12,
        )
        assert pft["studies"][i]["vi"] == pytest.approx(1 / (4 * n + 2), rel=1e-12)
    assert pft["continuity_corrected"] == []  # the double arcsine needs no correction
    # back-transformation (Miller 1978) with the harmonic mean of ni; it inverts the transform exactly
    # for a study of that size: p = x/n maps back to itself
    hm = 3 / (1 / 20 + 1 / 40 + 1 / 30)
    assert pft["pft_harmonic_n"] == pytest.approx(hm)
    from celltrials.analysis.meta import back_transform

    n = 40.0
    y = 0.5 * (math.asin(math.sqrt(10 / (n + 1))) + math.asin(math.sqrt(11 / (n + 1))))
    assert back_transform("PFT", y, n) == pytest.approx(10 / 40, abs=2e-3)


def test_forest_plot_subgroup_blocks(tmp_path: Path) -> None:
    out = run_json(
        str(BCG),
        "--measure",
        "RR",
        *BCG_COLS,
        "--by",
        "alloc",
        "--label",
        "author",
        "--plot-dir",
        str(tmp_path),
    )
    svg = (tmp_path / "forest.svg").read_text()
    # one block per subgroup: header, its studies, a subgroup line with its own k and I²
    for g in out["subgroups"]["groups"]:
        assert f"Subgroup (k = {g['k']}; I² = {g['i2']:.1f}%" in svg
    assert (
        svg.index("random") < svg.index("Aronson") < svg.index("alternate") < svg.index("Frimodt")
    )
    assert "Subgroup differences (separate τ² per subgroup)" in svg
    assert (tmp_path / "forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a Peto plot with double-zero trials marks them as excluded instead of failing
    run_json(
        str(DATA / "dat_yusuf1985_table6.csv"),
        "--measure",
        "OR",
        "--method",
        "PETO",
        "--label",
        "trial",
        "--plot-dir",
        str(tmp_path / "peto"),
    )
    assert "not estimable (excluded)" in (tmp_path / "peto" / "forest.svg").read_text()


def test_cli_choices_match_library() -> None:
    from celltrials.analysis import meta as lib
    from celltrials.commands import meta as cmd

    assert (cmd.MEASURES, cmd.METHODS, cmd.TO_CHOICES) == (
        lib.MEASURES,
        lib.METHODS,
        lib.TO_CHOICES,
    )
