"""Data-quality audit of a store: ``celltrials check``.

For every ingested source file and every normalised field it counts how many
raw values map to the canonical vocabulary, lists the raw values that do not
(with counts and an example record id), counts text repairs (mojibake, Excel
escapes, HTML), gives each source's coverage window (earliest/latest
registration, start and registry-update dates, export stamp) and the records
without dates or ids.

Mapping is recomputed from the raw values kept in the store with the current
normalisers, so the audit also notices stored canonical values that an older
celltrials wrote differently (``n_stale``).

:func:`coverage_windows` is the piece the report uses for its time charts:
a source cannot support counts for the years after its snapshot.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from datetime import date
from importlib import resources
from typing import Any

import duckdb
import yaml

from celltrials.errors import StoreError, TaxonomyError
from celltrials.normalize import (
    _study_type_table,
    countries_version,
    parse_date_lenient,
    phase_lookup,
    status_lookup,
    study_type_lookup,
)
from celltrials.store import Store, raw_blob_view

#: fields whose raw values are checked against a vocabulary
CHECKED_FIELDS = ("study_type", "phase", "status", "country")


@dataclass
class UnmappedValue:
    raw: str
    count: int
    example_record_id: str
    reason: str = ""  # for reviewed values: why no mapping exists


@dataclass
class FieldQuality:
    """One normalised field of one source."""

    field: str
    n_values: int = 0  # non-empty raw values seen
    n_mapped: int = 0
    n_reviewed: int = 0  # unmappable on purpose (data/unmappable.yaml)
    n_unmapped: int = 0
    n_missing: int = 0  # records with nothing in the field
    n_stale: int = 0  # stored canonical differs from today's mapping of the raw value
    n_distinct_raw: int = 0
    unmapped: list[UnmappedValue] = dc_field(default_factory=list)
    reviewed: list[UnmappedValue] = dc_field(default_factory=list)


@dataclass
class RepairCount:
    field: str
    kind: str  # excel_escape | html | mojibake
    count: int
    example_record_id: str


@dataclass
class CoverageWindow:
    """What time span one source file can speak for.

    ``snapshot_date`` is the best estimate of when the source was taken: the
    later of its export stamp (ICTRP's ``Export date``) and the latest
    registry update among its records. Counts for later years (and the
    snapshot year itself, which is partial) say nothing about that source.
    """

    source: str
    format: str
    registries: list[str]
    n_records: int
    registration_first: date | None
    registration_last: date | None
    start_first: date | None
    start_last: date | None
    last_update_first: date | None
    last_update_last: date | None
    export_date: date | None
    snapshot_date: date | None


@dataclass
class SourceQuality:
    source: str
    format: str
    n_records: int  # record versions read from this source and kept
    fields: list[FieldQuality]
    repairs: list[RepairCount]
    coverage: CoverageWindow
    n_without_start_date: int = 0
    n_without_registration_date: int = 0
    n_without_last_update: int = 0
    n_without_any_date: int = 0
    n_without_ids: int = 0  # no registry id recognised in the record
    #: start dates more than 10 years after the source's snapshot or before 1900 (typos such as 2641)
    n_start_implausible: int = 0
    example_start_implausible: str | None = None
    n_sponsor_spellings: int = 0  # distinct raw lead-sponsor names
    n_sponsors: int = 0  # distinct canonical lead sponsors they group into


@dataclass
class CheckReport:
    vocabulary_versions: dict[str, str]
    n_records: int
    n_unmapped: int
    n_reviewed: int
    n_stale: int
    n_repairs: int  # text values repaired (one value may need several kinds of repair)
    sources: list[SourceQuality]

    @property
    def ok(self) -> bool:
        """True when every raw value maps (or is reviewed as unmappable)."""
        return self.n_unmapped == 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _plain(asdict(self))
        out["ok"] = self.ok
        return out

    def summary(self) -> dict[str, Any]:
        """Totals per field over all sources (what the report's methods show)."""
        per_field: dict[str, dict[str, int]] = {}
        for s in self.sources:
            for f in s.fields:
                agg = per_field.setdefault(
                    f.field, {"n_values": 0, "n_mapped": 0, "n_reviewed": 0, "n_unmapped": 0}
                )
                agg["n_values"] += f.n_values
                agg["n_mapped"] += f.n_mapped
                agg["n_reviewed"] += f.n_reviewed
                agg["n_unmapped"] += f.n_unmapped
        repairs: Counter[str] = Counter()
        for s in self.sources:
            for r in s.repairs:
                repairs[r.kind] += r.count
        return {
            "n_records": self.n_records,
            "n_unmapped": self.n_unmapped,
            "n_reviewed": self.n_reviewed,
            "n_repairs": self.n_repairs,
            "repairs_by_kind": dict(sorted(repairs.items())),
            "fields": per_field,
            "ok": self.ok,
        }


# --------------------------------------------------------------- reviewed list
@functools.cache
def reviewed_unmappable() -> dict[tuple[str, str], str]:
    """(field, raw value) → reason, from ``data/unmappable.yaml``."""
    return load_unmappable(
        resources.files("celltrials.data").joinpath("unmappable.yaml").read_text("utf-8")
    )


def load_unmappable(text: str) -> dict[tuple[str, str], str]:
    """Validate unmappable.yaml (given as text): every entry names a checked
    field, a raw value and a reason."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaxonomyError(
            f"celltrials/data/unmappable.yaml: not valid YAML ({exc})", hint="Fix the file."
        ) from None
    where = "celltrials/data/unmappable.yaml"
    if (
        not isinstance(data, dict)
        or set(data) != {"version", "values"}
        or not isinstance(data["values"], list)
    ):
        raise TaxonomyError(
            f"{where}: top-level keys must be version and values (a list)", hint="Fix the file."
        )
    out: dict[tuple[str, str], str] = {}
    for i, entry in enumerate(data["values"], start=1):
        if not isinstance(entry, dict) or set(entry) != {"field", "raw", "reason"}:
            raise TaxonomyError(
                f"{where}: entry {i} needs exactly field, raw, reason", hint="Fix the file."
            )
        if entry["field"] not in CHECKED_FIELDS:
            raise TaxonomyError(
                f"{where}: entry {i}: field must be one of {', '.join(CHECKED_FIELDS)}",
                hint="Fix the file.",
            )
        if not str(entry["reason"]).strip():
            raise TaxonomyError(
                f"{where}: entry {i}: a reviewed value needs a reason", hint="Fix the file."
            )
        out[(entry["field"], str(entry["raw"]))] = str(entry["reason"])
    return out


def unmappable_version() -> str:
    text = resources.files("celltrials.data").joinpath("unmappable.yaml").read_text("utf-8")
    return str(yaml.safe_load(text)["version"])


# ----------------------------------------------------------------- the audit
def _con(store: Store | duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    return store.con if isinstance(store, Store) else store


def coverage_windows(store: Store | duckdb.DuckDBPyConnection) -> list[CoverageWindow]:
    """Per ingested source file: its registries, record count, first/last
    registration, start and registry-update dates, export stamp and
    snapshot date (see :class:`CoverageWindow`). Sorted by source."""
    con = _con(store)
    rows = con.execute("""
        SELECT source, any_value(source_format) AS format,
               list(DISTINCT registry ORDER BY registry) AS registries, count(*) AS n,
               min(registration_date), max(registration_date), min(start_date), max(start_date),
               min(last_update), max(last_update)
        FROM records GROUP BY source ORDER BY source""").fetchall()
    # the export stamp has a column of its own (migration 8): reading it from every
    # record's raw JSON cost a whole-registry store seconds and gigabytes
    raw_blob_view(con)  # (a store from before it, on a connection Store did not open)
    exports_of = dict(
        con.execute("""
        SELECT source, list(DISTINCT export_date) FILTER (WHERE export_date IS NOT NULL)
        FROM records WHERE export_date IS NOT NULL GROUP BY source""").fetchall()
    )
    out: list[CoverageWindow] = []
    for r in rows:
        exports = [
            d.value for d in (parse_date_lenient(x) for x in exports_of.get(r[0]) or []) if d
        ]
        export_date = max(exports) if exports else None
        candidates = [d for d in (export_date, r[9]) if d is not None]
        out.append(
            CoverageWindow(
                source=r[0],
                format=r[1],
                registries=[x for x in r[2] if x],
                n_records=int(r[3]),
                registration_first=r[4],
                registration_last=r[5],
                start_first=r[6],
                start_last=r[7],
                last_update_first=r[8],
                last_update_last=r[9],
                export_date=export_date,
                snapshot_date=max(candidates) if candidates else None,
            )
        )
    return out


def _require_raw_columns(con: duckdb.DuckDBPyConnection) -> None:
    cols = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'records'"
        ).fetchall()
    }
    if "study_type_raw" not in cols:
        raise StoreError(
            "the store predates the data-quality audit (no raw values beside canonical ones)",
            hint="Open it for writing once (e.g. `celltrials ingest` of any file) to upgrade it; "
            "records ingested before keep their old normalisation, so re-ingest the "
            "sources into a new store for a full audit.",
        )


def check(
    store: Store | duckdb.DuckDBPyConnection, *, windows: list[CoverageWindow] | None = None
) -> CheckReport:
    """Audit every record version in the store, per source file and field.

    The store aggregates (per source, field, raw and stored value: a count and
    the first record id), so the audit costs one mapping per distinct raw
    value, not one per record. ``windows`` are :func:`coverage_windows` of the
    same store when the caller has them already."""
    reviewed = reviewed_unmappable()
    _require_raw_columns(_con(store))
    windows_by = {
        w.source: w for w in (windows if windows is not None else coverage_windows(store))
    }
    con = _con(store)
    per_source = con.execute("""
        WITH rec AS (
            SELECT source, source_format, record_id, start_date IS NULL AS no_start,
                   registration_date IS NULL AS no_reg, last_update IS NULL AS no_upd,
                   NOT EXISTS (SELECT 1 FROM record_ids i WHERE i.record_key = r.record_key) AS no_ids,
                   lead_sponsor_raw, lead_sponsor_key,
                   NOT EXISTS (SELECT 1 FROM record_countries c WHERE c.record_key = r.record_key)
                     AND NOT EXISTS (SELECT 1 FROM record_regions g WHERE g.record_key = r.record_key)
                     AS no_place
            FROM records r)
        SELECT source, arg_min(source_format, record_id), count(*),
               count(*) FILTER (WHERE no_start), count(*) FILTER (WHERE no_reg),
               count(*) FILTER (WHERE no_upd),
               count(*) FILTER (WHERE no_start AND no_reg AND no_upd),
               count(*) FILTER (WHERE no_ids),
               count(DISTINCT lead_sponsor_raw) FILTER (WHERE lead_sponsor_raw <> ''),
               count(DISTINCT lead_sponsor_key) FILTER (WHERE lead_sponsor_raw <> '')
                 + coalesce(bool_or(lead_sponsor_key IS NULL) FILTER (WHERE lead_sponsor_raw <> ''), false)::INT,
               count(*) FILTER (WHERE no_place)
        FROM rec GROUP BY source ORDER BY source""").fetchall()
    # (source, field, raw value, stored canonical value): records, first record id
    scalar = con.execute("""
        SELECT source, 'study_type', study_type_raw, study_type, count(*), min(record_id)
        FROM records GROUP BY ALL
        UNION ALL
        SELECT source, 'phase', phase_raw, phase, count(*), min(record_id) FROM records GROUP BY ALL
        UNION ALL
        SELECT source, 'status', status_raw, status, count(*), min(record_id) FROM records GROUP BY ALL
        ORDER BY 1, 2, 3, 4""").fetchall()
    places = con.execute("""
        SELECT r.source, coalesce(c.country_raw, c.country), c.iso2 IS NOT NULL, count(*), min(r.record_id)
        FROM record_countries c JOIN records r USING (record_key)
        WHERE coalesce(c.country_raw, c.country) IS NOT NULL GROUP BY ALL
        UNION ALL
        SELECT r.source, coalesce(g.region_raw, g.region), true, count(*), min(r.record_id)
        FROM record_regions g JOIN records r USING (record_key)
        WHERE coalesce(g.region_raw, g.region) IS NOT NULL GROUP BY ALL
        ORDER BY 1, 2, 3""").fetchall()
    repairs = con.execute("""
        SELECT r.source, x.field, k.kind, count(*), min(r.record_id)
        FROM record_text_repairs x JOIN records r USING (record_key), unnest(x.kinds) AS k(kind)
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""").fetchall()

    tallies: dict[tuple[str, str], _Tally] = {}
    info: dict[str, dict[str, Any]] = {}

    def tally(source: str, name: str) -> _Tally:
        return tallies.setdefault((source, name), _Tally(name))

    lookups: dict[str, Callable[[str | None], str | None]] = {
        "study_type": study_type_lookup,
        "phase": phase_lookup,
        "status": status_lookup,
    }
    for (
        source,
        fmt,
        n,
        no_start,
        no_reg,
        no_upd,
        no_any,
        no_ids,
        n_sp_raw,
        n_sp,
        no_place,
    ) in per_source:
        info[source] = {
            "format": fmt,
            "n": int(n),
            "no_start": int(no_start),
            "no_reg": int(no_reg),
            "no_upd": int(no_upd),
            "no_any": int(no_any),
            "no_ids": int(no_ids),
            "n_sp_raw": int(n_sp_raw),
            "n_sp": int(n_sp),
        }
        if no_place:
            tally(source, "country").missing += int(no_place)
    for source, name, raw, stored, n, rid in scalar:
        t = tally(source, name)
        if raw is None or not str(raw).strip():
            t.missing += int(n)
            continue
        mapped = lookups[name](raw)
        t.add(
            raw,
            rid,
            mapped is not None,
            (name, raw) in reviewed,
            stale=mapped is not None and mapped != stored,
            n=int(n),
        )
    for source, raw_text, mapped, n, rid in places:
        tally(source, "country").add(
            raw_text, rid, bool(mapped), ("country", raw_text) in reviewed, stale=False, n=int(n)
        )

    repair_rows: dict[str, list[RepairCount]] = {}
    for source, fld, kind, n, example in repairs:
        repair_rows.setdefault(source, []).append(RepairCount(fld, kind, int(n), example))

    sources: list[SourceQuality] = []
    for source in sorted(info):
        s = info[source]
        fields = [
            tallies.get((source, name), _Tally(name)).result(reviewed) for name in CHECKED_FIELDS
        ]
        sources.append(
            SourceQuality(
                source=source,
                format=s["format"],
                n_records=s["n"],
                fields=fields,
                repairs=repair_rows.get(source, []),
                coverage=windows_by[source],
                n_without_start_date=s["no_start"],
                n_without_registration_date=s["no_reg"],
                n_without_last_update=s["no_upd"],
                n_without_any_date=s["no_any"],
                n_without_ids=s["no_ids"],
                n_sponsor_spellings=s["n_sp_raw"],
                n_sponsors=s["n_sp"],
                **_implausible_starts(con, source, windows_by[source].snapshot_date),
            )
        )
    return CheckReport(
        vocabulary_versions=_versions(),
        n_records=sum(s.n_records for s in sources),
        n_unmapped=sum(f.n_unmapped for s in sources for f in s.fields),
        n_reviewed=sum(f.n_reviewed for s in sources for f in s.fields),
        n_stale=sum(f.n_stale for s in sources for f in s.fields),
        n_repairs=int(con.execute("SELECT count(*) FROM record_text_repairs").fetchone()[0]),  # type: ignore[index]
        sources=sources,
    )


def _implausible_starts(
    con: duckdb.DuckDBPyConnection, source: str, snapshot: date | None
) -> dict[str, Any]:
    limit = date(snapshot.year + 10, 12, 31) if snapshot else date(2100, 1, 1)
    row = con.execute(
        """
        SELECT count(*), min(record_id) FROM records
        WHERE source = ? AND (start_date > ? OR start_date < DATE '1900-01-01')""",
        [source, limit],
    ).fetchone()
    n = int(row[0]) if row else 0
    return {"n_start_implausible": n, "example_start_implausible": row[1] if row and n else None}


class _Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.values = 0
        self.mapped = 0
        self.missing = 0
        self.stale = 0
        self.raw: set[str] = set()
        self.bad: Counter[str] = Counter()
        self.good_reviewed: Counter[str] = Counter()
        self.example: dict[str, str] = {}

    def add(
        self,
        raw: str,
        record_id: str,
        mapped: bool,
        is_reviewed: bool,
        *,
        stale: bool,
        n: int = 1,
    ) -> None:
        """``n`` records with the value ``raw``; ``record_id`` the first of them."""
        self.values += n
        self.raw.add(raw)
        self.stale += n if stale else 0
        if mapped:
            self.mapped += n
            return
        seen = self.example.get(raw)
        self.example[raw] = record_id if seen is None else min(seen, record_id)
        (self.good_reviewed if is_reviewed else self.bad)[raw] += n

    def result(self, reviewed: dict[tuple[str, str], str]) -> FieldQuality:
        def listing(counter: Counter[str], with_reason: bool) -> list[UnmappedValue]:
            return [
                UnmappedValue(
                    raw,
                    n,
                    self.example[raw],
                    reviewed.get((self.name, raw), "") if with_reason else "",
                )
                for raw, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
            ]

        return FieldQuality(
            field=self.name,
            n_values=self.values,
            n_mapped=self.mapped,
            n_reviewed=sum(self.good_reviewed.values()),
            n_unmapped=sum(self.bad.values()),
            n_missing=self.missing,
            n_stale=self.stale,
            n_distinct_raw=len(self.raw),
            unmapped=listing(self.bad, False),
            reviewed=listing(self.good_reviewed, True),
        )


def _versions() -> dict[str, str]:

    return {
        "countries": countries_version(),
        "study_types": _study_type_table()[0],
        "unmappable": unmappable_version(),
    }


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, date):
        return obj.isoformat()
    return obj
