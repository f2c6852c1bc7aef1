"""Build: the package is pure Python (pyproject.toml); this only adds the
optional mypyc build of the classifier's hot modules (celltrials/native.py
says when it is used). A failed compile is reported and skipped: the install
then runs the pure-Python sources."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
#: as celltrials.native.MODULES (setup.py cannot import the package it builds)
MODULES = ("celltrials.taxonomy.engine", "celltrials.classify")


def _source(module: str) -> Path:
    return ROOT / "src" / Path(*module.split(".")).with_suffix(".py")


def _ext_modules() -> list[Any]:
    if os.environ.get("CELLTRIALS_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - only when building
    except ImportError:  # no mypyc in the build environment: pure Python
        return []
    cwd = os.getcwd()
    os.chdir(ROOT)  # mypyc names modules from paths relative to here
    # the project's mypy settings (strict) judge the whole package against the
    # installed libraries, which the isolated build does not have: the compile
    # only needs the compiled modules' own types
    config = Path(tempfile.mkdtemp(prefix="celltrials-mypyc-")) / "mypy.ini"
    config.write_text("[mypy]\nignore_missing_imports = True\n", encoding="utf-8")
    try:
        return list(
            mypycify(
                [
                    "--config-file",
                    str(config),
                    *(str(_source(m).relative_to(ROOT)) for m in MODULES),
                ],
                group_name="celltrials._native",
            )
        )
    except (Exception, SystemExit) as exc:  # any failure: pure Python
        print(f"celltrials: not compiling the classifier ({exc}); pure Python", file=sys.stderr)
        return []
    finally:
        os.chdir(cwd)
        shutil.rmtree(config.parent, ignore_errors=True)


class OptionalBuildExt(build_ext):
    """build_ext that records what it compiled (celltrials/native.json) and, when
    compiling fails, removes the stamp and goes on: pure Python then."""

    def run(self) -> None:
        if not self.extensions:
            return
        stamp = Path(self.get_ext_fullpath("celltrials.classify")).parent / "native.json"
        try:
            super().run()
        except Exception as exc:  # a missing compiler, headers...
            print(
                f"celltrials: compiling the classifier failed ({exc}); pure Python",
                file=sys.stderr,
            )
            stamp.unlink(missing_ok=True)
            return
        digests = {m: hashlib.sha256(_source(m).read_bytes()).hexdigest() for m in MODULES}
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n", encoding="utf-8")


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
