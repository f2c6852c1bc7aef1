"""Parsing a large ClinicalTrials.gov JSON file on several cores.

Ingesting a large file is mostly pure Python per study: parse the JSON,
:func:`~celltrials.sources.ctgov_json.parse_study`, serialise and hash the
stored JSON, build the rows of every table. Here worker processes do all of
that for *units* of studies: a byte range of a JSON array, which the worker
reads from the file itself (:func:`~celltrials.sources.ctgov_json.array_ranges`),
or :data:`UNIT` study texts found by the calling process (Arrow IPC in: NDJSON
lines, and the rest of an array from a range that does not hold whole
elements on). Out: Arrow IPC, the insert-ready tables of the unit's good
records, from :func:`celltrials.store.staged_tables`, and the unit's bad
records as findings, in file order. The calling process only cuts the file
into units, keeps their order, and writes (:meth:`Store.add_tables`: keys
already stored or repeated are dropped there, as in :meth:`Store.add_staged`).
What is stored, and every finding, is the same as with one process
(:func:`celltrials.ingest._ingest_file` decides how the findings count).

Pool: :func:`celltrials.procpool.map_ordered`, a bounded number of units in
flight, so memory stays bounded whatever the file's size.

Many smaller files (:class:`FilesAhead`): each ClinicalTrials.gov JSON or
NDJSON file that the calling process would parse itself (below
:data:`AHEAD_MAX_BYTES`) is read and parsed whole by a worker with the
serial reader (:func:`celltrials.sources.parse_file`) into rows of a
:class:`Unit`, with its findings and, if the file breaks off, its error
(small files go several to a task); a few tasks per worker are parsed ahead
while the calling process writes the files before. The calling process decides, file by file and in order, what is read
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
#: what the workers' fork server imports (:func:`celltrials.procpool.context`)
PRELOAD = ("celltrials.ingest_parallel",)

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
#: tasks (:data:`AHEAD_TASK_BYTES`) in flight per worker (parsing, queued or
#: parsed and waiting for the writer): enough for the workers to go on while a
#: group of files is written
AHEAD_IN_FLIGHT = 3
#: ... and at most this many bytes of files in flight in all (at least one task)
AHEAD_IN_FLIGHT_BYTES = 256 << 20
#: consecutive files are parsed by one worker task up to this many bytes or
#: files: a task costs ~1 ms of this process's time (sending it, reading its
#: tables), as much as parsing a small study
AHEAD_TASK_BYTES = 1 << 20
AHEAD_TASK_FILES = 200


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


def with_ingest(
    records: pa.Table, sources: list[str], ids: list[int], counts: list[int]
) -> pa.Table:
    """``records`` (of several files, in order) with each file's ``source``
    and ``ingest_id``: ``counts[k]`` rows of file ``k`` after those of file ``k - 1``."""
    which = pa.array(np.repeat(np.arange(len(counts)), counts))
    for name, values in (("source", sources), ("ingest_id", ids)):
        at = records.schema.get_field_index(name)
        column = pc.take(pa.array(values, type=records.schema.field(at).type), which)
        records = records.set_column(at, name, column)
    return records


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
            _study(study, pos, path, linenos is not None, items, findings)
        records, children = staged_tables(items, source, ingest_id)
    return to_ipc(records), {t: to_ipc(c) for t, c in children.items()}, findings


def _parse_range(payload: tuple[str, str, int | None, int, int]) -> tuple[Any, ...]:
    """A worker's task: one byte range of a JSON array
    (:func:`celltrials.sources.ctgov_json.array_ranges`) read from the file,
    piece by piece (:func:`~celltrials.sources.ctgov_json.range_pieces`).
    Out: the tables and findings of its elements, positions counted from the
    range's first element (the caller adds the elements before it), how many
    elements, and whether they are the whole range (False: the rest of it
    does not hold whole elements; the caller reads on element by element)."""
    path, source, ingest_id, start, stop = payload
    items: list[tuple[ParsedRecord, bytes, str]] = []
    findings: list[FindingRow] = []
    n, whole = 0, True
    with gc_paused():
        with open(path, "rb") as fh:
            for piece in ctgov_json.range_pieces(fh, start, stop):
                if piece is None:
                    whole = False
                    break
                for study in piece:
                    n += 1
                    _study(study, n, path, False, items, findings)
        records, children = staged_tables(items, source, ingest_id)
    return to_ipc(records), {t: to_ipc(c) for t, c in children.items()}, findings, n, whole


def _study(
    study: Any,
    pos: int,
    path: str,
    ndjson: bool,
    items: list[tuple[ParsedRecord, bytes, str]],
    findings: list[FindingRow],
) -> None:
    """One parsed study staged (:func:`_stage`), or its finding."""
    try:
        rec = ctgov_json.parse_study(study, position=pos)
    except RecordError as exc:
        # as the serial readers report it (the array's reader fills in the
        # position and a missing path; the NDJSON reader sets the path)
        if ndjson:
            at, where = exc.position, path
        else:
            at, where = exc.position or pos, exc.path or path
        findings.append((len(items), exc.reason, at, exc.record_id, where))
        return
    _stage(rec, path, items, findings)


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
#: one file of a task: its good records (how many), findings and error, if any
#: (another exception than a file's fault travels as it is, raised at the file's turn)
FileOutcome = tuple[int, list[FindingRow], FileError | Exception | None]


def _parse_files(
    payload: tuple[str, list[tuple[str, str]]],
) -> tuple[bytes, dict[str, bytes], list[FileOutcome]]:
    """A worker's task: whole files, each read by the serial reader
    (:func:`celltrials.sources.parse_file`). Out: the tables of their good
    records, file after file (``source`` and ``ingest_id`` left empty: the
    writer sets them), and per file how many, its findings in file order and
    the error that ended it, if any."""
    cwd, files = payload
    if any(not os.path.isabs(path) for path, _ in files) and os.getcwd() != cwd:
        # a relative path as the caller gave it (it is part of the findings' text)
        os.chdir(cwd)
    items: list[tuple[ParsedRecord, bytes, str]] = []
    outcomes: list[FileOutcome] = []
    with gc_paused():
        for path, fmt in files:
            own: list[tuple[ParsedRecord, bytes, str]] = []
            findings: list[FindingRow] = []
            error: FileError | Exception | None = None
            try:
                for item in parse_file(Path(path), Sniffed(fmt)):
                    if isinstance(item, RecordError):
                        # (as celltrials.ingest._bad reports it)
                        where = item.path or path
                        findings.append(
                            (len(own), item.reason, item.position, item.record_id, where)
                        )
                        continue
                    _stage(item, path, own, findings)
            except DataFileError as exc:
                error = (
                    exc.reason,
                    exc.path,
                    getattr(exc, "position", None),
                    getattr(exc, "record_id", None),
                )
            except Exception as exc:
                error = exc
            items.extend(own)
            outcomes.append((len(own), findings, error))
        records, children = staged_tables(items, "", None)
    return to_ipc(records), {t: to_ipc(c) for t, c in children.items()}, outcomes


# ------------------------------------------------------------------ calling side
def _payloads(
    fmt: str,
    path: Path,
    source: str,
    ingest_id: int | None,
    failure: list[BaseException],
    skip: int = 0,
) -> Iterator[tuple[str, str, str, int | None, int, bytes]]:
    """The file's units (after its first ``skip`` elements); a reading error
    ends them and is kept in ``failure`` (raised once the units before it are
    through, as the serial path would)."""
    first = skip + 1
    try:
        for texts, linenos in _texts(fmt, path, skip):
            cols: dict[str, pa.Array] = {"text": texts}
            if linenos is not None:
                cols["lineno"] = pa.array(linenos, type=pa.int64())
            yield fmt, str(path), source, ingest_id, first, to_ipc(pa.table(cols))
            first += len(texts)
    except (DataFileError, OSError) as exc:
        failure.append(exc)


def _texts(fmt: str, path: Path, skip: int = 0) -> Iterator[tuple[pa.Array, list[int] | None]]:
    if fmt == "ctgov_json":
        for texts in ctgov_json.stream_array_texts(path, UNIT, skip=skip):
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
    file that cannot be read further raises after the units before the damage.

    A JSON array is read as the serial reader reads it
    (:func:`celltrials.sources.ctgov_json._stream_array`): each worker reads
    byte ranges of the file itself (nothing but the range travels to it) up to
    the first range that does not hold whole elements; from there its element
    texts are found here and sent to the workers in units."""
    done = 0
    if fmt == "ctgov_json":
        done, whole = yield from _range_units(path, source, ingest_id, workers)
        if whole:
            return
    failure: list[BaseException] = []
    results: Generator[tuple[Any, ...], None, None] = map_ordered(
        _parse_unit,
        _payloads(fmt, path, source, ingest_id, failure, skip=done),
        workers,
        in_flight=IN_FLIGHT,
        preload=PRELOAD,
    )
    try:
        for records, children, findings in results:
            yield Unit(from_ipc(records), {t: from_ipc(c) for t, c in children.items()}, findings)
    finally:
        results.close()  # (an error or an early stop: the units not started are cancelled)
    if failure:
        raise failure[0]


