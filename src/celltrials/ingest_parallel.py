"""Parsing a large ClinicalTrials.gov JSON file on several cores.

Ingesting a large file is mostly pure Python per study: parse the JSON,
:func:`~celltrials.sources.ctgov_json.parse_study`, serialise and hash the
stored JSON, build the rows of every table. Here worker processes do all of
that for *units* of :data:`UNIT` study texts (Arrow IPC in: the texts as the
reader found them; Arrow IPC out: the insert-ready tables of the unit's good
records, from :func:`celltrials.store.staged_tables`, and the unit's bad
records as findings, in file order). The calling process only reads the file
into units, keeps their order, and writes (:meth:`Store.add_tables`: keys
already stored or repeated are dropped there, as in :meth:`Store.add_staged`).
What is stored, and every finding, is the same as with one process
(:func:`celltrials.ingest._ingest_file` decides how the findings count).

Pool: :func:`celltrials.procpool.map_ordered`, a bounded number of units in
flight, so memory stays bounded whatever the file's size.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from celltrials.errors import DataFileError, RecordError
from celltrials.models import ParsedRecord
from celltrials.procpool import available_cores, check_jobs, from_ipc, map_ordered, to_ipc
from celltrials.runtime import gc_paused
from celltrials.sources import ctgov_json
from celltrials.sources.validate import unstorable_reason
from celltrials.store import raw_and_digest, staged_tables

#: study texts per unit sent to a worker (a worker holds one unit's records and rows:
#: about 110 MB for 500 complete studies)
UNIT = 500
#: files smaller than this are parsed in this process (starting the workers costs
#: about a second); tests lower it
MIN_BYTES = 64 << 20
#: units in flight per worker: the workers go on parsing while a batch is
#: committed (each unit in flight holds ~20 MB of texts and rows)
IN_FLIGHT = 4
#: formats this module reads (the JSON array only when it is streamed)
FORMATS = ("ctgov_json", "ctgov_ndjson")

#: (good records before it in the unit, reason, position, record id, path)
FindingRow = tuple[int, str, int | None, str | None, str]


def plan_workers(fmt: str, path: Path, size: int, jobs: int | None) -> int:
    """Worker processes for ingesting ``path`` (1: this process, the serial path).

    ``jobs`` as given (1 = no workers), or with None all cores for a file of
    at least :data:`MIN_BYTES`; only a streamed JSON array or NDJSON file is
    spread, everything else is read in this process."""
    check_jobs(jobs)
    if fmt not in FORMATS:
        return 1
    if fmt == "ctgov_json" and not (
        size >= ctgov_json.STREAM_MIN_BYTES and ctgov_json._starts_array(path)
    ):
        return 1
    if jobs is not None:
        return jobs
    return available_cores() if size >= MIN_BYTES else 1


@dataclass
class Unit:
    """One worker's result: the good records' tables and the unit's findings."""

    records: pa.Table
    children: dict[str, pa.Table]
    findings: list[FindingRow]

    def __post_init__(self) -> None:
        self.raw_bytes: list[int] = pc.binary_length(self.records.column("raw")).to_pylist()
        self._owner = {t: tab.column("_rec").to_numpy() for t, tab in self.children.items()}

    @property
    def n_good(self) -> int:
        return int(self.records.num_rows)

    def child_slice(self, table: str, start: int, stop: int) -> pa.Table:
        """The child rows of the good records ``start`` to ``stop``."""
        lo, hi = np.searchsorted(self._owner[table], [start, stop])
        return self.children[table].slice(int(lo), int(hi - lo))


def concat(pieces: list[tuple[Unit, int, int]]) -> tuple[pa.Table, dict[str, pa.Table]]:
    """One batch's tables from slices of units (``_rec`` renumbered to the batch)."""
    records = pa.concat_tables(u.records.slice(a, b - a) for u, a, b in pieces)
    children: dict[str, pa.Table] = {}
    for table in pieces[0][0].children:
        parts, offset = [], 0
        for u, a, b in pieces:
            part = u.child_slice(table, a, b)
            if offset != a:
                at = part.schema.get_field_index("_rec")
                part = part.set_column(
                    at, "_rec", pc.add(part.column(at), pa.scalar(offset - a, pa.int32()))
                )
            parts.append(part)
            offset += b - a
        children[table] = pa.concat_tables(parts)
    return records, children


