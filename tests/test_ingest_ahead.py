"""Many smaller files parsed ahead by worker processes store exactly what one process stores.

A folder of real ClinicalTrials.gov studies cut into many files (JSON
arrays, NDJSON, single studies, an API page, a CSV export among them, studies
repeated and changed across files, an exact copy of a file) is ingested by
one process (``jobs=1``) and with two workers that parse the JSON and NDJSON
files ahead of the writer (the size threshold lowered). Every table of the
two stores holds the same rows (``EXCEPT ALL`` both ways, timestamps aside)
and the reports are the same — also with a bad record, a malformed NDJSON
line or a truncated file in the middle, strict and with ``skip_bad``.
Small files are written in groups, larger ones one by one (the small-file
size is lowered so that both kinds occur).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import celltrials
from celltrials import ingest_parallel
from celltrials.ingest import IngestAborted, ingest_paths
from tests.conftest import AACT_DIR, CAR2_JSON, CAR_JSON, DATA, GENERAL_JSON, PROCHYMAL_CSV
from tests.test_ingest import snapshot
from tests.test_ingest_parallel import _ingest, _report, _tables_equal

pytestmark = pytest.mark.data

AML_JSON = DATA.parent / "data-extra" / "aml-cart-v2-json" / "raw_trials.json"

#: the writer's batch (and group) size in these tests: groups of a few small
#: files, larger files written in several batches
BATCH = 60


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Files are parsed ahead from the first byte; files over 200 kB are
    written one by one (the rest in groups). Returns the files the writer
    took from the workers, as it takes them."""
    monkeypatch.setattr(ingest_parallel, "AHEAD_MIN_BYTES", 0)
    monkeypatch.setattr("celltrials.ingest.SMALL_FILE_BYTES", 200_000)
    out: list[str] = []
    take = ingest_parallel.FilesAhead.take

    def counted(self: ingest_parallel.FilesAhead, i: int, *args: Any) -> Any:
        parsed = take(self, i, *args)
        if parsed is not None:
            out.append(str(self._paths[i]))
        return parsed

    monkeypatch.setattr(ingest_parallel.FilesAhead, "take", counted)
    return out


