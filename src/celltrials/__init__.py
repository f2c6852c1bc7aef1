"""celltrials: cell-therapy clinical-trial intelligence.

Ingest registry records into one deduplicated DuckDB store, classify every
trial by a versioned taxonomy, analyse and report the landscape.

    >>> import celltrials
    >>> db = celltrials.open("celltrials.duckdb")   # doctest: +SKIP
    >>> db.trials().head()                            # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

import os
from typing import TYPE_CHECKING, Any

from celltrials import native as _native

_native.install()  # before any module: compiled classifier modules only if fresh

if TYPE_CHECKING:
    from celltrials.store import Store


def open(path: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> Store:
    """Open (creating if needed) a celltrials store. ``path`` defaults to
    ``$CELLTRIALS_DB`` or ``./celltrials.duckdb``."""
    from celltrials.store import Store  # noqa: PLC0415 - the package facade stays light (tests/test_layers.py)

    return Store.open(path, read_only=read_only)


def __getattr__(name: str) -> Any:
    if name == "Store":
        from celltrials.store import Store  # noqa: PLC0415 - the package facade stays light

        return Store
    raise AttributeError(name)
