"""Fuzzing every parser with mutated real records (hypothesis).

Each example takes real records from ../shared/data, mutates them (JSON
types, sizes, nesting, ids in other scripts, encodings, truncation, flipped
bytes, odd spreadsheet cells), writes them in one of the shapes the sources
accept, and ingests the file. The contract, for every input:

* ``--skip-bad`` never raises: every problem is a finding with the file, a
  reason, and the record position or id when it is one record;
* the records that were not touched are stored (their ids, as an
  independent reading of the file gives them) unless the file as a whole was
  reported unreadable — then nothing of it is stored;
* strict mode either stores the file or raises ``IngestAborted`` and stores
  nothing.

The run is bounded for CI: ``CELLTRIALS_FUZZ_EXAMPLES`` examples per test
(default 20; about a minute for the whole file on a loaded 2-core machine).
Set it higher for a longer local run, e.g. ``CELLTRIALS_FUZZ_EXAMPLES=2000``.
Inputs that once failed are replayed from ``tests/data/fuzz_regressions/``
(recipes applied to the real files, which are never copied into the repo).
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import celltrials
from celltrials.ingest import IngestAborted, IngestReport, ingest_paths
from celltrials.registry_ids import fold_id
from tests.conftest import (
    AACT_DIR,
    CAR_JSON,
    DATA,
    GENERAL_JSON,
    ICTRP_CSV,
    ICTRP_XML,
    MSC_CSV,
    TESTDATA,
    ictrp_xlsx_rows,
)

EXAMPLES = int(os.environ.get("CELLTRIALS_FUZZ_EXAMPLES", "20"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
REGRESSIONS = TESTDATA / "fuzz_regressions"

# ---------------------------------------------------------------- real records
STUDIES: list[dict[str, Any]] = json.loads(GENERAL_JSON.read_bytes())
STUDIES += [json.loads(p.read_bytes()) for p in sorted(AACT_DIR.glob("*.json"))]
STUDIES += json.loads(CAR_JSON.read_bytes())[:40]


def _csv_rows(path: Path, n: int) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), [r for _, r in zip(range(n), reader, strict=False)]


ICTRP_FIELDS, ICTRP_ROWS = _csv_rows(ICTRP_CSV, 30)
CLASSIC_FIELDS, CLASSIC_ROWS = _csv_rows(MSC_CSV, 30)
XLSX_ROWS = [list(r) for r in ictrp_xlsx_rows()[:21]]
XML_TEXT = ICTRP_XML.read_bytes().decode("utf-8-sig")


def nct_of(study: dict[str, Any]) -> str:
    return fold_id(str(study["protocolSection"]["identificationModule"]["nctId"]))


# ---------------------------------------------------------------- the contract
def ingest_checked(
    path: Path, tmp: Path, strict: bool, *, fuzzing: bool = True
) -> tuple[IngestReport, set[str]]:
    """Ingest ``path`` with --skip-bad into a fresh store and check the
    findings' shape; with ``strict``, also in strict mode into another."""
    with celltrials.open(tmp / "skip.duckdb") as store:
        report = ingest_paths(store, [path], skip_bad=True)  # must not raise
        stored = {
            r[0] for r in store.con.execute("SELECT DISTINCT record_id FROM records").fetchall()
        }
        n_rows = store.con.execute("SELECT count(*) FROM records").fetchone()
    for f in report.findings:
        assert f.path and isinstance(f.path, str) and f.reason and isinstance(f.reason, str), f
        assert "Traceback" not in f.reason
        json.dumps(f.__dict__)  # printable / serialisable
    assert n_rows is not None and n_rows[0] == sum(fr.n_new for fr in report.files if fr.committed)
    if fuzzing:  # the mix of outcomes, for --hypothesis-show-statistics
        event(
            "file unreadable"
            if file_failed(report)
            else "record finding"
            if any(f.severity == "error" for f in report.findings)
            else "all stored"
        )
    if strict:
        try:
            with celltrials.open(tmp / "strict.duckdb") as store:
                try:
                    ingest_paths(store, [path])
                except IngestAborted:
                    assert store.con.execute("SELECT count(*) FROM records").fetchone() == (0,)
                else:
                    assert not [f for f in report.findings if f.severity == "error"]
        finally:
            (tmp / "strict.duckdb").unlink(missing_ok=True)
    (tmp / "skip.duckdb").unlink(missing_ok=True)
    return report, stored


def file_failed(report: IngestReport) -> bool:
    """True when the file as a whole was reported unreadable (nothing of it stored)."""
    return not any(fr.committed for fr in report.files)


