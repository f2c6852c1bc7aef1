"""Ingesting the real exports: counts, idempotence, merging, bad input."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner

import celltrials
from celltrials.cli import cli
from celltrials.ingest import IngestAborted, ingest_paths
from celltrials.store import Store
from tests.conftest import (
    AACT_DIR,
    CAR2_JSON,
    CAR_JSON,
    DATA,
    GENERAL_JSON,
    ICTRP_CSV,
    ICTRP_XLSX,
    ICTRP_XML,
    MSC_CSV,
    PROCHYMAL_CSV,
    ictrp_xlsx_rows,
)

# ----------------------------------------------------------- independent count
EU = re.compile(r"\d{4}-\d{6}-\d{2}")
OTHER_REGISTRY = re.compile(
    r"\b(NCT\d{8}|ChiCTR[-A-Za-z]*\d+|ISRCTN\d{8}|ACTRN\d{14}|DRKS\d{8}|IRCT\d+N\d+)\b"
)


def _keys(text: str) -> set[str]:
    keys = {f"EU:{m}" for m in EU.findall(text)}
    keys |= {m.upper() for m in OTHER_REGISTRY.findall(text)}
    return keys


@lru_cache(maxsize=1)
def independent_counts() -> tuple[int, int, set[frozenset[str]]]:
    """(records, trials, groups) computed from the raw files with the standard
    library: a record is one (channel, registry id); trials are connected
    components of records that share a registry id."""
    recs: dict[tuple[str, str], set[str]] = {}

    def add(channel: str, rid: str, extra: Iterable[str]) -> None:
        rid = rid.strip()
        primary = f"EU:{EU.search(rid).group(0)}" if rid.startswith("EUCTR") else rid.upper()  # type: ignore[union-attr]
        recs.setdefault((channel, rid), set()).update({primary, *extra})

    for path in (MSC_CSV, PROCHYMAL_CSV):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            for row in csv.DictReader(fh):
                add("ctgov", row["NCT Number"], _keys(row["Other IDs"]))
    studies = []
    for path in (GENERAL_JSON, CAR_JSON, CAR2_JSON):
        studies += json.loads(path.read_text())
    studies += [json.loads(p.read_text()) for p in sorted(AACT_DIR.glob("*.json"))]
    for s in studies:
        ident = s["protocolSection"]["identificationModule"]
        extra: set[str] = set()
        for sec in ident.get("secondaryIdInfos", []):
            extra |= _keys(sec["id"])
        add("ctgov", ident["nctId"], extra)
    with ICTRP_CSV.open(encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            add("ictrp", row["TrialID"], ())
    for t in ET.parse(ICTRP_XML).getroot().iter("Trial"):
        add("ictrp", t.findtext("TrialID") or "", ())
    for row in ictrp_xlsx_rows()[1:]:
        add("ictrp", str(row[0]), ())
    # connected components over shared keys
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for keys in recs.values():
        first, *rest = sorted(keys)
        for k in rest:
            parent[find(k)] = find(first)
    groups: dict[str, set[str]] = {}
    for (channel, rid), keys in recs.items():
        groups.setdefault(find(next(iter(keys))), set()).add(f"{channel}:{rid}")
    return len(recs), len(groups), {frozenset(g) for g in groups.values()}


# ------------------------------------------------------------------- counting
def test_classic_msc_csv_gives_1389_trials_and_is_idempotent(store: Store) -> None:
    first = ingest_paths(store, [MSC_CSV])
    assert first.clean and first.n_new == 1389
    assert store.query("SELECT count(*) AS n FROM trials")["n"][0] == 1389
    again = ingest_paths(store, [MSC_CSV])
    assert again.n_new == 0 and again.files[0].n_unchanged == 1389
    assert store.query("SELECT count(*) AS n FROM trials")["n"][0] == 1389
    assert store.query("SELECT count(*) AS n FROM records")["n"][0] == 1389


def test_everything_matches_independent_count(full_store: Store) -> None:
    n_records, n_trials, groups = independent_counts()
    assert (
        full_store.query("SELECT count(*) AS n FROM records WHERE is_current")["n"][0] == n_records
    )
    assert full_store.query("SELECT count(*) AS n FROM trials")["n"][0] == n_trials
    ours = full_store.query("""
        SELECT trial_id, list(r.channel || ':' || r.record_id) AS members
        FROM trial_records JOIN records r USING (record_key) GROUP BY 1""")
    assert {frozenset(m) for m in ours["members"]} == groups


def test_ctgov_trial_in_ictrp_and_ctgov_file_is_one_trial_two_records(full_store: Store) -> None:
    with MSC_CSV.open(encoding="utf-8-sig", newline="") as fh:
        msc_ids = {r["NCT Number"] for r in csv.DictReader(fh)}
    with ICTRP_CSV.open(encoding="utf-8-sig", newline="") as fh:
        ictrp_ids = {r["TrialID"].strip() for r in csv.DictReader(fh)}
    both = sorted(msc_ids & ictrp_ids)
    assert len(both) == 12  # MSC COVID-19 trials relayed by ICTRP
    for nct in both:
        t = full_store.trial(nct)
        assert t is not None and t["trial_id"] == nct
        current = [r for r in t["records"] if r["is_current"]]
        assert sorted(r["channel"] for r in current) == ["ctgov", "ictrp"]
        primary = next(r for r in current if r["is_primary"])
        assert primary["channel"] == "ctgov"  # the issuing registry's record wins


def test_eudract_member_states_are_one_trial(full_store: Store) -> None:
    ids = [str(r[0]) for r in ictrp_xlsx_rows()[1:] if str(r[0]).startswith("EUCTR")]
    numbers = {i[5:19] for i in ids}
    eu_trials = full_store.query(
        "SELECT count(DISTINCT tr.trial_id) AS n FROM trial_records tr JOIN records r USING (record_key) WHERE r.registry = 'euctr'"
    )
    assert eu_trials["n"][0] <= len(numbers) < len(ids)
    t = full_store.trial("EUCTR2020-001264-28-BG")
    assert t is not None and t["trial_id"] == "EUCTR2020-001264-28"
    assert len([r for r in t["records"] if r["is_current"]]) == sum(
        i.startswith("EUCTR2020-001264-28-") for i in ids
    )


def test_eudract_number_links_ctgov_secondary_id(full_store: Store) -> None:
    # NCT04361942 lists EudraCT 2020-001682-36, which ICTRP relays as EUCTR2020-001682-36-ES
    t = full_store.trial("EUCTR2020-001682-36")
    assert t is not None and t["trial_id"] == "NCT04361942"
    assert {"NCT04361942", "EU:2020-001682-36"} <= {i["id_key"] for i in t["ids"]}


def test_history_keeps_older_versions(full_store: Store) -> None:
    # ICTRP carried NCT04315987 on 7 Apr 2020 (CSV) and 7 Jul 2020 (XLSX): two versions
    rows = full_store.query(
        "SELECT source_format, is_current, last_update FROM records WHERE record_id='NCT04315987' AND channel='ictrp' ORDER BY last_update"
    )
    assert list(rows["source_format"]) == ["ictrp_csv", "ictrp_xlsx"]
    assert list(rows["is_current"]) == [False, True]


def test_show_lists_source_records(full_store: Store) -> None:
    t = full_store.trial("ChiCTR2000029580")
    assert t is not None
    assert t["records"] and all(
        r["source"].endswith((".csv", ".xml", ".xlsx")) for r in t["records"]
    )


# ------------------------------------------------------------------ bad input
def snapshot(store: Store) -> tuple[object, ...]:
    return tuple(
        store.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
        for t in ("records", "trial_records", "record_ids", "record_interventions", "ingests")
    )


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    studies = json.loads(GENERAL_JSON.read_text())[:5]
    out: dict[str, tuple[Path, str]] = {}
    p = tmp / "unknown.csv"
    p.write_text("a,b,c\n1,2,3\n")
    out["unknown format"] = (p, "not a recognised registry export")
    p = tmp / "truncated.json"
    p.write_text(json.dumps(studies)[:-2000])
    out["truncated json"] = (p, "malformed or truncated JSON")
    p = tmp / "latin1.csv"
    p.write_bytes(MSC_CSV.read_bytes()[:5000].replace(b"\xe2\x84\xa2", b"\x99") + b"\xff\xfe\n")
    out["invalid utf-8"] = (p, "invalid UTF-8")
    lines = PROCHYMAL_CSV.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    p = tmp / "wrong_fields.csv"
    p.write_text(
        lines[0] + lines[1] + lines[2].rstrip("\n") + ',"extra"\n' + "".join(lines[3:]),
        encoding="utf-8",
    )
    out["wrong number of fields"] = (p, "row has 28 fields, header has 27")
    p = tmp / "no_id.json"
    s2 = json.loads(json.dumps(studies))
    del s2[2]["protocolSection"]["identificationModule"]["nctId"]
    p.write_text(json.dumps(s2))
    out["record without id"] = (p, "record 3: record has no nctId")
    p = tmp / "bad_date.json"
    s3 = json.loads(json.dumps(studies))
    s3[1]["protocolSection"]["statusModule"]["startDateStruct"] = {"date": "2023-02-30"}
    p.write_text(json.dumps(s3))
    out["impossible date"] = (p, "impossible date '2023-02-30'")
    return out


@pytest.mark.parametrize(
    "case",
    [
        "unknown format",
        "truncated json",
        "invalid utf-8",
        "wrong number of fields",
        "record without id",
        "impossible date",
    ],
)
def test_bad_input_stops_and_leaves_store_unchanged(
    case: str, tmp_path: Path, full_store: Store
) -> None:
    path, reason = _bad_files(tmp_path)[case]
    before = snapshot(full_store)
    with pytest.raises(IngestAborted) as info:
        ingest_paths(full_store, [path])
    assert str(path) in str(info.value) and reason in str(info.value)
    assert snapshot(full_store) == before


def test_bad_record_rolls_back_its_whole_file(tmp_path: Path, store: Store) -> None:
    ingest_paths(store, [PROCHYMAL_CSV])
    path, _ = _bad_files(tmp_path)["impossible date"]
    before = snapshot(store)
    with pytest.raises(IngestAborted):
        ingest_paths(store, [path])
    assert snapshot(store) == before  # record 1 was good, but nothing of the file stayed


def test_skip_bad_ingests_good_records_and_reports_bad(tmp_path: Path, store: Store) -> None:
    path, _ = _bad_files(tmp_path)["record without id"]
    report = ingest_paths(store, [path], skip_bad=True)
    assert not report.clean
    assert report.files[0].n_new == 4 and report.files[0].n_bad == 1
    (finding,) = [f for f in report.findings if f.severity == "error"]
    assert finding.position == 3 and finding.path == str(path)
    path2, _ = _bad_files(tmp_path)["wrong number of fields"]
    report2 = ingest_paths(store, [path2], skip_bad=True)
    assert report2.files[0].n_bad == 1 and report2.files[0].n_records == 13
    assert report2.findings[0].record_id == "NCT00294112" or report2.findings[0].position == 2


def test_folder_skips_notes_but_not_broken_data(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(PROCHYMAL_CSV, folder / "prochymal.csv")
    (folder / "README.md").write_text("# notes")
    (folder / "notes.txt").write_text("downloaded on Monday")
    report = ingest_paths(store, [folder])
    assert report.clean and report.n_new == 14
    assert {Path(f.path).name for f in report.findings if f.severity == "notice"} == {
        "README.md",
        "notes.txt",
    }
    (folder / "broken.json").write_text('[{"protocolSection": ')
    with pytest.raises(IngestAborted):
        ingest_paths(store, [folder])


def test_glob_and_zip(tmp_path: Path, store: Store) -> None:
    report = ingest_paths(store, [str(AACT_DIR / "NCT00*.json")])
    assert report.n_new == 3


# ------------------------------------------------------------------------ CLI
def test_cli_ingest_json_equals_library(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        cli, ["--db", str(tmp_path / "a.duckdb"), "ingest", "--json", str(PROCHYMAL_CSV)]
    )
    assert res.exit_code == 0, res.output
    cli_report = json.loads(res.stdout)
    with celltrials.open(tmp_path / "b.duckdb") as s:
        lib_report = ingest_paths(s, [PROCHYMAL_CSV]).to_dict()
    for f in cli_report["files"] + lib_report["files"]:
        f.pop("path")
    assert cli_report == lib_report


def test_cli_bad_file_exits_nonzero_with_message(tmp_path: Path) -> None:
    path, reason = _bad_files(tmp_path)["truncated json"]
    res = CliRunner().invoke(cli, ["--db", str(tmp_path / "a.duckdb"), "ingest", str(path)])
    assert res.exit_code != 0
    assert reason in str(res.exception) or reason in res.output


def test_cli_stats_show_dups_export(full_store_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    db = ["--db", str(full_store_path)]
    stats = json.loads(runner.invoke(cli, [*db, "stats", "--json"]).stdout)
    from celltrials.summary import duplicate_groups, store_stats

    with celltrials.open(full_store_path, read_only=True) as s:
        assert stats == json.loads(json.dumps(store_stats(s), default=str))
        groups = duplicate_groups(s)
    dups = json.loads(runner.invoke(cli, [*db, "dups", "--json"]).stdout)
    assert dups == json.loads(json.dumps(groups, default=str))
    assert stats["merged_trials"] == len(dups)
    shown = json.loads(runner.invoke(cli, [*db, "show", "NCT04315987", "--json"]).stdout)
    assert shown["trial_id"] == "NCT04315987" and len(shown["records"]) >= 2
    for fmt in ("csv", "parquet", "xlsx"):
        out = tmp_path / f"trials.{fmt}"
        res = runner.invoke(cli, [*db, "export", "--format", fmt, "--out", str(out)])
        assert res.exit_code == 0, res.output
        import pandas as pd

        readers: dict[str, Callable[[Path], pd.DataFrame]] = {
            "csv": pd.read_csv,
            "parquet": pd.read_parquet,
            "xlsx": pd.read_excel,
        }
        df = readers[fmt](out)
        assert len(df) == stats["trials"] and df["trial_id"].is_unique
    merged = df[df["trial_id"] == "NCT04361942"]["all_ids"].iloc[0]
    assert "EUCTR2020-001682-36-ES" in merged or "EU:2020-001682-36" in merged


def test_resolve_finds_every_record_and_spelling(full_store_path: Path) -> None:
    """Any record's id names its trial, one by one or many at once; so do
    other spellings of a registry id (space, case, EU-CTR with or without its
    member-state suffix). Expected: the record's trial by a join on the store's
    tables, and the canonical key among trial_ids."""
    with celltrials.open(full_store_path, read_only=True) as s:
        trial_of = dict(
            s.con.execute(
                "SELECT DISTINCT r.record_id, tr.trial_id FROM records r "
                "JOIN trial_records tr USING (record_key)"
            ).fetchall()
        )
        assert len(trial_of) > 8000
        assert s.resolve_many(trial_of) == trial_of
        assert all(s.resolve(rid) == trial_of[rid] for rid in list(trial_of)[::97])
        nct = "NCT04361942"  # (merged with EudraCT 2020-001682-36's member-state records)
        eu = s.con.execute(
            "SELECT DISTINCT trial_id FROM trial_ids WHERE id_key = 'EU:2020-001682-36'"
        ).fetchall()
        assert eu == [(trial_of[nct],)]
        spellings = [f"  {nct} ", nct.lower(), "2020-001682-36", "EUCTR2020-001682-36-ES"]
        assert s.resolve_many(spellings) == dict.fromkeys(spellings, trial_of[nct])
        assert s.resolve("NCT00000000") is None and s.resolve_many([]) == {}


def test_data_dir_reference_run_is_clean(full_store_path: Path) -> None:
    with celltrials.open(full_store_path, read_only=True) as s:
        sources = set(s.query("SELECT DISTINCT source FROM records")["source"])
    assert {Path(x).name for x in sources} >= {MSC_CSV.name, ICTRP_XLSX.name, CAR_JSON.name}
    assert not any("third_party_labels" in x for x in sources)
    assert DATA.exists()
