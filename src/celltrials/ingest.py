"""Ingest registry exports into the store, one transaction per file.

Problems are collected as findings in an :class:`IngestReport` (file,
record position, record id, reason). By default the first bad record stops
the run with its file rolled back (the store is exactly as before that file);
with ``skip_bad=True`` good records go in and bad ones are listed.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from celltrials.errors import DataFileError, RecordError, UnknownFormatError
from celltrials.models import ParsedRecord
from celltrials.progress import Progress, ProgressEvent, logger
from celltrials.sources import parse_file, sniff
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


class IngestAborted(DataFileError):
    """Raised (strict mode) after rolling back the file with the bad record."""

    def __init__(self, finding: Finding, report: IngestReport) -> None:
        self.finding = finding
        self.report = report
        super().__init__(
            str(finding),
            hint="Nothing from this file was stored. Fix the file, or rerun with --skip-bad to ingest its good records.",
        )


def expand_paths(paths: Iterable[str | Path], report: IngestReport) -> list[Path]:
    """Files to read: files as given, folders recursively, globs expanded.

    Inside folders, files without a data extension (``.md``, ``.txt``) are
    skipped with a notice; a named file is always read.
    """
    out: list[Path] = []
    for item in paths:
        text = str(item)
        matches = sorted(glob.glob(text, recursive=True)) if any(c in text for c in "*?[") else [text]
        if not matches:
            raise DataFileError("no such file or folder", path=text)
        for m in matches:
            p = Path(m)
            if p.is_dir():
                for f in sorted(x for x in p.rglob("*") if x.is_file()):
                    if f.name.startswith("."):
                        continue
                    if f.suffix.lower() in DATA_EXTENSIONS:
                        out.append(f)
                    else:
                        report.findings.append(Finding(str(f), "not registry data (by extension)", severity="notice"))
            elif p.is_file():
                out.append(p)
            else:
                raise DataFileError("no such file or folder", path=text)
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
            if path.resolve() not in explicit and path.suffix.lower() == ".csv" and "header" in exc.message:
                # a CSV that is not a registry export (e.g. a labels table next to the data)
                report.findings.append(Finding(str(path), "CSV without a registry id column (NCT Number / TrialID)", severity="notice"))
                if progress:
                    progress(ProgressEvent("ingest", "skipped", str(path), message="not a registry export"))
                continue
            finding = Finding(str(path), exc.reason if isinstance(exc, RecordError) else exc.message.split(": ", 1)[-1])
            report.findings.append(finding)
            if not skip_bad:
                raise IngestAborted(finding, report) from None
            continue
        except DataFileError as exc:
            finding = Finding(str(path), exc.message.split(": ", 1)[-1])
            report.findings.append(finding)
            if not skip_bad:
                raise IngestAborted(finding, report) from None
            continue
        result = FileResult(str(path), sniffed.format)
        report.files.append(result)
        logger.info("ingest %s (%s)", path, sniffed.format)
        if progress:
            progress(ProgressEvent("ingest", "file_start", str(path), done=index - 1, total=len(files), index=index))
        try:
            _ingest_file(store, path, sniffed, result, report, skip_bad, progress, batch_size)
        except DataFileError as exc:
            if isinstance(exc, IngestAborted):
                raise
            finding = Finding(str(path), exc.message.split(": ", 1)[-1] if exc.path else exc.message)
            report.findings.append(finding)
            result.n_new = result.n_unchanged = 0
            if not skip_bad:
                raise IngestAborted(finding, report) from None
        if progress:
            progress(ProgressEvent("ingest", "file_done", str(path), done=index, total=len(files), index=index,
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


def _ingest_file(store: Store, path: Path, sniffed: Any, result: FileResult, report: IngestReport,
                 skip_bad: bool, progress: Progress | None, batch_size: int) -> None:
    source = str(path.resolve())
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
            added = store.add_records(good, source=source, ingest_id=ingest_id, merge=False)
            total.n_records += added.n_records
            total.n_new += added.n_new
            total.n_unchanged += added.n_unchanged
            if progress:
                progress(ProgressEvent("ingest", "records", str(path), n=len(batch)))
        if total.n_new:
            store.merge_trials()
        store.finish_ingest(ingest_id, total, result.n_bad)
    result.n_records, result.n_new, result.n_unchanged = total.n_records, total.n_new, total.n_unchanged
    result.committed = True


__all__ = ["Finding", "IngestAborted", "IngestReport", "ProgressEvent", "expand_paths", "ingest_paths"]

