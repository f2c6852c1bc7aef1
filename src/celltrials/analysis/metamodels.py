"""Model fitting behind :mod:`celltrials.analysis.meta`, following R's metafor.

* :func:`rma` — the (mixed-effects) meta-regression model of ``rma.uni``:
  weighted least squares with weights ``1/(vi + τ²)``, τ² by ``FE`` (0),
  ``DL`` (generalised DerSimonian–Laird), ``PM`` (generalised Paule–Mandel),
  ``ML`` or ``REML`` (roots of the likelihood score equations), Wald ``z`` or
  Knapp–Hartung (``knha``: t / F with k − p df and the weighted residual
  scale, not truncated — metafor's default). Also the omnibus test QM of all
  coefficients but the intercept, the residual heterogeneity QE (weights
  ``1/vi``), I² and H² from τ² and the "typical" sampling variance
  ``(k − p) / tr(P)``, and the standard error of τ² as metafor computes it
  for each estimator. ML and REML use metafor's Fisher scoring and stopping
  rule (change < 10⁻⁵), so estimates agree with metafor's to the digits it prints.
* :func:`tau2_confint` — confidence interval for τ² (and so I², H²) by the
  Q-profile method (Viechtbauer, 2007) or profile likelihood (ML / REML).
* :func:`mantel_haenszel` and :func:`peto` — the fixed-effect sparse-data
  methods of ``rma.mh`` (OR, RR, RD, IRR; Robins–Breslow–Greenland,
  Greenland–Robins and Sato–Greenland–Robins variances; Cochran–Mantel–
  Haenszel and Tarone's tests for OR) and ``rma.peto``.

Everything is plain numpy/scipy; no state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, stats

from celltrials.errors import AnalysisError

TAU2_MAX_FLOOR = 100.0


# --------------------------------------------------------------------------- mixed-effects model


def _p_matrix(v: np.ndarray, x: np.ndarray, tau2: float) -> tuple[np.ndarray, np.ndarray]:
    """``P = W − W X (XᵀWX)⁻¹ XᵀW`` with ``W = diag(1/(v + τ²))``; also ``(XᵀWX)⁻¹``."""
    w = 1 / (v + tau2)
    xtwx_inv = np.linalg.inv(x.T @ (w[:, None] * x))
    wx = w[:, None] * x
    p = np.diag(w) - wx @ xtwx_inv @ wx.T
    return p, xtwx_inv


def _rank_check(x: np.ndarray, names: list[str]) -> None:
    if np.linalg.matrix_rank(x) < x.shape[1]:
        raise AnalysisError(
            f"the moderators are collinear (the design matrix with {', '.join(names)} is not of full rank)",
            hint="Drop a moderator that is a combination of others, or a level with no studies.",
        )


def _root(f: Any, hi_start: float, what: str) -> float:
    """Root of a decreasing ``f`` on [0, ∞) with ``f(0) > 0``."""
    hi = max(hi_start, 1e-8)
    while f(hi) > 0:
        hi *= 2
        if hi > 1e12:
            raise AnalysisError(f"the {what} does not converge (effects are extreme)")
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-14, rtol=1e-14, maxiter=500))


def estimate_tau2(y: np.ndarray, v: np.ndarray, x: np.ndarray, method: str) -> float:
    """τ² of the (mixed-effects) model ``y = Xβ + u + e`` by ``method`` (truncated at 0)."""
    k, p = x.shape
    if method == "FE" or k - p < 1:
        return 0.0
    if method == "DL":
        p0, _ = _p_matrix(v, x, 0.0)
        return max(0.0, float((y @ p0 @ y - (k - p)) / np.trace(p0)))
    if method == "PM":

        def q_excess(t: float) -> float:
            pm, _ = _p_matrix(v, x, t)
            return float(y @ pm @ y) - float(k - p)

        if q_excess(0.0) <= 0:
            return 0.0
        return _root(q_excess, float(np.var(y)) + float(v.mean()), "Paule–Mandel τ²")
    reml = method == "REML"
    fisher = _fisher_scoring(y, v, x, reml)
    if fisher is not None:
        return fisher

    def score(t: float) -> float:
        pm, _ = _p_matrix(v, x, t)
        py = pm @ y
        s = 0.5 * float(py @ py)
        s -= 0.5 * float(np.trace(pm)) if reml else 0.5 * float((1 / (v + t)).sum())
        return s

    if score(0.0) <= 0:
        return 0.0
    return _root(score, float(np.var(y)) + float(v.mean()), "between-study variance")


def _fisher_scoring(y: np.ndarray, v: np.ndarray, x: np.ndarray, reml: bool) -> float | None:
    """ML/REML τ² by metafor's Fisher scoring: start at Hedges' estimate (or 0), step
    ``(yᵀPPy − tr P) / tr(PP)`` (REML) or ``(yᵀPPy − Σw) / Σw²`` (ML), halve steps that
    would go below 0, stop when τ² changes by less than 10⁻⁵ (at most 100 steps).
    None if it does not converge (the caller then solves the score equation)."""
    k, p = x.shape
    h = np.eye(k) - x @ np.linalg.inv(x.T @ x) @ x.T
    tau2 = max(0.0, float((y @ h @ y - float(np.trace(h * v))) / (k - p)))
    for _ in range(101):
        pm, _ = _p_matrix(v, x, tau2)
        py = pm @ y
        if reml:
            adj = (float(py @ py) - float(np.trace(pm))) / float((pm * pm).sum())
        else:
            w = 1 / (v + tau2)
            adj = (float(py @ py) - float(w.sum())) / float((w**2).sum())
        if not math.isfinite(adj):
            return None
        for _ in range(1100):
            if tau2 + adj >= 0:
                break
            adj /= 2
        new = tau2 + adj
        if abs(new - tau2) < 1e-5:
            return new
        tau2 = new
    return None


def tau2_se(y: np.ndarray, v: np.ndarray, x: np.ndarray, tau2: float, method: str) -> float | None:
    """Standard error of τ² as metafor's ``rma.uni`` gives it (``se.tau2``); None for FE."""
    k, p = x.shape
    if method == "FE" or k - p < 1:
        return None
    if method == "DL":
        p0, _ = _p_matrix(v, x, 0.0)
        tr = float(np.trace(p0))
        return math.sqrt(
            (2 * (k - p) + 4 * tau2 * tr + 2 * tau2**2 * float((p0 * p0).sum())) / tr**2
        )
    w = 1 / (v + tau2)
    if method == "ML":
        return math.sqrt(2 / float((w**2).sum()))
    if method == "REML":
        pm, _ = _p_matrix(v, x, tau2)
        return math.sqrt(2 / float((pm * pm).sum()))
    # PM (metafor: the same formula as for EB)
    return math.sqrt(2 * k**2 / (k - p) / float(w.sum()) ** 2)


