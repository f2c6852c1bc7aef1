"""Ingest registry exports into the store, one transaction per file.

Problems are collected as findings in an :class:`IngestReport` (file,
record position, record id, reason). By default the first bad record stops
the run with its file rolled back (the store is exactly as before that file);
with ``skip_bad=True`` good records go in and bad ones are listed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from celltrials.errors import DataFileError, RecordError, UnknownFormatError
from celltrials.fswalk import expand_glob, walk_files
from celltrials.models import ParsedRecord
from celltrials.progress import Progress, ProgressEvent, logger
from celltrials.sources import parse_file, sniff
from celltrials.sources.validate import unstorable_reason
from celltrials.store import AddResult, Store

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
        where = ", ".join(x for x in (f"record {self.position}" if self.position else "", f"id {self.record_id}" if self.record_id else "") if x)
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
        super().__init__(
            str(finding),
            hint="Nothing from this file was stored. Fix the file, or rerun with --skip-bad to ingest its good records.",
        )


_NO_SUCH_PATH = "Check the path (folders are read recursively; quote globs such as 'data/**/*.json')."


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
            raise DataFileError("no such file or folder", path=display_path(text), hint=_NO_SUCH_PATH)
        for m in matches:
            p = Path(m)
            if p.is_dir():
                for f in walk_files(p):  # links followed, each real folder once: no loops
                    if f.name.startswith("."):
                        continue
                    if f.suffix.lower() in DATA_EXTENSIONS:
                        out.append(f)
                    else:
                        report.findings.append(Finding(str(f), "not registry data (by extension)", severity="notice"))
            elif p.is_file():
                out.append(p)
            else:
                raise DataFileError("no such file or folder", path=display_path(text), hint=_NO_SUCH_PATH)
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
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ingest_paths(
    store: Store,
    paths: Iterable[str | Path],
    *,
    skip_bad: bool = False,
    progress: Progress | None = None,
    batch_size: int = 5000,
) -> IngestReport:
    """Ingest files, folders and globs into ``store``; see module docstring."""
    report = IngestReport()
    files = expand_paths(paths, report)
    explicit = {Path(str(p)).resolve() for p in paths if Path(str(p)).is_file()}
    for f in report.findings:
        if progress:
            progress(ProgressEvent("ingest", "skipped", f.path, message=f.reason))
    for index, path in enumerate(files, start=1):
        try:
            sniffed = sniff(path)
        except UnknownFormatError as exc:
            if path.resolve() not in explicit and path.suffix.lower() == ".csv" and exc.no_id_column:
                # a CSV that is not a registry export (e.g. a labels table next to the data)
                report.findings.append(Finding(str(path), "CSV without a registry id column (NCT Number / TrialID)", severity="notice"))
                if progress:
                    progress(ProgressEvent("ingest", "skipped", display_path(path), message="not a registry export"))
                continue
            finding = Finding(str(path), exc.reason, getattr(exc, "position", None), getattr(exc, "record_id", None))
            report.findings.append(finding)
            if not skip_bad:
                raise IngestAborted(finding, report) from None
            continue
        except (DataFileError, OSError) as exc:
            reason = exc.reason if isinstance(exc, DataFileError) else f"cannot read the file ({exc.strerror or exc})"
            finding = Finding(getattr(exc, "path", "") or str(path), reason)
            report.findings.append(finding)
            if not skip_bad:
                raise IngestAborted(finding, report) from None
            continue
        result = FileResult(str(path), sniffed.format)
        report.files.append(result)
        logger.info("ingest %s (%s)", path, sniffed.format)
        if progress:
            progress(ProgressEvent("ingest", "file_start", display_path(path), done=index - 1, total=len(files), index=index))
        try:
            _ingest_file(store, path, sniffed, result, report, skip_bad, progress, batch_size)
        except DataFileError as exc:
            if isinstance(exc, IngestAborted):
                raise
            finding = Finding(exc.path or str(path), exc.reason, getattr(exc, "position", None), getattr(exc, "record_id", None))
            report.findings.append(finding)
            result.n_new = result.n_unchanged = 0
            if not skip_bad:
                raise IngestAborted(finding, report) from None
        if progress:
            progress(ProgressEvent("ingest", "file_done", display_path(path), done=index, total=len(files), index=index,
                                   n=result.n_records))
    return report


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _drop_unstorable(records: list[ParsedRecord], path: Path, result: FileResult, report: IngestReport,
                     skip_bad: bool, error: Exception) -> list[ParsedRecord]:
    """After a batch failed to store: find the records that cannot be stored,
    report them as findings and return the others (re-raise if none is to blame)."""
    keep = []
    blamed = False
    for rec in records:
        reason = unstorable_reason(rec.raw)
        if reason is None:
            keep.append(rec)
            continue
        blamed = True
        finding = Finding(str(path), reason, rec.position or None, rec.record_id)
        report.findings.append(finding)
        result.n_bad += 1
        if not skip_bad:
            raise IngestAborted(finding, report)
    if not blamed:
        raise error
    return keep


def _ingest_file(store: Store, path: Path, sniffed: Any, result: FileResult, report: IngestReport,
                 skip_bad: bool, progress: Progress | None, batch_size: int) -> None:
    source = display_path(path.resolve())
    with store.transaction():
        ingest_id = store.begin_ingest(source, sniffed.format, _sha256(path))
        total = AddResult()
        for batch in _batches(parse_file(path, sniffed), batch_size):
            good: list[ParsedRecord] = []
            for item in batch:
                if isinstance(item, RecordError):
                    finding = Finding(item.path or str(path), item.reason, item.position, item.record_id)
                    report.findings.append(finding)
                    result.n_bad += 1
                    if not skip_bad:
                        raise IngestAborted(finding, report)
                else:
                    good.append(item)
            try:
                added = store.add_records(good, source=source, ingest_id=ingest_id, merge=False)
            except (TypeError, ValueError, OverflowError) as exc:  # e.g. a record nested too deep to hash
                good = _drop_unstorable(good, path, result, report, skip_bad, exc)
                added = store.add_records(good, source=source, ingest_id=ingest_id, merge=False)
            total.n_records += added.n_records
            total.n_new += added.n_new
            total.n_unchanged += added.n_unchanged
            if progress:
                progress(ProgressEvent("ingest", "records", display_path(path), n=len(batch)))
        if total.n_new:
            store.merge_trials()
        store.finish_ingest(ingest_id, total, result.n_bad)
    result.n_records, result.n_new, result.n_unchanged = total.n_records, total.n_new, total.n_unchanged
    result.committed = True


__all__ = ["Finding", "IngestAborted", "IngestReport", "ProgressEvent", "expand_paths", "ingest_paths"]

