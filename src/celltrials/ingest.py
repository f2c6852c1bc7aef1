"""Ingest registry exports into the store, one transaction per file.

Problems are collected as findings in an :class:`IngestReport` (file,
record position, record id, reason). By default the first bad record stops
the run with its file rolled back (the store is exactly as before that file);
with ``skip_bad=True`` good records go in and bad ones are listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from celltrials import ingest_parallel
from celltrials.errors import ConfigError, DataFileError, RecordError, UnknownFormatError
from celltrials.fswalk import expand_glob, walk_files
from celltrials.ingest_parallel import (
    AheadPlan,
    FilesAhead,
    ParsedFile,
    Unit,
    concat,
    parse_units,
    plan_workers,
    with_ingest,
)
from celltrials.models import ParsedRecord
from celltrials.procpool import available_cores, check_jobs, pool, start_fork_server
from celltrials.progress import Progress, ProgressEvent, logger
from celltrials.runtime import gc_paused
from celltrials.sources import Sniffed, ctgov_json, parse_file, sniff
from celltrials.sources.validate import unstorable_reason
from celltrials.store import AddResult, Staged, Store, raw_and_digest, staged_tables

#: extensions that hold registry data; anything else in a folder is a note and skipped
DATA_EXTENSIONS = {".json", ".ndjson", ".jsonl", ".csv", ".xml", ".xlsx", ".zip"}


@dataclass
class Finding:
    path: str
    reason: str
    position: int | None = None
    record_id: str | None = None
    severity: str = "error"  # "error" (bad data) | "notice" (skipped file)

    def __post_init__(self) -> None:
        self.path = display_path(self.path)

    def __str__(self) -> str:
        where = ", ".join(
            x
            for x in (
                f"record {self.position}" if self.position else "",
                f"id {self.record_id}" if self.record_id else "",
            )
            if x
        )
        return f"{self.path}: {where + ': ' if where else ''}{self.reason}"


@dataclass
class FileResult:
    path: str
    format: str
    n_records: int = 0
    n_new: int = 0
    n_unchanged: int = 0
    n_bad: int = 0
    committed: bool = False
    skipped_unchanged: bool = False  # same content as an earlier clean ingest: not read again

    def __post_init__(self) -> None:
        self.path = display_path(self.path)


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def n_new(self) -> int:
        return sum(f.n_new for f in self.files)

    @property
    def n_records(self) -> int:
        return sum(f.n_records for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "n_records": self.n_records,
            "n_new": self.n_new,
            "files": [asdict(f) for f in self.files],
            "findings": [asdict(f) for f in self.findings],
        }


def display_path(path: str | Path) -> str:
    """A path as text that can be printed and stored: a file name that is not
    valid UTF-8 (kept by Python as surrogate escapes) shows its bad bytes as ``\\xNN``."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


class IngestAborted(DataFileError):
    """Raised (strict mode) after rolling back the file with the bad record."""

    def __init__(self, finding: Finding, report: IngestReport) -> None:
        self.finding = finding
        self.report = report
        one_record = (
            finding.position is not None or finding.record_id is not None or "!" in finding.path
        )
        super().__init__(
            str(finding),
            hint=(
                "Nothing from this file was stored. Fix the file, or rerun with --skip-bad to ingest its good records."
                if one_record
                else "Nothing from this file was stored; it cannot be read as a whole. Re-download or re-export it "
                "(--skip-bad goes on with the other files)."
            ),
        )


_NO_SUCH_PATH = (
    "Check the path (folders are read recursively; quote globs such as 'data/**/*.json')."
)


def expand_paths(paths: Iterable[str | Path], report: IngestReport) -> list[Path]:
    """Files to read: files as given, folders recursively, globs expanded.

    Inside folders, files without a data extension (``.md``, ``.txt``) are
    skipped with a notice; a named file is always read.
    """
    out: list[Path] = []
    for item in paths:
        text = str(item)
        matches = expand_glob(text) if any(c in text for c in "*?[") else [text]
        if not matches:
            raise DataFileError(
                "no such file or folder", path=display_path(text), hint=_NO_SUCH_PATH
            )
        for m in matches:
            p = Path(m)
            if p.is_dir():
                for f in walk_files(p):  # links followed, each real folder once: no loops
                    if f.name.startswith("."):
                        continue
                    if f.suffix.lower() in DATA_EXTENSIONS:
                        out.append(f)
                    else:
                        report.findings.append(
                            Finding(str(f), "not registry data (by extension)", severity="notice")
                        )
            elif p.is_file():
                out.append(p)
            else:
                raise DataFileError(
                    "no such file or folder", path=display_path(text), hint=_NO_SUCH_PATH
                )
    seen: set[Path] = set()
    unique = []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(p)
    return unique


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


