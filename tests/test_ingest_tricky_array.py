"""A large JSON array whose strings hold what a boundary scan could mistake
for structure (``},{``, brackets, escaped quotes, backslashes), compact or
pretty-printed, behind a byte-order mark, is ingested by one process and by
two workers: the same rows, every title as Python's ``json`` reads it; a
malformed element or a truncated file gives the same report both ways and
stores nothing."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import celltrials
from celltrials import ingest_parallel
from celltrials.sources import ctgov_json
from tests.conftest import CAR_JSON
from tests.test_ingest_parallel import _ingest, _report, _tables_equal


# ------------------------------------------------------------------ whole ingest
@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file streamed and spread over workers (when jobs allow), in
    small units."""
    monkeypatch.setattr(ctgov_json, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest.SMALL_FILE_BYTES", 0)
    monkeypatch.setattr(ingest_parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(ingest_parallel, "UNIT", 37)
    # ranges of a few studies (workers read their pieces at the default size)
    monkeypatch.setattr(ctgov_json, "RANGE_BYTES", 30_000)
    monkeypatch.setattr(ctgov_json, "PIECE_BYTES", 7_000)


def _tricky_studies() -> list[dict[str, Any]]:
    """Real studies whose titles and summaries hold structure-like text, some
    with a nested object that begins as a study does (a place where the
    ranges of a large array are cut by mistake: ctgov_json._NEXT_STUDY)."""
    studies: list[dict[str, Any]] = json.loads(CAR_JSON.read_text())[:150]
    out = []
    for i, s in enumerate(studies):
        s = copy.deepcopy(s)
        ident = s["protocolSection"]["identificationModule"]
        ident["briefTitle"] = ident["briefTitle"] + ' },{"nctId": "NCT0000000' + str(i % 10) + '"}]'
        if i % 3 == 0:
            ident["briefTitle"] += ' \\"[{ \\\\'
        if i % 4 == 1:
            ident["briefTitle"] += ' },{"protocolSection": {'
        if i % 5 == 2:
            s["annotations"] = [{"note": "x"}, {"protocolSection": {"nested": i}}]
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
                "SELECT raw_json(raw)->>'$.protocolSection.identificationModule.briefTitle' FROM records"
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
    assert str(path.name) in str(reports[0])


# ------------------------------------------------------------------ the reader alone
_TITLES = st.sampled_from(
    ["CAR-T", '},{"protocolSection": {', '"}, {"protocolSection"', "\\", "]", "{[", "é ✓", ""]
)


@st.composite
def _arrays(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """A JSON array of small study-like objects (some with a nested object that
    begins as a study does), written compact or indented, behind a byte-order
    mark or not, with blank space around."""
    studies: list[Any] = []
    for i in range(draw(st.integers(0, 40))):
        s: dict[str, Any] = {
            "protocolSection": {"identificationModule": {"nctId": f"NCT{i:08d}"}},
            "title": draw(_TITLES) * draw(st.integers(0, 30)),
        }
        if draw(st.booleans()):
            s["annotations"] = [{"k": draw(_TITLES)}, {"protocolSection": {"nested": i}}]
        studies.append(s)
    text = json.dumps(studies, indent=draw(st.sampled_from([None, 0, 2])), ensure_ascii=False)
    lead = draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n ", b"\n"]))
    return lead + text.encode() + draw(st.sampled_from([b"", b"\n", b" \r\n"])), studies


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    _arrays(),
    st.integers(1, 3000),
    st.integers(1, 800),
)
def test_the_streaming_reader_reads_every_element_as_json_does(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    array: tuple[bytes, list[Any]],
    range_bytes: int,
    piece_bytes: int,
) -> None:
    """Whatever the sizes of the ranges and pieces a large array is read in, and
    wherever a cut lands by mistake (a nested object that begins as a study
    does), the streaming reader gives the elements Python's json gives."""
    data, studies = array
    monkeypatch.setattr(ctgov_json, "RANGE_BYTES", range_bytes)
    monkeypatch.setattr(ctgov_json, "PIECE_BYTES", piece_bytes)
    path = tmp_path / "array.json"
    path.write_bytes(data)
    assert list(ctgov_json._stream_array(path, batch=7)) == studies


def test_ranges_cover_the_array_and_stop_at_a_truncated_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctgov_json, "RANGE_BYTES", 30_000)
    studies = _tricky_studies()
    text = json.dumps(studies).encode()
    path = tmp_path / "a.json"
    path.write_bytes(text)
    ranges = list(ctgov_json.array_ranges(path))
    assert None not in ranges and len(ranges) > 1
    # one range after another, each from a study's start to its end
    assert ranges[0][0] == 1 and ranges[-1][1] == len(text) - 1
    for (_, stop), (start, _) in itertools.pairwise(ranges):
        assert text[stop - 1 : stop] == b"}" and text[stop:start].strip() == b","
    path.write_bytes(text[:-1])  # no closing bracket: read element by element
    assert list(ctgov_json.array_ranges(path)) == [None]
    path.write_bytes(b"[ ]")
    assert list(ctgov_json.array_ranges(path)) == []