# ---------------------------------------------------------------- JSON mutations
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "=1+1",
            "[red]x[/red]",
            "javascript:alert(1)",
            "\x00",
            "NCT０４３１５９８７",
            "NCT٠٤٣١٥٩٨٧",
            "-5",
            "1e30",
            "2020-13-45",
            "\u202e",
            "\ufeff",
        ]
    ),
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=8,
)


def paths_of(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            out += paths_of(v, (*prefix, i))
    return out


def set_at(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def delete_at(obj: Any, path: tuple[Any, ...]) -> None:
    for key in path[:-1]:
        obj = obj[key]
    del obj[path[-1]]


def get_at(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def nested(depth: int) -> Any:
    v: Any = "deep"
    for _ in range(depth):
        v = [v]
    return v


@st.composite
def mutated_study(draw: st.DrawFn, study: dict[str, Any]) -> dict[str, Any]:
    s = copy.deepcopy(study)
    path = draw(st.sampled_from(paths_of(s)))
    op = draw(st.sampled_from(["replace", "delete", "wrap", "stringify", "deep", "huge", "id"]))
    if op == "replace":
        set_at(s, path, draw(json_values))
    elif op == "delete":
        delete_at(s, path)
    elif op == "wrap":
        set_at(s, path, [get_at(s, path)])
    elif op == "stringify":
        set_at(s, path, json.dumps(get_at(s, path)))
    elif op == "deep":
        set_at(s, path, nested(draw(st.integers(min_value=200, max_value=400))))
    elif op == "huge":
        set_at(
            s,
            path,
            draw(st.sampled_from(["x", "é", "|"]))
            * draw(st.integers(min_value=100_000, max_value=300_000)),
        )
    else:
        ident = s["protocolSection"]["identificationModule"]
        digits = ident["nctId"][3:]
        ident["nctId"] = draw(
            st.sampled_from(
                [
                    "NCT" + "".join(chr(0xFF10 + int(d)) for d in digits),
                    "NCT" + "".join(chr(0x0660 + int(d)) for d in digits),
                    ident["nctId"].lower(),
                    ident["nctId"] + "X",
                    "NCT123",
                    "",
                    "ChiCTR2000029953",
                ]
            )
        )
    return s


def write_shape(path: Path, studies: list[Any], shape: str, bom: bool) -> Path:
    pre = b"\xef\xbb\xbf" if bom else b""
    if shape == "array":
        path.write_bytes(pre + json.dumps(studies).encode())
    elif shape == "page":
        path.write_bytes(pre + json.dumps({"studies": studies, "nextPageToken": None}).encode())
    elif shape == "ndjson":
        path.write_bytes(pre + b"\n".join(json.dumps(s).encode() for s in studies) + b"\n")
    else:  # zip of per-study files
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for i, s in enumerate(studies):
                zf.writestr(f"study{i:03d}.json", json.dumps(s))
    return path


@FUZZ
@given(
    data=st.data(),
    shape=st.sampled_from(["array", "page", "ndjson", "zip"]),
    bom=st.booleans(),
    strict=st.booleans(),
)
def test_fuzz_api_json(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    shape: str,
    bom: bool,
    strict: bool,
) -> None:
    tmp = tmp_path_factory.mktemp("fz")
    idx = data.draw(st.lists(st.integers(0, len(STUDIES) - 1), min_size=2, max_size=4, unique=True))
    ids = [nct_of(STUDIES[i]) for i in idx]
    if len(set(ids)) != len(ids):
        return
    bad = data.draw(st.integers(0, len(idx) - 1))
    studies = [copy.deepcopy(STUDIES[i]) for i in idx]
    studies[bad] = data.draw(mutated_study(STUDIES[idx[bad]]))
    suffix = {"array": ".json", "page": ".json", "ndjson": ".ndjson", "zip": ".zip"}[shape]
    path = write_shape(tmp / f"in{suffix}", studies, shape, bom and shape != "zip")
    report, stored = ingest_checked(path, tmp, strict)
    if file_failed(report):
        assert stored == set()
        return
    untouched = {ids[i] for i in range(len(idx)) if i != bad}
    assert untouched <= stored, (untouched - stored, [str(f) for f in report.findings])
    n_bad = sum(1 for f in report.findings if f.severity == "error")
    assert len(stored) + n_bad >= len(idx) - (1 if ids[bad] in untouched else 0)


# ---------------------------------------------------------------- byte-level damage
@FUZZ
@given(
    data=st.data(),
    kind=st.sampled_from(["json", "ndjson", "ictrp_csv", "classic_csv", "xml", "xlsx", "zip"]),
    damage=st.sampled_from(["truncate", "flip", "insert"]),
    strict=st.booleans(),
)
def test_fuzz_damaged_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    kind: str,
    damage: str,
    strict: bool,
) -> None:
    tmp = tmp_path_factory.mktemp("fzb")
    raw = _real_bytes(kind)
    if damage == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif damage == "flip":
        b = bytearray(raw)
        for pos in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            b[pos] ^= data.draw(st.integers(1, 255))
        raw = bytes(b)
    else:
        pos = data.draw(st.integers(0, len(raw)))
        raw = raw[:pos] + data.draw(st.binary(min_size=1, max_size=64)) + raw[pos:]
    path = tmp / f"damaged.{ {'ictrp_csv': 'csv', 'classic_csv': 'csv'}.get(kind, kind) }"
    path.write_bytes(raw)
    ingest_checked(path, tmp, strict)


@functools.cache
def _real_bytes(kind: str) -> bytes:
    """A small real input of each kind (cached: hypothesis needs the same bytes every run)."""
    if kind == "json":
        return json.dumps(STUDIES[:3]).encode()
    if kind == "ndjson":
        return b"\n".join(json.dumps(s).encode() for s in STUDIES[3:6])
    if kind == "ictrp_csv":
        return _csv_text(ICTRP_FIELDS, ICTRP_ROWS[:5]).encode()
    if kind == "classic_csv":
        return _csv_text(CLASSIC_FIELDS, CLASSIC_ROWS[:5]).encode()
    if kind == "xml":
        head, _, rest = XML_TEXT.partition("<Trial>")
        trials = rest.split("<Trial>")[:4]
        body = "<Trial>" + "<Trial>".join(trials)
        body = body[: body.rfind("</Trial>") + len("</Trial>")]
        return (head + body + "\n</Trials_downloaded_from_ICTRP>\n").encode()
    if kind == "xlsx":
        return _xlsx_bytes(XLSX_ROWS[:6])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, s in enumerate(STUDIES[6:9]):
            zf.writestr(f"s{i}.json", json.dumps(s))
    return buf.getvalue()


def _csv_text(fields: list[str], rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def _xlsx_bytes(rows: list[list[Any]]) -> bytes:
    wb = openpyxl.Workbook()
    for r in rows:
        wb.active.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# ---------------------------------------------------------------- cell-level mutations (CSV, XML, XLSX)
cell_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "-7",
            "1E+30",
            "99999999999",
            "inf",
            "NaN",
            '=HYPERLINK("x")',
            "@SUM(1)",
            "\t",
            "javascript:alert(1)",
            "2020-02-30",
            "0000-00-00",
            "Phase 9",
            "NCT０４３１５９８７",
            "control group:15;experimental group:-3;",
            "x" * 200_000,
        ]
    ),
)
xlsx_cell = st.one_of(
    cell_text.filter(lambda t: len(t) < 32_000),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
    st.booleans(),
)