#: files up to this size are parsed whole and written together with their
#: neighbours (one transaction for many small files); larger files stream
SMALL_FILE_BYTES = 8 << 20
#: a batch of staged records is written once it holds this many bytes of raw
#: JSON, as held: the workers' units hold it compressed (see ``compress_raw``)
BATCH_BYTES = 32 << 20


#: DuckDB checkpoints (rewrites the table's last, partly filled row group:
#: :data:`celltrials.store.STORE_ROW_GROUP_SIZE` rows at most) when its
#: write-ahead log passes this size; 16 MiB by default, i.e. after
#: nearly every file — fewer checkpoints while ingesting many files
CHECKPOINT_BYTES = 256 << 20


@contextlib.contextmanager
def _checkpoint_threshold(store: Store, size: int) -> Iterator[None]:
    row = store.con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    store.con.execute(f"SET checkpoint_threshold = '{size}B'")
    try:
        yield
    finally:
        if row:
            store.con.execute(f"SET checkpoint_threshold = '{row[0]}'")


#: DuckDB's memory while ingesting (its default is 80 % of RAM: it would keep
#: every written block of a large file cached, so a process's peak grew with
#: the corpus); past this it writes buffers to a temporary file beside the
#: store. Overridden by ``CELLTRIALS_INGEST_MEMORY`` (e.g. ``2GB``).
INGEST_MEMORY_LIMIT = "512MB"


@contextlib.contextmanager
def _memory_limit(store: Store) -> Iterator[None]:
    limit = os.environ.get("CELLTRIALS_INGEST_MEMORY") or INGEST_MEMORY_LIMIT
    row = store.con.execute("SELECT current_setting('memory_limit')").fetchone()
    try:
        store.con.execute("SET memory_limit = ?", [limit])
    except duckdb.Error as exc:
        raise ConfigError(
            f"CELLTRIALS_INGEST_MEMORY={limit!r} is not a memory size ({str(exc).splitlines()[0]})",
            hint="Give a size such as 512MB or 2GB, or unset it.",
        ) from None
    try:
        yield
    finally:
        # the default is restored exactly (DuckDB prints a limit rounded to 0.1 GiB)
        store.con.execute("RESET memory_limit")
        now = store.con.execute("SELECT current_setting('memory_limit')").fetchone()
        if row and now != row:
            store.con.execute("SET memory_limit = ?", [row[0]])


@dataclass
class _Known:
    """Files already ingested cleanly: by content hash, and by (path, size, mtime)."""

    by_sha: dict[str, tuple[int, str, int]]
    by_stat: dict[tuple[str, int, int], str]

    @classmethod
    def load(cls, store: Store) -> _Known:
        rows = store.con.execute("""
            SELECT source_sha256, ingest_id, format, n_records, source, source_size, source_mtime_ns FROM ingests
            WHERE finished_at IS NOT NULL AND source_sha256 IS NOT NULL AND coalesce(n_bad, 0) = 0
            ORDER BY ingest_id""").fetchall()
        known = cls({}, {})
        for sha, ingest_id, fmt, n, source, size, mtime in rows:
            known.by_sha.setdefault(sha, (ingest_id, fmt, n or 0))
            if size is not None and mtime is not None:
                known.by_stat[(source, size, mtime)] = sha
        return known


@dataclass
class _Staged:
    path: Path
    result: FileResult
    sha256: str
    size: int
    mtime_ns: int
    n_bad: int
    items: list[tuple[ParsedRecord, bytes, str]]
    source: str = ""  # the resolved path, as stored
    parsed: ParsedFile | None = None  # instead of ``items``: the file parsed by a worker

    @property
    def n_items(self) -> int:
        return self.parsed.n_good if self.parsed is not None else len(self.items)

    @property
    def n_bytes(self) -> int:
        if self.parsed is not None:
            return self.parsed.n_bytes
        return sum(len(raw) for _, raw, _ in self.items)


