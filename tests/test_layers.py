"""Layers that only look down: a module imports celltrials modules of its own
layer or of the layers below it, never above (checked on the source, at any
depth in the file, so a lazy import inside a function counts too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[1] / "src" / "celltrials"

#: bottom to top; a module belongs to the first entry that is a prefix of its name
LAYERS: list[tuple[str, ...]] = [
    (
        "celltrials.errors",
        "celltrials.models",
        "celltrials.progress",
        "celltrials.runtime",
        "celltrials.procpool",
        "celltrials.native",
        "celltrials.__init__",
    ),
    (
        "celltrials.registry_ids",
        "celltrials.normalize",
        "celltrials.safety",
        "celltrials.fswalk",
        "celltrials.outputs",
    ),
    ("celltrials.sources",),
    ("celltrials.dedup", "celltrials.store"),
    ("celltrials.ingest", "celltrials.ingest_parallel", "celltrials.sync", "celltrials.taxonomy"),
    (
        "celltrials.classify",
        "celltrials._classify_preload",
        "celltrials.classify_parallel",
        "celltrials.evaluate",
        "celltrials.products",
        "celltrials.quality",
        "celltrials.changes",
        "celltrials.summary",
        "celltrials.export",
    ),
    ("celltrials.labelling",),
    ("celltrials.analysis",),
    ("celltrials.report",),
    ("celltrials.serve", "celltrials.pipeline"),
    ("celltrials.commands", "celltrials.cli", "celltrials.__main__"),
]


def layer_of(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        out[name if name != "celltrials" else "celltrials.__init__"] = path
    return out


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {f for f in found if f.startswith("celltrials.") and f in MODULES}


MODULES = modules()


#: the package facade: ``celltrials.open()`` loads the store on first call, so
#: that importing any submodule (which runs the package's ``__init__``) stays light
ALLOWED = {("celltrials.__init__", "celltrials.store")}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_look_down(module: str) -> None:
    mine = layer_of(module)
    upward = sorted(
        m
        for m in imports_of(MODULES[module], module)
        if layer_of(m) > mine and (module, m) not in ALLOWED
    )
    assert not upward, f"{module} (layer {mine}) imports from above: {upward}"


def test_the_store_knows_no_feature() -> None:
    assert not {
        m
        for m in imports_of(MODULES["celltrials.store"], "celltrials.store")
        if m.startswith(("celltrials.classify", "celltrials.sync", "celltrials.products"))
    }


def test_no_module_is_imported_by_name_at_run_time() -> None:
    # importlib.import_module / __import__ would hide an upward import from the
    # layer check above (issue 14: no importlib loading of our own modules)
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if called in ("import_module", "__import__"):
                    found.append(f"{name}:{node.lineno}")
    assert found == []
