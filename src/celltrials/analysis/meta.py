"""Meta-analysis of study-level effect sizes (``celltrials meta``).

Glue over :mod:`statsmodels.stats.meta_analysis` (two-proportion effect sizes,
DerSimonian–Laird and Paule–Mandel τ²) and :mod:`scipy` (REML/ML τ² as roots
of the likelihood score equations, distributions). The conventions follow
R's metafor (``escalc`` + ``rma``) so that numbers can be checked against it:

* ``RR``, ``OR``, ``RD``: two-group counts ``ai, bi, ci, di`` (events and
  non-events in group 1, then group 2) or events/totals ``ai, n1i, ci, n2i``.
  Log risk ratio / log odds ratio / risk difference.
* ``MD``: raw mean difference, ``vi = sd1i²/n1i + sd2i²/n2i``.
* ``SMD``: Hedges' g with the exact bias correction
  ``c(m) = Γ(m/2) / (√(m/2) Γ((m-1)/2))``, ``m = n1i + n2i - 2``, and the
  large-sample variance ``vi = 1/n1i + 1/n2i + g²/(2(n1i + n2i))``.
* ``PLO`` (logit proportion) and ``PR`` (raw proportion): single-arm ``xi, ni``.
* ``GEN``: precomputed ``yi`` with ``vi`` or ``sei``.

Zero cells: as metafor's ``escalc`` does by default (``add=1/2, to="only0"``),
0.5 is added to all four cells of a 2×2 table that has a zero cell (RR, OR,
RD), and to the events and non-events of a single-arm study with ``xi = 0``
or ``xi = ni`` (PLO, PR). The studies so corrected are listed in the result
under ``continuity_corrected``.

Models: fixed effect (``FE``, inverse variance) or random effects with τ² by
``DL``, ``REML``, ``PM`` or ``ML``; Wald ``z`` tests or Knapp–Hartung
(``knha``: t with k-1 df and the weighted residual scale). I² and H² follow
metafor: from τ² and the "typical" within-study variance for random-effects
models, from Q for the fixed-effect model.

:func:`meta_analysis` returns a plain JSON-ready ``dict``; the CLI's
``--json`` prints exactly that object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from celltrials.errors import AnalysisError

MEASURES = ("RR", "OR", "RD", "MD", "SMD", "PLO", "PR", "GEN")
METHODS = ("FE", "DL", "REML", "PM", "ML")
TESTS = ("z", "knha")

# Accepted column sets per measure, in order of preference.
COLUMN_SETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "RR": (("ai", "bi", "ci", "di"), ("ai", "n1i", "ci", "n2i")),
    "OR": (("ai", "bi", "ci", "di"), ("ai", "n1i", "ci", "n2i")),
    "RD": (("ai", "bi", "ci", "di"), ("ai", "n1i", "ci", "n2i")),
    "MD": (("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"),),
    "SMD": (("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i"),),
    "PLO": (("xi", "ni"),),
    "PR": (("xi", "ni"),),
    "GEN": (("yi", "vi"), ("yi", "sei")),
}
CANONICAL_COLUMNS = tuple(sorted({c for sets in COLUMN_SETS.values() for s in sets for c in s}))

# How each measure is shown on its natural scale.
SCALE_LABELS = {
    "RR": "log risk ratio",
    "OR": "log odds ratio",
    "RD": "risk difference",
    "MD": "mean difference",
    "SMD": "standardized mean difference (Hedges' g)",
    "PLO": "logit proportion",
    "PR": "proportion",
    "GEN": "effect size",
}
NATURAL_LABELS = {"RR": "Risk ratio", "OR": "Odds ratio", "PLO": "Proportion"}
LABEL_CANDIDATES = ("study", "trial", "label", "author", "name", "id")
CONTINUITY = 0.5


def back_transform(measure: str, x: float) -> float:
    """Natural-scale value of an analysis-scale ``x`` (exp for RR/OR, expit for PLO)."""
    if measure in ("RR", "OR"):
        return math.exp(x)
    if measure == "PLO":
        return float(special.expit(x))
    return x


def is_transformed(measure: str) -> bool:
    return measure in ("RR", "OR", "PLO")


# --------------------------------------------------------------------------- input


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV as text (numbers are parsed later so bad cells can be named)."""
    p = Path(path)
    if not p.is_file():
        raise AnalysisError(f"{p}: no such file", hint="Pass the path of a CSV file with one row per study.")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AnalysisError(f"{p}: cannot read as CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _resolve_columns(
    df: pd.DataFrame, measure: str, columns: Mapping[str, str] | None
) -> dict[str, str]:
    """Map canonical names (ai, n1i, …) to the table's columns for the first complete set."""
    mapping = dict(columns or {})
    for key in mapping:
        if key not in CANONICAL_COLUMNS:
            raise AnalysisError(
                f"unknown column role '{key}' in --col {key}={mapping[key]}",
                hint=f"Roles are: {', '.join(CANONICAL_COLUMNS)}.",
            )
    present = set(df.columns)
    sets = COLUMN_SETS[measure]
    for wanted in sets:
        resolved = {role: mapping.get(role, role) for role in wanted}
        if all(col in present for col in resolved.values()):
            return resolved
    alternatives = " or ".join(",".join(s) for s in sets)
    first = {role: mapping.get(role, role) for role in sets[0]}
    missing = [f"{col}" + (f" (for {role})" if col != role else "") for role, col in first.items() if col not in present]
    raise AnalysisError(
        f"measure {measure} needs columns {alternatives}; missing: {', '.join(missing)} "
        f"(the file has: {', '.join(df.columns) or 'no columns'})",
        hint="Rename the columns or map them, e.g. --col ai=tpos --col bi=tneg.",
    )