@FUZZ
@given(
    data=st.data(),
    kind=st.sampled_from(["ictrp_csv", "classic_csv", "xml", "xlsx"]),
    strict=st.booleans(),
)
def test_fuzz_registry_cells(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, kind: str, strict: bool
) -> None:
    tmp = tmp_path_factory.mktemp("fzc")
    n = 4
    bad = data.draw(st.integers(0, n - 1))
    if kind in ("ictrp_csv", "classic_csv"):
        fields, rows = (
            (ICTRP_FIELDS, ICTRP_ROWS) if kind == "ictrp_csv" else (CLASSIC_FIELDS, CLASSIC_ROWS)
        )
        rows = [dict(r) for r in rows[:n]]
        for field in data.draw(
            st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True)
        ):
            rows[bad][field] = data.draw(cell_text)
        idcol = "TrialID" if kind == "ictrp_csv" else "NCT Number"
        ids = [r[idcol] for r in rows]
        path = tmp / "cells.csv"
        path.write_text(_csv_text(fields, rows), encoding="utf-8")
    elif kind == "xml":
        import xml.etree.ElementTree as ET

        root = ET.fromstring(_real_bytes("xml"))
        trials = list(root.iter("Trial"))[:n]
        for t in list(root):
            root.remove(t)
        children = list(trials[bad])
        for child in data.draw(
            st.lists(st.sampled_from(children), min_size=1, max_size=3, unique_by=id)
        ):
            text = data.draw(cell_text)
            child.text = "".join(
                c
                for c in text
                if c in "\t\n\r"
                or (ord(c) >= 0x20 and not 0xD800 <= ord(c) <= 0xDFFF and c not in "\ufffe\uffff")
            )
        for t in trials:
            root.append(t)
        ids = [(t.findtext("TrialID") or "").strip() for t in trials]
        path = tmp / "cells.xml"
        path.write_bytes(ET.tostring(root, encoding="utf-8"))
    else:
        rows = [list(r) for r in XLSX_ROWS[: n + 1]]
        for col in data.draw(
            st.lists(st.integers(0, len(rows[0]) - 1), min_size=1, max_size=3, unique=True)
        ):
            rows[bad + 1][col] = data.draw(xlsx_cell)
        idcol = [str(h) for h in rows[0]].index("TrialID")
        ids = [str(r[idcol]).strip() for r in rows[1:]]
        try:
            raw = _xlsx_bytes(rows)
        except (
            Exception
        ):  # openpyxl refuses some cell values (illegal characters): not our input to test
            return
        path = tmp / "cells.xlsx"
        path.write_bytes(raw)
    report, stored = ingest_checked(path, tmp, strict)
    if file_failed(report):
        assert stored == set()
        return
    untouched = {fold_id(ids[i]) for i in range(n) if i != bad and ids[i] != ids[bad]}
    assert untouched <= stored, (untouched - stored, [str(f) for f in report.findings])


