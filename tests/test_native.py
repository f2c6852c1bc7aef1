"""The compiled classifier (celltrials/native.py): the mypyc build of the
classifier's modules gives the same labels and evidence as their sources, and
is used only while it matches them.

Each check runs Python in a subprocess, since which file a module loads from
is decided once per process, when the package is imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from celltrials import native
from tests.conftest import DATA

SRC = Path(native.__file__).resolve().parents[1]

#: every record of ../shared/data (and its merged trials) as one JSON line of
#: labels with evidence; the first line says which files the modules came from
DUMP = """
import json, sys
from pathlib import Path
from celltrials.classify import Classifier, TrialText
from celltrials.errors import UnknownFormatError
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file
from celltrials import native
import celltrials.classify, celltrials.taxonomy.engine
print(json.dumps({m: sys.modules[m].__file__ for m in native.MODULES}))
clf = Classifier()
by_id = {}
for path in sorted(Path(sys.argv[1]).rglob("*")):
    if not path.is_file() or path.suffix.lower() in (".md", ".txt"):
        continue
    try:
        recs = list(parse_file(path))
    except UnknownFormatError:  # (SOURCES.md, a third-party labels file)
        continue
    for rec in recs:
        if isinstance(rec, ParsedRecord):
            lab = clf.classify(TrialText.from_record(rec))
            print(json.dumps(lab.to_dict(), sort_keys=True, ensure_ascii=False))
            by_id.setdefault(rec.record_id, []).append(rec)
for rid, recs in sorted(by_id.items()):
    if len(recs) > 1:
        lab = clf.classify(TrialText.from_records(recs, "merged#" + rid))
        print(json.dumps(lab.to_dict(), sort_keys=True, ensure_ascii=False))
"""

WHICH = """
import json, sys
import celltrials.classify, celltrials.taxonomy.engine
from celltrials import native
print(json.dumps({m: sys.modules[m].__file__ for m in native.MODULES}))
"""


def _run(code: str, *args: str, path: Path = SRC, pure: bool = False) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    env["PYTHONPATH"] = str(path)
    if pure:
        env[native.PURE_ENV] = "1"
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def _compiled(files: dict[str, str]) -> bool:
    kinds = {not f.endswith(".py") for f in files.values()}
    assert len(kinds) == 1, f"some modules compiled, some not: {files}"
    return kinds.pop()


def _built() -> bool:
    """Whether this checkout has a fresh compiled build (setup.py ran and the
    sources are unchanged since)."""
    return native.stamp_is_fresh() and all(
        list(native.source_path(m).parent.glob(m.rsplit(".", 1)[1] + ".*.so"))
        for m in native.MODULES
    )


def test_ci_runs_the_compiled_classifier() -> None:
    # CI installs on a fresh clone (pip install -e '.[dev]', with a C compiler):
    # the build must have compiled the classifier, and the tests run it
    if not os.environ.get("CI"):
        pytest.skip("outside CI a checkout may be pure Python (edited, or no compiler)")
    assert _built(), "setup.py did not compile the classifier (see the install's output)"
    assert _compiled(json.loads(_run(WHICH)[0]))


def test_compiled_labels_and_evidence_equal_the_sources() -> None:
    if not _built():
        pytest.skip("no fresh compiled build in this checkout")
    compiled = _run(DUMP, str(DATA))
    pure = _run(DUMP, str(DATA), pure=True)
    assert _compiled(json.loads(compiled[0]))
    assert not _compiled(json.loads(pure[0]))
    # every record of ../shared/data: thousands of classifications, many cell therapy
    assert len(compiled) > 8000
    assert sum(json.loads(line)["is_cell_therapy"] == "yes" for line in compiled[1:]) > 3000
    assert compiled[1:] == pure[1:]


def test_an_edited_source_is_what_runs(tmp_path: Path) -> None:
    if not _built():
        pytest.skip("no fresh compiled build in this checkout")
    copy = tmp_path / "src"
    shutil.copytree(
        SRC / "celltrials", copy / "celltrials", ignore=shutil.ignore_patterns("__pycache__")
    )
    assert _compiled(json.loads(_run(WHICH, path=copy)[0]))
    # an edit after the build (here: a comment) makes the stamp stale: both
    # modules load from source, even the unchanged one (they call each other)
    with (copy / "celltrials" / "classify.py").open("a", encoding="utf-8") as fh:
        fh.write("\n# edited after the build\n")
    files = json.loads(_run(WHICH, path=copy)[0])
    assert not _compiled(files)
    assert files["celltrials.classify"] == str(copy / "celltrials" / "classify.py")
    # and without the stamp (a build that failed part-way): sources as well
    (copy / "celltrials" / "classify.py").write_bytes(
        (SRC / "celltrials" / "classify.py").read_bytes()
    )
    assert _compiled(json.loads(_run(WHICH, path=copy)[0]))
    (copy / "celltrials" / "native.json").unlink()
    assert not _compiled(json.loads(_run(WHICH, path=copy)[0]))


def test_pure_python_on_request() -> None:
    files = json.loads(_run(WHICH, pure=True)[0])
    assert not _compiled(files)
    assert files["celltrials.taxonomy.engine"] == str(SRC / "celltrials" / "taxonomy" / "engine.py")


def _any_lines(tmp_path: Path, site_packages: bool) -> set[tuple[str, int]]:
    """The lines of the compiled modules where mypy (which mypyc compiles with)
    finds an expression of type ``Any``: there mypyc emits generic Python calls."""
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\nignore_missing_imports = True\n", encoding="utf-8")  # as setup.py
    root = SRC.parent
    files = [native.source_path(m).resolve().relative_to(root).as_posix() for m in native.MODULES]
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(cfg), "--disallow-any-expr"]
        + ["--cache-dir", str(tmp_path / ("cache-site" if site_packages else "cache-bare"))]
        + ([] if site_packages else ["--no-site-packages"])
        + files,
        capture_output=True,
        text=True,
        cwd=root,  # (mypy names files relative to it)
    )
    found = set()
    for line in out.stdout.splitlines():
        path, _, rest = line.partition(":")
        if path in files and "has type" in rest:
            found.add((path, int(rest.split(":", 1)[0])))
    assert found, out.stdout + out.stderr  # (some Any remains: the check ran)
    return found


def test_compiled_types_do_not_depend_on_installed_packages(tmp_path: Path) -> None:
    """pip compiles the classifier (setup.py) before it installs the dependencies
    in a new environment, so mypyc cannot see ahocorasick_rs's types there. What
    it returns must be declared where it is received: else its Any spreads into
    the arithmetic around it, which then runs as generic Python calls (5 % more
    instructions per classified trial than the same source compiled where the
    package was installed, ``benchmarks/classify_instructions.py``). Without the
    installed packages, only the lines that call into them may gain an Any."""
    extra = _any_lines(tmp_path, site_packages=False) - _any_lines(tmp_path, site_packages=True)
    sources = {p: (SRC.parent / p).read_text(encoding="utf-8").splitlines() for p, _ in extra}
    spread = [
        f"{p}:{n}: {sources[p][n - 1].strip()}"
        for p, n in sorted(extra)
        if "ahocorasick_rs." not in sources[p][n - 1] and "self._ac." not in sources[p][n - 1]
    ]
    assert extra and not spread, "\n".join(spread)
