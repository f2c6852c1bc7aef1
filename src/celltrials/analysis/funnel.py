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
``registration_date``  optional; first-registration date, preferred over
                   ``start_date`` for "years from first registered trial"
=================  ==========================================================

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
* ``approved_products``: distinct catalog products (any regulator, any
  status: approved, withdrawn or expired) of that cell type and, for MSC,
  that source; ``approved_product_names`` lists them.
* ``linked_products`` / ``median_years_to_approval``: catalog products of
  the group that are named in at least one input trial (``product_links``),
  and the median over them of the years from the product's first registered
  linked trial to its first approval (negative when the first registered
  trial came after the approval, e.g. products approved before registries).

Groups come from the trials; a group with approved products but no trials
is not listed. Catalog products are attributed to groups only through the
``family`` and ``msc_source`` columns of ``by``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from celltrials.errors import AnalysisError

REACHED_PHASE2 = frozenset({"PHASE1_PHASE2", "PHASE2", "PHASE2_PHASE3", "PHASE3", "PHASE4"})
REACHED_PHASE3 = frozenset({"PHASE2_PHASE3", "PHASE3", "PHASE4"})
STOPPED = frozenset({"TERMINATED", "WITHDRAWN"})
INPUT_COLUMNS = ("trial_id", "cell_type", "msc_source", "phase", "status", "start_date")
_CATALOG_KEYS = ("family", "msc_source")


def _values(v: Any) -> list[str]:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return []
    if isinstance(v, str):
        items: list[Any] = v.split(";")
    else:
        try:
            items = list(v)
        except TypeError:
            items = [v]
    return [str(x).strip() for x in items if x is not None and str(x).strip()]