# ---------------------------------------------------------------- regression corpus
def _recipes() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.yaml"))


def apply_recipe(recipe: dict[str, Any], tmp: Path) -> Path:
    """Build an input from real data by a recipe (see tests/data/fuzz_regressions/README.md)."""
    src = DATA / recipe["source"]
    kind = recipe["kind"]
    if kind == "json":
        doc = json.loads(src.read_bytes())
        studies = doc if isinstance(doc, list) else [doc]
        studies = [copy.deepcopy(studies[i]) for i in recipe.get("records", range(len(studies)))]
        for op in recipe.get("ops", []):
            target = studies[op["record"]]
            path = tuple(int(p) if p.isdigit() else p for p in op["path"].split("."))
            value: Any = op.get("value")
            if op.get("op") == "deep":
                value = nested(int(op["depth"]))
            elif op.get("op") == "repeat":
                value = op["text"] * int(op["times"])
            set_at(target, path, value)
        return write_shape(
            tmp
            / f"case{ {'zip': '.zip', 'ndjson': '.ndjson'}.get(recipe.get('shape', ''), '.json') }",
            studies,
            recipe.get("shape", "array"),
            bool(recipe.get("bom")),
        )
    if kind == "csv":
        fields, rows = _csv_rows(src, int(recipe.get("rows", 5)))
        for op in recipe.get("ops", []):
            value = op["text"] * int(op.get("times", 1))
            rows[op["record"]][op["field"]] = value
        out = tmp / recipe.get("name", "case.csv")
        out.write_text(_csv_text(fields, rows), encoding=recipe.get("encoding", "utf-8"))
        return out
    if kind == "bytes":  # the real file's first bytes, cut at a fraction
        data = src.read_bytes()
        out = tmp / recipe.get("name", src.name)
        out.write_bytes(data[: int(len(data) * float(recipe["keep"]))])
        return out
    raise AssertionError(f"unknown recipe kind {kind}")


@pytest.mark.parametrize("recipe_path", _recipes(), ids=[p.stem for p in _recipes()])
def test_fuzz_regressions(recipe_path: Path, tmp_path: Path) -> None:
    recipe = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    path = apply_recipe(recipe, tmp_path)
    report, stored = ingest_checked(path, tmp_path, strict=True, fuzzing=False)
    want = recipe["expect"]
    errors = [f for f in report.findings if f.severity == "error"]
    if want == "stored":
        assert errors == [], [str(f) for f in errors]
        assert len(stored) == int(recipe["stored"]) if "stored" in recipe else stored
    else:
        assert errors, "expected a finding"
        f = errors[0]
        assert recipe["reason"] in f.reason, f.reason
        if "position" in recipe:
            assert f.position == recipe["position"]
        assert len(stored) == int(recipe.get("stored", 0))


def test_regression_corpus_is_not_empty() -> None:
    assert len(_recipes()) >= 10


_: Callable[..., Any] = apply_recipe  # re-used by benchmarks or a longer local fuzz run
