"""Labelling the store: the classifier's input read from a store and its
labels written back and read out (issue 7).

:mod:`celltrials.classify` is the pure classifier (trial text in, labels
with evidence out) and :mod:`celltrials.classify_parallel` runs it on many
cores; this module sits above both and talks to the store: it builds each
trial's :class:`~celltrials.classify.TrialText` from the store
(:func:`store_trial_texts`), classifies every trial into the ``labels`` and
``label_evidence`` tables (:func:`classify_store`), and reads them back as the
labels file (:func:`labels_rows`), per-trial explanations
(:func:`explain_trial`) and evaluations against gold or third-party labels.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from celltrials.classify import (
    LABEL_COLUMNS,
    Classifier,
    TrialText,
    unknown_product_names,
)
from celltrials.classify_parallel import classify_many
from celltrials.errors import ConfigError, StoreError
from celltrials.evaluate import evaluate, evaluate_many
from celltrials.models import Arm, Intervention, ParsedRecord
from celltrials.progress import Progress, ProgressEvent
from celltrials.store import Store
from celltrials.taxonomy.loader import Taxonomy

_LABEL_COLS = [
    "trial_id",
    "is_cell_therapy",
    "cell_type",
    "msc_source",
    "origin",
    "product_form",
    "indication_group",
    "therapeutic_area",
    "targets",
    "dose",
    "route",
    "combinations",
    "manufacturing",
    "taxonomy_version",
    "classified_at",
    "input_hash",
]
_EVIDENCE_COLS = ["trial_id", "field", "value", "source_field", "text", "start", "end"]


def store_trial_texts(store: Store, trial_ids: Iterable[str] | None = None) -> list[TrialText]:
    """The texts of every merged trial in ``store`` (all its current records, primary first)."""

    con = store.con
    wanted = set(trial_ids) if trial_ids is not None else None
    # a few trials (explain, the dashboard): filter in SQL, not over the whole store
    few = wanted is not None and len(wanted) <= 1000
    rows = con.execute(
        f"""
        SELECT tr.trial_id, r.record_key, r.record_id, r.channel, r.source_format, r.registry,
               r.title, r.official_title, r.acronym, r.brief_summary, r.detailed_description
        FROM trial_records tr JOIN records r USING (record_key)
        {"WHERE tr.trial_id IN (SELECT unnest(?::VARCHAR[]))" if few else ""}
        ORDER BY tr.trial_id, tr.is_primary DESC, r.record_key""",
        [sorted(wanted or ())] if few else [],
    ).fetchall()
    recs: dict[str, ParsedRecord] = {}
    by_trial: dict[str, list[ParsedRecord]] = {}
    for tid, key, rid, channel, fmt, registry, title, otitle, acr, summ, desc in rows:
        if wanted is not None and tid not in wanted:
            continue
        rec = ParsedRecord(
            channel=channel or "",
            source_format=fmt or "",
            record_id=rid or "",
            registry=registry or "",
            raw={},
            title=title or "",
            official_title=otitle or "",
            acronym=acr or "",
            brief_summary=summ or "",
            detailed_description=desc or "",
        )
        recs[key] = rec
        by_trial.setdefault(tid, []).append(rec)
    keys_sql = "WHERE record_key IN (SELECT unnest(?::VARCHAR[]))" if few else ""
    keys: list[Any] = [list(recs)] if few else []
    for key, cond, kind in con.execute(
        f"SELECT record_key, condition, kind FROM record_conditions {keys_sql}", keys
    ).fetchall():
        crec = recs.get(key)
        if crec is None or not cond:
            continue
        rec = crec
        if kind == "mesh":
            rec.mesh_terms.append(cond)
        elif kind == "mesh_ancestor":
            rec.mesh_ancestors.append(cond)
        elif kind == "keyword":
            rec.keywords.append(cond)
        else:
            rec.conditions.append(cond)
    for key, _idx, typ, name, desc, other, arms in con.execute(
        f"SELECT record_key, idx, type, name, description, other_names, arm_labels FROM record_interventions {keys_sql} ORDER BY record_key, idx",
        keys,
    ).fetchall():
        irec = recs.get(key)
        if irec is not None:
            irec.interventions.append(
                Intervention(typ or "", name or "", desc or "", list(other or []), list(arms or []))
            )
    for key, _idx, label, typ, desc, names in con.execute(
        f"SELECT record_key, idx, label, type, description, intervention_names FROM record_arms {keys_sql} ORDER BY record_key, idx",
        keys,
    ).fetchall():
        arec = recs.get(key)
        if arec is not None:
            arec.arms.append(Arm(label or "", typ or "", desc or "", list(names or [])))
    return [TrialText.from_records(rs, tid) for tid, rs in by_trial.items()]


def classify_store(
    store: Store,
    only_changed: bool = False,
    progress: Progress | None = None,
    taxonomy: Taxonomy | None = None,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Classify every trial in ``store`` into tables ``labels`` and ``label_evidence``.

    ``only_changed`` skips trials whose input hash and taxonomy version match
    their stored labels. ``progress`` receives a ``classify``/``trials``
    :class:`~celltrials.progress.ProgressEvent` now and then.
    ``jobs``: worker processes (None: all cores when the store is large enough;
    1: this process); the labels do not depend on it
    (:func:`celltrials.classify_parallel.classify_many`).
    Returns a summary dict.
    """

    t0 = time.perf_counter()
    clf = Classifier(taxonomy)
    texts = store_trial_texts(store)
    existing: dict[str, tuple[str, str]] = {}
    if only_changed:
        for tid, ver, h in store.con.execute(
            "SELECT trial_id, taxonomy_version, input_hash FROM labels"
        ).fetchall():
            existing[tid] = (ver, h)
    now = datetime.now(UTC).replace(tzinfo=None)
    lab_rows: list[dict[str, Any]] = []
    ev_rows: list[dict[str, Any]] = []
    skipped = 0
    counts: dict[str, int] = {}
    total = len(texts)
    todo = texts
    if only_changed:
        todo = [tt for tt in texts if existing.get(tt.trial_id) != (clf.tax.version, tt.digest())]
        skipped = total - len(todo)

    def report(done: int, _n: int) -> None:
        if progress is not None:
            progress(ProgressEvent("classify", "trials", done=skipped + done, total=total))

    for lab in classify_many(todo, jobs=jobs, taxonomy=taxonomy, progress=report):
        row = lab.to_row()
        lab_rows.append(
            {
                "trial_id": lab.trial_id,
                "is_cell_therapy": lab.is_cell_therapy,
                **{k: row[k] for k in LABEL_COLUMNS[2:]},
                "targets": ";".join(lab.targets),
                "dose": ";".join(lab.dose),
                "route": ";".join(lab.route),
                "combinations": ";".join(lab.combinations),
                "manufacturing": ";".join(lab.manufacturing),
                "taxonomy_version": lab.taxonomy_version,
                "classified_at": now,
                "input_hash": lab.input_hash,
            }
        )
        for e in lab.evidence:
            ev_rows.append(
                {
                    "trial_id": lab.trial_id,
                    **{
                        k: getattr(e, k)
                        for k in ("field", "value", "source_field", "text", "start", "end")
                    },
                }
            )
        for ct in lab.cell_type:
            counts[ct] = counts.get(ct, 0) + 1
    labels_df = pd.DataFrame(lab_rows, columns=_LABEL_COLS)
    ev_df = pd.DataFrame(ev_rows, columns=_EVIDENCE_COLS)
    ev_df["start"] = ev_df["start"].astype("int32")
    ev_df["end"] = ev_df["end"].astype("int32")
    with store.transaction() as con:
        current = {t.trial_id for t in texts}
        if only_changed:
            con.register("_new_labels", labels_df)
            con.execute("DELETE FROM labels WHERE trial_id IN (SELECT trial_id FROM _new_labels)")
            con.execute(
                "DELETE FROM label_evidence WHERE trial_id IN (SELECT trial_id FROM _new_labels)"
            )
            stale = [t for t in existing if t not in current]
            if stale:
                con.execute("DELETE FROM labels WHERE trial_id IN (SELECT UNNEST(?))", [stale])
                con.execute(
                    "DELETE FROM label_evidence WHERE trial_id IN (SELECT UNNEST(?))", [stale]
                )
        else:
            con.execute("DELETE FROM labels")
            con.execute("DELETE FROM label_evidence")
            con.register("_new_labels", labels_df)
        con.register("_new_evidence", ev_df)
        con.execute(
            f"INSERT INTO labels ({', '.join(_LABEL_COLS)}) SELECT {', '.join(_LABEL_COLS)} FROM _new_labels"
        )
        con.execute(
            'INSERT INTO label_evidence SELECT trial_id, field, value, source_field, text, start, "end" FROM _new_evidence'
        )
        con.unregister("_new_labels")
        con.unregister("_new_evidence")
    n_row = store.con.execute("SELECT count(*) FROM labels WHERE is_cell_therapy").fetchone()
    n_cell = int(n_row[0]) if n_row else 0
    return {
        "trials": total,
        "classified": len(lab_rows),
        "skipped_unchanged": skipped,
        "cell_therapy_trials": n_cell,
        "cell_types": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "taxonomy_version": clf.tax.version,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def unknown_products(
    store: Store, taxonomy: Taxonomy | None = None, limit_examples: int = 5
) -> list[dict[str, Any]]:
    """Intervention names of the store's cell-therapy trials that name no known
    product (see :func:`celltrials.classify.unknown_product_names`)."""
    return unknown_product_names(store_trial_texts(store), taxonomy, limit_examples)


def _require_labels(store: Store) -> None:

    row = store.con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'labels'"
    ).fetchone()
    if (
        not row
        or not row[0]
        or not store.con.execute("SELECT count(*) FROM labels").fetchall()[0][0]
    ):
        raise StoreError("the store has no labels yet", hint="Run `celltrials classify` first.")


