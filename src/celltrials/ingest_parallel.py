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

Many smaller files (:class:`FilesAhead`): each ClinicalTrials.gov JSON or
NDJSON file that the calling process would parse itself (below
:data:`AHEAD_MAX_BYTES`) is one task, read and parsed whole by a worker with
the serial reader (:func:`celltrials.sources.parse_file`) into one
:class:`Unit` with its findings and, if the file breaks off, its error; a few
files per worker are parsed ahead while the calling process writes the ones
before. The calling process decides, file by file and in order, what is read
(unchanged files are skipped) and replays the findings as if it had parsed
the file itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from celltrials.errors import DataFileError, RecordError
from celltrials.models import ParsedRecord
from celltrials.procpool import (
    available_cores,
    check_jobs,
    from_ipc,
    map_ordered,
    result,
    to_ipc,
)
from celltrials.runtime import gc_paused
from celltrials.sources import Sniffed, ctgov_json, parse_file
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

#: a JSON / NDJSON file smaller than this is parsed whole by one worker when
#: files are parsed ahead (:class:`FilesAhead`): a worker holds the file's
#: text, records and rows at once (about 3x the file)
AHEAD_MAX_BYTES = 64 << 20
#: files are parsed ahead only when the ones to read hold at least this much
#: in total: starting the workers costs about a second of CPU and wall time
#: (fork server, imports), about what this process takes to parse 10 MB of
#: studies; from 64 MB on (~5,000 complete studies, 3-5 s parsing here) the
#: workers more than pay for their start. Tests lower it.
AHEAD_MIN_BYTES = 64 << 20
#: files in flight per worker (parsing, queued or parsed and waiting for the
#: writer): enough for the workers to go on while a group of files is written
AHEAD_IN_FLIGHT = 3
#: ... and at most this many bytes of files in flight in all (at least one file)
AHEAD_IN_FLIGHT_BYTES = 256 << 20


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

    def set_ingest(self, source: str, ingest_id: int) -> None:
        """Every record's ``source`` and ``ingest_id`` (known to the writer only)."""
        n = self.records.num_rows
        for name, value in (("source", source), ("ingest_id", ingest_id)):
            at = self.records.schema.get_field_index(name)
            column = pa.array([value] * n, type=self.records.schema.field(at).type)
            self.records = self.records.set_column(at, name, column)

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
            _stage(rec, path, items, findings)
        records, children = staged_tables(items, source, ingest_id)
    return to_ipc(records), {t: to_ipc(c) for t, c in children.items()}, findings


def _stage(
    rec: ParsedRecord,
    path: str,
    items: list[tuple[ParsedRecord, bytes, str]],
    findings: list[FindingRow],
) -> None:
    """The record with its stored raw JSON and content hash appended to
    ``items`` (as :func:`celltrials.ingest._prepared` does), or a finding
    for a record whose content cannot be stored as JSON."""
    try:
        raw, digest = raw_and_digest(rec)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        reason = (
            unstorable_reason(rec.raw) or f"content cannot be stored as JSON ({type(exc).__name__})"
        )
        findings.append((len(items), reason, rec.position or None, rec.record_id, path))
        return
    rec.raw = {}
    items.append((rec, raw, digest))


#: (reason, path, position, record id) of the error that ended a file
FileError = tuple[str, str, int | None, str | None]


def _parse_whole_file(
    payload: tuple[str, str, str],
) -> tuple[bytes, dict[str, bytes], list[FindingRow], FileError | None]:
    """A worker's task: one whole file read by the serial reader; its good
    records' tables (``source`` and ``ingest_id`` left empty: the writer sets
    them), its findings in file order and the error that ended it, if any."""
    cwd, path, fmt = payload
    if not os.path.isabs(path) and os.getcwd() != cwd:
        # a relative path as the caller gave it (it is part of the findings' text)
        os.chdir(cwd)
    items: list[tuple[ParsedRecord, bytes, str]] = []
    findings: list[FindingRow] = []
    error: FileError | None = None
    with gc_paused():
        try:
            for item in parse_file(Path(path), Sniffed(fmt)):
                if isinstance(item, RecordError):
                    # (as celltrials.ingest._bad reports it)
                    findings.append(
                        (len(items), item.reason, item.position, item.record_id, item.path or path)
                    )
                    continue
                _stage(item, path, items, findings)
        except DataFileError as exc:
            error = (
                exc.reason,
                exc.path,
                getattr(exc, "position", None),
                getattr(exc, "record_id", None),
            )
        records, children = staged_tables(items, "", None)
    return to_ipc(records), {t: to_ipc(c) for t, c in children.items()}, findings, error


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