def _range_units(
    path: Path, source: str, ingest_id: int | None, workers: int
) -> Generator[Unit, None, tuple[int, bool]]:
    """The units of a JSON array's byte ranges (:func:`_parse_range`), in file
    order, up to the first range that does not hold whole elements. Returns
    how many elements they hold and whether they are the whole array."""
    cut = [True]

    def payloads() -> Iterator[tuple[str, str, int | None, int, int]]:
        for span in ctgov_json.array_ranges(path):
            if span is None:
                cut[0] = False
                return
            yield str(path), source, ingest_id, *span

    results: Generator[tuple[Any, ...], None, None] = map_ordered(
        _parse_range,
        payloads(),
        workers,
        in_flight=IN_FLIGHT,
        preload=PRELOAD,
    )
    done = 0
    try:
        for records, children, findings, n, whole in results:
            table = from_ipc(records)
            at = table.schema.get_field_index("position")
            table = table.set_column(
                at,
                "position",
                pc.add(table.column(at), pa.scalar(done, table.schema.field(at).type)),
            )
            shifted = [
                (k, reason, None if pos is None else pos + done, rid, where)
                for k, reason, pos, rid, where in findings
            ]
            if n:
                yield Unit(table, {t: from_ipc(c) for t, c in children.items()}, shifted)
            done += n
            if not whole:
                return done, False
    finally:
        results.close()
    return done, cut[0]