def labels_rows(store: Store) -> list[dict[str, str]]:
    """The labels file: one row per trial under its primary id, plus one row per
    other id of the trial (secondary registry ids, other records' ids) with the same labels."""
    con = store.con
    _require_labels(store)
    labs = con.execute(f"""
        SELECT t.primary_record_id, l.trial_id, {", ".join("l." + c for c in LABEL_COLUMNS[1:])}
        FROM labels l JOIN trials t USING (trial_id) ORDER BY l.trial_id""").fetchall()
    ids: dict[str, list[str]] = {}
    for tid, rid in con.execute("""
        SELECT DISTINCT tr.trial_id, r.record_id FROM trial_records tr JOIN records r USING (record_key)
        UNION SELECT DISTINCT trial_id, id_raw FROM trial_ids""").fetchall():
        if rid:
            ids.setdefault(tid, []).append(str(rid).strip())
    out: list[dict[str, str]] = []
    for primary, tid, is_ct, *rest in labs:
        base = {
            "is_cell_therapy": "yes" if is_ct else "no",
            **dict(zip(LABEL_COLUMNS[2:], (r or "" for r in rest), strict=True)),
        }
        seen = {primary}
        out.append({"registry_id": primary, **base})
        for other in sorted(set(ids.get(tid, [])) - seen):
            if other not in seen:
                seen.add(other)
                out.append({"registry_id": other, **base})
    return out


