"""One row per trial, for spreadsheets and data frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from celltrials.errors import ConfigError
from celltrials.outputs import check_output_file, write_atomic
from celltrials.safety import safe_frame
from celltrials.store import LABEL_TABLE_COLUMNS, Store, label_text

FORMATS = ("csv", "parquet", "xlsx")


def trials_table(store: Store) -> pd.DataFrame:
    """Primary id, every merged id, and the normalised fields of each trial
    (multi-valued fields joined with ``; ``). Classifier labels are added
    when the store has them."""
    df = store.query("""
        WITH ids AS (
            SELECT trial_id, string_agg(DISTINCT id_raw, '; ' ORDER BY id_raw) AS all_ids
            FROM (SELECT tr.trial_id, r.record_id AS id_raw FROM trial_records tr JOIN records r USING (record_key)
                  UNION SELECT trial_id, id_key FROM trial_ids)
            GROUP BY 1),
        ctry AS (SELECT trial_id, string_agg(country, '; ' ORDER BY country) AS countries FROM countries GROUP BY 1),
        cond AS (SELECT trial_id, string_agg(condition, '; ') AS conditions FROM conditions WHERE kind = 'condition' GROUP BY 1),
        intr AS (SELECT trial_id, string_agg(CASE WHEN type <> '' THEN type || ': ' ELSE '' END || name, '; ' ORDER BY idx) AS interventions
                 FROM interventions GROUP BY 1)
        SELECT t.trial_id, ids.all_ids, t.registry, t.title, t.official_title, t.status, t.why_stopped,
               t.phase, t.study_type,
               CAST(t.start_date AS VARCHAR) AS start_date, t.start_date_precision,
               CAST(t.completion_date AS VARCHAR) AS completion_date,
               CAST(t.registration_date AS VARCHAR) AS registration_date,
               CAST(t.last_update AS VARCHAR) AS last_update,
               t.enrollment, t.enrollment_type, t.enrollment_raw,
               t.lead_sponsor, t.sponsor_class, ctry.countries, cond.conditions, intr.interventions,
               t.n_records, t.url
        FROM trials t
        LEFT JOIN ids USING (trial_id) LEFT JOIN ctry USING (trial_id)
        LEFT JOIN cond USING (trial_id) LEFT JOIN intr USING (trial_id)
        ORDER BY t.trial_id""")
    labels = _labels(store)
    if labels is not None:
        df = df.merge(labels, on="trial_id", how="left")
    return df


#: the label columns exported (the run's input hash left out)
_LABEL_EXPORT = [c for c in LABEL_TABLE_COLUMNS if c != "input_hash"]


def _labels(store: Store) -> pd.DataFrame | None:
    """Classifier labels, one row per trial, if ``celltrials classify`` has run
    (multi-values ``;``-joined, as the labels file writes them)."""
    if not store.has_label_table():
        return None
    rows = [{c: label_text(r[c]) for c in _LABEL_EXPORT} for r in store.label_rows()]
    return pd.DataFrame(rows, columns=_LABEL_EXPORT)


#: file name endings each format writes
SUFFIXES = {"csv": (".csv",), "parquet": (".parquet", ".pq"), "xlsx": (".xlsx",)}


def export_trials(store: Store, fmt: str, out: str | Path, *, force: bool = False) -> Path:
    """Write :func:`trials_table` as csv, parquet or xlsx.

    Text cells of csv/xlsx are spreadsheet-safe (see :mod:`celltrials.safety`);
    parquet keeps values exactly (it is typed and never evaluated). An
    existing file is kept unless ``force``; a name ending in another format's
    suffix is an error.
    """

    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown export format {fmt!r}", hint=f"Use one of: {', '.join(FORMATS)}."
        )
    path = Path(out)
    suffix = path.suffix.lower()
    for other, endings in SUFFIXES.items():
        if other != fmt and suffix in endings:
            raise ConfigError(
                f"--format {fmt} but {path.name} ends in {path.suffix}",
                hint=f"Use --format {other}, or name the file *{SUFFIXES[fmt][0]}.",
            )
    check_output_file(path, force=force)
    df = trials_table(store)
    if fmt == "csv":
        write_atomic(path, lambda tmp: safe_frame(df).to_csv(tmp, index=False))
    elif fmt == "parquet":
        write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))
    else:
        write_atomic(
            path,
            lambda tmp: safe_frame(df, xlsx=True).to_excel(
                tmp, index=False, sheet_name="trials", engine="openpyxl"
            ),
        )
    return path
