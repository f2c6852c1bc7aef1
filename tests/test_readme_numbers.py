"""README numbers come from the code: scripts/readme_numbers.py --check passes on
the reference store, and the block mechanism rejects what it cannot regenerate."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "readme_numbers.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_numbers", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["readme_numbers"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rn() -> ModuleType:
    return _script()


def test_readme_numbers_are_up_to_date(
    rn: ModuleType,
    tmp_path_factory: pytest.TempPathFactory,
    full_store_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The reference store (all of ../shared/data, classified, products linked)
    regenerates README.md exactly; if this fails, run scripts/readme_numbers.py."""
    from tests.conftest_report import classified_store_path

    db = classified_store_path(tmp_path_factory, full_store_path)
    code = rn.main(["--check", "--db", str(db)])
    out = capsys.readouterr()
    assert code == 0, out.out[-4000:]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    used = set(re.findall(r"<!-- numbers:([A-Za-z0-9_-]+) -->", readme))
    # every registered block is in the README, and the README's blocks are all registered
    assert used == set(rn.BLOCKS)
    assert readme.count("<!-- /numbers -->") == len(re.findall(r"<!-- numbers:", readme))


def test_stale_and_unknown_blocks(
    rn: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []

    def hello(ref: object) -> str:
        calls.append("hello")
        return "| a | b |\n|---|---|\n| 1 | 2 |"

    blocks = {"hello": hello}
    text = "intro\n<!-- numbers:hello -->\nold 3\n<!-- /numbers -->\nmiddle\n<!-- numbers:hello -->x<!-- /numbers -->\n"
    new = rn.render(text, rn.Reference(db=None), blocks)
    assert new == (
        "intro\n<!-- numbers:hello -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- /numbers -->\nmiddle\n"
        "<!-- numbers:hello -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- /numbers -->\n"
    )
    assert calls == ["hello"]  # computed once per run
    assert rn.render(new, rn.Reference(db=None), blocks) == new  # idempotent
    with pytest.raises(SystemExit, match=r"unknown number block.*'nope'"):
        rn.render("<!-- numbers:nope -->\n<!-- /numbers -->", rn.Reference(db=None), blocks)
    with pytest.raises(ValueError, match="registered twice"):
        rn.block("funnel")(hello)

    # --check on a stale README: exit 1 and a diff naming the changed line
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- numbers:catalog -->\nCatalog version 0: 1 approvals\n<!-- /numbers -->\n",
        encoding="utf-8",
    )
    assert rn.main(["--check", "--readme", str(readme)]) == 1
    out = capsys.readouterr()
    assert "-Catalog version 0: 1 approvals" in out.out and "is stale" in out.err
    assert rn.main(["--readme", str(readme)]) == 0  # rewrites it
    assert rn.main(["--check", "--readme", str(readme)]) == 0
    assert "products (active substances)" in readme.read_text(encoding="utf-8")