def store_evidence(store: Store, trial_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Evidence rows by trial id (all trials, or one)."""
    con = store.con
    _require_labels(store)
    sql = 'SELECT trial_id, field, value, source_field, text, start, "end" FROM label_evidence'
    params: list[Any] = []
    if trial_id is not None:
        sql += " WHERE trial_id = ?"
        params.append(trial_id)
    out: dict[str, list[dict[str, Any]]] = {}
    for tid, fld, val, src, text, start, end in con.execute(sql, params).fetchall():
        out.setdefault(tid, []).append(
            {
                "field": fld,
                "value": val,
                "source_field": src,
                "text": text,
                "start": start,
                "end": end,
            }
        )
    return out


def evaluate_store(store: Store, gold: Any) -> dict[str, Any]:
    """Evaluate the store's labels against a gold CSV (any registry id of a trial matches)."""

    rows, evidence = _rows_with_evidence(store)
    return evaluate(rows, gold, evidence)


def evaluate_store_many(store: Store, golds: Sequence[Any]) -> dict[str, Any]:
    """Evaluate the store's labels against several gold CSVs, each and together
    (see :func:`celltrials.evaluate.evaluate_many`)."""

    rows, evidence = _rows_with_evidence(store)
    return evaluate_many(rows, golds, evidence)


def _rows_with_evidence(
    store: Store,
) -> tuple[list[dict[str, str]], dict[str, list[dict[str, Any]]]]:
    rows = labels_rows(store)
    ev_by_trial = store_evidence(store)
    trial_of: dict[str, str] = {}
    for tid, rid in store.con.execute("""
        SELECT DISTINCT tr.trial_id, r.record_id FROM trial_records tr JOIN records r USING (record_key)
        UNION SELECT DISTINCT trial_id, id_raw FROM trial_ids""").fetchall():
        if rid:
            trial_of.setdefault(str(rid).strip(), tid)
    evidence = {
        r["registry_id"]: ev_by_trial.get(trial_of.get(r["registry_id"], ""), []) for r in rows
    }
    return rows, evidence


def explain_trial(store: Store, any_id: str) -> dict[str, Any]:
    """A trial's stored labels with their evidence and the text around each match."""

    _require_labels(store)
    trial_id = store.resolve(any_id)
    if trial_id is None:
        raise ConfigError(
            f"no trial with id {any_id!r}", hint="Ids of any registry work, e.g. NCT04293692."
        )
    cols = [
        "trial_id",
        *LABEL_COLUMNS[1:],
        "targets",
        "dose",
        "route",
        "combinations",
        "manufacturing",
        "taxonomy_version",
        "classified_at",
        "input_hash",
    ]
    row = store.con.execute(
        f"SELECT {', '.join(cols)} FROM labels WHERE trial_id = ?", [trial_id]
    ).fetchone()
    if row is None:
        raise ConfigError(
            f"trial {trial_id} has no labels", hint="Run `celltrials classify` again."
        )
    labels = {
        c: (v.isoformat() if hasattr(v, "isoformat") else v) for c, v in zip(cols, row, strict=True)
    }
    labels["is_cell_therapy"] = "yes" if labels["is_cell_therapy"] else "no"
    texts = store_trial_texts(store, [trial_id])
    tt = texts[0] if texts else TrialText(trial_id)
    evidence = []
    for e in store_evidence(store, trial_id).get(trial_id, []):
        full = tt.text_of(e["source_field"])
        a, b = int(e["start"]), int(e["end"])
        lo, hi = max(0, a - 60), min(len(full), b + 60)
        evidence.append(
            {**e, "before": full[lo:a], "after": full[b:hi], "context_start": lo, "context_end": hi}
        )
    title = store.con.execute("SELECT title FROM trials WHERE trial_id = ?", [trial_id]).fetchone()
    return {
        "trial_id": trial_id,
        "title": title[0] if title else "",
        "labels": labels,
        "evidence": evidence,
    }


# ---------------------------------------------------------------------------
# agreement with the third-party labels of the reconstructed CAR corpus

_TP_ORIGIN = {
    "Autologous": "autologous",
    "Allogeneic/Off-the-shelf": "allogeneic",
    "Unclear": "unspecified",
}
_TP_TARGET_ALIASES = {
    "claudin 18.2": "Claudin18.2",
    "mesothelin": "mesothelin",
    "nkg2d-l": "NKG2D",
    "slamf7": "CS1",
    "egfrviii": "EGFRvIII",
    "il13ra2": "IL13Ra2",
    "b7-h3": "B7-H3",
    "cll1": "CLL1",
}
_TP_NO_TARGET = frozenset({"other_or_unknown", "car-t_unspecified", "car-nk", ""})


def _tp_targets(raw: str) -> frozenset[str]:
    text = raw.strip()
    if ":" in text:  # "CAR-NK: CD19"
        text = text.split(":", 1)[1].strip()
    text = re.sub(r"\s+dual$|\s+triple$", "", text, flags=re.I)
    out = set()
    for part in text.split("/"):
        p = part.strip()
        if p.lower() in _TP_NO_TARGET:
            continue
        out.add(_TP_TARGET_ALIASES.get(p.lower(), p))
    return frozenset(out)


def third_party_agreement(store: Store, path: Any) -> dict[str, Any]:
    """Agreement of the store's labels with ``third_party_labels.csv`` (product
    type and CAR target of the reconstructed CAR trials; a second opinion, not
    gold). Rows whose trial is not in the store are counted in ``missing``.

    * origin: theirs Autologous / Allogeneic/Off-the-shelf / Unclear against our
      origin (``exact``: same of autologous / allogeneic / unspecified, over the
      trials both call cell therapy; ``where_both_state``: over those where both
      say autologous or allogeneic). Their "In vivo" rows are counted apart
      (``in_vivo_not_cell_therapy``: how many we call not cell therapy).
    * target: their target category ("CD19/BCMA dual", "CAR-NK: CD19"...) as a
      set against our targets, over the trials where both name at least one:
      ``exact`` (same set) and ``overlap`` (a target in common).
    """

    p = Path(path)
    with p.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels = {
        tid: (ict, origin, targets)
        for tid, ict, origin, targets in store.con.execute(
            "SELECT trial_id, is_cell_therapy, origin, targets FROM labels"
        ).fetchall()
    }
    missing = 0
    o_n = o_exact = o_both_n = o_both = 0
    iv_n = iv_no = 0
    t_n = t_exact = t_overlap = 0
    for r in rows:
        tid = store.resolve(r["registry_id"].strip())
        if tid is None or tid not in labels:
            missing += 1
            continue
        ict, origin, targets = labels[tid]
        if r["product_type"] == "In vivo":
            iv_n += 1
            iv_no += int(not ict)
            continue
        if not ict:
            continue
        theirs = _TP_ORIGIN.get(r["product_type"])
        if theirs is not None:
            o_n += 1
            o_exact += int(origin == theirs)
            if theirs != "unspecified" and origin in ("autologous", "allogeneic"):
                o_both_n += 1
                o_both += int(origin == theirs)
        tt = _tp_targets(r["target_category"])
        ours = frozenset(t for t in (targets or "").split(";") if t)
        if tt and ours:
            t_n += 1
            t_exact += int(tt == ours)
            t_overlap += int(bool(tt & ours))

    def frac(a: int, b: int) -> float:
        return round(a / b, 4) if b else 0.0

    return {
        "rows": len(rows),
        "missing": missing,
        "origin": {
            "n": o_n,
            "exact": frac(o_exact, o_n),
            "where_both_state_n": o_both_n,
            "where_both_state": frac(o_both, o_both_n),
        },
        "in_vivo": {"n": iv_n, "not_cell_therapy": iv_no},
        "target": {"n": t_n, "exact": frac(t_exact, t_n), "overlap": frac(t_overlap, t_n)},
    }
