"""Meta-analysis of study-level effect sizes (``celltrials meta``).

The conventions follow R's metafor (``escalc`` + ``rma`` / ``rma.mh`` /
``rma.peto`` / ``confint``) so that numbers can be checked against it; the
model fitting is in :mod:`celltrials.analysis.metamodels`.

Effect sizes (``escalc``):

* ``RR``, ``OR``, ``RD``: two-group counts ``ai, bi, ci, di`` (events and
  non-events in group 1, then group 2) or events/totals ``ai, n1i, ci, n2i``.
  Log risk ratio / log odds ratio / risk difference.
* ``MD``: raw mean difference, ``vi = sd1i²/n1i + sd2i²/n2i``.
* ``SMD``: Hedges' g with the exact bias correction
  ``c(m) = Γ(m/2) / (√(m/2) Γ((m-1)/2))``, ``m = n1i + n2i - 2``, and the
  large-sample variance ``vi = 1/n1i + 1/n2i + g²/(2(n1i + n2i))``.
* ``SMDH``: Bonett's standardized mean difference with heteroscedastic
  variances, ``c(m)(m1i − m2i)/√((sd1i² + sd2i²)/2)``, variance as metafor ≥ 4.8.
* ``ROM``: log ratio of means with metafor's (≥ 5.0) default second-order
  bias correction ``+ ½(sd1i²/(n1i m1i²) − sd2i²/(n2i m2i²))``; means must be > 0.
* ``PLO`` (logit), ``PR`` (raw) and ``PFT`` (Freeman–Tukey double arcsine)
  proportions from single-arm ``xi, ni``.
* ``IRR`` (log incidence rate ratio, ``x1i, t1i, x2i, t2i``) and ``IRLN``
  (log incidence rate, ``xi, ti``).
* ``ZCOR``: Fisher's r-to-z of a correlation ``ri`` with ``ni``.
* ``GEN``: precomputed ``yi`` with ``vi`` or ``sei``.

Zero cells: ``add`` (default 0.5) is added to the cells of studies with a
zero (``to="only0"``, metafor's default), of all studies (``"all"``), of all
studies if any has a zero (``"if0all"``) or never (``"none"``). Studies with
no events in either group (or only events in both) are dropped with
``drop00`` — the default for ``MH`` and ``PETO`` as in metafor. For those two
methods ``add/to/drop00`` apply to the per-study estimates used for Q and
the plots; the pooled estimate uses the counts as they are (metafor's
``add=c(1/2, 0)``).

Models: fixed effect (``FE``, inverse variance), random effects with τ² by
``DL``, ``REML``, ``PM`` or ``ML``, and the fixed-effect sparse-data methods
``MH`` (Mantel–Haenszel: OR, RR, RD, IRR) and ``PETO`` (Peto's OR). Wald
``z`` or Knapp–Hartung (``knha``). τ² comes with its standard error and a
Q-profile (or, for ML/REML, profile-likelihood) confidence interval that
also bounds I² and H². ``mods`` adds a mixed-effects meta-regression
(numeric moderators as given, categorical ones dummy coded against their
first level in sorted order, as R does). ``by`` gives subgroups with a
separate τ² each or one common τ².

:func:`meta_analysis` returns a plain JSON-ready ``dict``; the CLI's
``--json`` prints exactly that object.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd
from scipy import special, stats

from celltrials.analysis import metamodels as mm
from celltrials.errors import AnalysisError

MEASURES = (
    "RR",
    "OR",
    "RD",
    "MD",
    "SMD",
    "SMDH",
    "ROM",
    "PLO",
    "PR",
    "PFT",
    "IRR",
    "IRLN",
    "ZCOR",
    "GEN",
)
METHODS = ("FE", "DL", "REML", "PM", "ML", "MH", "PETO")
TESTS = ("z", "knha")
TO_CHOICES = ("only0", "all", "if0all", "none")
MH_MEASURES = ("OR", "RR", "RD", "IRR")
TAU2_CI = ("QP", "PL")

_MEANS = ("m1i", "sd1i", "n1i", "m2i", "sd2i", "n2i")
# Accepted column sets per measure, in order of preference.
COLUMN_SETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "RR": (("ai", "bi", "ci", "di"), ("ai", "n1i", "ci", "n2i")),
    "OR": (("ai", "bi", "ci", "di"), ("ai", "n1i", "ci", "n2i")),
    "RD": (("ai", "bi", "ci", "di"), ("ai", "n1i", "ci", "n2i")),
    "MD": (_MEANS,),
    "SMD": (_MEANS,),
    "SMDH": (_MEANS,),
    "ROM": (_MEANS,),
    "PLO": (("xi", "ni"),),
    "PR": (("xi", "ni"),),
    "PFT": (("xi", "ni"),),
    "IRR": (("x1i", "t1i", "x2i", "t2i"),),
    "IRLN": (("xi", "ti"),),
    "ZCOR": (("ri", "ni"),),
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
    "SMDH": "standardized mean difference (heteroscedastic, Bonett)",
    "ROM": "log ratio of means",
    "PLO": "logit proportion",
    "PR": "proportion",
    "PFT": "Freeman-Tukey double-arcsine proportion",
    "IRR": "log incidence rate ratio",
    "IRLN": "log incidence rate",
    "ZCOR": "Fisher's z (correlation)",
    "GEN": "effect size",
}
NATURAL_LABELS = {
    "RR": "Risk ratio", "OR": "Odds ratio", "PLO": "Proportion", "PFT": "Proportion",
    "ROM": "Ratio of means", "IRR": "Incidence rate ratio", "IRLN": "Incidence rate", "ZCOR": "Correlation",
}  # fmt: skip
RATIO_MEASURES = ("RR", "OR", "ROM", "IRR")
LABEL_CANDIDATES = ("study", "trial", "label", "author", "name", "id")
CONTINUITY = 0.5


def _ipft(x: float, n: float) -> float:
    """Inverse Freeman–Tukey transformation (Miller, 1978), metafor's ``transf.ipft``."""
    lo = 0.5 * (math.asin(0.0) + math.asin(math.sqrt(1 / (n + 1))))
    hi = 0.5 * (math.asin(math.sqrt(n / (n + 1))) + math.asin(1.0))
    if x <= lo:
        return 0.0
    if x >= hi:
        return 1.0
    s = math.sin(2 * x)
    inner = 1 - (s + (s - 1 / s) / n) ** 2
    return 0.5 * (1 - math.copysign(1.0, math.cos(2 * x)) * math.sqrt(max(inner, 0.0)))


