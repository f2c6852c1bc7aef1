"""ICTRP XML is read as a stream by defusedxml: entity tricks are refused with
the file named, a file cut short stores nothing, and every trial is read."""

from __future__ import annotations

from pathlib import Path

import pytest

import celltrials
from celltrials.errors import DataFileError
from celltrials.ingest import ingest_paths
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file
from tests.conftest import ICTRP_XML

REAL = ICTRP_XML.read_text(encoding="utf-8") if ICTRP_XML.is_file() else ""


def _variant(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ictrp.xml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_trial_of_the_real_export_is_read() -> None:
    records = [r for r in parse_file(ICTRP_XML) if isinstance(r, ParsedRecord)]
    assert len(records) == REAL.count("<Trial>") == 578
    assert records[0].record_id == "ChiCTR2000029953"


@pytest.mark.parametrize(
    "doctype",
    [
        # billion laughs
        '<!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
        # external entity (XXE)
        '<!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    ],
)
def test_entity_declarations_are_refused_naming_the_file(tmp_path: Path, doctype: str) -> None:
    head, sep, rest = REAL.partition("?>")
    path = _variant(tmp_path, head + sep + doctype + rest)
    with pytest.raises(DataFileError) as err:
        list(parse_file(path))
    assert str(path) in str(err.value)


def test_a_file_cut_short_stores_nothing(tmp_path: Path) -> None:
    cut = REAL[: len(REAL) // 2]  # ends inside a trial, hundreds of trials in
    path = _variant(tmp_path, cut)
    with celltrials.open(tmp_path / "t.duckdb") as store:
        report = ingest_paths(store, [path], skip_bad=True)
        assert not report.clean
        assert any("malformed XML" in f.reason for f in report.findings)
        assert store.con.execute("SELECT count(*) FROM records").fetchone() == (0,)