def _load(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else [data]


def _folder(tmp: Path, bad: tuple[str, ...] = ()) -> Path:
    """The files, named so that they are read in this order; ``bad`` adds
    files with bad content in the middle: ``records`` (a bad date, no nctId,
    a number instead of a study), ``line`` (NDJSON with a malformed line),
    ``truncated`` (a JSON array cut short) and ``large`` (a file written on
    its own with a bad record near its end)."""
    d = tmp / "files"
    d.mkdir()
    car = _load(CAR_JSON)[:900] + _load(CAR2_JSON)[:200]
    general, aml = _load(GENERAL_JSON), _load(AML_JSON)
    (d / "000_general.json").write_text(json.dumps(general))  # larger: written on its own
    n = 1
    for k in range(0, len(car), 25):
        chunk = car[k : k + 25]
        name = f"{n:03d}_car"
        if n % 3 == 1:  # NDJSON, with a blank line
            lines = [json.dumps(s) for s in chunk]
            lines.insert(3, "")
            (d / f"{name}.ndjson").write_text("\n".join(lines) + "\n")
        else:
            (d / f"{name}.json").write_text(json.dumps(chunk))
        n += 1
        if n == 12:
            # a CSV export in a group of JSON files (read by the writer itself)
            (d / "012_prochymal.csv").write_bytes(PROCHYMAL_CSV.read_bytes())
            n += 1
    (d / "050_aml_page.json").write_text(json.dumps({"studies": aml}))  # an API page, larger
    for k, f in enumerate(sorted(AACT_DIR.glob("*.json"))):  # single-study files
        (d / f"06{k:02d}_{f.name}").write_bytes(f.read_bytes())
    (d / "070_empty.json").write_text("[]")
    again = car[10:40] + general[:5]  # studies seen before, unchanged
    (d / "071_again.json").write_text(json.dumps(again))
    changed = copy.deepcopy(car[100:110] + general[5:8])
    for s in changed:
        s["protocolSection"]["identificationModule"]["briefTitle"] = "changed"
    (d / "072_changed.ndjson").write_text("\n".join(json.dumps(s) for s in changed) + "\n")
    (d / "073_copy.json").write_bytes((d / "002_car.json").read_bytes())  # the same content
    if "records" in bad:
        studies: list[Any] = copy.deepcopy(car[400:430])
        studies[3]["protocolSection"]["statusModule"]["startDateStruct"] = {"date": "2023-02-30"}
        studies[10] = {"protocolSection": {"identificationModule": {}}}  # no nctId
        studies[11] = 7  # not a study object
        (d / "020_bad_records.json").write_text(json.dumps(studies))
    if "line" in bad:
        lines = [json.dumps(s) for s in car[430:460]]
        lines[7] = lines[7][:-30]
        (d / "030_bad_line.ndjson").write_text("\n".join(lines) + "\n")
    if "truncated" in bad:
        (d / "040_truncated.json").write_text(json.dumps(car[460:490])[:-500])
    if "large" in bad:
        studies = copy.deepcopy(general + car[490:560])
        del studies[-5]["protocolSection"]["identificationModule"]["nctId"]
        (d / "045_bad_large.json").write_text(json.dumps(studies))
    return d


def _both(
    tmp: Path, folder: Path, taken: list[str], **kw: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reports of ingesting ``folder`` (given relative to the working
    folder, as the findings show it) with one process and with two workers;
    the workers must have parsed files."""
    reports = []
    for jobs in (1, 2):
        before = len(taken)
        reports.append(
            _report(_ingest(tmp / f"j{jobs}.duckdb", [folder], jobs, batch_size=BATCH, **kw))
        )
        if jobs == 1:
            assert len(taken) == before  # one process: the serial path
        else:
            assert len(taken) > before
    return reports[0], reports[1]


def test_many_files_store_the_same_rows_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken: list[str]
) -> None:
    _folder(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative paths: the workers read them from the same folder
    one, two = _both(tmp_path, Path("files"), taken)
    assert one == two and one["clean"]
    files = {Path(f["path"]).name: f for f in one["files"]}
    assert files["002_car.json"]["n_new"] == 25
    assert files["071_again.json"]["n_new"] == 0 and files["071_again.json"]["n_records"] == 35
    assert files["072_changed.ndjson"]["n_new"] == 13
    assert files["070_empty.json"]["n_records"] == 0
    assert files["012_prochymal.csv"]["n_new"] > 0
    assert Path(taken[0]).name == "000_general.json"  # (a file written on its own)
    assert "files/050_aml_page.json" in taken and "files/012_prochymal.csv" not in taken
    counts = _tables_equal(tmp_path / "j1.duckdb", tmp_path / "j2.duckdb")
    assert counts["records"] == one["n_new"] > 1000 and counts["ingests"] > 40
    # again: every file unchanged (no workers needed); then read again with force
    taken.clear()
    one, two = _both_unchanged(tmp_path, Path("files"), taken)
    assert one == two and one["n_new"] == 0 and taken == []
    one, two = _both(tmp_path, Path("files"), taken, force=True)
    assert one == two and one["n_new"] == 0
    _tables_equal(tmp_path / "j1.duckdb", tmp_path / "j2.duckdb")


def _both_unchanged(
    tmp: Path, folder: Path, taken: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    reports = [
        _report(_ingest(tmp / f"j{jobs}.duckdb", [folder], jobs, batch_size=BATCH))
        for jobs in (1, 2)
    ]
    assert all(f["skipped_unchanged"] for f in reports[0]["files"])
    return reports[0], reports[1]


@pytest.mark.parametrize("bad", ["records", "line", "truncated", "large"])
def test_a_bad_file_stops_a_strict_run_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken: list[str], bad: str
) -> None:
    folder = _folder(tmp_path, (bad,))
    monkeypatch.chdir(tmp_path)
    one, two = _both(tmp_path, Path("files"), taken)
    assert one == two and "aborted" in one
    assert len(one["findings"]) == 1 and one["findings"][0]["path"].startswith("files/0")
    assert not one["files"][-1]["committed"]  # the bad file, last read: nothing of it stored
    assert all(f["committed"] for f in one["files"][:-1])  # the files before it stay
    _tables_equal(tmp_path / "j1.duckdb", tmp_path / "j2.duckdb")
    with celltrials.open(tmp_path / "j2.duckdb") as store:
        stored = snapshot(store)
    assert stored[0] > 0
    # fixed: the rest goes in, the same way
    for f in folder.glob("0[2-4]*_bad*"):
        f.unlink()
    for f in folder.glob("040_truncated.json"):
        f.unlink()
    one, two = _both(tmp_path, Path("files"), taken)
    assert one == two and one["clean"]
    _tables_equal(tmp_path / "j1.duckdb", tmp_path / "j2.duckdb")


def test_skip_bad_gives_the_same_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken: list[str]
) -> None:
    _folder(tmp_path, ("records", "line", "truncated", "large"))
    monkeypatch.chdir(tmp_path)
    one, two = _both(tmp_path, Path("files"), taken, skip_bad=True)
    assert one == two and not one["clean"]
    by_file: dict[str, list[Any]] = {}
    for f in one["findings"]:
        if f["severity"] == "error":
            by_file.setdefault(Path(f["path"]).name, []).append(f)
    assert [len(by_file[k]) for k in sorted(by_file)] == [3, 1, 1, 1]
    assert "malformed or truncated JSON" in by_file["040_truncated.json"][0]["reason"]
    files = {Path(f["path"]).name: f for f in one["files"]}
    assert not files["040_truncated.json"]["committed"]  # a file stored whole or not at all
    assert files["020_bad_records.json"]["n_records"] == 27
    assert files["045_bad_large.json"]["n_records"] == 119
    _tables_equal(tmp_path / "j1.duckdb", tmp_path / "j2.duckdb")


def test_no_workers_for_little_to_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken: list[str]
) -> None:
    """Starting the workers costs about a second: not for a few MB (the
    default threshold), nor for a single file."""
    folder = _folder(tmp_path)
    monkeypatch.setattr(ingest_parallel, "AHEAD_MIN_BYTES", 64 << 20)
    with celltrials.open(tmp_path / "a.duckdb") as store:
        assert ingest_paths(store, [folder], jobs=2).clean
    monkeypatch.setattr(ingest_parallel, "AHEAD_MIN_BYTES", 0)
    with celltrials.open(tmp_path / "b.duckdb") as store:
        assert ingest_paths(store, [folder / "000_general.json"], jobs=2).clean
    assert taken == []


def test_aborted_report_names_the_first_bad_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken: list[str]
) -> None:
    folder = _folder(tmp_path, ("records", "line"))
    with celltrials.open(tmp_path / "s.duckdb") as store, pytest.raises(IngestAborted) as err:
        ingest_paths(store, [folder], jobs=2, batch_size=BATCH)
    assert taken  # parsed by the workers
    finding = err.value.finding
    assert finding.path.endswith("020_bad_records.json") and finding.position == 4
    assert "2023-02-30" in finding.reason or "date" in finding.reason