def _loglik(y: np.ndarray, v: np.ndarray, x: np.ndarray, tau2: float, reml: bool) -> float:
    pm, xtwx_inv = _p_matrix(v, x, tau2)
    k, p = x.shape
    ll = -0.5 * (float(np.log(v + tau2).sum()) + float(y @ pm @ y))
    if reml:
        ll -= 0.5 * (k - p) * math.log(2 * math.pi) - 0.5 * float(np.linalg.slogdet(xtwx_inv)[1])
    else:
        ll -= 0.5 * k * math.log(2 * math.pi)
    return float(ll)


def tau2_confint(
    y: np.ndarray,
    v: np.ndarray,
    x: np.ndarray,
    tau2: float,
    *,
    level: float = 0.95,
    kind: str = "QP",
    method: str = "REML",
) -> tuple[float, float, bool]:
    """``(low, high, null_set)`` for τ² by Q-profile (``QP``) or profile likelihood (``PL``).

    As metafor's ``confint.rma.uni``: the search runs over [0, max(100, 10·τ²)];
    a bound at 0 means the interval reaches 0. ``null_set`` is True when even
    τ² = 0 gives a Q below the lower critical value (the CI is then [0, 0]).
    """
    k, p = x.shape
    alpha = 1 - level
    t_max = max(TAU2_MAX_FLOOR, 10 * tau2)
    if kind == "QP":

        def q_of(t: float) -> float:
            pm, _ = _p_matrix(v, x, t)
            return float(y @ pm @ y)

        crit_u = float(stats.chi2.ppf(1 - alpha / 2, k - p))
        crit_l = float(stats.chi2.ppf(alpha / 2, k - p))
        q0, qmax = q_of(0.0), q_of(t_max)
        if q0 < crit_l:
            return 0.0, 0.0, True
        high = (
            t_max
            if qmax > crit_l
            else float(optimize.brentq(lambda t: q_of(t) - crit_l, 0.0, t_max, xtol=1e-12))
        )
        if q0 < crit_u:
            low = 0.0
        elif qmax > crit_u:
            low = t_max
        else:
            low = float(optimize.brentq(lambda t: q_of(t) - crit_u, 0.0, t_max, xtol=1e-12))
        return low, high, False
    if kind == "PL":
        if method not in ("ML", "REML"):
            raise AnalysisError(
                f"a profile-likelihood CI for tau² needs --method ML or REML (not {method})",
                hint="Use --tau2-ci QP (Q-profile), which works with every estimator.",
            )
        reml = method == "REML"
        ll_max = _loglik(y, v, x, tau2, reml)
        crit = float(stats.chi2.ppf(level, 1))

        def dev(t: float) -> float:
            return 2 * (ll_max - _loglik(y, v, x, t, reml)) - crit

        low = 0.0 if dev(0.0) < 0 else float(optimize.brentq(dev, 0.0, tau2, xtol=1e-12))
        high = t_max if dev(t_max) < 0 else float(optimize.brentq(dev, tau2, t_max, xtol=1e-12))
        return low, high, False
    raise AnalysisError(
        f"unknown tau² CI method '{kind}'", hint="Use QP (Q-profile) or PL (profile likelihood)."
    )