class _Group:
    """Small files parsed whole, written together in one transaction."""

    def __init__(
        self, store: Store, known: _Known, progress: Progress | None, batch_size: int
    ) -> None:
        self.store, self.known, self.progress, self.batch_size = store, known, progress, batch_size
        self.files: list[_Staged] = []
        self.n_items = 0
        self.n_bytes = 0

    def add(self, staged: _Staged) -> None:
        self.files.append(staged)
        self.n_items += staged.n_items
        self.n_bytes += staged.n_bytes
        if (
            self.n_items >= self.batch_size
            or self.n_bytes >= BATCH_BYTES
            or len(self.files) >= 10_000
        ):
            self.flush()

    def flush(self) -> None:
        files, self.files, self.n_items, self.n_bytes = self.files, [], 0, 0
        if not files:
            return
        store = self.store
        with store.transaction():
            ingest_ids = store.new_ingest_ids(len(files))
            if any(f.parsed is not None for f in files):
                flags = self._add_units(files, ingest_ids)
            else:
                items: list[Staged] = [
                    (rec, raw, digest, f.source, ingest_id)
                    for f, ingest_id in zip(files, ingest_ids, strict=True)
                    for rec, raw, digest in f.items
                ]
                flags = store.add_staged(items)
            store.settle(ingest_ids)
            pos = 0
            for f in files:
                n = f.n_items
                f.result.n_records, f.result.n_new = n, sum(flags[pos : pos + n])
                f.result.n_unchanged = n - f.result.n_new
                pos += n
            store.record_ingests(
                [
                    (
                        ingest_id,
                        f.source,
                        f.result.format,
                        f.sha256,
                        f.size,
                        f.mtime_ns,
                        f.result.n_records,
                        f.result.n_new,
                        f.n_bad,
                    )
                    for f, ingest_id in zip(files, ingest_ids, strict=True)
                ]
            )
        for f in files:
            f.result.committed = True
            if not f.n_bad:
                self.known.by_sha.setdefault(f.sha256, (0, f.result.format, f.result.n_records))

    def _add_units(self, files: list[_Staged], ingest_ids: list[int]) -> list[bool]:
        """The group's records, some parsed by workers, in one
        :meth:`Store.add_tables` (as one :meth:`Store.add_staged` would: the
        same rows, the first of a repeated key wins, one ingest time); the
        files this process parsed are turned into tables here."""
        pieces: list[tuple[Unit, int, int]] = []
        sources: list[str] = []
        ids: list[int] = []
        counts: list[int] = []
        for f, ingest_id in zip(files, ingest_ids, strict=True):
            source = f.source
            if f.parsed is not None:
                unit, a, b = f.parsed.unit, f.parsed.start, f.parsed.stop
            else:
                unit = Unit(*staged_tables(f.items, source, ingest_id), [])
                a, b = 0, unit.n_good
            if a == b:
                continue
            if pieces and pieces[-1][0] is unit and pieces[-1][2] == a:
                pieces[-1] = (unit, pieces[-1][1], b)  # files of one worker task, side by side
            else:
                pieces.append((unit, a, b))
            sources.append(source)
            ids.append(ingest_id)
            counts.append(b - a)
        if not pieces:
            return []
        records, children = concat(pieces)
        return self.store.add_tables(with_ingest(records, sources, ids, counts), children)


