"""Compare classifier labels with a gold labels file.

Both sides have the columns of ``celltrials labels``::

    registry_id,is_cell_therapy,cell_type,msc_source,origin,product_form,indication_group,therapeutic_area

How rows are scored
-------------------
* Rows are matched on ``registry_id`` (trimmed). A gold row without a
  predicted row counts as predicted ``is_cell_therapy = no`` with every
  label empty (it is listed in ``missing``), so missing rows lower scores
  instead of vanishing.
* ``is_cell_therapy`` is scored over every gold row: accuracy plus
  precision / recall / F1 of the ``yes`` class.
* The product fields ``cell_type``, ``msc_source``, ``origin`` and
  ``product_form`` are scored over **gold-positive rows** only (gold
  ``is_cell_therapy = yes``): for a gold-negative trial they are empty by
  definition and would only repeat the ``is_cell_therapy`` score.
* ``indication_group`` and ``therapeutic_area`` are labelled for every gold
  row (cell therapy or not), so they are scored over **all** gold rows.
* Accuracy is exact agreement of the field (for multi-valued fields the
  ``;``-separated set, order ignored).
* Per-value precision / recall / F1 treat every value as a binary label per
  scored row (a multi-valued field contributes one decision per value); the
  values are the union of gold and predicted values on the scored rows (empty
  is not a value). Macro-F1 is the unweighted mean of those per-value F1s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from celltrials.errors import ConfigError

FIELDS = [
    "is_cell_therapy",
    "cell_type",
    "msc_source",
    "origin",
    "product_form",
    "indication_group",
    "therapeutic_area",
]
MULTI_VALUED = frozenset({"cell_type", "msc_source", "product_form", "therapeutic_area"})
POSITIVE_ONLY = frozenset({"cell_type", "msc_source", "origin", "product_form"})


def _values(field: str, raw: Any) -> frozenset[str]:
    if raw is None or (isinstance(raw, float) and raw != raw):
        return frozenset()
    text = str(raw).strip()
    if not text:
        return frozenset()
    if field in MULTI_VALUED:
        return frozenset(v.strip() for v in text.split(";") if v.strip())
    return frozenset({text})


def _table(
    obj: pd.DataFrame | str | Path | Sequence[Mapping[str, Any]], what: str
) -> dict[str, dict[str, Any]]:
    if isinstance(obj, pd.DataFrame):
        df = obj
    elif isinstance(obj, str | Path):
        p = Path(obj)
        if not p.exists():
            raise ConfigError(f"{what} file not found: {p}", hint="Pass the path of a labels CSV.")
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    else:
        df = pd.DataFrame(list(obj))
    if "registry_id" not in df.columns:
        raise ConfigError(
            f"{what} has no 'registry_id' column", hint="Use the columns of `celltrials labels`."
        )
    missing = [f for f in FIELDS if f not in df.columns]
    if missing:
        raise ConfigError(
            f"{what} lacks column(s) {', '.join(missing)}",
            hint="Use the columns of `celltrials labels`.",
        )
    out: dict[str, dict[str, Any]] = {}
    for rec in df.to_dict("records"):
        row = {str(k): v for k, v in rec.items()}
        rid = str(row["registry_id"]).strip()
        if rid and rid not in out:
            out[rid] = row
    return out


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(f, 4),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": tp + fn,
    }


def evaluate(
    labels: pd.DataFrame | str | Path | Sequence[Mapping[str, Any]],
    gold: pd.DataFrame | str | Path | Sequence[Mapping[str, Any]],
    evidence: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Score ``labels`` against ``gold``; see the module docstring for the rules.

    ``evidence`` (registry_id → evidence dicts with a ``field`` key) is attached
    to each disagreement. Returns a JSON-ready dict.
    """
    pred = _table(labels, "labels")
    gold_rows = _table(gold, "gold")
    missing = sorted(r for r in gold_rows if r not in pred)
    accuracy: dict[str, dict[str, Any]] = {}
    per_value: dict[str, dict[str, dict[str, float | int]]] = {}
    macro: dict[str, float] = {}
    disagreements: list[dict[str, Any]] = []
    for field in FIELDS:
        n = correct = 0
        counts: dict[str, list[int]] = {}
        for rid, g in gold_rows.items():
            gpos = str(g.get("is_cell_therapy", "")).strip() == "yes"
            if field in POSITIVE_ONLY and not gpos:
                continue
            p = pred.get(rid)
            gv = _values(field, g.get(field))
            pv = (
                _values(field, p.get(field))
                if p is not None
                else (frozenset({"no"}) if field == "is_cell_therapy" else frozenset())
            )
            n += 1
            if gv == pv:
                correct += 1
            else:
                ev = []
                if evidence is not None and rid in evidence:
                    ev = [dict(e) for e in evidence[rid] if e.get("field") == field]
                disagreements.append(
                    {
                        "registry_id": rid,
                        "field": field,
                        "predicted": ";".join(sorted(pv)),
                        "gold": ";".join(sorted(gv)),
                        "note": str(g.get("note", "") or ""),
                        "evidence": ev,
                    }
                )
            for v in gv | pv:
                c = counts.setdefault(v, [0, 0, 0])
                if v in gv and v in pv:
                    c[0] += 1
                elif v in pv:
                    c[1] += 1
                else:
                    c[2] += 1
        accuracy[field] = {
            "accuracy": round(correct / n, 4) if n else 0.0,
            "correct": correct,
            "n": n,
        }
        per_value[field] = {v: _prf(*c) for v, c in sorted(counts.items())}
        if field == "is_cell_therapy":
            continue
        f1s = [float(m["f1"]) for m in per_value[field].values()]
        macro[field] = round(sum(f1s) / len(f1s), 4) if f1s else 0.0
    ict = per_value["is_cell_therapy"].get("yes", _prf(0, 0, 0))
    return {
        "n_gold": len(gold_rows),
        "n_matched": len(gold_rows) - len(missing),
        "missing": missing,
        "is_cell_therapy": {"accuracy": accuracy["is_cell_therapy"]["accuracy"], **ict},
        "accuracy": accuracy,
        "per_value": per_value,
        "macro_f1": macro,
        "disagreements": disagreements,
    }