def _dates(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    return pd.to_datetime(s.astype("string"), errors="coerce", format="mixed")


def explode_labels(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, family, msc_source); ``msc_source`` blank outside MSC."""
    missing = [c for c in INPUT_COLUMNS if c not in trials.columns]
    if missing:
        raise AnalysisError(
            f"funnel input lacks column(s) {missing}",
            hint=f"Pass a DataFrame with columns {list(INPUT_COLUMNS)} (registration_date optional).",
        )
    df = trials.copy()
    df["trial_id"] = df["trial_id"].astype(str)
    df["family"] = df["cell_type"].map(_values)
    df = df.explode("family")
    df = df[df["family"].notna() & (df["family"] != "")]
    df["msc_source"] = [
        (_values(src) or ["unspecified"]) if fam == "msc" else [""]
        for fam, src in zip(df["family"], df["msc_source"], strict=True)
    ]
    df = df.explode("msc_source")
    df["phase"] = df["phase"].fillna("UNKNOWN").astype(str)
    df["status"] = df["status"].fillna("").astype(str)
    df["start_date"] = _dates(df["start_date"])
    reg = _dates(df["registration_date"]) if "registration_date" in df.columns else df["start_date"]
    df["first_date"] = reg.fillna(df["start_date"])
    return df.drop_duplicates(["trial_id", "family", "msc_source"]).reset_index(drop=True)


def catalog_groups(catalog: pd.DataFrame) -> pd.DataFrame:
    """Catalog products with ``family``/``msc_source`` and their first approval date."""
    rows = []
    for rec in catalog.astype(str).to_dict("records"):
        for fam in _values(rec["cell_type"]):
            sources = (_values(rec["msc_source"]) or ["unspecified"]) if fam == "msc" else [""]
            for src in sources:
                rows.append(
                    {
                        "product": rec["product"],
                        "family": fam,
                        "msc_source": src,
                        "approval_date": rec["approval_date"],
                    }
                )
    df = pd.DataFrame(rows, columns=["product", "family", "msc_source", "approval_date"])
    df["approval"] = pd.to_datetime(
        df["approval_date"].where(df["approval_date"] != ""), errors="coerce", format="mixed"
    )
    first = df.groupby(["product", "family", "msc_source"])["approval"].min()
    return first.rename("first_approval").reset_index()


def years_to_approval(
    trials: pd.DataFrame, links: pd.DataFrame, catalog: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per linked product: first registered linked trial, first approval, years between.

    ``trials`` is the funnel input; ``links`` has columns trial_id, product.
    """
    if catalog is None:
        from celltrials.products import load_catalog

        catalog = load_catalog()
    t = explode_labels(trials).drop_duplicates("trial_id")[["trial_id", "first_date"]]
    lk = links[["trial_id", "product"]].astype(str).drop_duplicates().merge(t, on="trial_id")
    cols = [
        "product",
        "n_linked_trials",
        "first_trial_id",
        "first_trial_date",
        "first_approval",
        "years",
    ]
    if lk.empty:
        return pd.DataFrame(columns=cols)
    approvals = catalog_groups(catalog).groupby("product")["first_approval"].min()
    out = []
    for product, g in lk.groupby("product", sort=True):
        dated = g.dropna(subset=["first_date"]).sort_values(["first_date", "trial_id"])
        first = dated.iloc[0] if len(dated) else None
        approval = approvals.get(product)
        years = None
        if first is not None and approval is not None and not pd.isna(approval):
            years = round((approval - first["first_date"]).days / 365.25, 2)
        out.append(
            {
                "product": str(product),
                "n_linked_trials": int(g["trial_id"].nunique()),
                "first_trial_id": None if first is None else first["trial_id"],
                "first_trial_date": None if first is None else first["first_date"],
                "first_approval": approval,
                "years": years,
            }
        )
    return pd.DataFrame(out, columns=cols)


def funnel_frame(
    trials: pd.DataFrame,
    *,
    catalog: pd.DataFrame | None = None,
    links: pd.DataFrame | None = None,
    by: Sequence[str] = ("family", "msc_source"),
) -> pd.DataFrame:
    """The funnel for a trial table (see the module docstring for columns)."""
    by = list(by)
    if not by:
        raise AnalysisError("funnel needs at least one grouping column")
    if catalog is None:
        from celltrials.products import load_catalog

        catalog = load_catalog()
    df = explode_labels(trials)
    unknown = [c for c in by if c not in df.columns]
    if unknown:
        raise AnalysisError(f"cannot group the funnel by {unknown}: not input columns")
    df["_p2"] = df["phase"].isin(REACHED_PHASE2)
    df["_p3"] = df["phase"].isin(REACHED_PHASE3)
    df["_stop"] = df["status"].isin(STOPPED)

    def distinct(mask_col: str | None) -> pd.Series:
        sub = df if mask_col is None else df[df[mask_col]]
        return sub.groupby(by)["trial_id"].nunique()

    out = pd.DataFrame({"registered": distinct(None)})
    out["reached_phase2"] = distinct("_p2")
    out["reached_phase3"] = distinct("_p3")
    out["stopped"] = distinct("_stop")
    out = out.fillna(0).astype(int)

    keys = [c for c in by if c in _CATALOG_KEYS]
    products = catalog_groups(catalog)
    if keys:
        names = products.groupby(keys)["product"].agg(lambda s: sorted(set(s)))
        joined = out.reset_index().merge(names.rename("names").reset_index(), on=keys, how="left")
        joined["names"] = [n if isinstance(n, list) else [] for n in joined["names"]]
    else:
        joined = out.reset_index()
        joined["names"] = [sorted(set(products["product"]))] * len(joined)
    joined["approved_products"] = joined["names"].map(len)
    joined["approved_product_names"] = joined["names"].map("; ".join)

    # years from first registered trial to approval, over products linked to input trials
    joined["linked_products"] = 0
    joined["median_years_to_approval"] = float("nan")
    if links is not None and len(links):
        yta = years_to_approval(trials, links, catalog)
        yta = (
            yta.merge(products[["product", *keys]].drop_duplicates(), on="product") if keys else yta
        )
        for i, row in joined.iterrows():
            sel = yta
            for k in keys:
                sel = sel[sel[k] == row[k]]
            joined.loc[i, "linked_products"] = int(sel["product"].nunique())
            years = pd.to_numeric(sel.drop_duplicates("product")["years"], errors="coerce").dropna()
            if len(years):
                joined.loc[i, "median_years_to_approval"] = float(years.median())

    joined["share_phase2"] = joined["reached_phase2"] / joined["registered"]
    joined["share_phase3"] = joined["reached_phase3"] / joined["registered"]
    joined["share_stopped"] = joined["stopped"] / joined["registered"]
    cols = [
        *by,
        "registered",
        "reached_phase2",
        "reached_phase3",
        "approved_products",
        "share_phase2",
        "share_phase3",
        "stopped",
        "share_stopped",
        "linked_products",
        "median_years_to_approval",
        "approved_product_names",
    ]
    return joined[cols].sort_values(by, kind="stable").reset_index(drop=True)


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
    :func:`celltrials.products.link_products`).
    """
    c = _connection(con)
    trials = trials_from_store(c)
    try:
        links = c.execute("SELECT trial_id, product FROM product_links").df()
    except Exception:  # no product_links table: no years-to-approval
        links = None
    return funnel_frame(trials, catalog=catalog, links=links, by=by)