@dataclass
class ParsedFile:
    """A whole file parsed by a worker: its good records (rows ``start`` to
    ``stop`` of a :class:`Unit` it may share with the files parsed in the
    same task), its findings in file order and the error that ended it, if any."""

    unit: Unit
    start: int
    stop: int
    findings: list[FindingRow]
    error: Exception | None

    @property
    def n_good(self) -> int:
        return self.stop - self.start

    @property
    def n_bytes(self) -> int:
        return sum(self.unit.raw_bytes[self.start : self.stop])

    def own_unit(self) -> Unit:
        """The file's records as a unit of their own (with its findings)."""
        if self.start == 0 and self.stop == self.unit.n_good:
            self.unit.findings = self.findings
            return self.unit  # (any other file of the task has no good records)
        records, children = concat([(self.unit, self.start, self.stop)])
        return Unit(records, children, self.findings)


#: what :class:`FilesAhead` is told of a file it may parse: (format, size, mtime_ns),
#: or None for a file the writer will not hand to it
AheadPlan = tuple[str, int, int] | None


@dataclass
class _Task:
    future: Future[Any]
    size: int  # bytes of its files
    left: int  # its files not yet taken or passed over
    done: tuple[Unit, list[tuple[int, FileOutcome]]] | None = None  # (unit, (start, outcome))


