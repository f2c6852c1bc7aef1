"""Development funnel: trials registered → phase 2 → phase 3 → approved products.

Input (one row per trial, or several rows per trial that are merged):

=================  ==========================================================
``trial_id``       trial identifier
``cell_type``      taxonomy ``cell_type`` value(s): a ``;``-separated string
                   or a list; trials without a cell type are left out
``msc_source``     taxonomy ``msc_source`` value(s) (used for ``msc`` only;
                   an MSC trial without one counts as ``unspecified``)
``phase``          API v2 phase (``PHASE1`` … ``PHASE4``, ``PHASE1_PHASE2``,
                   ``PHASE2_PHASE3``, ``EARLY_PHASE1``, ``NOT_APPLICABLE``,
                   ``UNKNOWN``)
``status``         API v2 overall status (``COMPLETED``, ``TERMINATED``, …)
``start_date``     start date (datetime or ISO text)
=================  ==========================================================

A **product** is an active substance: the catalog's ``substance`` column
(:func:`celltrials.products.substances`). Brands, code names and regulators
are approvals of it, so Prochymal (Health Canada, Medsafe) and Ryoncil (FDA)
are one product, remestemcel-L. A product belongs to the group of its
catalog ``cell_type`` (and ``msc_source``), the same taxonomy values the
classifier gives trials.

Definitions (per group of ``by``; the default groups by ``family`` — the
taxonomy's ``cell_type`` value, a trial with several cell types counting in
each — and ``msc_source``, which is blank for non-MSC families):

* ``registered``: distinct trials.
* ``reached_phase2``: trials whose phase is ``PHASE1_PHASE2``, ``PHASE2``,
  ``PHASE2_PHASE3``, ``PHASE3`` or ``PHASE4``: a combined phase counts as
  reaching its higher component, so phase 1/2 trials have reached phase 2.
* ``reached_phase3``: ``PHASE2_PHASE3``, ``PHASE3`` or ``PHASE4``.
* ``stopped`` / ``share_stopped``: trials whose status is ``TERMINATED`` or
  ``WITHDRAWN``, and their share of ``registered``.
* ``approved_products``: the funnel's last stage — the group's products
  (any regulator, any status: approved, withdrawn or expired) named by at
  least one of the group's registered trials (``links``: the trial → brand
  links of :func:`celltrials.products.link_products`, mapped to substances);
  ``approved_trial_ids`` are those trials, ``approved_product_names`` the
  products. Every product at this stage has a registered trial behind it.
* ``approved_no_trials`` / ``approved_no_trials_names``: the group's
  catalog products that none of its registered trials names (approved
  outside the registries in this data, or before registries existed):
  shown apart, never as a funnel stage. ``catalog_products`` is the sum.
* Time to approval (:func:`years_to_approval`), over the products at the
  ``approved_products`` stage: from the start date of the earliest-starting
  input trial naming the product to its first approval by any regulator.
  ``median_years_to_approval`` is the median over the products approved
  after that start (``n_with_years`` of them); products approved *before*
  their first registered trial started are counted apart
  (``approved_before_first_trial``, names in
  ``approved_before_first_trial_names``), never as negative years.

Groups come from the trials; a group with catalog products but no trials is
not listed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from celltrials.errors import AnalysisError
from celltrials.products import load_catalog, substances

REACHED_PHASE2 = frozenset({"PHASE1_PHASE2", "PHASE2", "PHASE2_PHASE3", "PHASE3", "PHASE4"})
REACHED_PHASE3 = frozenset({"PHASE2_PHASE3", "PHASE3", "PHASE4"})
STOPPED = frozenset({"TERMINATED", "WITHDRAWN"})
INPUT_COLUMNS = ("trial_id", "cell_type", "msc_source", "phase", "status", "start_date")
_CATALOG_KEYS = ("family", "msc_source")
#: the funnel's stages, in order (the figure draws every one)
STAGES = ("registered", "reached_phase2", "reached_phase3", "approved_products")
FUNNEL_COLUMNS = (
    "registered",
    "reached_phase2",
    "reached_phase3",
    "approved_products",
    "approved_no_trials",
    "catalog_products",
    "share_phase2",
    "share_phase3",
    "stopped",
    "share_stopped",
    "n_with_years",
    "median_years_to_approval",
    "approved_before_first_trial",
    "approved_product_names",
    "approved_no_trials_names",
    "approved_before_first_trial_names",
    "approved_trial_ids",
)


def _missing(v: Any) -> bool:
    """None, NaN, NaT or pd.NA (a missing value pandas would drop)."""
    return v is None or (pd.api.types.is_scalar(v) and bool(pd.isna(v)))


def _values(v: Any) -> list[str]:
    if isinstance(v, str):
        items: list[Any] = v.split(";")
    elif _missing(v):
        return []
    else:
        try:
            items = list(v)
        except TypeError:
            items = [v]
    out = []
    for x in items:
        if not _missing(x) and (t := (x if type(x) is str else str(x)).strip()):
            out.append(t)
    return out


def _exploded_values(s: pd.Series) -> pd.Series:
    """:func:`_values` of every item of ``s``, exploded: one value per row,
    under the index of its item (items without values have no row).

    Each distinct object is read once: a store's label lists are shared (a few
    dozen distinct lists stand for 500,000 trials, see
    :func:`celltrials.analysis.landscape.frame_of`), so exploding them one row
    at a time cost a second of a report."""
    items = s.to_numpy(dtype=object)
    if not len(items):
        return pd.Series([], index=s.index[:0], dtype=object)
    keys = np.fromiter(map(id, items), dtype=np.int64, count=len(items))
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    per_item = [_values(items[i]) for i in first]
    lengths = np.fromiter(map(len, per_item), dtype=np.int64, count=len(per_item))
    repeat = lengths[inverse]
    flat = list(itertools.chain.from_iterable(per_item[k] for k in inverse.tolist()))
    return pd.Series(flat, index=s.index.repeat(repeat), dtype=object)


def _dates(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    if pd.api.types.infer_dtype(s, skipna=True) == "date":  # the store's dates: no text round trip
        return pd.to_datetime(s, errors="coerce").astype("datetime64[us]")
    return pd.to_datetime(s.astype("string"), errors="coerce", format="mixed")


def explode_labels(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, family, msc_source); ``msc_source`` blank outside MSC."""
    missing = [c for c in INPUT_COLUMNS if c not in trials.columns]
    if missing:
        raise AnalysisError(
            f"funnel input lacks column(s) {missing}",
            hint=f"Pass a DataFrame with columns {list(INPUT_COLUMNS)}.",
        )
    df = trials.reset_index(drop=True)
    df["trial_id"] = df["trial_id"].astype(str)
    # (vectorised: at 500,000 trials a per-row _values took 2 s of a report)
    family = _exploded_values(df["cell_type"])
    df = df.take(family.index.to_numpy()).reset_index(drop=True)
    df["family"] = family.to_numpy()
    is_msc = (df["family"] == "msc").to_numpy()
    sources = _exploded_values(df["msc_source"][is_msc])
    unstated = is_msc & ~df.index.isin(sources.index)
    msc_source = pd.concat(
        [
            pd.Series("", index=df.index[~is_msc], dtype=object),
            sources,
            pd.Series("unspecified", index=df.index[unstated], dtype=object),
        ]
    ).sort_index(kind="stable")
    df = df.take(msc_source.index.to_numpy())
    df["msc_source"] = msc_source.to_numpy()
    df["phase"] = df["phase"].fillna("UNKNOWN").astype(str)
    df["status"] = df["status"].fillna("").astype(str)
    df["start_date"] = _dates(df["start_date"])
    return df.drop_duplicates(["trial_id", "family", "msc_source"]).reset_index(drop=True)


