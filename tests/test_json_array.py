"""A large JSON array is cut into its elements without parsing it
(:mod:`celltrials.sources.json_array`), and that changes nothing.

The elements found are compared with Python's own ``json`` parse of the same
file, for arrays whose strings hold what a boundary scan could mistake for
structure (``},{``, brackets, escaped quotes, runs of backslashes), compact
and pretty-printed, with a byte-order mark, in blocks of one byte and up.
Every invalid file that ``json`` rejects is rejected. Then real studies so
written are ingested by one process and by two workers: the same rows, and
a malformed element or a truncated file gives the same report both ways."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

import celltrials
from celltrials import ingest_parallel
from celltrials.errors import DataFileError
from celltrials.sources import ctgov_json, json_array
from tests.conftest import CAR_JSON
from tests.test_ingest_parallel import _ingest, _report, _tables_equal

TRICKY: list[Any] = [
    {"a": "},{", "b": '"},{"', "c": [[1, 2], [3, [4]]], "d": "\\", "e": 'x\\"y'},
    {"s": ']]]}}}{{{[[[,,,"', "t": "\\" * 7, "u": "\\" * 8 + '"', "v": "é ü 中 \u2028"},
    [1, 2, {"x": "]"}],
    "str, with, commas",
    3,
    None,
    {"nested": {"deep": [{"a": "b,c"}] * 3}, "empty": [{}, [], ""]},
]


def _elements(path: Path, batch: int = 3) -> list[Any]:
    return list(ctgov_json._stream_array(path, batch))


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("bom", [False, True])
def test_elements_are_those_json_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, indent: int | None, bom: bool
) -> None:
    monkeypatch.setattr(json_array, "BLOCK", block)
    path = tmp_path / "a.json"
    for n, ascii_only in itertools.product((0, 1, 2, 5, 14), (True, False)):
        values = [TRICKY[(i * 3 + n) % len(TRICKY)] for i in range(n)]
        text = json.dumps(values, indent=indent, ensure_ascii=ascii_only)
        data = text.encode()
        if bom:
            data = b"\xef\xbb\xbf \n" + data + b"\n\t "
        path.write_bytes(data)
        expected = json.loads(data.decode("utf-8-sig"))
        assert _elements(path) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "[",
        '[{"a": 1}',
        '[{"a": 1},',
        '[{"a": 1},]',
        "[,]",
        "[1,,2]",
        '[{"a": 1}{"b": 2}]',
        '[{"a": "x}]',
        '[{"a": "x\\"}]',
        '[{"a": 1}]x',
        '[{"a": 1}][]',
        '[{"a": 1]}',
        "[1 2]",
        'x[{"a": 1}]',
        '[{"a": tru}]',
    ],
)
@pytest.mark.parametrize("block", [1, 4, 1 << 20])
def test_what_json_rejects_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, block: int
) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    monkeypatch.setattr(json_array, "BLOCK", block)
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataFileError) as err:
        _elements(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize("text", ["[]", "[ ]", " [\n]\n", "[{}]", "[[]]", '[""]'])
def test_empty_and_tiny_arrays(tmp_path: Path, text: str) -> None:
    path = tmp_path / "a.json"
    path.write_text(text)
    assert _elements(path) == json.loads(text)


def test_an_oversized_element_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(json_array, "BLOCK", 64)
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"a": 1}, {"a": "x" * 500}, {"a": 2}]))
    with pytest.raises(DataFileError, match="array element 2 is larger than 100 bytes"):
        for _ in json_array.element_spans(path, 1, 100):
            pass


# ------------------------------------------------------------------ whole ingest
@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file streamed and spread over workers (when jobs allow); small
    units and blocks, so that neither lines up with an element."""
    monkeypatch.setattr(ctgov_json, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest.SMALL_FILE_BYTES", 0)
    monkeypatch.setattr(ingest_parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(ingest_parallel, "UNIT", 37)
    monkeypatch.setattr(json_array, "BLOCK", 4099)


def _tricky_studies() -> list[dict[str, Any]]:
    """Real studies whose titles and summaries hold structure-like text."""
    studies: list[dict[str, Any]] = json.loads(CAR_JSON.read_text())[:150]
    out = []
    for i, s in enumerate(studies):
        s = copy.deepcopy(s)
        ident = s["protocolSection"]["identificationModule"]
        ident["briefTitle"] = ident["briefTitle"] + ' },{"nctId": "NCT0000000' + str(i % 10) + '"}]'
        if i % 3 == 0:
            ident["briefTitle"] += ' \\"[{ \\\\'
        out.append(s)
    return out


@pytest.mark.data
@pytest.mark.parametrize("indent", [None, 1])
def test_tricky_strings_ingest_the_same_with_workers(
    tmp_path: Path, streamed: None, indent: int | None
) -> None:
    studies = _tricky_studies()
    path = tmp_path / "tricky.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(studies, indent=indent).encode())
    reports = [_report(_ingest(tmp_path / f"s{jobs}.duckdb", [path], jobs)) for jobs in (1, 2)]
    assert reports[0] == reports[1]
    assert reports[0]["n_records"] == len(studies) and not reports[0]["findings"]
    counts = _tables_equal(tmp_path / "s1.duckdb", tmp_path / "s2.duckdb")
    assert counts["records"] == len({json.dumps(s, sort_keys=True) for s in studies})
    with celltrials.open(tmp_path / "s2.duckdb", read_only=True) as store:
        titles = {
            r[0]
            for r in store.con.execute(
                "SELECT raw->>'$.protocolSection.identificationModule.briefTitle' FROM records"
            ).fetchall()
        }
    assert titles == {s["protocolSection"]["identificationModule"]["briefTitle"] for s in studies}


@pytest.mark.data
@pytest.mark.parametrize("skip_bad", [False, True])
@pytest.mark.parametrize("damage", ["element", "truncated"])
def test_a_malformed_element_fails_the_same_way_with_workers(
    tmp_path: Path, streamed: None, skip_bad: bool, damage: str
) -> None:
    studies: list[Any] = _tricky_studies()
    if skip_bad:
        studies[3] = {"protocolSection": {}}  # a bad record before the damage: a finding
    text = json.dumps(studies)
    if damage == "element":
        # the 100th element's first value replaced by a bare word
        at = text.index('{"protocolSection"', len(json.dumps(studies[:99])) - 1)
        text = text[:at] + '{"protocolSection": nope, ' + text[at + len('{"protocolSection": ') :]
    else:
        text = text[: len(text) * 2 // 3]
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    path = tmp_path / "bad.json"
    path.write_text(text)
    reports = []
    for jobs in (1, 2):
        db = tmp_path / f"b{jobs}.duckdb"
        reports.append(_report(_ingest(db, [path], jobs, skip_bad=skip_bad)))
        with celltrials.open(db, read_only=True) as store:
            assert store.con.execute("SELECT count(*) FROM records").fetchall() == [(0,)]
    assert reports[0] == reports[1]
    reasons = " ".join(f["reason"] for f in reports[0]["findings"])
    assert "malformed or truncated JSON" in reasons or "malformed or truncated JSON" in str(
        reports[0].get("aborted")
    )
    if damage == "element":
        assert "array element 100" in str(reports[0])
    assert str(path.name) in str(reports[0])
