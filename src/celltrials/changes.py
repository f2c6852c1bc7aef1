"""What changed in the store since a date, read from the stored record versions.

A *change* is a difference between two consecutive versions of one registry
record (same channel and record id) whose newer version carries a later
registry update date than the older one; the change is dated by that newer
update date. Versions with the same update date (the same content exported in
two formats, e.g. a CSV and an API v2 JSON copy) are never compared, so a
format difference is not reported as a change.

Kinds of change:

* ``new_trial``   a trial first registered on or after the date (its
                  registration date; the primary record's);
* ``status``      the overall status changed;
* ``phase``       the phase changed;
* ``enrollment``  the enrollment count or its type (actual/anticipated) changed;
* ``results``     results were posted (``has_results`` went from no to yes).

Usage::

    changes(store.con, date(2024, 1, 1))        # every trial of the store
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

import duckdb

from celltrials.errors import ConfigError

KINDS = ("new_trial", "status", "phase", "enrollment", "results")


def parse_date(text: str | date | None, what: str = "--since") -> date | None:
    """``YYYY-MM-DD`` (or ``YYYY-MM``, ``YYYY``: the first day) → date."""
    if text is None or isinstance(text, date):
        return text
    s = str(text).strip()
    if not s:
        return None
    parts = s.split("-")
    try:
        if len(parts) == 1 and len(parts[0]) == 4:
            return date(int(parts[0]), 1, 1)
        if len(parts) == 2 and len(parts[0]) == 4:
            return date(int(parts[0]), int(parts[1]), 1)
        return date.fromisoformat(s)
    except ValueError:
        pass
    raise ConfigError(f"{what} {text!r} is not a date", hint="Write YYYY-MM-DD, e.g. 2024-01-31.")


def _con(con: Any) -> duckdb.DuckDBPyConnection:
    c: duckdb.DuckDBPyConnection = getattr(con, "con", con)
    return c


def all_changes_sql() -> str:
    """SQL of every change in the store (columns d, kind, trial_id, record_id,
    registry, title, old, new, prev_d); :func:`changes` filters it."""
    return f"""
        WITH v AS (
            SELECT r.channel, r.record_id, r.registry, r.last_update, r.status, r.phase, r.enrollment,
                   r.enrollment_type, coalesce(r.has_results, false) AS has_results,
                   row_number() OVER (PARTITION BY r.channel, r.record_id
                                      ORDER BY r.last_update, r.ingested_at, r.record_key) AS k
            FROM records r WHERE r.last_update IS NOT NULL),
        -- the last version of each registry update date stands for that date
        lastofday AS (
            SELECT * FROM v QUALIFY k = max(k) OVER (PARTITION BY channel, record_id, last_update)),
        pairs AS (
            SELECT channel, record_id, registry, last_update AS d, status, phase, enrollment, enrollment_type,
                   has_results,
                   lag(last_update) OVER w AS prev_d, lag(status) OVER w AS prev_status,
                   lag(phase) OVER w AS prev_phase, lag(enrollment) OVER w AS prev_enrollment,
                   lag(enrollment_type) OVER w AS prev_enrollment_type, lag(has_results) OVER w AS prev_results
            FROM lastofday WINDOW w AS (PARTITION BY channel, record_id ORDER BY last_update)),
        owner AS (
            SELECT DISTINCT r.channel, r.record_id, tr.trial_id
            FROM trial_records tr JOIN records r USING (record_key)),
        diffs AS (
            SELECT d, 'status' AS kind, channel, record_id, registry, prev_status AS old, status AS new, prev_d
            FROM pairs WHERE prev_d IS NOT NULL AND status IS DISTINCT FROM prev_status
            UNION ALL
            SELECT d, 'phase', channel, record_id, registry, prev_phase, phase, prev_d
            FROM pairs WHERE prev_d IS NOT NULL AND phase IS DISTINCT FROM prev_phase
            UNION ALL
            SELECT d, 'enrollment', channel, record_id, registry,
                   concat_ws(' ', CAST(prev_enrollment AS VARCHAR), {_etype("prev_enrollment_type")}),
                   concat_ws(' ', CAST(enrollment AS VARCHAR), {_etype("enrollment_type")}), prev_d
            FROM pairs WHERE prev_d IS NOT NULL AND (enrollment IS DISTINCT FROM prev_enrollment
                                                     OR enrollment_type IS DISTINCT FROM prev_enrollment_type)
            UNION ALL
            SELECT d, 'results', channel, record_id, registry, 'no', 'yes', prev_d
            FROM pairs WHERE prev_d IS NOT NULL AND has_results AND NOT prev_results),
        all_changes AS (
            SELECT x.d, x.kind, o.trial_id, x.record_id, x.registry, x.old, x.new, x.prev_d
            FROM diffs x JOIN owner o USING (channel, record_id)
            UNION ALL
            SELECT registration_date, 'new_trial', trial_id, primary_record_id, registry, NULL, status, NULL
            FROM trials WHERE registration_date IS NOT NULL)
        SELECT a.d, a.kind, a.trial_id, a.record_id, a.registry, t.title, a.old, a.new, a.prev_d
        FROM all_changes a LEFT JOIN trials t USING (trial_id)"""


def changes(
    con: Any,
    since: date | str,
    until: date | str | None = None,
    *,
    within: tuple[str, list[Any]] | None = None,
    limit: int | None = None,
    table: str | None = None,
) -> dict[str, Any]:
    """Changes dated ``since`` ≤ date ≤ ``until`` (no upper bound by default).

    ``within`` optionally restricts to the trials selected by a SQL query
    (returning a ``trial_id`` column) and its parameters. ``limit`` caps the
    listed rows (the counts are always complete). ``table`` names a
    precomputed copy of :func:`all_changes_sql` to read instead.

    Returns ``{"since", "until", "counts": {kind: n}, "changes": [{"date",
    "kind", "trial_id", "record_id", "registry", "title", "old", "new",
    "previous_date"}]}`` newest first.
    """
    c = _con(con)
    lo = parse_date(since)
    if lo is None:
        raise ConfigError("a start date is needed", hint="Pass --since YYYY-MM-DD.")
    hi = parse_date(until, "--until")
    if hi is not None and hi < lo:
        raise ConfigError(f"--until {hi} is before --since {lo}", hint="Swap the dates.")
    scope = ""
    scope_params: list[Any] = []
    if within is not None:
        scope = f" AND a.trial_id IN (SELECT trial_id FROM ({within[0]}))"
        scope_params = list(within[1])
    hi_sql = " AND a.d <= ?" if hi is not None else ""
    hi_params: list[Any] = [hi] if hi is not None else []
    src = table or f"({all_changes_sql()})"
    sql = f"""
        SELECT a.d, a.kind, a.trial_id, a.record_id, a.registry, a.title, a.old, a.new, a.prev_d
        FROM {src} a
        WHERE a.d >= ?{hi_sql}{scope}
        ORDER BY a.d DESC, a.kind, a.trial_id, a.record_id"""
    params = [lo, *hi_params, *scope_params]
    counts = dict.fromkeys(KINDS, 0)
    for kind, n in c.execute(
        f"SELECT a.kind, count(*) FROM {src} a WHERE a.d >= ?{hi_sql}{scope} GROUP BY 1", params
    ).fetchall():
        counts[kind] = int(n)
    shown = c.execute(
        sql + (" LIMIT ?" if limit is not None else ""),
        [*params, *([limit] if limit is not None else [])],
    ).fetchall()
    out = [
        {
            "date": r[0].isoformat() if r[0] else None,
            "kind": r[1],
            "trial_id": r[2],
            "record_id": r[3],
            "registry": r[4],
            "title": r[5],
            "old": r[6],
            "new": r[7],
            "previous_date": r[8].isoformat() if r[8] else None,
        }
        for r in shown
    ]
    return {
        "since": lo.isoformat(),
        "until": hi.isoformat() if hi else None,
        "counts": counts,
        "total": sum(counts.values()),
        "changes": out,
    }


HISTORY_FIELDS = (
    "title",
    "status",
    "phase",
    "study_type",
    "start_date",
    "completion_date",
    "enrollment",
    "enrollment_type",
    "lead_sponsor",
    "has_results",
    "why_stopped",
)


def record_history(con: Any, trial_id: str) -> list[dict[str, Any]]:
    """Every stored version of each record of a trial, oldest first, with the
    fields that differ from the record's previous version.

    Returns one dict per record: ``{"channel", "record_id", "versions": [{
    "record_key", "last_update", "ingested_at", "source", "source_format",
    "is_current", "changed": {field: [old, new]}}]}``."""
    c = _con(con)
    rows = c.execute(
        f"""
        SELECT r.channel, r.record_id, r.record_key, r.last_update, r.ingested_at, r.source, r.source_format,
               r.is_current, {", ".join("r." + f for f in HISTORY_FIELDS)}
        FROM records r
        WHERE (r.channel, r.record_id) IN (
            SELECT (r2.channel, r2.record_id) FROM trial_records t2 JOIN records r2 USING (record_key)
            WHERE t2.trial_id = ?)
        ORDER BY r.channel, r.record_id, r.last_update NULLS FIRST, r.ingested_at, r.record_key""",
        [trial_id],
    ).fetchall()
    return history_from_rows(rows)


def history_from_rows(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """:func:`record_history` of rows (channel, record_id, record_key,
    last_update, ingested_at, source, source_format, is_current, *HISTORY_FIELDS)
    ordered by record, then oldest first."""
    out: list[dict[str, Any]] = []
    prev: tuple[Any, ...] | None = None
    for row in rows:
        channel, record_id, key, upd, ing, source, fmt, cur, *vals = row
        if not out or (out[-1]["channel"], out[-1]["record_id"]) != (channel, record_id):
            out.append({"channel": channel, "record_id": record_id, "versions": []})
            prev = None
        changed: dict[str, list[Any]] = {}
        if prev is not None:
            for f, a, b in zip(HISTORY_FIELDS, prev, vals, strict=True):
                if a != b:
                    changed[f] = [_plain(a), _plain(b)]
        out[-1]["versions"].append(
            {
                "record_key": key,
                "last_update": _plain(upd),
                "ingested_at": _plain(ing),
                "source": source,
                "source_format": fmt,
                "is_current": bool(cur),
                "changed": changed,
            }
        )
        prev = tuple(vals)
    return out


def _etype(col: str) -> str:
    return f"CASE {col} WHEN 'ACTUAL' THEN '(actual)' WHEN 'ESTIMATED' THEN '(anticipated)' END"


def _plain(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


__all__ = [
    "HISTORY_FIELDS",
    "KINDS",
    "all_changes_sql",
    "changes",
    "history_from_rows",
    "parse_date",
    "record_history",
]