def _catalog(catalog: pd.DataFrame | None) -> pd.DataFrame:
    if catalog is None:
        catalog = load_catalog()
    return catalog


def catalog_groups(catalog: pd.DataFrame | None = None) -> pd.DataFrame:
    """Products (substances) with ``family``/``msc_source`` and their first
    approval date (``first_approval``, NaT when no row states a date)."""

    subs = substances(_catalog(catalog))
    rows = []
    for rec in subs.to_dict("records"):
        for fam in _values(rec["cell_type"]):
            sources = (_values(rec["msc_source"]) or ["unspecified"]) if fam == "msc" else [""]
            for src in sources:
                rows.append(
                    {
                        "substance": rec["substance"],
                        "products": rec["products"],
                        "family": fam,
                        "msc_source": src,
                        "first_approval": rec["first_approval"],
                    }
                )
    cols = ["substance", "products", "family", "msc_source", "first_approval"]
    df = pd.DataFrame(rows, columns=cols)
    df["first_approval"] = pd.to_datetime(
        df["first_approval"].where(df["first_approval"] != ""), errors="coerce", format="mixed"
    )
    return df


def substance_links(
    links: pd.DataFrame | None, catalog: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Trial → brand links (columns trial_id, product) as trial → substance
    links (trial_id, substance), one row per pair. Links to a product name
    the catalog no longer has (links computed with another catalog version)
    are left out: relink with :func:`celltrials.products.link_products`."""
    if links is None or not len(links):
        return pd.DataFrame(columns=["trial_id", "substance"])
    cat = _catalog(catalog)
    sub_of = dict(zip(cat["product"].astype(str), cat["substance"].astype(str), strict=True))
    lk = links[["trial_id", "product"]].astype(str).drop_duplicates()
    lk = lk.assign(substance=lk["product"].map(sub_of)).dropna(subset=["substance"])
    return lk[["trial_id", "substance"]].drop_duplicates().reset_index(drop=True)


def _require_start_columns(trials: pd.DataFrame) -> None:
    missing = [c for c in ("trial_id", "start_date") if c not in trials.columns]
    if missing:
        raise AnalysisError(
            f"funnel input lacks column(s) {missing}",
            hint=f"Pass a DataFrame with columns {list(INPUT_COLUMNS)}.",
        )


def _trial_starts(trials: pd.DataFrame) -> pd.DataFrame:
    """trial_id and start_date of every input trial (with or without a cell type)."""
    _require_start_columns(trials)
    t = pd.DataFrame(
        {"trial_id": trials["trial_id"].astype(str), "start_date": _dates(trials["start_date"])}
    )
    return t.sort_values("start_date", na_position="last").drop_duplicates("trial_id")


def years_to_approval(
    trials: pd.DataFrame, links: pd.DataFrame | None, catalog: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per product (substance) named by an input trial: its first registered
    trial (earliest start date among the input trials naming it), first
    approval (any regulator) and the years between.

    ``trials`` is the funnel input; ``links`` has columns trial_id, product
    (brand names). ``years`` is ``first_approval − first_trial_start`` in
    years (365.25 days), only when that is not negative; a product approved
    before its first registered trial started has
    ``approved_before_first_trial`` True, ``years`` empty and the gap in
    ``years_before`` (positive). Unknown dates leave all three empty/False.
    """
    cat = _catalog(catalog)
    cols = [
        "substance",
        "products",
        "n_linked_trials",
        "first_trial_id",
        "first_trial_start",
        "first_approval",
        "years",
        "approved_before_first_trial",
        "years_before",
    ]
    _require_start_columns(trials)
    slinks = substance_links(links, cat)
    # (only the linked trials' starts: sorting every input trial by date cost a
    # tenth of a second per call at 500,000 trials)
    named = trials[trials["trial_id"].astype(str).isin(slinks["trial_id"])]
    lk = slinks.merge(_trial_starts(named), on="trial_id")
    if lk.empty:
        return pd.DataFrame(columns=cols)
    groups = catalog_groups(cat).drop_duplicates("substance").set_index("substance")
    out = []
    for sub, g in lk.groupby("substance", sort=True):
        dated = g.dropna(subset=["start_date"]).sort_values(["start_date", "trial_id"])
        first = dated.iloc[0] if len(dated) else None
        approval = groups["first_approval"].get(sub)
        years = before = None
        approved_before = False
        if first is not None and approval is not None and not pd.isna(approval):
            gap = round((approval - first["start_date"]).days / 365.25, 2)
            if approval < first["start_date"]:
                approved_before, before = True, -gap
            else:
                years = gap
        out.append(
            {
                "substance": str(sub),
                "products": str(groups["products"].get(sub, "")),
                "n_linked_trials": int(g["trial_id"].nunique()),
                "first_trial_id": None if first is None else first["trial_id"],
                "first_trial_start": None if first is None else first["start_date"],
                "first_approval": approval,
                "years": years,
                "approved_before_first_trial": approved_before,
                "years_before": before,
            }
        )
    return pd.DataFrame(out, columns=cols)


def _names(subs: Sequence[str], products: dict[str, str]) -> str:
    """``substance (brands)`` for each product, ``; ``-joined."""
    out = []
    for s in sorted(subs, key=str.casefold):
        brands = [b for b in products.get(s, "").split("; ") if b and b != s]
        out.append(f"{s} ({', '.join(brands)})" if brands else s)
    return "; ".join(out)


def funnel_frame(
    trials: pd.DataFrame,
    *,
    catalog: pd.DataFrame | None = None,
    links: pd.DataFrame | None = None,
    by: Sequence[str] = ("family", "msc_source"),
    exploded: pd.DataFrame | None = None,
    years: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The funnel for a trial table (see the module docstring for columns).

    Without ``links`` no trial is known to name a product, so every catalog
    product of a group is ``approved_no_trials``. ``exploded``, ``years``: the
    :func:`explode_labels` and :func:`years_to_approval` of ``trials`` (with
    ``links`` and ``catalog``), when the caller has them already."""
    by = list(by)
    if not by:
        raise AnalysisError("funnel needs at least one grouping column")
    cat = _catalog(catalog)
    df = explode_labels(trials) if exploded is None else exploded
    unknown = [c for c in by if c not in df.columns]
    if unknown:
        raise AnalysisError(f"cannot group the funnel by {unknown}: not input columns")
    # explode_labels' rows are distinct (trial, family, msc_source): grouped by both
    # keys, a group's rows are its distinct trials
    rows_are_trials = set(_CATALOG_KEYS) <= set(by)

    def distinct(rows: pd.Series | None) -> pd.Series:
        sub = df if rows is None else df[rows]
        if rows_are_trials:
            return sub.groupby(by).size()
        return sub.groupby(by)["trial_id"].nunique()

    out = pd.DataFrame({"registered": distinct(None)})
    out["reached_phase2"] = distinct(df["phase"].isin(REACHED_PHASE2))
    out["reached_phase3"] = distinct(df["phase"].isin(REACHED_PHASE3))
    out["stopped"] = distinct(df["status"].isin(STOPPED))
    out = out.fillna(0).astype(int).reset_index()

    keys = [c for c in by if c in _CATALOG_KEYS]
    products = catalog_groups(cat)
    brands = dict(zip(products["substance"], products["products"], strict=True))
    slinks = substance_links(links, cat)
    yta = (years_to_approval(trials, links, cat) if years is None else years).set_index("substance")
    # the links of each group's trials, and the group's catalog products
    group_links = {
        (k if isinstance(k, tuple) else (k,)): g
        for k, g in slinks.merge(df[[*by, "trial_id"]].drop_duplicates(), on="trial_id").groupby(
            by, sort=False
        )
    }
    no_links = slinks.iloc[:0]
    if keys:
        group_subs = products.groupby(keys)["substance"].agg(lambda s: sorted(set(s)))
    rows = []
    for rec in out.to_dict("records"):
        gkey = tuple(rec[c] for c in by)
        if keys:
            k = tuple(rec[c] for c in keys)
            subs = list(group_subs.get(k if len(keys) > 1 else k[0], []))
        else:
            subs = sorted(set(products["substance"]))
        mine = group_links.get(gkey, no_links)
        named = mine[mine["substance"].isin(subs)]
        with_trials = sorted(set(named["substance"]))
        without = [s for s in subs if s not in set(with_trials)]
        y = yta.reindex(with_trials)
        dated = pd.to_numeric(y["years"], errors="coerce").dropna()
        before = [s for s in with_trials if bool(y.loc[s, "approved_before_first_trial"])]
        rec.update(
            approved_products=len(with_trials),
            approved_no_trials=len(without),
            catalog_products=len(subs),
            n_with_years=len(dated),
            median_years_to_approval=float(dated.median()) if len(dated) else float("nan"),
            approved_before_first_trial=len(before),
            approved_product_names=_names(with_trials, brands),
            approved_no_trials_names=_names(without, brands),
            approved_before_first_trial_names=_names(before, brands),
            approved_trial_ids=sorted(set(named["trial_id"])),
        )
        rows.append(rec)
    joined = pd.DataFrame(rows)
    joined["share_phase2"] = joined["reached_phase2"] / joined["registered"]
    joined["share_phase3"] = joined["reached_phase3"] / joined["registered"]
    joined["share_stopped"] = joined["stopped"] / joined["registered"]
    return joined[[*by, *FUNNEL_COLUMNS]].sort_values(by, kind="stable").reset_index(drop=True)


def product_table(
    trials: pd.DataFrame,
    *,
    catalog: pd.DataFrame | None = None,
    links: pd.DataFrame | None = None,
    exploded: pd.DataFrame | None = None,
    years: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per catalog product (substance) of the groups the trials fill:
    its brands, group, regulators, first approval, the input trials naming it
    (``n_trials``, ``trial_ids``) and the time to approval of
    :func:`years_to_approval`. Sorted by group, then trials named (most first).
    ``exploded``, ``years``: as for :func:`funnel_frame`."""

    cat = _catalog(catalog)
    df = explode_labels(trials) if exploded is None else exploded
    present = set(zip(df["family"].tolist(), df["msc_source"].tolist(), strict=True))
    groups = catalog_groups(cat)
    groups = groups[
        [(f, s) in present for f, s in zip(groups["family"], groups["msc_source"], strict=True)]
    ]
    subs = substances(cat).set_index("substance")
    yta = (years_to_approval(trials, links, cat) if years is None else years).set_index("substance")
    slinks = substance_links(links, cat)
    ids_of = (
        slinks[slinks["trial_id"].isin(trials["trial_id"].astype(str))]
        .groupby("substance")["trial_id"]
        .agg(lambda s: sorted(set(s)))
    )
    rows = []
    for rec in groups.to_dict("records"):
        sub = rec["substance"]
        ids = list(ids_of.get(sub, []))
        y = yta.loc[sub] if sub in yta.index else None
        rows.append(
            {
                "substance": sub,
                "products": rec["products"],
                "family": rec["family"],
                "msc_source": rec["msc_source"],
                "regulators": subs.loc[sub, "regulators"],
                "n_approvals": int(subs.loc[sub, "n_approvals"]),
                "first_approval": subs.loc[sub, "first_approval"],
                "n_trials": len(ids),
                "trial_ids": ids,
                "first_trial_id": None if y is None else y["first_trial_id"],
                "first_trial_start": None if y is None else y["first_trial_start"],
                "years": None if y is None else y["years"],
                "approved_before_first_trial": False
                if y is None
                else bool(y["approved_before_first_trial"]),
                "years_before": None if y is None else y["years_before"],
            }
        )
    cols = [
        "substance",
        "products",
        "family",
        "msc_source",
        "regulators",
        "n_approvals",
        "first_approval",
        "n_trials",
        "trial_ids",
        "first_trial_id",
        "first_trial_start",
        "years",
        "approved_before_first_trial",
        "years_before",
    ]
    out = pd.DataFrame(rows, columns=cols)
    out["_k"] = out["substance"].str.casefold()
    out = out.sort_values(
        ["family", "msc_source", "n_trials", "_k"],
        ascending=[True, True, False, True],
        kind="stable",
    )
    return out.drop(columns="_k").reset_index(drop=True)


def _connection(con: Any) -> Any:
    return getattr(con, "con", con)


def trials_from_store(con: Any) -> pd.DataFrame:
    """Funnel input from a store: ``trials`` joined with the classifier's ``labels``
    (schema migration 2; only rows with ``is_cell_therapy`` true)."""
    c = _connection(con)
    try:
        labels = c.execute("SELECT * FROM labels").df()
    except Exception as exc:  # duckdb.CatalogException: no labels table yet
        raise AnalysisError(
            "the store has no `labels` table",
            hint="Classify the trials first (celltrials classify), or use funnel_frame() on a DataFrame.",
        ) from exc
    for col in ("trial_id", "cell_type"):
        if col not in labels.columns:
            raise AnalysisError(f"the `labels` table lacks column {col!r}")
    if labels.empty:
        raise AnalysisError(
            "the store's `labels` table is empty",
            hint="Classify the trials first (celltrials classify), or use funnel_frame() on a DataFrame.",
        )
    if "is_cell_therapy" in labels.columns:
        labels = labels[labels["is_cell_therapy"].fillna(False).astype(bool)]
    if "msc_source" not in labels.columns:
        labels["msc_source"] = None
    trials: pd.DataFrame = c.execute(
        "SELECT trial_id, phase, status, start_date, registration_date FROM trials"
    ).df()
    return trials.merge(labels[["trial_id", "cell_type", "msc_source"]], on="trial_id", how="inner")


def funnel(
    con: Any,
    by: Sequence[str] = ("family", "msc_source"),
    *,
    catalog: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The funnel over a store (a :class:`~celltrials.store.Store` or its DuckDB connection).

    Uses ``trials``, the classifier's ``labels`` (trial_id, cell_type,
    msc_source) and, when present, ``product_links`` (see
    :func:`celltrials.products.link_products`; without them no product has
    registered trials, and all are ``approved_no_trials``).
    """
    c = _connection(con)
    trials = trials_from_store(c)
    try:
        links = c.execute("SELECT trial_id, product FROM product_links").df()
    except Exception:  # no product_links table: no product is linked to trials
        links = None
    return funnel_frame(trials, catalog=catalog, links=links, by=by)