def rma(
    y: np.ndarray,
    v: np.ndarray,
    x: np.ndarray,
    names: list[str],
    *,
    method: str = "REML",
    test: str = "z",
    level: float = 0.95,
) -> dict[str, Any]:
    """Fit ``rma(yi, vi, mods = X[, -1], method, test)``; ``x`` has the intercept in column 0."""
    k, p = x.shape
    if k - p < 1:
        raise AnalysisError(
            f"{k} studies cannot estimate {p} coefficients with residual degrees of freedom left",
            hint="Use fewer moderators (each category level is one coefficient) or more studies.",
        )
    _rank_check(x, names)
    tau2 = estimate_tau2(y, v, x, method)
    pm, vb = _p_matrix(v, x, tau2)
    w = 1 / (v + tau2)
    beta = vb @ (x.T @ (w * y))
    df_res = k - p
    if test == "knha":
        s2w = float(y @ pm @ y) / df_res
        vb = vb * s2w
    se = np.sqrt(np.diag(vb))
    alpha = 1 - level
    if test == "knha":
        crit = float(stats.t.ppf(1 - alpha / 2, df_res))
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = beta / se
        pvals = 2 * stats.t.sf(np.abs(stat), df_res)
    else:
        crit = float(stats.norm.ppf(1 - alpha / 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = beta / se
        pvals = 2 * stats.norm.sf(np.abs(stat))
    coefficients = [
        {
            "name": names[j],
            "estimate": float(beta[j]),
            "se": float(se[j]),
            "ci_low": float(beta[j] - crit * se[j]),
            "ci_high": float(beta[j] + crit * se[j]),
            "stat": float(stat[j]),
            "p": float(pvals[j]),
        }
        for j in range(p)
    ]
    # omnibus test of all coefficients but the intercept
    m = p - 1
    qm = qm_p = None
    if m > 0:
        b = beta[1:]
        try:
            qm = float(b @ np.linalg.solve(vb[1:, 1:], b))
        except np.linalg.LinAlgError:
            qm = math.nan
        if test == "knha":
            qm /= m
            qm_p = float(stats.f.sf(qm, m, df_res))
        else:
            qm_p = float(stats.chi2.sf(qm, m))
    p0, _ = _p_matrix(v, x, 0.0)
    qe = max(0.0, float(y @ p0 @ y))
    vt = df_res / float(np.trace(p0))
    if method == "FE":
        i2 = max(0.0, 100 * (qe - df_res) / qe) if qe > 0 else 0.0
        h2 = qe / df_res
    else:
        i2 = 100 * tau2 / (vt + tau2)
        h2 = tau2 / vt + 1
    return {
        "k": k,
        "p": p,
        "beta": beta,
        "vb": vb,
        "coefficients": coefficients,
        "qm": qm,
        "qm_df": m if m > 0 else None,
        "qm_df2": df_res if (m > 0 and test == "knha") else None,
        "qm_p": qm_p,
        "qe": qe,
        "qe_df": df_res,
        "qe_p": float(stats.chi2.sf(qe, df_res)),
        "tau2": tau2,
        "tau2_se": tau2_se(y, v, x, tau2, method),
        "i2": i2,
        "h2": h2,
        "vt": vt,
        "crit": crit,
        "weights": w if method != "FE" else 1 / v,
    }


# --------------------------------------------------------------------------- sparse-data methods


def _add(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, add: float, to: str
) -> tuple[np.ndarray, ...]:
    if to == "all":
        return a + add, b + add, c + add, d + add
    if to in ("only0", "if0all"):
        zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
        if to == "if0all":
            zero = np.full(len(a), bool(zero.any()))
        return a + add * zero, b + add * zero, c + add * zero, d + add * zero
    return a, b, c, d


def mantel_haenszel(
    measure: str,
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    *,
    level: float = 0.95,
    add: float = 0.0,
    to: str = "none",
    correct: bool = True,
) -> dict[str, Any]:
    """Mantel–Haenszel pooled OR / RR / RD (metafor ``rma.mh``; counts uncorrected by default).

    For IRR, ``a, c`` are the events and ``b, d`` the person-times of the two groups.
    Returns estimate, se, the study weights (%) and, for OR, the Cochran–Mantel–Haenszel
    test (with continuity correction) and Tarone's test for heterogeneity.
    """
    out: dict[str, Any] = {}
    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    if measure == "IRR":
        x1, t1, x2, t2 = a, b, c, d
        tt = t1 + t2
        r, s = float((x1 * t2 / tt).sum()), float((x2 * t1 / tt).sum())
        if x1.sum() == 0 or x2.sum() == 0:
            raise AnalysisError(
                "Mantel–Haenszel IRR is undefined: one group has no events in any study"
            )
        est = math.log(r / s)
        se = math.sqrt(float((t1 / tt * t2 / tt * (x1 + x2)).sum()) / (r * s))
        weights = x2 * t1 / tt
    else:
        a, b, c, d = _add(a, b, c, d, add, to)
        n1, n2 = a + b, c + d
        n = n1 + n2
        if measure == "OR":
            pi, qi = (a + d) / n, (b + c) / n
            ri, si = a * d / n, b * c / n
            r, s = float(ri.sum()), float(si.sum())
            if r == 0 or s == 0:
                raise AnalysisError(
                    "Mantel–Haenszel OR is undefined: no study has events (or non-events) in the right cells"
                )
            est = math.log(r / s)
            se = math.sqrt(
                0.5
                * (
                    float((pi * ri).sum()) / r**2
                    + float((pi * si + qi * ri).sum()) / (r * s)
                    + float((qi * si).sum()) / s**2
                )
            )
            weights = si
            xt, yt = a + c, b + d
            if xt.sum() > 0 and yt.sum() > 0:
                num = (abs(float((a - n1 / n * xt).sum())) - (0.5 if correct else 0.0)) ** 2
                cmh = num / float((n1 / n * n2 / n * xt * yt / (n - 1)).sum())
                out["cmh"] = cmh
                out["cmh_p"] = float(stats.chi2.sf(cmh, 1))
            orr = r / s
            if orr == 1:
                n11 = n1 / n * xt
            else:
                aa = orr * (n1 + xt) + (n2 - xt)
                bb = np.sqrt(aa**2 - 4 * n1 * xt * orr * (orr - 1))
                n11 = (aa - bb) / (2 * (orr - 1))
            pos = (n11 > 0) & (xt > 0) & (yt > 0)
            n11p = n11[pos]
            n12, n21 = n1[pos] - n11p, xt[pos] - n11p
            n22 = n11p - n1[pos] - xt[pos] + n[pos]
            inv = 1 / (1 / n11p + 1 / n12 + 1 / n21 + 1 / n22)
            dev = a[pos] - n11p
            bd = max(0.0, float((dev**2 / inv).sum()))
            ta = max(0.0, bd - float(dev.sum()) ** 2 / float(inv.sum()))
            kpos = int(pos.sum())
            out["tarone"] = ta
            out["tarone_df"] = kpos - 1
            out["tarone_p"] = float(stats.chi2.sf(ta, kpos - 1)) if kpos > 1 else None
        elif measure == "RR":
            r, s = float((a * n2 / n).sum()), float((c * n1 / n).sum())
            if a.sum() == 0 or c.sum() == 0:
                raise AnalysisError(
                    "Mantel–Haenszel RR is undefined: one group has no events in any study"
                )
            est = math.log(r / s)
            se = math.sqrt(float((n1 / n * n2 / n * (a + c) - a / n * c).sum()) / (r * s))
            weights = c * n1 / n
        elif measure == "RD":
            denom = float((n1 * n2 / n).sum())
            est = float((a * n2 / n - c * n1 / n).sum()) / denom
            # Sato, Greenland & Robins (1989), as metafor
            pterm = float(
                (c * (n1 / n) ** 2 - a * (n2 / n) ** 2 + n1 / n * n2 / n * (n2 - n1) / 2).sum()
            )
            qterm = float((a * (n2 - c) / n + c * (n1 - a) / n).sum()) / 2
            se = math.sqrt((est * pterm + qterm) / denom**2)
            weights = n1 * n2 / n
        else:  # pragma: no cover - checked by the caller
            raise AnalysisError(f"Mantel–Haenszel is not available for {measure}")
    stat = est / se
    out.update(
        {
            "estimate": est,
            "se": se,
            "stat": stat,
            "p": float(2 * stats.norm.sf(abs(stat))),
            "ci_low": est - z * se,
            "ci_high": est + z * se,
            "weights": 100 * weights / weights.sum(),
        }
    )
    return out


def peto(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    *,
    level: float = 0.95,
    add: float = 0.0,
    to: str = "none",
) -> dict[str, Any]:
    """Peto's one-step log odds ratio and its heterogeneity Q (metafor ``rma.peto``)."""
    a, b, c, d = _add(a, b, c, d, add, to)
    n1, n2 = a + b, c + d
    n = n1 + n2
    xt, yt = a + c, b + d
    e = xt * n1 / n
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(n > 1, xt * yt * (n1 / n) * (n2 / n) / (n - 1), 0.0)
    total = float(var.sum())
    if total == 0:
        raise AnalysisError(
            "Peto's method cannot be used: one of the two outcomes never occurred in any study",
            hint="Every study has either no events or only events.",
        )
    est = float((a - e).sum()) / total
    se = math.sqrt(1 / total)
    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    pos = var > 0
    qe = max(0.0, float(((a - e)[pos] ** 2 / var[pos]).sum()) - float((a - e).sum()) ** 2 / total)
    return {
        "estimate": est,
        "se": se,
        "stat": est / se,
        "p": float(2 * stats.norm.sf(abs(est / se))),
        "ci_low": est - z * se,
        "ci_high": est + z * se,
        "qe_peto": qe,
        "k_pos": int(pos.sum()),
        "weights": 100 * var / total,
    }