# ------------------------------------------------------------------ worker side
def _parse_unit(payload: tuple[str, str, str, int | None, int, bytes]) -> tuple[Any, ...]:
    """A worker's task: one unit of study texts in, its tables and findings out."""
    fmt, path, source, ingest_id, first, blob = payload
    unit = from_ipc(blob)
    texts = unit.column("text").to_pylist()
    linenos = unit.column("lineno").to_pylist() if fmt == "ctgov_ndjson" else None
    items: list[tuple[ParsedRecord, bytes, str]] = []
    findings: list[FindingRow] = []
    with gc_paused():
        for i, text in enumerate(texts):
            pos = first + i
            if linenos is not None:
                try:
                    study = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    reason = f"line {linenos[i]}: malformed JSON ({exc})"
                    findings.append((len(items), reason, linenos[i], None, path))
                    continue
            else:
                study = orjson.loads(text)
            try:
                rec = ctgov_json.parse_study(study, position=pos)
            except RecordError as exc:
                # as the serial readers report it (the array's reader fills in the
                # position and a missing path; the NDJSON reader sets the path)
                if linenos is not None:
                    at, where = exc.position, path
                else:
                    at, where = exc.position or pos, exc.path or path
                findings.append((len(items), exc.reason, at, exc.record_id, where))
                continue
            try:
                raw, digest = raw_and_digest(rec)
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                reason = (
                    unstorable_reason(rec.raw)
                    or f"content cannot be stored as JSON ({type(exc).__name__})"
                )
                findings.append((len(items), reason, rec.position or None, rec.record_id, path))
                continue
            rec.raw = {}
            items.append((rec, raw, digest))
        records, children = staged_tables(items, source, ingest_id)
    return to_ipc(records), {t: to_ipc(c) for t, c in children.items()}, findings


# ------------------------------------------------------------------ calling side
def _payloads(
    fmt: str, path: Path, source: str, ingest_id: int | None, failure: list[BaseException]
) -> Iterator[tuple[str, str, str, int | None, int, bytes]]:
    """The file's units; a reading error ends them and is kept in ``failure``
    (raised once the units before it are through, as the serial path would)."""
    first = 1
    try:
        for texts, linenos in _texts(fmt, path):
            cols: dict[str, pa.Array] = {"text": texts}
            if linenos is not None:
                cols["lineno"] = pa.array(linenos, type=pa.int64())
            yield fmt, str(path), source, ingest_id, first, to_ipc(pa.table(cols))
            first += len(texts)
    except (DataFileError, OSError) as exc:
        failure.append(exc)


def _texts(fmt: str, path: Path) -> Iterator[tuple[pa.Array, list[int] | None]]:
    if fmt == "ctgov_json":
        for texts in ctgov_json.stream_array_texts(path, UNIT):
            yield texts, None
        return
    lines: list[bytes] = []
    linenos: list[int] = []
    with path.open("rb") as fh:  # as ctgov_json.parse_ndjson reads it
        for lineno, line in enumerate(fh, start=1):
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                continue
            lines.append(line)
            linenos.append(lineno)
            if len(lines) == UNIT:
                yield pa.array(lines, type=pa.binary()), linenos
                lines, linenos = [], []
    if lines:
        yield pa.array(lines, type=pa.binary()), linenos


def parse_units(
    fmt: str, path: Path, source: str, ingest_id: int | None, workers: int
) -> Generator[Unit, None, None]:
    """The file's units parsed by ``workers`` processes, in file order; a
    file that cannot be read further raises after the units before the damage."""
    failure: list[BaseException] = []
    results: Generator[tuple[Any, ...], None, None] = map_ordered(
        _parse_unit,
        _payloads(fmt, path, source, ingest_id, failure),
        workers,
        in_flight=IN_FLIGHT,
        preload=("celltrials.ingest_parallel",),
    )
    try:
        for records, children, findings in results:
            yield Unit(from_ipc(records), {t: from_ipc(c) for t, c in children.items()}, findings)
    finally:
        results.close()  # (an error or an early stop: the units not started are cancelled)
    if failure:
        raise failure[0]


__all__ = ["MIN_BYTES", "UNIT", "Unit", "concat", "parse_units", "plan_workers"]
