"""The compiled classifier: mypyc builds of the classifier's hot modules, used
only while they match the sources beside them.

Installing celltrials (``pip install -e .`` or a wheel; ``setup.py``) compiles
:data:`MODULES` with mypyc when it can (a C compiler and the Python headers;
otherwise the install goes on in pure Python) and records the SHA-256 of each
compiled source in ``native.json`` next to this module. The compiled modules
are the same source, so their labels and evidence are the same
(``tests/test_native.py`` compares both on every record of ``../shared/data``);
they classify about 1.7x faster.

:func:`install` runs when the package is imported, before any of its modules:
when a source no longer has its recorded hash (an edited checkout not yet
reinstalled), when the stamp is missing, or when ``CELLTRIALS_PURE_PYTHON`` is
set, every module of :data:`MODULES` is loaded from its ``.py`` source — all of
them, since the compiled ones call each other directly. What runs is therefore
always what the sources say. :func:`compiled_modules` tells which are compiled.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: the modules setup.py compiles (the classifier's engine and rules: most of its time)
MODULES = ("celltrials.taxonomy.engine", "celltrials.classify")
#: the build's record: {module: SHA-256 of the source it compiled}
STAMP = Path(__file__).with_name("native.json")
#: set (to anything but "" or "0") to load the sources even when compiled modules are fresh
PURE_ENV = "CELLTRIALS_PURE_PYTHON"

_PACKAGE = Path(__file__).parent


def source_path(module: str) -> Path:
    """The ``.py`` source of ``module`` (one of :data:`MODULES`)."""
    return _PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")


def source_digest(module: str) -> str:
    """SHA-256 of ``module``'s source, as setup.py records it."""
    return hashlib.sha256(source_path(module).read_bytes()).hexdigest()


def pure_requested() -> bool:
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def stamp_is_fresh() -> bool:
    """Whether the build's stamp names every module of :data:`MODULES` with its
    source's current hash."""
    try:
        recorded = json.loads(STAMP.read_text(encoding="utf-8"))
        return isinstance(recorded, dict) and all(
            recorded.get(m) == source_digest(m) for m in MODULES
        )
    except (OSError, ValueError):
        return False


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds :data:`MODULES` as their ``.py`` sources (ahead of a compiled module
    beside them, which the default finder would prefer)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def install() -> None:
    """Load :data:`MODULES` from their sources unless the compiled ones are fresh
    and wanted (see the module's docstring). Idempotent."""
    if any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        return
    if pure_requested() or not stamp_is_fresh():
        sys.meta_path.insert(0, _SourceFinder())


def compiled_modules() -> list[str]:
    """The modules of :data:`MODULES` that are imported and compiled."""
    return [
        m
        for m in MODULES
        if m in sys.modules and not str(getattr(sys.modules[m], "__file__", "")).endswith(".py")
    ]


def engine_kind() -> str:
    """``compiled (mypyc)`` or ``pure Python``: how the classifier runs in this
    process (ask once :mod:`celltrials.classify` is imported)."""
    return "compiled (mypyc)" if compiled_modules() else "pure Python"