def ingest_paths(
    store: Store,
    paths: Iterable[str | Path],
    *,
    skip_bad: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    batch_size: int = 5000,
    jobs: int | None = None,
) -> IngestReport:
    """Ingest files, folders and globs into ``store``; see module docstring.

    A file whose content (SHA-256) was ingested cleanly before is skipped
    with a notice (a file at the same path with the same size and
    modification time is taken as unchanged without re-hashing);
    ``force=True`` reads it again. Small files are written together, many
    per transaction; each larger file streams in batches inside its own
    transaction. Either way a file is stored whole or not at all.
    ``jobs``: processes that parse a large ClinicalTrials.gov JSON array or
    NDJSON file (None: all cores for a file of at least
    :data:`celltrials.ingest_parallel.MIN_BYTES`; 1: this process only), and
    that parse many smaller ones ahead of the writer (:func:`_files_ahead`);
    what is stored does not depend on it (:mod:`celltrials.ingest_parallel`).
    """
    check_jobs(jobs)
    report = IngestReport()
    files = expand_paths(paths, report)
    explicit = {Path(str(p)).resolve() for p in paths if Path(str(p)).is_file()}
    for f in report.findings:
        if progress:
            progress(ProgressEvent("ingest", "skipped", f.path, message=f.reason))
    store.discard_unfinished_ingests()  # left by a process killed while staging a file
    known = _Known.load(store)
    group = _Group(store, known, progress, batch_size)
    with (
        gc_paused(),
        _checkpoint_threshold(store, CHECKPOINT_BYTES),
        _memory_limit(store),
        _files_ahead(files, known, force, jobs) as ahead,
    ):
        try:
            for index, path in enumerate(files, start=1):
                _one_file(
                    store,
                    path,
                    index,
                    len(files),
                    explicit,
                    known,
                    group,
                    report,
                    skip_bad,
                    force,
                    progress,
                    batch_size,
                    jobs,
                    ahead,
                )
        except IngestAborted:
            group.flush()  # the files before the bad one stay
            raise
        group.flush()
        if report.n_new:
            # the last checkpoint while DuckDB's memory is still capped: left to
            # closing the store (memory limit reset), it took the ingest's peak from
            # 1.3 to 1.9 GB (100,000 complete studies)
            store.checkpoint()
    return report


#: the extensions of the files :func:`_files_ahead` hands to workers (a file
#: is still read by its content; this only spares sniffing, e.g. decoding a CSV, twice)
_AHEAD_SUFFIXES = {".json", ".ndjson", ".jsonl"}


@dataclass
class _Ahead:
    files: FilesAhead
    #: what was learnt of the files handed to the workers, by index: the size
    #: and modification time they had, their content hash and format
    planned: dict[int, tuple[int, int, str, str]]

    def plan(self, i: int, st: os.stat_result) -> tuple[str, str] | None:
        """File ``i``'s (content hash, format) if it was handed to the
        workers as it is now (same size and modification time)."""
        seen = self.planned.pop(i, None)
        if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
            return None
        return seen[2], seen[3]


def _ahead_candidate(
    path: Path, known: _Known, force: bool
) -> tuple[os.stat_result, str | None] | None:
    """``path``'s stat and its content hash known by (path, size, modification
    time), if the workers ahead may parse it: a JSON/NDJSON file under
    :data:`celltrials.ingest_parallel.AHEAD_MAX_BYTES` (larger ones are read by
    this process or streamed to workers of their own) not known unchanged."""
    if path.suffix.lower() not in _AHEAD_SUFFIXES:
        return None
    st = path.stat()
    if st.st_size >= ingest_parallel.AHEAD_MAX_BYTES:
        return None
    sha = None
    if not force and known.by_stat:
        sha = known.by_stat.get((display_path(path.resolve()), st.st_size, st.st_mtime_ns))
        if sha in known.by_sha:
            return None  # unchanged: skipped without reading it
    return st, sha


def _ahead_workers(files: list[Path], known: _Known, force: bool, jobs: int | None) -> int:
    """Workers for :func:`_files_ahead`; 1: none, every file is parsed here."""
    workers = jobs or available_cores()
    if workers < 2:
        return 1
    n = total = 0
    for path in files:
        try:
            got = _ahead_candidate(path, known, force)
        except OSError:
            continue
        if got is None:
            continue
        n += 1
        total += got[0].st_size
    # starting the workers costs about a second: not for one file nor a few MB
    # (:data:`celltrials.ingest_parallel.AHEAD_MIN_BYTES` says why)
    return workers if n >= 2 and total >= ingest_parallel.AHEAD_MIN_BYTES else 1