class FilesAhead:
    """Files parsed whole by worker processes ahead of the writer.

    ``choose(i)`` says whether file ``i`` of ``paths`` is one to parse (its
    format and the size and modification time it had); it is asked in file
    order, a few files ahead of the writer, so that the workers parse the
    next files while the current ones are written. Consecutive small files go
    to a worker together (up to :data:`AHEAD_TASK_BYTES` or
    :data:`AHEAD_TASK_FILES`): one task, one set of tables, whatever the
    number of files. :meth:`take` gives the writer file ``i``'s result;
    files it passed over without taking (skipped as unchanged, say) are dropped."""

    def __init__(
        self,
        executor: ProcessPoolExecutor,
        workers: int,
        paths: list[Path],
        choose: Callable[[int], AheadPlan],
    ) -> None:
        self._executor, self._workers, self._paths, self._choose = executor, workers, paths, choose
        self._next = 0  # the next file to ask ``choose`` about
        self._files: dict[int, tuple[_Task, int, str, int, int]] = {}  # (task, k, fmt, size, mtime)
        self._tasks: list[_Task] = []  # in flight: started, or done and not all taken
        self._bytes = 0
        self._top_up()

    def _top_up(self) -> None:
        while self._next < len(self._paths) and (
            not self._tasks
            or (
                len(self._tasks) < AHEAD_IN_FLIGHT * self._workers
                and self._bytes < AHEAD_IN_FLIGHT_BYTES
            )
        ):
            chosen: list[tuple[int, str, int, int]] = []
            size = 0
            while (
                self._next < len(self._paths)
                and size < AHEAD_TASK_BYTES
                and len(chosen) < AHEAD_TASK_FILES
            ):
                i = self._next
                self._next += 1
                plan = self._choose(i)
                if plan is not None:
                    chosen.append((i, *plan))
                    size += plan[1]
            if not chosen:
                return
            payload = (os.getcwd(), [(str(self._paths[i]), fmt) for i, fmt, _, _ in chosen])
            task = _Task(self._executor.submit(_parse_files, payload), size, len(chosen))
            self._tasks.append(task)
            self._bytes += size
            for k, (i, fmt, file_size, mtime_ns) in enumerate(chosen):
                self._files[i] = (task, k, fmt, file_size, mtime_ns)

    def _release(self, task: _Task) -> None:
        task.left -= 1
        if task.left == 0:
            task.future.cancel()  # (if not started: every file was passed over)
            task.done = None
            self._tasks.remove(task)
            self._bytes -= task.size

    def take(self, i: int, fmt: str, size: int, mtime_ns: int) -> ParsedFile | None:
        """File ``i`` parsed, if it was handed to a worker as it is now
        (format, size, modification time); else None: the writer reads it."""
        for earlier in [k for k in self._files if k < i]:
            self._release(self._files.pop(earlier)[0])
        entry = self._files.pop(i, None)
        if entry is None:
            self._top_up()
            return None
        task, k, *seen = entry
        if seen != [fmt, size, mtime_ns]:
            self._release(task)  # the file changed since it was handed out
            self._top_up()
            return None
        if task.done is None:
            records, children, outcomes = result(task.future, self._workers, _parse_files)
            unit = Unit(from_ipc(records), {t: from_ipc(c) for t, c in children.items()}, [])
            starts, at = [], 0
            for outcome in outcomes:
                starts.append((at, outcome))
                at += outcome[0]
            task.done = (unit, starts)
        unit, starts = task.done
        start, (n_good, findings, error) = starts[k]
        self._release(task)
        self._top_up()  # the workers go on while this file is written
        if isinstance(error, tuple):
            error = _file_error(error)
        return ParsedFile(unit, start, start + n_good, findings, error)

    def close(self) -> None:
        """Cancel the tasks not started (the pool's owner waits for the rest)."""
        for task in self._tasks:
            task.future.cancel()
        self._tasks.clear()
        self._files.clear()
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
    "with_ingest",
]