@dataclass
class ParsedFile:
    """A whole file parsed by a worker: its good records (one :class:`Unit`,
    the findings in file order) and the error that ended it, if any."""

    unit: Unit
    error: DataFileError | None


#: what :class:`FilesAhead` is told of a file it may parse: (format, size, mtime_ns),
#: or None for a file the writer will not hand to it
AheadPlan = tuple[str, int, int] | None


class FilesAhead:
    """Files parsed whole by worker processes ahead of the writer.

    ``choose(i)`` says whether file ``i`` of ``paths`` is one to parse (its
    format and the size and modification time it had); it is asked in file
    order, a few files ahead of the writer, so that the workers parse the
    next files while the current ones are written. :meth:`take` gives the
    writer file ``i``'s result; files it passed over without taking (skipped
    as unchanged, say) are dropped."""

    def __init__(
        self,
        executor: ProcessPoolExecutor,
        workers: int,
        paths: list[Path],
        choose: Callable[[int], AheadPlan],
    ) -> None:
        self._executor, self._workers, self._paths, self._choose = executor, workers, paths, choose
        self._next = 0  # the next file to ask ``choose`` about
        self._pending: dict[int, tuple[Future[Any], str, int, int]] = {}
        self._bytes = 0
        self._top_up()

    def _top_up(self) -> None:
        while self._next < len(self._paths) and (
            not self._pending
            or (
                len(self._pending) < AHEAD_IN_FLIGHT * self._workers
                and self._bytes < AHEAD_IN_FLIGHT_BYTES
            )
        ):
            i = self._next
            self._next += 1
            plan = self._choose(i)
            if plan is None:
                continue
            fmt, size, mtime_ns = plan
            task = (os.getcwd(), str(self._paths[i]), fmt)
            self._pending[i] = (self._executor.submit(_parse_whole_file, task), fmt, size, mtime_ns)
            self._bytes += size

    def _drop(self, i: int) -> tuple[Future[Any], str, int, int] | None:
        entry = self._pending.pop(i, None)
        if entry is not None:
            self._bytes -= entry[2]
        return entry

    def take(self, i: int, fmt: str, size: int, mtime_ns: int) -> ParsedFile | None:
        """File ``i`` parsed, if it was handed to a worker as it is now
        (format, size, modification time); else None: the writer reads it."""
        for earlier in [k for k in self._pending if k < i]:
            entry = self._drop(earlier)
            assert entry is not None
            entry[0].cancel()
        entry = self._drop(i)
        self._top_up()  # the workers go on while this file is written
        if entry is None:
            return None
        future, *seen = entry
        if seen != [fmt, size, mtime_ns]:
            future.cancel()
            return None  # the file changed since it was handed out
        records, children, findings, error = result(future, self._workers, _parse_whole_file)
        unit = Unit(from_ipc(records), {t: from_ipc(c) for t, c in children.items()}, findings)
        return ParsedFile(unit, _file_error(error) if error else None)

    def close(self) -> None:
        """Cancel the files not started (the pool's owner waits for the rest)."""
        for entry in self._pending.values():
            entry[0].cancel()
        self._pending.clear()
        self._bytes = 0


def _file_error(error: FileError) -> DataFileError:
    reason, path, position, record_id = error
    if position is None and record_id is None:
        return DataFileError(reason, path=path)
    return RecordError(reason, path=path, position=position, record_id=record_id)


__all__ = [
    "AHEAD_MAX_BYTES",
    "AHEAD_MIN_BYTES",
    "MIN_BYTES",
    "UNIT",
    "FilesAhead",
    "ParsedFile",
    "Unit",
    "concat",
    "parse_units",
    "plan_workers",
]