@contextlib.contextmanager
def _files_ahead(
    files: list[Path], known: _Known, force: bool, jobs: int | None
) -> Iterator[_Ahead | None]:
    """Worker processes parsing the ClinicalTrials.gov JSON and NDJSON files
    that this process would parse itself (small ones, written in groups, and
    ones too small to be streamed to workers), a few files ahead of the one
    being written (:class:`celltrials.ingest_parallel.FilesAhead`); None
    (every file parsed here) with ``jobs=1``, on one core, or when there is
    too little to parse (:func:`_ahead_workers`). :func:`_one_file` decides,
    in order, what is read and how, as without workers; a file it reads is
    taken from the workers, with the same records and findings."""
    workers = 1 if jobs == 1 else _ahead_workers(files, known, force, jobs)
    if workers < 2:
        yield None
        return
    planned: dict[int, tuple[int, int, str, str]] = {}

    def choose(i: int) -> AheadPlan:
        path = files[i]
        try:
            got = _ahead_candidate(path, known, force)
            if got is None:
                return None
            st, sha = got
            if sha is None:
                sha = _sha256(path)
            if not force and sha in known.by_sha:
                return None
            fmt = sniff(path).format
        except (DataFileError, OSError):
            return None  # _one_file says why
        if fmt not in ingest_parallel.FORMATS or (
            fmt == "ctgov_json" and st.st_size >= ctgov_json.STREAM_MIN_BYTES
        ):
            return None  # streamed: read in batches by this process or by workers of its own
        planned[i] = (st.st_size, st.st_mtime_ns, sha, fmt)  # (not found out again by _one_file)
        return fmt, st.st_size, st.st_mtime_ns

    with pool(workers, preload=ingest_parallel.PRELOAD) as executor:
        ahead = FilesAhead(executor, workers, files, choose)
        try:
            yield _Ahead(ahead, planned)
        finally:
            ahead.close()


def _may_use_workers(size: int, jobs: int | None) -> bool:
    """Whether a file of ``size`` bytes may be parsed by workers (large enough for
    them: :func:`celltrials.ingest_parallel.plan_workers` decides once its format
    is known)."""
    if jobs == 1 or (jobs is None and available_cores() < 2):
        return False
    return size >= min(ingest_parallel.MIN_BYTES, ctgov_json.STREAM_MIN_BYTES)


