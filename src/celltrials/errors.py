"""One exception tree for everything celltrials tells a user.

::

    CelltrialsError                 every error a user can see; .hint says how to fix it
    ├── ConfigError                 bad option, missing file, unknown preset
    ├── DataFileError               a data file as a whole cannot be read
    │   ├── UnknownFormatError      content sniffing found no parser
    │   └── RecordError             one record in a file is bad (file, position, id, reason)
    ├── TaxonomyError               taxonomy / catalog data failed validation
    ├── StoreError                  the DuckDB store is missing, locked or of a newer schema
    ├── FetchError                  the registry API failed after bounded retries
    │   └── PageError               a page came back malformed (names the page)
    ├── AnalysisError               inputs to an analysis are unusable (e.g. meta-analysis columns)
    ├── OutputError                 an output file or folder cannot be written
    └── WorkerError                 a worker process of a bulk step (ingest, classify) ended abruptly

The CLI prints ``message`` and ``hint`` and exits non-zero; tracebacks only
with ``--debug``.
"""

from __future__ import annotations


class CelltrialsError(Exception):
    """Base of every user-facing error. ``hint`` is a one-line fix-it."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(CelltrialsError):
    hint = "Check the command's options with --help."


class DataFileError(CelltrialsError):
    hint = "Check that the file is a complete registry export; use --skip-bad to ingest the good records."

    def __init__(self, message: str, *, path: str = "", hint: str | None = None) -> None:
        self.path = path
        self.reason = (
            message  # the bare reason, without the path (structured; never parse .message)
        )
        super().__init__(f"{path}: {message}" if path else message, hint=hint)


class UnknownFormatError(DataFileError):
    hint = (
        "celltrials reads ClinicalTrials.gov API v2 JSON/NDJSON/ZIP, ClinicalTrials.gov CSV "
        "exports and WHO ICTRP CSV/XML/XLSX exports."
    )

    def __init__(
        self, message: str, *, path: str = "", hint: str | None = None, no_id_column: bool = False
    ) -> None:
        self.no_id_column = no_id_column  # a text table without an NCT Number / TrialID column
        super().__init__(message, path=path, hint=hint)


class RecordError(DataFileError):
    """A single bad record. ``position`` is 1-based (row, array index, element).

    The message is built when shown, so a parser can fill in ``path`` later.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str = "",
        position: int | None = None,
        record_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.position = position
        self.record_id = record_id
        super().__init__(reason, path=path, hint=hint)

    @property
    def message(self) -> str:
        where = []
        if self.position is not None:
            where.append(f"record {self.position}")
        if self.record_id:
            where.append(f"id {self.record_id}")
        msg = f"{', '.join(where)}: {self.reason}" if where else self.reason
        return f"{self.path}: {msg}" if self.path else msg

    @message.setter
    def message(self, value: str) -> None:  # set by the base class; the property rebuilds it
        pass

    def __str__(self) -> str:
        return self.message


class TaxonomyError(CelltrialsError):
    hint = "Fix the named entry in the YAML/CSV data file; values must be those of TAXONOMY.md."


class StoreError(CelltrialsError):
    hint = "Pass --db PATH or set CELLTRIALS_DB to a writable DuckDB file."


class FetchError(CelltrialsError):
    hint = "Check the network or --base-url; rerun the same command to resume from the last page."


class PageError(FetchError):
    pass


class AnalysisError(CelltrialsError):
    hint = "See the command's --help for the expected input columns."


class OutputError(CelltrialsError):
    """An output file or folder cannot be written (names the path and why)."""

    hint = "Choose a writable location with --out."

    def __init__(self, message: str, *, path: str = "", hint: str | None = None) -> None:
        self.path = path
        super().__init__(message, hint=hint)


class WorkerError(CelltrialsError):
    """A worker process of a bulk step (ingest, classify) ended abruptly; the step
    stopped and changed nothing it had not finished."""

    hint = (
        'From a script, put the call under `if __name__ == "__main__":` (each worker '
        "imports the script again); else free memory, or run on one core: --jobs 1 "
        "(jobs=1 in Python)."
    )