def back_transform(measure: str, x: float, n: float | None = None) -> float:
    """Natural-scale value of an analysis-scale ``x``: exp for ratios and IRLN, expit for
    PLO, tanh for ZCOR, the inverse Freeman–Tukey for PFT (with the harmonic mean ``n``)."""
    if measure in RATIO_MEASURES or measure == "IRLN":
        return math.exp(x)
    if measure == "PLO":
        return float(special.expit(x))
    if measure == "ZCOR":
        return math.tanh(x)
    if measure == "PFT" and n is not None:
        return _ipft(x, n)
    return x


def is_transformed(measure: str) -> bool:
    return measure in NATURAL_LABELS


# --------------------------------------------------------------------------- input


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV as text (numbers are parsed later so bad cells can be named)."""
    p = Path(path)
    if not p.is_file():
        raise AnalysisError(
            f"{p}: no such file", hint="Pass the path of a CSV file with one row per study."
        )
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
    missing = [
        f"{col}" + (f" (for {role})" if col != role else "")
        for role, col in first.items()
        if col not in present
    ]
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
            where = f"row {i + 1} (CSV line {i + 2}), column '{col}'" + (
                f" ({role})" if col != role else ""
            )
            what = "is empty" if text == "" else f"is not a number: {text!r}"
            raise AnalysisError(
                f"{where} {what}", hint="Every effect-size cell must be a number."
            ) from None
        if not math.isfinite(val):
            raise AnalysisError(
                f"row {i + 1} (CSV line {i + 2}), column '{col}' is not finite: {text!r}"
            )
        out[i] = val
    return out


def _bad_row(mask: np.ndarray, col: str, reason: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise AnalysisError(f"row {i + 1} (CSV line {i + 2}), column '{col}': {reason}")


@dataclass
class Effects:
    """Per-study effect sizes; ``yi``/``vi`` are NaN for studies dropped by ``drop00``
    (and, for Peto's OR, for tables where one outcome never occurs)."""

    yi: np.ndarray
    vi: np.ndarray
    corrected: np.ndarray
    dropped: np.ndarray
    counts: dict[str, np.ndarray]


def _continuity(zero: np.ndarray, add: float, to: str, n: int) -> np.ndarray:
    """The amount added to each study's cells under metafor's ``to`` rule."""
    if to == "all":
        return np.full(n, add)
    if to == "only0":
        return add * zero
    if to == "if0all":
        return np.full(n, add if zero.any() else 0.0)
    return np.zeros(n)


def effect_sizes(  # noqa: C901 - one branch per effect measure / option, as metafor's escalc and rma
    df: pd.DataFrame,
    measure: str,
    columns: Mapping[str, str] | None = None,
    *,
    add: float = CONTINUITY,
    to: str = "only0",
    drop00: bool = False,
) -> Effects:
    """Per-study effect sizes on the analysis scale; see the module docstring.

    ``measure`` may also be ``PETO`` (Peto's log odds ratio, used by ``method="PETO"``).
    """
    measure = measure.upper()
    peto = measure == "PETO"
    if measure not in MEASURES and not peto:
        raise AnalysisError(
            f"unknown measure '{measure}'", hint=f"Use one of {', '.join(MEASURES)}."
        )
    if to not in TO_CHOICES:
        raise AnalysisError(f"unknown --to '{to}'", hint=f"Use one of {', '.join(TO_CHOICES)}.")
    if not math.isfinite(add) or add < 0:
        raise AnalysisError(f"--add {add} must be a non-negative number")
    cols = _resolve_columns(df, "OR" if peto else measure, columns)
    x = {role: _numeric(df, role, col) for role, col in cols.items()}
    k = len(df)
    corrected = np.zeros(k, dtype=bool)
    dropped = np.zeros(k, dtype=bool)

    def nonneg(*roles: str) -> None:
        for role in roles:
            _bad_row(x[role] < 0, cols[role], "a count cannot be negative")

    if measure in ("RR", "OR", "RD", "PETO"):
        nonneg("ai", "ci")
        ai, ci = x["ai"], x["ci"]
        if "bi" in x:
            nonneg("bi", "di")
            bi, di = x["bi"], x["di"]
            _bad_row(ai + bi <= 0, cols["bi"], "group 1 has no participants (ai + bi = 0)")
            _bad_row(ci + di <= 0, cols["di"], "group 2 has no participants (ci + di = 0)")
        else:
            n1, n2 = x["n1i"], x["n2i"]
            _bad_row(n1 <= 0, cols["n1i"], "group size must be positive")
            _bad_row(n2 <= 0, cols["n2i"], "group size must be positive")
            _bad_row(ai > n1, cols["ai"], "more events than participants (ai > n1i)")
            _bad_row(ci > n2, cols["ci"], "more events than participants (ci > n2i)")
            bi, di = n1 - ai, n2 - ci
        counts = {"ai": ai, "bi": bi, "ci": ci, "di": di}
        if drop00:
            dropped = ((ai == 0) & (ci == 0)) | ((bi == 0) & (di == 0))
        zero = ((ai == 0) | (bi == 0) | (ci == 0) | (di == 0)) & ~dropped
        addv = _continuity(zero, add, to, k) * ~dropped
        corrected = addv > 0
        a, b, c, d = ai + addv, bi + addv, ci + addv, di + addv
        n1, n2 = a + b, c + d
        with np.errstate(divide="ignore", invalid="ignore"):
            if measure == "RR":
                yi = np.log(a / n1) - np.log(c / n2)
                vi = 1 / a - 1 / n1 + 1 / c - 1 / n2
            elif measure == "OR":
                yi = np.log(a * d / (b * c))
                vi = 1 / a + 1 / b + 1 / c + 1 / d
            elif measure == "RD":
                p1, p2 = a / n1, c / n2
                yi = p1 - p2
                vi = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
            else:
                n = n1 + n2
                xt, yt = a + c, b + d
                var = xt * yt * (n1 / n) * (n2 / n) / (n - 1)
                yi = np.where(var > 0, (a - xt * n1 / n) / var, np.nan)
                vi = np.where(var > 0, 1 / var, np.nan)
        yi[dropped] = np.nan
        vi[dropped] = np.nan
        if not peto:
            _bad_row(
                ~dropped & ~np.isfinite(yi),
                cols["ai"],
                "the effect size is undefined (a zero cell with --to none)",
            )
        return Effects(yi, vi, corrected, dropped, counts)

    if measure in ("MD", "SMD", "SMDH", "ROM"):
        m1, s1, n1 = x["m1i"], x["sd1i"], x["n1i"]
        m2, s2, n2 = x["m2i"], x["sd2i"], x["n2i"]
        for role in ("sd1i", "sd2i"):
            _bad_row(x[role] < 0, cols[role], "a standard deviation cannot be negative")
        for role in ("n1i", "n2i"):
            _bad_row(
                x[role] < (1 if measure in ("MD", "ROM") else 2), cols[role], "group size too small"
            )
        counts = {"n1i": n1, "n2i": n2}
        if measure == "MD":
            yi = m1 - m2
            vi = s1**2 / n1 + s2**2 / n2
        elif measure == "ROM":
            _bad_row(m1 <= 0, cols["m1i"], "the ratio of means needs positive means")
            _bad_row(m2 <= 0, cols["m2i"], "the ratio of means needs positive means")
            yi = np.log(m1 / m2) + 0.5 * (s1**2 / (n1 * m1**2) - s2**2 / (n2 * m2**2))
            vi = s1**2 / (n1 * m1**2) + s2**2 / (n2 * m2**2)
        else:
            m = n1 + n2 - 2
            cm = np.exp(
                special.gammaln(m / 2) - np.log(np.sqrt(m / 2)) - special.gammaln((m - 1) / 2)
            )
            if measure == "SMD":
                sdp = np.sqrt(((n1 - 1) * s1**2 + (n2 - 1) * s2**2) / m)
                _bad_row(sdp <= 0, cols["sd1i"], "pooled standard deviation is zero")
                yi = cm * (m1 - m2) / sdp
                vi = 1 / n1 + 1 / n2 + yi**2 / (2 * (n1 + n2))
            else:
                sdp = np.sqrt((s1**2 + s2**2) / 2)
                _bad_row(sdp <= 0, cols["sd1i"], "both standard deviations are zero")
                yi = cm * (m1 - m2) / sdp
                vi = (
                    yi**2 * (s1**4 / (n1 - 1) + s2**4 / (n2 - 1)) / (8 * sdp**4)
                    + (s1**2 / (n1 - 1) + s2**2 / (n2 - 1)) / sdp**2
                )
        _bad_row(vi <= 0, cols["sd1i"], "the sampling variance is zero (both SDs are 0)")
        return Effects(yi, vi, corrected, dropped, counts)

    if measure in ("PLO", "PR", "PFT"):
        xi, ni = x["xi"], x["ni"]
        _bad_row(xi < 0, cols["xi"], "a count cannot be negative")
        _bad_row(ni <= 0, cols["ni"], "the number of participants must be positive")
        _bad_row(xi > ni, cols["xi"], "more events than participants (xi > ni)")
        counts = {"xi": xi, "ni": ni}
        if measure == "PFT":
            yi = 0.5 * (np.arcsin(np.sqrt(xi / (ni + 1))) + np.arcsin(np.sqrt((xi + 1) / (ni + 1))))
            return Effects(yi, 1 / (4 * ni + 2), corrected, dropped, counts)
        zero = (xi == 0) | (xi == ni)
        addv = _continuity(zero, add, to, k)
        corrected = addv > 0
        xc, nc = xi + addv, ni + 2 * addv
        with np.errstate(divide="ignore", invalid="ignore"):
            if measure == "PLO":
                yi = np.log(xc / (nc - xc))
                vi = 1 / xc + 1 / (nc - xc)
            else:
                yi = xc / nc
                vi = yi * (1 - yi) / nc
        _bad_row(
            ~np.isfinite(yi) | ~np.isfinite(vi) | (vi <= 0),
            cols["xi"],
            "the effect size is undefined (0 or all events with --to none)",
        )
        return Effects(yi, vi, corrected, dropped, counts)

    if measure == "IRR":
        nonneg("x1i", "x2i")
        x1, t1, x2, t2 = x["x1i"], x["t1i"], x["x2i"], x["t2i"]
        _bad_row(t1 <= 0, cols["t1i"], "person-time must be positive")
        _bad_row(t2 <= 0, cols["t2i"], "person-time must be positive")
        counts = {"x1i": x1, "t1i": t1, "x2i": x2, "t2i": t2}
        if drop00:
            dropped = (x1 == 0) & (x2 == 0)
        zero = ((x1 == 0) | (x2 == 0)) & ~dropped
        addv = _continuity(zero, add, to, k) * ~dropped
        corrected = addv > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            yi = np.log((x1 + addv) / t1) - np.log((x2 + addv) / t2)
            vi = 1 / (x1 + addv) + 1 / (x2 + addv)
        yi[dropped] = np.nan
        vi[dropped] = np.nan
        _bad_row(
            ~dropped & ~np.isfinite(yi),
            cols["x1i"],
            "the effect size is undefined (no events with --to none)",
        )
        return Effects(yi, vi, corrected, dropped, counts)

    if measure == "IRLN":
        nonneg("xi")
        xi, ti = x["xi"], x["ti"]
        _bad_row(ti <= 0, cols["ti"], "person-time must be positive")
        addv = _continuity(xi == 0, add, to, k)
        corrected = addv > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            yi = np.log((xi + addv) / ti)
            vi = 1 / (xi + addv)
        _bad_row(
            ~np.isfinite(yi), cols["xi"], "the effect size is undefined (no events with --to none)"
        )
        return Effects(yi, vi, corrected, dropped, {"xi": xi, "ti": ti})

    if measure == "ZCOR":
        ri, ni = x["ri"], x["ni"]
        _bad_row(
            (ri <= -1) | (ri >= 1), cols["ri"], "a correlation must be strictly between -1 and 1"
        )
        _bad_row(ni <= 3, cols["ni"], "Fisher's z needs more than 3 participants")
        return Effects(np.arctanh(ri), 1 / (ni - 3), corrected, dropped, {"ni": ni})

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
    return Effects(yi, vi, corrected, dropped, {})


# --------------------------------------------------------------------------- models


def _clean(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _heterogeneity_ci(
    y: np.ndarray, v: np.ndarray, tau2: float, method: str, level: float, tau2_ci: str
) -> dict[str, Any]:
    """τ² SE and the confidence intervals of τ², I², H² for an intercept-only model."""
    keys = (
        "tau2_se",
        "tau2_ci_low",
        "tau2_ci_high",
        "i2_ci_low",
        "i2_ci_high",
        "h2_ci_low",
        "h2_ci_high",
    )
    out: dict[str, Any] = dict.fromkeys(keys)
    out["tau2_ci_method"] = None
    k = len(y)
    if method not in ("DL", "REML", "PM", "ML") or k < 2:
        return out
    x = np.ones((k, 1))
    out["tau2_se"] = mm.tau2_se(y, v, x, tau2, method)
    low, high, _null = mm.tau2_confint(y, v, x, tau2, level=level, kind=tau2_ci, method=method)
    wf = 1 / v
    vt = (k - 1) * wf.sum() / (wf.sum() ** 2 - (wf**2).sum())
    out.update(
        {
            "tau2_ci_low": low,
            "tau2_ci_high": high,
            "i2_ci_low": 100 * low / (vt + low),
            "i2_ci_high": 100 * high / (vt + high),
            "h2_ci_low": low / vt + 1,
            "h2_ci_high": high / vt + 1,
            "tau2_ci_method": "Q-profile" if tau2_ci == "QP" else "profile likelihood",
        }
    )
    return out


def fit(
    y: Sequence[float] | np.ndarray,
    v: Sequence[float] | np.ndarray,
    *,
    method: str = "REML",
    test: str = "z",
    level: float = 0.95,
    tau2: float | None = None,
    tau2_ci: str = "QP",
) -> dict[str, Any]:
    """Pool effects ``y`` with sampling variances ``v``; one study gives that study back.

    ``tau2`` fixes the between-study variance (used for subgroups with a common τ²).
    """
    y = np.asarray(y, dtype=float)
    v = np.asarray(v, dtype=float)
    k = len(y)
    fixed_tau2 = tau2 is not None
    if tau2 is None:
        tau2 = mm.estimate_tau2(y, v, np.ones((k, 1)), method) if k > 1 else 0.0
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
        **_heterogeneity_ci(y, v, tau2, "FIXED" if fixed_tau2 else method, level, tau2_ci),
        "weights": (100 * w / w.sum()).tolist(),
    }


def _sparse_fit(
    method: str, measure: str, eff: Effects, idx: np.ndarray, level: float
) -> dict[str, Any]:
    """MH / Peto pooled estimate over studies ``idx`` with Q from the per-study estimates."""
    c = {key: arr[idx] for key, arr in eff.counts.items()}
    if method == "MH":
        if measure == "IRR":
            r = mm.mantel_haenszel("IRR", c["x1i"], c["t1i"], c["x2i"], c["t2i"], level=level)
        else:
            r = mm.mantel_haenszel(measure, c["ai"], c["bi"], c["ci"], c["di"], level=level)
    else:
        r = mm.peto(c["ai"], c["bi"], c["ci"], c["di"], level=level)
    y, v = eff.yi[idx], eff.vi[idx]
    ok = np.isfinite(y)
    k_yi = int(ok.sum())
    if method == "PETO":
        q = r.pop("qe_peto")
        k_pos = r.pop("k_pos")
    else:
        q = max(0.0, float(((y[ok] - r["estimate"]) ** 2 / v[ok]).sum())) if k_yi > 1 else 0.0
        k_pos = k_yi
    df = k_yi - 1
    if k_yi > 1:
        q_p: float | None = float(stats.chi2.sf(q, df)) if k_pos > 1 else None
        i2 = max(0.0, 100 * (q - df) / q) if q > 0 else 0.0
        h2: float | None = q / df
    else:
        q, q_p, i2, h2 = 0.0, None, 0.0, None
    weights = r.pop("weights")
    out = {
        "k": len(idx),
        "estimate": r.pop("estimate"),
        "se": r.pop("se"),
        "stat": r.pop("stat"),
        "p": r.pop("p"),
        "ci_low": r.pop("ci_low"),
        "ci_high": r.pop("ci_high"),
        "tau2": 0.0,
        "tau": 0.0,
        "i2": i2,
        "h2": h2,
        "q": q,
        "q_df": max(df, 0),
        "q_p": q_p,
        **dict.fromkeys(
            (
                "tau2_se",
                "tau2_ci_low",
                "tau2_ci_high",
                "i2_ci_low",
                "i2_ci_high",
                "h2_ci_low",
                "h2_ci_high",
                "tau2_ci_method",
            )
        ),
        "weights": [float(w) for w in weights],
    }
    out["pi_low"], out["pi_high"] = out["ci_low"], out["ci_high"]
    out.update(r)  # cmh / tarone for MH OR
    return out


def _with_back(measure: str, res: dict[str, Any], n: float | None = None) -> dict[str, Any]:
    if is_transformed(measure):
        res["back_transformed"] = {
            key: back_transform(measure, res[key], n)
            for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high")
        }
    else:
        res["back_transformed"] = None
    return res


def egger_test(y: np.ndarray, v: np.ndarray) -> dict[str, Any] | None:
    """Egger's regression test: OLS of y/se on 1/se; the intercept measures asymmetry."""
    import statsmodels.api as sm  # noqa: PLC0415 - heavy optional dependency, imported on first use

    if len(y) < 3:
        return None
    sei = np.sqrt(v)
    if np.ptp(sei) == 0:  # equal precision: the regression has no slope to estimate
        return None
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


# --------------------------------------------------------------------------- meta-regression


def parse_mods(spec: str | Sequence[str] | None) -> list[tuple[str, str | None]]:
    """``"ablat,alloc:cat"`` → ``[("ablat", None), ("alloc", "cat")]`` (``:cat`` / ``:num`` force a type)."""
    if spec is None:
        return []
    items = (
        spec.split(",")
        if isinstance(spec, str)
        else [s for part in spec for s in str(part).split(",")]
    )
    out: list[tuple[str, str | None]] = []
    for item in items:
        name, _, kind = (
            item.strip().rpartition(":")
            if item.strip().endswith((":cat", ":num"))
            else (item.strip(), "", "")
        )
        if not name:
            continue
        out.append((name, kind or None))
    return out


def design_matrix(
    data: pd.DataFrame, mods: Sequence[tuple[str, str | None]], rows: np.ndarray
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Intercept + moderators for the studies ``rows``; categorical ones dummy coded.

    A column is numeric when every value parses as a number (or ``:num`` is
    given); otherwise categorical, with the first level in sorted order as the
    reference (R's default). Returns the matrix, coefficient names and a
    description of the coding.
    """
    cols = [np.ones(len(rows))]
    names = ["intercept"]
    coding: dict[str, Any] = {}
    for col, kind in mods:
        if col not in data.columns:
            raise AnalysisError(
                f"--mods column '{col}' is not in the input",
                hint=f"Columns: {', '.join(data.columns)}.",
            )
        values = [str(v).strip() for v in data[col].tolist()]
        for i in rows:
            if values[i] == "":
                raise AnalysisError(
                    f"row {i + 1} (CSV line {i + 2}), column '{col}' is empty",
                    hint="Every study in a meta-regression needs a moderator value (or leave the study out).",
                )
        sub = [values[i] for i in rows]
        numeric = True
        nums: list[float] = []
        for s in sub:
            try:
                f = float(s)
            except ValueError:
                numeric = False
                break
            if not math.isfinite(f):
                numeric = False
                break
            nums.append(f)
        if kind == "num" and not numeric:
            bad = next((i for i in rows if not _is_number(values[i])), rows[0])
            raise AnalysisError(
                f"row {bad + 1} (CSV line {bad + 2}), column '{col}' is not a number: {values[bad]!r}"
            )
        if numeric and kind != "cat":
            cols.append(np.array(nums))
            names.append(col)
            coding[col] = {"type": "numeric"}
            continue
        levels = sorted(set(sub))
        if len(levels) < 2:
            raise AnalysisError(
                f"--mods column '{col}' has only one level ({levels[0]!r}) among the studies"
            )
        for lev in levels[1:]:
            cols.append(np.array([1.0 if s == lev else 0.0 for s in sub]))
            names.append(f"{col}={lev}")
        coding[col] = {
            "type": "categorical",
            "reference": levels[0],
            "levels": levels,
            "dummies": [f"{col}={lev}" for lev in levels[1:]],
        }
    return np.column_stack(cols), names, coding


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def meta_regression(
    y: np.ndarray,
    v: np.ndarray,
    x: np.ndarray,
    names: list[str],
    coding: dict[str, Any],
    *,
    method: str,
    test: str,
    level: float,
    tau2_ci: str = "QP",
) -> dict[str, Any]:
    """The mixed-effects model ``rma(yi, vi, mods=…)`` as a JSON-ready dict (with R²)."""
    res = mm.rma(y, v, x, names, method=method, test=test, level=level)
    r2: float | None = None
    if method != "FE":
        tau2_re = mm.estimate_tau2(y, v, np.ones((len(y), 1)), method)
        r2 = 0.0 if tau2_re == 0 else max(0.0, 100 * (tau2_re - res["tau2"]) / tau2_re)
    ci: dict[str, Any] = dict.fromkeys(
        ("tau2_ci_low", "tau2_ci_high", "i2_ci_low", "i2_ci_high", "h2_ci_low", "h2_ci_high")
    )
    if method != "FE":
        low, high, _ = mm.tau2_confint(
            y, v, x, res["tau2"], level=level, kind=tau2_ci, method=method
        )
        vt = res["vt"]
        ci = {
            "tau2_ci_low": low,
            "tau2_ci_high": high,
            "i2_ci_low": 100 * low / (vt + low),
            "i2_ci_high": 100 * high / (vt + high),
            "h2_ci_low": low / vt + 1,
            "h2_ci_high": high / vt + 1,
        }
    return {
        "model": "fixed-effects meta-regression"
        if method == "FE"
        else "mixed-effects meta-regression",
        "k": res["k"],
        "coefficients": res["coefficients"],
        "coding": coding,
        "qm": res["qm"],
        "qm_df": res["qm_df"],
        "qm_df2": res["qm_df2"],
        "qm_test": "F" if test == "knha" else "chi2",
        "qm_p": res["qm_p"],
        "qe": res["qe"],
        "qe_df": res["qe_df"],
        "qe_p": res["qe_p"],
        "tau2": res["tau2"],
        "tau2_se": res["tau2_se"],
        **ci,
        "i2": res["i2"],
        "h2": res["h2"],
        "r2": r2,
    }


# --------------------------------------------------------------------------- driver


_F = TypeVar("_F", bound=Callable[..., Any])


def _overflow_is_an_error(fn: _F) -> _F:
    """Numbers too large for double precision (counts of 1e308, effects whose
    squares overflow) end in an :class:`AnalysisError` naming the problem,
    not in numpy warnings and a misleading later error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with np.errstate(over="raise"):
                return fn(*args, **kwargs)
        except (FloatingPointError, OverflowError) as exc:
            raise AnalysisError(
                f"the input's numbers are too large to compute with in double precision ({exc})",
                hint="Check the input for absurd counts, effects or variances (e.g. 1e308); "
                "rescale effects and variances to ordinary magnitudes.",
            ) from None

    return cast(_F, wrapper)


@_overflow_is_an_error
def meta_analysis(  # noqa: C901 - one branch per effect measure / option, as metafor's escalc and rma
    data: pd.DataFrame,
    measure: str,
    *,
    method: str = "REML",
    test: str = "z",
    columns: Mapping[str, str] | None = None,
    label: str | None = None,
    by: str | None = None,
    by_tau2: str = "separate",
    leave_one_out: bool = False,
    level: float = 0.95,
    add: float = CONTINUITY,
    to: str = "only0",
    drop00: bool | None = None,
    mods: str | Sequence[str] | None = None,
    tau2_ci: str = "QP",
) -> dict[str, Any]:
    """Meta-analyse one row per study in ``data``; returns a JSON-ready dict.

    ``columns`` maps metafor's names to the table's (``{"ai": "tpos"}``).
    ``drop00=None`` means the method's default (True for MH and PETO, else False).
    Raises :class:`AnalysisError` for missing or non-numeric columns, negative
    counts or variances, invalid option combinations and fewer than two studies.
    """
    measure = measure.upper()
    method = method.upper()
    test = test.lower()
    tau2_ci = tau2_ci.upper()
    if measure not in MEASURES:
        raise AnalysisError(
            f"unknown measure '{measure}'", hint=f"Use one of {', '.join(MEASURES)}."
        )
    if method not in METHODS:
        raise AnalysisError(f"unknown method '{method}'", hint=f"Use one of {', '.join(METHODS)}.")
    if test not in TESTS:
        raise AnalysisError(f"unknown test '{test}'", hint="Use z or knha.")
    if tau2_ci not in TAU2_CI:
        raise AnalysisError(
            f"unknown tau² CI method '{tau2_ci}'",
            hint="Use QP (Q-profile) or PL (profile likelihood).",
        )
    if by_tau2 not in ("separate", "common"):
        raise AnalysisError(
            f"unknown subgroup tau² option '{by_tau2}'", hint="Use separate or common."
        )
    if not 0 < level < 1:
        raise AnalysisError(
            f"confidence level {level} is not between 0 and 1", hint="Use e.g. 0.95."
        )
    sparse = method in ("MH", "PETO")
    if method == "MH" and measure not in MH_MEASURES:
        raise AnalysisError(f"--method MH works with {', '.join(MH_MEASURES)}, not {measure}")
    if method == "PETO" and measure != "OR":
        raise AnalysisError(f"--method PETO pools odds ratios; use --measure OR (not {measure})")
    if sparse and test == "knha":
        raise AnalysisError(f"--test knha needs a random-effects model, not --method {method}")
    mod_spec = parse_mods(mods)
    if mod_spec and sparse:
        raise AnalysisError(
            f"--mods needs an inverse-variance model (FE, DL, REML, PM, ML), not --method {method}"
        )
    if len(data) < 2:
        raise AnalysisError(
            f"a meta-analysis needs at least 2 studies; the input has {len(data)}",
            hint="Add more rows, one per study.",
        )
    if drop00 is None:
        drop00 = sparse
    eff = effect_sizes(
        data, "PETO" if method == "PETO" else measure, columns, add=add, to=to, drop00=drop00
    )
    yi, vi = eff.yi, eff.vi

    if label is not None:
        if label not in data.columns:
            raise AnalysisError(
                f"label column '{label}' is not in the input",
                hint=f"Columns: {', '.join(data.columns)}.",
            )
        label_col: str | None = label
    else:
        label_col = next((c for c in data.columns if c.lower() in LABEL_CANDIDATES), None)
    labels = (
        [str(s).strip() or f"Study {i + 1}" for i, s in enumerate(data[label_col].tolist())]
        if label_col
        else [f"Study {i + 1}" for i in range(len(data))]
    )
    usable = np.flatnonzero(np.isfinite(yi))
    all_rows = np.arange(len(data))
    pft_n = None
    if measure == "PFT":
        pft_n = float(len(usable) / (1 / eff.counts["ni"][usable]).sum())

    def pool(rows: np.ndarray, tau2: float | None = None) -> dict[str, Any]:
        if sparse:
            return _sparse_fit(method, measure, eff, rows, level)
        rows = rows[np.isfinite(yi[rows])]
        if len(rows) == 0:
            raise AnalysisError(
                "no study is left to pool (all were dropped as double-zero studies)"
            )
        return fit(
            yi[rows], vi[rows], method=method, test=test, level=level, tau2=tau2, tau2_ci=tau2_ci
        )

    if not sparse and len(usable) < 2:
        raise AnalysisError(
            f"a meta-analysis needs at least 2 studies; {len(usable)} remain after dropping double-zero studies",
            hint="Use --keep00 to keep them (with the continuity correction).",
        )
    res = pool(all_rows)
    weights = res.pop("weights")
    crit = float(stats.norm.ppf(1 - (1 - level) / 2))
    weight_rows = all_rows if sparse else usable
    weight_of = dict(zip(weight_rows.tolist(), weights, strict=True))
    studies = []
    for i, name in enumerate(labels):
        ok = bool(np.isfinite(yi[i]))
        row: dict[str, Any] = {
            "study": name,
            "yi": float(yi[i]) if ok else None,
            "vi": float(vi[i]) if ok else None,
            "ci_low": float(yi[i] - crit * math.sqrt(vi[i])) if ok else None,
            "ci_high": float(yi[i] + crit * math.sqrt(vi[i])) if ok else None,
            "weight": float(weight_of.get(i, 0.0)),
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
        "add": add,
        "to": to,
        "drop00": drop00,
        **res,
    }
    if pft_n is not None:
        out["pft_harmonic_n"] = pft_n
    _with_back(measure, out, pft_n)
    out["continuity_corrected"] = [labels[i] for i in np.flatnonzero(eff.corrected)]
    out["dropped_00"] = [labels[i] for i in np.flatnonzero(eff.dropped)]
    out["egger"] = egger_test(yi[usable], vi[usable])

    if mod_spec:
        x, names, coding = design_matrix(data, mod_spec, usable)
        reg = meta_regression(
            yi[usable],
            vi[usable],
            x,
            names,
            coding,
            method=method,
            test=test,
            level=level,
            tau2_ci=tau2_ci,
        )
        out["meta_regression"] = reg
        for key in ("coefficients", "qm", "qm_df", "qm_p", "qe", "qe_df", "qe_p", "r2"):
            out[key] = reg[key]
    else:
        out["meta_regression"] = None

    if by is not None:
        out["subgroups"] = _subgroups(
            data,
            by,
            by_tau2,
            labels,
            studies,
            yi,
            vi,
            usable,
            pool,
            measure,
            method,
            test,
            level,
            pft_n,
            sparse,
        )
    else:
        out["subgroups"] = None

    if leave_one_out:
        loo = []
        for i, name in enumerate(labels):
            keep = all_rows[all_rows != i]
            if not sparse and np.isfinite(yi[keep]).sum() < 1:
                continue
            r = pool(keep)
            r.pop("weights")
            loo.append(_with_back(measure, {"omitted": name, **r}, pft_n))
        out["leave_one_out"] = loo
    else:
        out["leave_one_out"] = None
    out["studies"] = studies
    result: dict[str, Any] = _json_safe(out)
    return result


def _subgroups(
    data: pd.DataFrame,
    by: str,
    by_tau2: str,
    labels: list[str],
    studies: list[dict[str, Any]],
    yi: np.ndarray,
    vi: np.ndarray,
    usable: np.ndarray,
    pool: Any,
    measure: str,
    method: str,
    test: str,
    level: float,
    pft_n: float | None,
    sparse: bool,
) -> dict[str, Any]:
    if by not in data.columns:
        raise AnalysisError(
            f"--by column '{by}' is not in the input", hint=f"Columns: {', '.join(data.columns)}."
        )
    groups = [str(g).strip() for g in data[by].tolist()]
    for i, g in enumerate(groups):
        if g == "":
            raise AnalysisError(
                f"row {i + 1} (CSV line {i + 2}), column '{by}' is empty",
                hint="Every study needs a subgroup.",
            )
        studies[i]["group"] = g
    names = list(dict.fromkeys(groups))
    if len(names) < 2:
        raise AnalysisError(
            f"--by column '{by}' has only one subgroup ({names[0]!r})",
            hint="Subgroup analysis needs at least two groups.",
        )
    common = by_tau2 == "common" and not sparse and method != "FE"
    if by_tau2 == "common" and sparse:
        raise AnalysisError(
            f"a common tau² needs a random-effects model, not --method {method}",
            hint="Use --by-tau2 separate (the default) with MH or PETO, or a random-effects --method.",
        )
    tau2_common = None
    model: dict[str, Any] | None = None
    if common:
        x, cnames, _coding = design_matrix(data, [(by, "cat")], usable)
        model = mm.rma(yi[usable], vi[usable], x, cnames, method=method, test=test, level=level)
        tau2_common = float(model["tau2"])
    sub = []
    for g in names:
        idx = np.array([i for i, gg in enumerate(groups) if gg == g])
        r = pool(idx, tau2_common) if not sparse else pool(idx)
        r.pop("weights")
        sub.append(_with_back(measure, {"group": g, **r}, pft_n))
    model_name = (
        "common"
        if common
        else "fixed effect (no tau²)"
        if method in ("FE", "MH", "PETO")
        else "separate"
    )
    out: dict[str, Any] = {"by": by, "tau2_model": model_name, "tau2_common": tau2_common}
    if common and model is not None:
        out.update(
            {
                "groups": sub,
                "q_between": model["qm"],
                "q_between_df": model["qm_df"],
                "q_between_df2": model["qm_df2"],
                "q_between_test": "F" if test == "knha" else "chi2",
                "q_between_p": model["qm_p"],
            }
        )
        return out
    est = np.array([s["estimate"] for s in sub])
    with np.errstate(
        divide="ignore", invalid="ignore"
    ):  # SE 0 (KNHA, identical effects): undefined
        wg = 1 / np.array([s["se"] for s in sub]) ** 2
        qb = float(wg @ (est - wg @ est / wg.sum()) ** 2)
    out.update(
        {
            "groups": sub,
            "q_between": qb,
            "q_between_df": len(sub) - 1,
            "q_between_df2": None,
            "q_between_test": "chi2",
            "q_between_p": float(stats.chi2.sf(qb, len(sub) - 1)),
        }
    )
    return out


def _json_safe(obj: Any) -> Any:
    """Plain Python types only; NaN/inf become ``None`` so the dict is valid JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
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