def _one_file(
    store: Store,
    path: Path,
    index: int,
    total_files: int,
    explicit: set[Path],
    known: _Known,
    group: _Group,
    report: IngestReport,
    skip_bad: bool,
    force: bool,
    progress: Progress | None,
    batch_size: int,
    jobs: int | None = None,
    ahead: _Ahead | None = None,
) -> None:
    try:
        st = path.stat()
        resolved = display_path(path.resolve())
        sha = None if force else known.by_stat.get((resolved, st.st_size, st.st_mtime_ns))
        planned = ahead.plan(index - 1, st) if ahead else None
        if sha is None and not planned and _may_use_workers(st.st_size, jobs):
            # the workers' fork server imports its modules while the file is hashed
            start_fork_server(ingest_parallel.PRELOAD)
        if sha is None:
            sha = planned[0] if planned else _sha256(path)
    except OSError as exc:
        _unreadable(exc, path, report, skip_bad)
        return
    if not force and sha in known.by_sha:
        _, fmt, n = known.by_sha[sha]
        report.files.append(
            FileResult(str(path), fmt, n_records=n, n_unchanged=n, skipped_unchanged=True)
        )
        reason = (
            "unchanged: this content was ingested before (same SHA-256); --force reads it again"
        )
        report.findings.append(Finding(str(path), reason, severity="notice"))
        if progress:
            progress(
                ProgressEvent(
                    "ingest",
                    "skipped",
                    display_path(path),
                    message="unchanged since it was last ingested",
                )
            )
        return
    try:
        sniffed = Sniffed(planned[1]) if planned else sniff(path)
    except UnknownFormatError as exc:
        if path.resolve() not in explicit and path.suffix.lower() == ".csv" and exc.no_id_column:
            # a CSV that is not a registry export (e.g. a labels table next to the data)
            report.findings.append(
                Finding(
                    str(path),
                    "CSV without a registry id column (NCT Number / TrialID)",
                    severity="notice",
                )
            )
            if progress:
                progress(
                    ProgressEvent(
                        "ingest", "skipped", display_path(path), message="not a registry export"
                    )
                )
            return
        finding = Finding(
            str(path), exc.reason, getattr(exc, "position", None), getattr(exc, "record_id", None)
        )
        report.findings.append(finding)
        if not skip_bad:
            raise IngestAborted(finding, report) from None
        return
    except (DataFileError, OSError) as exc:
        _unreadable(exc, path, report, skip_bad)
        return
    logger.info("ingest %s (%s)", path, sniffed.format)
    result = FileResult(str(path), sniffed.format)
    report.files.append(result)
    if progress:
        progress(
            ProgressEvent(
                "ingest",
                "file_start",
                display_path(path),
                done=index - 1,
                total=total_files,
                index=index,
            )
        )
    try:
        parsed = (
            ahead.files.take(index - 1, sniffed.format, st.st_size, st.st_mtime_ns)
            if ahead
            else None
        )
        if st.st_size <= SMALL_FILE_BYTES:
            staged = _Staged(path, result, sha, st.st_size, st.st_mtime_ns, 0, [], resolved)
            if parsed is not None:
                _replay(parsed.findings, path, result, report, skip_bad)
                if parsed.error is not None:
                    raise parsed.error
                staged.parsed = parsed
            else:
                for item in parse_file(path, sniffed):
                    if _bad(item, path, result, report, skip_bad):
                        continue
                    assert isinstance(item, ParsedRecord)
                    prepared = _prepared(item, path, result, report, skip_bad)
                    if prepared:
                        staged.items.append(prepared)
            staged.n_bad = result.n_bad
            # new/unchanged are known once the group is written
            result.n_records = staged.n_items
            if progress:
                progress(
                    ProgressEvent(
                        "ingest", "records", display_path(path), n=staged.n_items + result.n_bad
                    )
                )
            group.add(staged)
        else:
            group.flush()
            if parsed is not None:
                _ingest_parsed(
                    store,
                    path,
                    sniffed,
                    result,
                    report,
                    skip_bad,
                    progress,
                    batch_size,
                    sha,
                    st,
                    parsed,
                )
            else:
                _ingest_file(
                    store,
                    path,
                    sniffed,
                    result,
                    report,
                    skip_bad,
                    progress,
                    batch_size,
                    sha,
                    st,
                    jobs,
                )
            if not result.n_bad:
                known.by_sha.setdefault(sha, (0, result.format, result.n_records))
    except DataFileError as exc:
        if isinstance(exc, IngestAborted):
            raise
        finding = Finding(
            exc.path or str(path),
            exc.reason,
            getattr(exc, "position", None),
            getattr(exc, "record_id", None),
        )
        report.findings.append(finding)
        result.n_new = result.n_unchanged = 0
        if not skip_bad:
            raise IngestAborted(finding, report) from None
    if progress:
        progress(
            ProgressEvent(
                "ingest",
                "file_done",
                display_path(path),
                done=index,
                total=total_files,
                index=index,
                n=result.n_records,
            )
        )


def _unreadable(
    exc: DataFileError | OSError, path: Path, report: IngestReport, skip_bad: bool
) -> None:
    reason = (
        exc.reason
        if isinstance(exc, DataFileError)
        else f"cannot read the file ({exc.strerror or exc})"
    )
    finding = Finding(getattr(exc, "path", "") or str(path), reason)
    report.findings.append(finding)
    if not skip_bad:
        raise IngestAborted(finding, report) from None


def _bad(item: Any, path: Path, result: FileResult, report: IngestReport, skip_bad: bool) -> bool:
    if not isinstance(item, RecordError):
        return False
    finding = Finding(item.path or str(path), item.reason, item.position, item.record_id)
    report.findings.append(finding)
    result.n_bad += 1
    if not skip_bad:
        raise IngestAborted(finding, report)
    return True


def _replay(
    findings: list[ingest_parallel.FindingRow],
    path: Path,
    result: FileResult,
    report: IngestReport,
    skip_bad: bool,
) -> None:
    """The findings of a file a worker parsed, counted as :func:`_bad` and
    :func:`_prepared` count them while parsing (the first stops a strict run)."""
    for _, reason, position, record_id, where in findings:
        error = RecordError(reason, path=where, position=position, record_id=record_id)
        _bad(error, path, result, report, skip_bad)


