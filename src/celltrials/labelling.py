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
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from celltrials.classify import (
    LABEL_COLUMNS,
    Classifier,
    TrialLabels,
    TrialText,
    unknown_product_names,
)
from celltrials.classify_parallel import PRELOAD, map_chunks, plan_jobs, worker_classifier
from celltrials.errors import ConfigError, StoreError
from celltrials.evaluate import evaluate, evaluate_many
from celltrials.native import engine_kind
from celltrials.procpool import from_ipc as _from_ipc
from celltrials.procpool import start_fork_server
from celltrials.procpool import to_ipc as _ipc
from celltrials.progress import Progress, ProgressEvent
from celltrials.runtime import gc_paused
from celltrials.store import (
    EVIDENCE_COLUMNS,
    Store,
    label_tables,
    label_text,
    records_from_text_table,
)
from celltrials.taxonomy.loader import Taxonomy, default_taxonomy_version

#: trials :func:`classify_store` reads from the store at a time (each read scans the
#: record tables' keys: fewer, larger reads cost less at 500,000 trials)
CHUNK_TRIALS = 25_000
#: trials classified, sent to a worker and staged at a time (a chunk holds several)
UNIT_TRIALS = 1_000

#: what the fork server of :func:`classify_store`'s workers imports besides the classifier
_PRELOAD = ("celltrials.labelling",)

#: the labels file's columns after ``registry_id`` and ``is_cell_therapy``
_FILE_LABELS = LABEL_COLUMNS[2:]


def store_trial_texts(store: Store, trial_ids: Iterable[str] | None = None) -> list[TrialText]:
    """The texts of every merged trial in ``store`` (all its current records, primary first)."""
    return [TrialText.from_records(rs, tid) for tid, rs in store.text_records(trial_ids).items()]


def _label_columns(labs: Sequence[TrialLabels], now: datetime) -> tuple[pa.Table, pa.Table]:
    """The ``labels`` rows (multi-values as lists: the labels file's sorted, the
    others in the classifier's order) and ``label_evidence`` rows of ``labs``, as
    Arrow tables (:func:`celltrials.store.label_tables`)."""
    ev: dict[str, list[Any]] = {c: [] for c in EVIDENCE_COLUMNS}
    ev_tid, ev_field, ev_value, ev_source, ev_text, ev_start, ev_end = (
        ev[c] for c in EVIDENCE_COLUMNS
    )
    for lab in labs:
        for e in lab.evidence:
            ev_tid.append(lab.trial_id)
            ev_field.append(e.field)
            ev_value.append(e.value)
            ev_source.append(e.source_field)
            ev_text.append(e.text)
            ev_start.append(e.start)
            ev_end.append(e.end)
    labels: dict[str, list[Any]] = {
        "trial_id": [lab.trial_id for lab in labs],
        "is_cell_therapy": [lab.is_cell_therapy for lab in labs],
        "cell_type": [sorted(lab.cell_type) for lab in labs],
        "msc_source": [sorted(lab.msc_source) for lab in labs],
        "origin": [lab.origin for lab in labs],
        "product_form": [sorted(lab.product_form) for lab in labs],
        "indication_group": [lab.indication_group for lab in labs],
        "therapeutic_area": [sorted(lab.therapeutic_area) for lab in labs],
        "targets": [lab.targets for lab in labs],
        "dose": [lab.dose for lab in labs],
        "route": [lab.route for lab in labs],
        "combinations": [lab.combinations for lab in labs],
        "manufacturing": [lab.manufacturing for lab in labs],
        "taxonomy_version": [lab.taxonomy_version for lab in labs],
        "classified_at": [now] * len(labs),
        "input_hash": [lab.input_hash for lab in labs],
    }
    return label_tables(labels, ev)


_Existing = dict[str, tuple[str, str]]


def _label_texts(
    clf: Classifier, texts: pa.Table, existing: _Existing | None, now: datetime
) -> tuple[pa.Table, pa.Table, int, dict[str, int]]:
    """Classify the trials of a :meth:`~celltrials.store.Store.text_table` slice:
    their labels and evidence tables, how many were skipped as unchanged (their
    ``existing`` (taxonomy version, input hash) matches), and cell-type counts."""
    labs: list[TrialLabels] = []
    skipped = 0
    counts: dict[str, int] = {}
    for tid, rs in records_from_text_table(texts).items():
        tt = TrialText.from_records(rs, tid)
        if existing is not None and existing.get(tid) == (clf.tax.version, tt.digest()):
            skipped += 1
            continue
        lab = clf.classify(tt)
        for ct in lab.cell_type:
            counts[ct] = counts.get(ct, 0) + 1
        labs.append(lab)
    lab_table, ev_table = _label_columns(labs, now)
    return lab_table, ev_table, skipped, counts