#: Quality targets of issue 10, on dev.csv + immune_dev.csv together:
#: (field, measure, threshold) with measure "f1" (is_cell_therapy), "macro_f1" or "accuracy".
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("is_cell_therapy", "f1", 0.98),
    ("cell_type", "macro_f1", 0.95),
    ("msc_source", "accuracy", 0.93),
    ("origin", "accuracy", 0.93),
    ("product_form", "accuracy", 0.93),
    ("indication_group", "accuracy", 0.93),
    ("therapeutic_area", "accuracy", 0.90),
)


def combined_gold(golds: Sequence[str | Path]) -> pd.DataFrame:
    """Several gold files as one table (a registry id in two files: the first wins)."""
    frames = []
    for g in golds:
        p = Path(g)
        if not p.exists():
            raise ConfigError(f"gold file not found: {p}", hint="Pass the path of a labels CSV.")
        frames.append(pd.read_csv(p, dtype=str, keep_default_na=False))
    df = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["registry_id", *FIELDS])
    )
    return df.drop_duplicates("registry_id", keep="first")


def evaluate_many(
    labels: pd.DataFrame | str | Path | Sequence[Mapping[str, Any]],
    golds: Sequence[str | Path],
    evidence: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Score ``labels`` against each gold file and against all of them together.

    Returns ``{"files": {name: result}, "combined": result, "targets": [...]}``
    where each result is what :func:`evaluate` returns and ``targets`` lists
    each quality target with the combined value and whether it is met."""
    files = {Path(g).name: evaluate(labels, g, evidence) for g in golds}
    combined = evaluate(labels, combined_gold(golds), evidence)
    return {"files": files, "combined": combined, "targets": target_checks(combined)}


def measure(result: Mapping[str, Any], field: str, kind: str) -> float:
    """One number of an :func:`evaluate` result: ``f1`` of is_cell_therapy, a
    field's ``macro_f1`` or its ``accuracy``."""
    if kind == "f1":
        return float(result["is_cell_therapy"]["f1"])
    if kind == "macro_f1":
        return float(result["macro_f1"].get(field, 0.0))
    return float(result["accuracy"][field]["accuracy"])


def target_checks(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "field": f,
            "measure": k,
            "target": t,
            "value": measure(result, f, k),
            "met": measure(result, f, k) >= t,
        }
        for f, k, t in TARGETS
    ]


def accuracy_markdown(many: Mapping[str, Any]) -> str:
    """The README table of :func:`evaluate_many`: per field accuracy (macro-F1) on
    each gold file and on all together, with the target."""
    names = list(many["files"])
    head = (
        "| field | "
        + " | ".join(f"{n} ({many['files'][n]['n_gold']} rows)" for n in names)
        + " | together | target (together) |"
    )
    lines = [head, "|---" * (len(names) + 3) + "|"]
    for f, kind, t in TARGETS:
        cells = []
        for res in [*(many["files"][n] for n in names), many["combined"]]:
            if f == "is_cell_therapy":
                cells.append(
                    f"{res['accuracy'][f]['accuracy']:.3f} (F1 {res['is_cell_therapy']['f1']:.3f})"
                )
            else:
                acc = res["accuracy"][f]
                mf = res["macro_f1"].get(f)
                cells.append(
                    f"{acc['accuracy']:.3f}"
                    + (f" ({mf:.3f})" if mf is not None and acc["n"] else "")
                    + f" n={acc['n']}"
                )
        what = {"f1": "F1", "macro_f1": "macro-F1", "accuracy": "accuracy"}[kind]
        lines.append(f"| {f} | " + " | ".join(cells) + f" | {what} ≥ {t:.2f} |")
    return "\n".join(lines)