def _prepared(
    rec: ParsedRecord, path: Path, result: FileResult, report: IngestReport, skip_bad: bool
) -> tuple[ParsedRecord, bytes, str] | None:
    """The record with its stored raw JSON and content hash; the parsed raw
    object is let go (the bytes are all the store needs of it). None (and a
    finding) for a record whose content cannot be stored as JSON."""
    try:
        raw, digest = raw_and_digest(rec)
    except (
        TypeError,
        ValueError,
        OverflowError,
        RecursionError,
    ) as exc:  # e.g. nested too deep to hash
        reason = (
            unstorable_reason(rec.raw) or f"content cannot be stored as JSON ({type(exc).__name__})"
        )
        finding = Finding(str(path), reason, rec.position or None, rec.record_id)
        report.findings.append(finding)
        result.n_bad += 1
        if not skip_bad:
            raise IngestAborted(finding, report) from None
        return None
    rec.raw = {}
    return rec, raw, digest


def _ingest_file(
    store: Store,
    path: Path,
    sniffed: Any,
    result: FileResult,
    report: IngestReport,
    skip_bad: bool,
    progress: Progress | None,
    batch_size: int,
    sha: str,
    st: os.stat_result,
    jobs: int | None = None,
) -> None:
    """A large file, staged then published: its batches are committed one by
    one as an unfinished ingest (records no trial shows yet; memory stays
    bounded by a batch), then one short transaction marks the current
    versions, merges the trials they reach and finishes the ingest. A bad
    record, a broken file or any error deletes what was staged; a process
    killed meanwhile leaves an unfinished ingest that the next writer
    deletes (:meth:`Store.discard_unfinished_ingests`). Either way the store
    ends as if the file had not been read. With several ``jobs`` the records
    are parsed by worker processes (:func:`_ingest_units`), with the same
    result (a file parsed whole by a worker ahead: :func:`_ingest_parsed`)."""
    workers = plan_workers(sniffed.format, path, st.st_size, jobs)
    source = display_path(path.resolve())
    with store.transaction():
        ingest_id = store.begin_ingest(
            source, sniffed.format, sha, size=st.st_size, mtime_ns=st.st_mtime_ns
        )
    total = AddResult()
    batch: list[Staged] = []
    n_bytes = 0
    # one batch is written (DuckDB works without the GIL) while the next is parsed
    pending: Future[list[bool]] | None = None

    def collect() -> None:
        nonlocal pending
        if pending is None:
            return
        done, pending = pending, None
        flags = done.result()  # the writer's error, if any, is raised here
        total.n_records += len(flags)
        total.n_new += sum(flags)
        if progress:
            progress(ProgressEvent("ingest", "records", display_path(path), n=len(flags)))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="celltrials-writer") as writer:

        def write() -> None:
            nonlocal batch, pending, n_bytes
            collect()
            # its own transaction: committed, not yet published
            pending = writer.submit(store.add_staged, batch)
            batch, n_bytes = [], 0

        def write_units(pieces: list[tuple[Unit, int, int]]) -> None:
            nonlocal pending
            collect()
            pending = writer.submit(_add_pieces, store, pieces)

        try:
            if workers > 1:
                units = parse_units(sniffed.format, path, source, ingest_id, workers)
                try:
                    _ingest_units(units, write_units, path, result, report, skip_bad, batch_size)
                finally:
                    units.close()  # on an error too: the workers stop now
            else:
                for item in parse_file(path, sniffed):
                    if _bad(item, path, result, report, skip_bad):
                        continue
                    assert isinstance(item, ParsedRecord)
                    prepared = _prepared(item, path, result, report, skip_bad)
                    if prepared is None:
                        continue
                    rec, raw, digest = prepared
                    batch.append((rec, raw, digest, source, ingest_id))
                    n_bytes += len(raw)
                    if len(batch) >= batch_size or n_bytes >= BATCH_BYTES:
                        write()
                if batch:
                    write()
            collect()
            total.n_unchanged = total.n_records - total.n_new
            with store.transaction():
                store.settle([ingest_id])
                store.finish_ingest(ingest_id, total, result.n_bad)
        except BaseException:
            if pending is not None:  # let the batch being written finish: the connection is one
                with contextlib.suppress(BaseException):
                    pending.result()
            store.discard_ingests([ingest_id])
            raise
    result.n_records, result.n_new, result.n_unchanged = (
        total.n_records,
        total.n_new,
        total.n_unchanged,
    )
    result.committed = True