def _label_unit(
    payload: tuple[bytes, _Existing | None, datetime],
) -> tuple[bytes, bytes, int, dict[str, int]]:
    """A worker's task: :func:`_label_texts` on one unit of trials (Arrow IPC in and out)."""
    blob, existing, now = payload
    with gc_paused():  # (classifying makes no reference cycles: see gc_paused)
        lab, ev, skipped, counts = _label_texts(worker_classifier(), _from_ipc(blob), existing, now)
    return _ipc(lab), _ipc(ev), skipped, counts


def _units(table: pa.Table, size: int) -> Iterator[pa.Table]:
    """``table`` (rows ordered by trial) in slices of ``size`` whole trials (the last
    one fewer)."""
    if not table.num_rows:
        return
    # a trial's rows are one run of its id: the runs' ends are the trials' ends
    # (in Arrow, not a Python loop over the rows: this process reads every trial)
    ends = pc.run_end_encode(table.column("trial_id").combine_chunks()).run_ends.to_pylist()
    start = 0
    for k in range(size - 1, len(ends) + size - 1, size):
        end = ends[min(k, len(ends) - 1)]
        yield table.slice(start, end - start)
        start = end


def classify_store(
    store: Store,
    only_changed: bool = False,
    progress: Progress | None = None,
    taxonomy: Taxonomy | None = None,
    jobs: int | None = None,
    chunk_size: int = CHUNK_TRIALS,
) -> dict[str, Any]:
    """Classify every trial in ``store`` into tables ``labels`` and ``label_evidence``.

    ``only_changed`` skips trials whose input hash and taxonomy version match
    their stored labels. ``progress`` receives a ``classify``/``trials``
    :class:`~celltrials.progress.ProgressEvent` now and then.
    ``jobs``: worker processes (None: all cores when the store is large enough;
    1: this process); the labels do not depend on it
    (:func:`celltrials.classify_parallel.map_chunks`: each worker reads a unit of
    :data:`UNIT_TRIALS` trials' texts as Arrow and returns their labels as Arrow,
    so this process only queries the store and stages).
    ``chunk_size``: trials read, and labels staged, at a time (memory stays
    bounded; the labels do not depend on it). The stored labels are replaced
    in one short transaction at the end: a failure leaves them as they were.
    Returns a summary dict.
    """

    t0 = time.perf_counter()
    ids = store.sorted_trial_ids()
    total = len(ids)
    workers = plan_jobs(total, jobs)
    clf: Classifier | None = None
    if workers > 1:
        # the workers' fork server compiles the taxonomy while this process reads
        # the store; this process compiles none (the workers classify)
        start_fork_server((*PRELOAD, *_PRELOAD))
        version = taxonomy.version if taxonomy is not None else default_taxonomy_version()
    else:
        clf = Classifier(taxonomy)
        version = clf.tax.version
    existing = store.label_versions() if only_changed else {}
    now = datetime.now(UTC).replace(tzinfo=None)
    unit = max(1, min(chunk_size, UNIT_TRIALS))

    ranges = [
        (ids[start], ids[min(start + chunk_size, total) - 1])
        for start in range(0, total, chunk_size)
    ]

    def units() -> Iterator[pa.Table]:
        # the store's texts chunk by chunk (trial-id ranges, in trial-id order), in
        # units; the next chunk is read by a second connection in a thread (DuckDB
        # runs without the GIL) while this one's units are classified and staged
        reader = Store(store.con.cursor(), store.path)
        try:
            with ThreadPoolExecutor(1) as pool:
                nxt = pool.submit(reader.text_table, ranges[0]) if ranges else None
                for k in range(len(ranges)):
                    assert nxt is not None
                    table = nxt.result()
                    if k + 1 < len(ranges):
                        nxt = pool.submit(reader.text_table, ranges[k + 1])
                    yield from _units(table, unit)
        finally:
            reader.close()

    def mine(table: pa.Table) -> _Existing | None:
        if not only_changed:
            return None
        tids = table.column("trial_id").to_pylist()
        return {t: existing[t] for t in tids if t in existing}

    results: Iterator[tuple[pa.Table, pa.Table, int, dict[str, int]]]
    if clf is not None:
        results = (_label_texts(clf, t, mine(t), now) for t in units())
    else:
        payloads = ((_ipc(t), mine(t), now) for t in units())
        results = (
            (_from_ipc(lab), _from_ipc(ev), skipped, counts)
            for lab, ev, skipped, counts in map_chunks(
                _label_unit, payloads, workers, taxonomy, preload=_PRELOAD
            )
        )
    skipped = classified = 0
    counts: dict[str, int] = {}
    with gc_paused(), store.label_staging() as stage:
        for lab_table, ev_table, n_skipped, n_by_type in results:
            stage.add_tables(lab_table, ev_table)
            classified += lab_table.num_rows
            skipped += n_skipped
            for ct, k in n_by_type.items():
                counts[ct] = counts.get(ct, 0) + k
            if progress is not None:
                done = classified + skipped
                progress(ProgressEvent("classify", "trials", done=done, total=total))
        current = set(ids)
        stage.publish(partial=only_changed, drop=[t for t in existing if t not in current])
    return {
        "trials": total,
        "classified": classified,
        "skipped_unchanged": skipped,
        "cell_therapy_trials": store.n_cell_therapy_trials(),
        "cell_types": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "taxonomy_version": version,
        "engine": engine_kind(),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def unknown_products(
    store: Store, taxonomy: Taxonomy | None = None, limit_examples: int = 5
) -> list[dict[str, Any]]:
    """Intervention names of the store's cell-therapy trials that name no known
    product (see :func:`celltrials.classify.unknown_product_names`)."""
    return unknown_product_names(store_trial_texts(store), taxonomy, limit_examples)


def _require_labels(store: Store) -> None:
    if not store.has_labels():
        raise StoreError("the store has no labels yet", hint="Run `celltrials classify` first.")


def labels_rows(store: Store) -> list[dict[str, str]]:
    """The labels file: one row per trial under its primary id, plus one row per
    other id of the trial (secondary registry ids, other records' ids) with the same labels
    (multi-values ``;``-joined)."""
    _require_labels(store)
    ids = store.trial_registry_ids()
    out: list[dict[str, str]] = []
    for lab in store.label_rows():
        primary = lab["primary_record_id"]
        if primary is None:  # labels of a trial no longer in the store
            continue
        base = {
            "is_cell_therapy": "yes" if lab["is_cell_therapy"] else "no",
            **{c: label_text(lab[c]) or "" for c in _FILE_LABELS},
        }
        out.append({"registry_id": primary, **base})
        for other in ids.get(lab["trial_id"], []):
            if other != primary:
                out.append({"registry_id": other, **base})
    return out


def store_evidence(store: Store, trial_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Evidence rows by trial id (all trials, or one)."""
    _require_labels(store)
    return store.label_evidence(trial_id)


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
    for tid, ids in store.trial_registry_ids().items():
        for rid in ids:
            trial_of.setdefault(rid, tid)
    evidence = {
        r["registry_id"]: ev_by_trial.get(trial_of.get(r["registry_id"], ""), []) for r in rows
    }
    return rows, evidence


#: what :func:`explain_trial` shows of a trial's labels, in order
_EXPLAIN_COLUMNS = (
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
)


def explain_trial(store: Store, any_id: str) -> dict[str, Any]:
    """A trial's stored labels (multi-values ``;``-joined) with their evidence
    and the text around each match."""

    _require_labels(store)
    trial_id = store.resolve(any_id)
    if trial_id is None:
        raise ConfigError(
            f"no trial with id {any_id!r}", hint="Ids of any registry work, e.g. NCT04293692."
        )
    rows = store.label_rows([trial_id])
    if not rows:
        raise ConfigError(
            f"trial {trial_id} has no labels", hint="Run `celltrials classify` again."
        )
    labels = {
        c: (v.isoformat() if hasattr(v, "isoformat") else label_text(v))
        for c, v in ((c, rows[0][c]) for c in _EXPLAIN_COLUMNS)
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
    return {
        "trial_id": trial_id,
        "title": store.trial_title(trial_id),
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
        lab["trial_id"]: (lab["is_cell_therapy"], lab["origin"], lab["targets"])
        for lab in store.label_rows()
    }
    missing = 0
    o_n = o_exact = o_both_n = o_both = 0
    iv_n = iv_no = 0
    t_n = t_exact = t_overlap = 0
    trial_of = store.resolve_many(r["registry_id"].strip() for r in rows)
    for r in rows:
        tid = trial_of[r["registry_id"].strip()]
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
        ours = frozenset(t for t in targets or () if t)
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