def _numeric(df: pd.DataFrame, role: str, col: str) -> np.ndarray:
    out = np.empty(len(df), dtype=float)
    for i, raw in enumerate(df[col].tolist()):
        text = "" if raw is None else str(raw).strip()
        try:
            val = float(text)
        except ValueError:
            where = f"row {i + 1} (CSV line {i + 2}), column '{col}'" + (f" ({role})" if col != role else "")
            what = "is empty" if text == "" else f"is not a number: {text!r}"
            raise AnalysisError(f"{where} {what}", hint="Every effect-size cell must be a number.") from None
        if not math.isfinite(val):
            raise AnalysisError(f"row {i + 1} (CSV line {i + 2}), column '{col}' is not finite: {text!r}")
        out[i] = val
    return out


def _bad_row(mask: np.ndarray, col: str, reason: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise AnalysisError(f"row {i + 1} (CSV line {i + 2}), column '{col}': {reason}")


def effect_sizes(
    df: pd.DataFrame, measure: str, columns: Mapping[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-study ``(yi, vi, corrected)`` on the analysis scale; see the module docstring."""
    from statsmodels.stats.meta_analysis import effectsize_2proportions

    measure = measure.upper()
    if measure not in MEASURES:
        raise AnalysisError(f"unknown measure '{measure}'", hint=f"Use one of {', '.join(MEASURES)}.")
    cols = _resolve_columns(df, measure, columns)
    x = {role: _numeric(df, role, col) for role, col in cols.items()}
    corrected = np.zeros(len(df), dtype=bool)

    if measure in ("RR", "OR", "RD"):
        ai, ci = x["ai"], x["ci"]
        _bad_row(ai < 0, cols["ai"], "a count cannot be negative")
        _bad_row(ci < 0, cols["ci"], "a count cannot be negative")
        if "bi" in x:
            bi, di = x["bi"], x["di"]
            _bad_row(bi < 0, cols["bi"], "a count cannot be negative")
            _bad_row(di < 0, cols["di"], "a count cannot be negative")
            n1, n2 = ai + bi, ci + di
            _bad_row(n1 <= 0, cols["bi"], "group 1 has no participants (ai + bi = 0)")
            _bad_row(n2 <= 0, cols["di"], "group 2 has no participants (ci + di = 0)")
        else:
            n1, n2 = x["n1i"], x["n2i"]
            _bad_row(n1 <= 0, cols["n1i"], "group size must be positive")
            _bad_row(n2 <= 0, cols["n2i"], "group size must be positive")
            _bad_row(ai > n1, cols["ai"], "more events than participants (ai > n1i)")
            _bad_row(ci > n2, cols["ci"], "more events than participants (ci > n2i)")
        corrected = (ai == 0) | (ai == n1) | (ci == 0) | (ci == n2)
        stat = {"RR": "risk-ratio", "OR": "odds-ratio", "RD": "diff"}[measure]
        # The correction is applied here, not via statsmodels' ``zero_correction``:
        # statsmodels 0.14/0.15 adds it to the event counts of *every* study
        # (only the totals are masked), which is not metafor's "only0" rule.
        add = CONTINUITY * corrected
        yi, vi = effectsize_2proportions(
            ai + add, n1 + 2 * add, ci + add, n2 + 2 * add, statistic=stat, zero_correction=None
        )
        return np.asarray(yi, dtype=float), np.asarray(vi, dtype=float), corrected

    if measure in ("MD", "SMD"):
        m1, s1, n1 = x["m1i"], x["sd1i"], x["n1i"]
        m2, s2, n2 = x["m2i"], x["sd2i"], x["n2i"]
        for role in ("sd1i", "sd2i"):
            _bad_row(x[role] < 0, cols[role], "a standard deviation cannot be negative")
        for role in ("n1i", "n2i"):
            _bad_row(x[role] < (2 if measure == "SMD" else 1), cols[role], "group size too small")
        if measure == "MD":
            yi = m1 - m2
            vi = s1**2 / n1 + s2**2 / n2
        else:
            m = n1 + n2 - 2
            cm = np.exp(special.gammaln(m / 2) - np.log(np.sqrt(m / 2)) - special.gammaln((m - 1) / 2))
            sdp = np.sqrt(((n1 - 1) * s1**2 + (n2 - 1) * s2**2) / m)
            _bad_row(sdp <= 0, cols["sd1i"], "pooled standard deviation is zero")
            yi = cm * (m1 - m2) / sdp
            vi = 1 / n1 + 1 / n2 + yi**2 / (2 * (n1 + n2))
        _bad_row(vi <= 0, cols["sd1i"], "the sampling variance is zero (both SDs are 0)")
        return yi, vi, corrected

    if measure in ("PLO", "PR"):
        xi, ni = x["xi"], x["ni"]
        _bad_row(xi < 0, cols["xi"], "a count cannot be negative")
        _bad_row(ni <= 0, cols["ni"], "the number of participants must be positive")
        _bad_row(xi > ni, cols["xi"], "more events than participants (xi > ni)")
        corrected = (xi == 0) | (xi == ni)
        xc = xi + CONTINUITY * corrected
        nc = ni + 2 * CONTINUITY * corrected
        if measure == "PLO":
            yi = np.log(xc / (nc - xc))
            vi = 1 / xc + 1 / (nc - xc)
        else:
            yi = xc / nc
            vi = yi * (1 - yi) / nc
        return yi, vi, corrected

    # GEN
    yi = x["yi"]
    if "vi" in x:
        vi = x["vi"]
        _bad_row(vi < 0, cols["vi"], "a sampling variance cannot be negative")
        _bad_row(vi == 0, cols["vi"], "a sampling variance of 0 gives the study infinite weight")
    else:
        sei = x["sei"]
        _bad_row(sei < 0, cols["sei"], "a standard error cannot be negative")
        _bad_row(sei == 0, cols["sei"], "a standard error of 0 gives the study infinite weight")
        vi = sei**2
    return yi, vi, corrected


# --------------------------------------------------------------------------- models


def _tau2_likelihood(y: np.ndarray, v: np.ndarray, reml: bool) -> float:
    """ML/REML τ²: root of the (restricted) log-likelihood score, 0 if the score is ≤ 0 there."""

    def score(t2: float) -> float:
        w = 1 / (v + t2)
        mu = float(w @ y / w.sum())
        s = -0.5 * w.sum() + 0.5 * float(w**2 @ (y - mu) ** 2)
        if reml:
            s += 0.5 * float((w**2).sum() / w.sum())
        return float(s)

    if score(0.0) <= 0:
        return 0.0
    hi = max(float(np.var(y)), float(v.mean()), 1e-8)
    while score(hi) > 0:
        hi *= 2
        if hi > 1e12:
            raise AnalysisError("the between-study variance does not converge (effects are extreme)")
    return float(optimize.brentq(score, 0.0, hi, xtol=1e-14, rtol=1e-14, maxiter=500))


def _tau2(y: np.ndarray, v: np.ndarray, method: str) -> float:
    from statsmodels.stats.meta_analysis import combine_effects

    if method == "FE" or len(y) < 2:
        return 0.0
    # combine_effects also computes random-effects summaries from the untruncated
    # DL τ², which can be negative (sqrt warnings); only τ² is used here.
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "DL":
            return max(0.0, float(combine_effects(y, v, method_re="dl").tau2))
        if method == "PM":
            return max(0.0, float(combine_effects(y, v, method_re="pm", atol=1e-12, maxiter=1000).tau2))
    return _tau2_likelihood(y, v, reml=(method == "REML"))


def _clean(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def fit(
    y: Sequence[float] | np.ndarray,
    v: Sequence[float] | np.ndarray,
    *,
    method: str = "REML",
    test: str = "z",
    level: float = 0.95,
) -> dict[str, Any]:
    """Pool effects ``y`` with sampling variances ``v``; one study gives that study back."""
    y = np.asarray(y, dtype=float)
    v = np.asarray(v, dtype=float)
    k = len(y)
    tau2 = _tau2(y, v, method)
    w = 1 / (v + tau2)
    est = float(w @ y / w.sum())
    se = math.sqrt(1 / w.sum())
    wf = 1 / v
    mu_fe = float(wf @ y / wf.sum())
    q = float(wf @ (y - mu_fe) ** 2) if k > 1 else 0.0
    df = k - 1
    q_p = float(stats.chi2.sf(q, df)) if df > 0 else math.nan
    alpha = 1 - level
    if test == "knha" and df > 0:
        scale = float(w @ (y - est) ** 2) / df
        se = math.sqrt(scale / w.sum())
        crit = float(stats.t.ppf(1 - alpha / 2, df))
        stat = est / se if se > 0 else math.nan
        p = float(2 * stats.t.sf(abs(stat), df)) if se > 0 else math.nan
    else:
        crit = float(stats.norm.ppf(1 - alpha / 2))
        stat = est / se
        p = float(2 * stats.norm.sf(abs(stat)))
    if method == "FE" or k < 2:
        i2 = max(0.0, 100 * (q - df) / q) if q > 0 else 0.0
        h2 = q / df if df > 0 else math.nan
    else:
        s2 = df * wf.sum() / (wf.sum() ** 2 - (wf**2).sum())
        i2 = 100 * tau2 / (tau2 + s2)
        h2 = (tau2 + s2) / s2
    pi_half = crit * math.sqrt(se**2 + tau2)
    return {
        "k": k,
        "estimate": est,
        "se": se,
        "stat": _clean(stat),
        "p": _clean(p),
        "ci_low": est - crit * se,
        "ci_high": est + crit * se,
        "pi_low": est - pi_half,
        "pi_high": est + pi_half,
        "tau2": tau2,
        "tau": math.sqrt(tau2),
        "i2": i2,
        "h2": _clean(h2),
        "q": q,
        "q_df": df,
        "q_p": _clean(q_p),
        "weights": (100 * w / w.sum()).tolist(),
    }


def _with_back(measure: str, res: dict[str, Any]) -> dict[str, Any]:
    if is_transformed(measure):
        res["back_transformed"] = {
            key: back_transform(measure, res[key])
            for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high")
        }
    else:
        res["back_transformed"] = None
    return res


def egger_test(y: np.ndarray, v: np.ndarray) -> dict[str, Any] | None:
    """Egger's regression test: OLS of y/se on 1/se; the intercept measures asymmetry."""
    import statsmodels.api as sm

    if len(y) < 3:
        return None
    sei = np.sqrt(v)
    exog = sm.add_constant(1 / sei, has_constant="add")
    with np.errstate(divide="ignore", invalid="ignore"):  # a perfect fit has zero residual variance
        res = sm.OLS(y / sei, exog).fit()
        p = float(res.pvalues[0])
    return {
        "intercept": float(res.params[0]),
        "se": float(res.bse[0]),
        "t": float(res.tvalues[0]),
        "df": int(res.df_resid),
        "p": p,
        "slope": float(res.params[1]),
    }


def meta_analysis(
    data: pd.DataFrame,
    measure: str,
    *,
    method: str = "REML",
    test: str = "z",
    columns: Mapping[str, str] | None = None,
    label: str | None = None,
    by: str | None = None,
    leave_one_out: bool = False,
    level: float = 0.95,
) -> dict[str, Any]:
    """Meta-analyse one row per study in ``data``; returns a JSON-ready dict.

    ``columns`` maps metafor's names to the table's (``{"ai": "tpos"}``).
    Studies with a zero cell get 0.5 added to every cell (see module docstring).
    Raises :class:`AnalysisError` for missing or non-numeric columns, negative
    counts or variances, and fewer than two studies.
    """
    measure = measure.upper()
    method = method.upper()
    test = test.lower()
    if measure not in MEASURES:
        raise AnalysisError(f"unknown measure '{measure}'", hint=f"Use one of {', '.join(MEASURES)}.")
    if method not in METHODS:
        raise AnalysisError(f"unknown method '{method}'", hint=f"Use one of {', '.join(METHODS)}.")
    if test not in TESTS:
        raise AnalysisError(f"unknown test '{test}'", hint="Use z or knha.")
    if not 0 < level < 1:
        raise AnalysisError(f"confidence level {level} is not between 0 and 1", hint="Use e.g. 0.95.")
    if len(data) < 2:
        raise AnalysisError(
            f"a meta-analysis needs at least 2 studies; the input has {len(data)}",
            hint="Add more rows, one per study.",
        )
    yi, vi, corrected = effect_sizes(data, measure, columns)

    if label is not None:
        if label not in data.columns:
            raise AnalysisError(f"label column '{label}' is not in the input", hint=f"Columns: {', '.join(data.columns)}.")
        label_col: str | None = label
    else:
        label_col = next((c for c in data.columns if c.lower() in LABEL_CANDIDATES), None)
    labels = (
        [str(s).strip() or f"Study {i + 1}" for i, s in enumerate(data[label_col].tolist())]
        if label_col
        else [f"Study {i + 1}" for i in range(len(data))]
    )

    res = fit(yi, vi, method=method, test=test, level=level)
    weights = res.pop("weights")
    crit = float(stats.norm.ppf(1 - (1 - level) / 2))
    studies = []
    for i, name in enumerate(labels):
        row: dict[str, Any] = {
            "study": name,
            "yi": float(yi[i]),
            "vi": float(vi[i]),
            "ci_low": float(yi[i] - crit * math.sqrt(vi[i])),
            "ci_high": float(yi[i] + crit * math.sqrt(vi[i])),
            "weight": float(weights[i]),
        }
        if by is not None:
            row["group"] = None
        studies.append(row)

    out: dict[str, Any] = {
        "measure": measure,
        "scale": SCALE_LABELS[measure],
        "method": method,
        "test": test,
        "level": level,
        **res,
    }
    _with_back(measure, out)
    out["continuity_corrected"] = [labels[i] for i in np.flatnonzero(corrected)]
    out["egger"] = egger_test(yi, vi)

    if by is not None:
        if by not in data.columns:
            raise AnalysisError(f"--by column '{by}' is not in the input", hint=f"Columns: {', '.join(data.columns)}.")
        groups = [str(g).strip() for g in data[by].tolist()]
        for i, g in enumerate(groups):
            if g == "":
                raise AnalysisError(f"row {i + 1} (CSV line {i + 2}), column '{by}' is empty", hint="Every study needs a subgroup.")
            studies[i]["group"] = g
        names = list(dict.fromkeys(groups))
        if len(names) < 2:
            raise AnalysisError(f"--by column '{by}' has only one subgroup ({names[0]!r})", hint="Subgroup analysis needs at least two groups.")
        sub = []
        for g in names:
            idx = [i for i, gg in enumerate(groups) if gg == g]
            r = fit(yi[idx], vi[idx], method=method, test=test, level=level)
            r.pop("weights")
            sub.append(_with_back(measure, {"group": g, **r}))
        est = np.array([s["estimate"] for s in sub])
        with np.errstate(divide="ignore", invalid="ignore"):  # SE 0 (KNHA, identical effects): undefined
            wg = 1 / np.array([s["se"] for s in sub]) ** 2
            qb = float(wg @ (est - wg @ est / wg.sum()) ** 2)
        out["subgroups"] = {
            "by": by,
            "groups": sub,
            "q_between": qb,
            "q_between_df": len(sub) - 1,
            "q_between_p": float(stats.chi2.sf(qb, len(sub) - 1)),
        }
    else:
        out["subgroups"] = None

    if leave_one_out:
        loo = []
        for i, name in enumerate(labels):
            keep = np.arange(len(yi)) != i
            r = fit(yi[keep], vi[keep], method=method, test=test, level=level)
            r.pop("weights")
            loo.append(_with_back(measure, {"omitted": name, **r}))
        out["leave_one_out"] = loo
    else:
        out["leave_one_out"] = None
    out["studies"] = studies
    result: dict[str, Any] = _json_safe(out)
    return result


def _json_safe(obj: Any) -> Any:
    """Plain Python types only; NaN/inf become ``None`` so the dict is valid JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def meta_analysis_csv(path: str | Path, measure: str, **options: Any) -> dict[str, Any]:
    """:func:`meta_analysis` on a CSV file (what ``celltrials meta`` runs)."""
    return meta_analysis(read_table(path), measure, **options)