def _ingest_parsed(
    store: Store,
    path: Path,
    sniffed: Any,
    result: FileResult,
    report: IngestReport,
    skip_bad: bool,
    progress: Progress | None,
    batch_size: int,
    sha: str,
    st: os.stat_result,
    parsed: ParsedFile,
) -> None:
    """A larger file parsed whole by a worker ahead (:func:`_files_ahead`),
    written as :func:`_ingest_file` writes it (the same batches, findings,
    ingest row and merge) but in one transaction: the file's rows are in
    memory already, so staging them in committed batches would bound nothing,
    and two commits per file (~25 ms each) are saved. A bad record or any
    error rolls the whole file back, as deleting its staged batches would."""
    source = display_path(path.resolve())
    total = AddResult()

    def write_units(pieces: list[tuple[Unit, int, int]]) -> None:
        flags = _add_pieces(store, pieces)
        total.n_records += len(flags)
        total.n_new += sum(flags)
        if progress:
            progress(ProgressEvent("ingest", "records", display_path(path), n=len(flags)))

    with store.transaction():
        ingest_id = store.begin_ingest(
            source, sniffed.format, sha, size=st.st_size, mtime_ns=st.st_mtime_ns
        )
        whole = _whole_file(parsed, source, ingest_id)
        _ingest_units(whole, write_units, path, result, report, skip_bad, batch_size)
        total.n_unchanged = total.n_records - total.n_new
        store.settle([ingest_id])
        store.finish_ingest(ingest_id, total, result.n_bad)
    result.n_records, result.n_new, result.n_unchanged = (
        total.n_records,
        total.n_new,
        total.n_unchanged,
    )
    result.committed = True


def _ingest_units(
    units: Iterable[Unit],
    write: Callable[[list[tuple[Unit, int, int]]], None],
    path: Path,
    result: FileResult,
    report: IngestReport,
    skip_bad: bool,
    batch_size: int,
) -> None:
    """The serial loop of :func:`_ingest_file` over units parsed by workers:
    the findings in file order (:func:`_bad`: the first stops a strict run),
    the good records written in the same batches (slices of units)."""
    pieces: list[tuple[Unit, int, int]] = []
    count = n_bytes = 0
    for unit in units:
        findings, f, start = unit.findings, 0, 0
        for g in range(unit.n_good + 1):
            while f < len(findings) and findings[f][0] == g:
                _, reason, position, record_id, where = findings[f]
                error = RecordError(reason, path=where, position=position, record_id=record_id)
                _bad(error, path, result, report, skip_bad)
                f += 1
            if g == unit.n_good:
                break
            count += 1
            n_bytes += unit.raw_bytes[g]
            if count >= batch_size or n_bytes >= BATCH_BYTES:
                pieces.append((unit, start, g + 1))
                start = g + 1
                write(pieces)
                pieces, count, n_bytes = [], 0, 0
        if start < unit.n_good:
            pieces.append((unit, start, unit.n_good))
    if pieces:
        write(pieces)


def _whole_file(parsed: ParsedFile, source: str, ingest_id: int) -> Iterator[Unit]:
    """A file parsed whole by a worker as :func:`_ingest_units` takes a
    file's units: its one unit, then the error that ended the file, if any."""
    unit = parsed.own_unit()
    unit.set_ingest(source, ingest_id)
    yield unit
    if parsed.error is not None:
        raise parsed.error


def _add_pieces(store: Store, pieces: list[tuple[Unit, int, int]]) -> list[bool]:
    records, children = concat(pieces)
    return store.add_tables(records, children)


__all__ = [
    "Finding",
    "IngestAborted",
    "IngestReport",
    "ProgressEvent",
    "expand_paths",
    "ingest_paths",
]
