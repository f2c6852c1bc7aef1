"""``celltrials check`` and the normalised store, on the store built from all
of ../shared/data. Expected numbers come from reading the raw files here."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pycountry

import celltrials
from celltrials.cli import main
from celltrials.normalize import STUDY_TYPES, normalize_study_type
from celltrials.quality import check, coverage_windows
from tests.conftest import CAR_JSON, ICTRP_XLSX, MSC_CSV, ictrp_xlsx_rows


def _cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    """``celltrials --db DB ARGS`` run in this process through the console
    script's ``main`` (its exit code, stdout and stderr)."""
    argv = ["--db", str(db), *args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def test_check_strict_passes_on_the_reference_store_and_json_equals_the_library(
    full_store_path: Path,
) -> None:
    res = _cli("check", "--strict", "--json", db=full_store_path)
    assert res.returncode == 0, res.stderr
    with celltrials.open(full_store_path, read_only=True) as store:
        expected = check(store).to_dict()
    assert json.loads(res.stdout) == json.loads(json.dumps(expected, default=str))
    got = json.loads(res.stdout)
    assert got["ok"] is True and got["n_unmapped"] == 0
    assert len(got["sources"]) == 20  # every data file (third_party_labels.csv holds no records)
    for s in got["sources"]:
        assert s["coverage"]["source"] == s["source"]
        assert {f["field"] for f in s["fields"]} == {"study_type", "phase", "status", "country"}
    plain = _cli("check", db=full_store_path)
    assert plain.returncode == 0 and "Coverage windows" in plain.stdout


def test_strict_fails_and_names_the_unmapped_value(
    full_store: celltrials.Store, tmp_path: Path
) -> None:
    key = full_store.con.execute(
        "SELECT record_key, record_id FROM records WHERE source_format = 'ictrp_xml' ORDER BY record_key LIMIT 1"
    ).fetchone()
    assert key is not None
    full_store.con.execute(
        "UPDATE records SET phase_raw = 'Phase [maybe] 7' WHERE record_key = ?", [key[0]]
    )
    report = check(full_store)
    assert not report.ok and report.n_unmapped == 1
    src = next(s for s in report.sources if s.format == "ictrp_xml")
    phase = next(f for f in src.fields if f.field == "phase")
    assert [(u.raw, u.count, u.example_record_id) for u in phase.unmapped] == [
        ("Phase [maybe] 7", 1, key[1])
    ]
    path = Path(full_store.path)
    full_store.close()
    res = _cli("check", "--strict", db=path)
    assert res.returncode == 1
    assert "Phase [maybe] 7" in res.stdout  # shown verbatim, not as rich markup
    assert "1 raw value(s) map to nothing" in res.stderr


def test_coverage_window_of_the_msc_csv_matches_the_file(full_store_path: Path) -> None:
    with MSC_CSV.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))

    def day(text: str) -> date:
        return datetime.strptime(text.strip(), "%B %d, %Y").date()

    updates = [day(r["Last Update Posted"]) for r in rows]
    posted = [day(r["First Posted"]) for r in rows]
    with celltrials.open(full_store_path, read_only=True) as store:
        w = next(w for w in coverage_windows(store) if w.source.endswith(MSC_CSV.name))
    assert w.n_records == len(rows)
    assert (w.last_update_first, w.last_update_last) == (min(updates), max(updates))
    assert w.last_update_last == date(2022, 10, 5)  # the "MSC export ends on 2022-10-05"
    assert (w.registration_first, w.registration_last) == (min(posted), max(posted))
    assert w.snapshot_date == max(updates) and w.export_date is None


def test_coverage_window_of_the_car_json_and_the_ictrp_export_stamp(full_store_path: Path) -> None:
    studies = json.loads(CAR_JSON.read_text(encoding="utf-8"))
    starts = []
    for s in studies:
        d = s["protocolSection"]["statusModule"].get("startDateStruct", {}).get("date")
        if d:
            starts.append(date.fromisoformat(d if len(d) == 10 else d + "-01"))
    updates = [
        date.fromisoformat(s["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"])
        for s in studies
    ]
    rows = ictrp_xlsx_rows(data_only=True)
    col = list(rows[0]).index("Export date")
    stamps = {v[col] for v in rows[1:] if v[col] is not None}
    with celltrials.open(full_store_path, read_only=True) as store:
        windows = {Path(w.source).name: w for w in coverage_windows(store)}
    car = windows[CAR_JSON.name]
    assert (car.start_first, car.start_last) == (min(starts), max(starts))
    assert car.last_update_last == max(updates) and car.snapshot_date == max(updates)
    xl = windows[ICTRP_XLSX.name]
    stamp_dates = {
        s.date()
        if isinstance(s, datetime)
        else datetime.strptime(str(s).split()[0], "%m/%d/%Y").date()
        for s in stamps
    }
    assert xl.export_date == max(stamp_dates)
    assert xl.snapshot_date == max(xl.export_date, xl.last_update_last)  # type: ignore[type-var]


def test_study_type_column_is_canonical_with_raw_kept(full_store_path: Path) -> None:
    xlsx = ictrp_xlsx_rows(data_only=True)
    col = list(xlsx[0]).index("Study type")
    raw_counts: dict[str, int] = {}
    for v in xlsx[1:]:
        raw_counts[str(v[col] or "")] = raw_counts.get(str(v[col] or ""), 0) + 1
    with celltrials.open(full_store_path, read_only=True) as store:
        rows = store.con.execute(
            """
            SELECT study_type_raw, study_type, count(*) FROM records
            WHERE source LIKE ? GROUP BY 1, 2""",
            [f"%{ICTRP_XLSX.name}"],
        ).fetchall()
        canon = {
            r[0] for r in store.con.execute("SELECT DISTINCT study_type FROM trials").fetchall()
        }
    assert {r[0]: r[2] for r in rows} == raw_counts
    assert all(st == normalize_study_type(raw) for raw, st, _ in rows)
    assert canon <= set(STUDY_TYPES)
    assert {r[1] for r in rows} >= {"interventional", "observational", "expanded_access", "other"}


def test_countries_are_iso_coded_and_regions_kept_apart(full_store_path: Path) -> None:
    with celltrials.open(full_store_path, read_only=True) as store:
        con = store.con
        uncoded = con.execute(
            "SELECT count(*) FROM countries WHERE iso2 IS NULL OR iso3 IS NULL"
        ).fetchone()
        names = {r[0] for r in con.execute("SELECT DISTINCT country FROM countries").fetchall()}
        comma_names = con.execute(
            "SELECT DISTINCT country, iso2 FROM countries WHERE country LIKE '%,%'"
        ).fetchall()
        regions = {r[0] for r in con.execute("SELECT DISTINCT region FROM regions").fetchall()}
        malaysia = con.execute("""SELECT DISTINCT country, iso2, iso3 FROM record_countries
                                  WHERE country_raw IN ('MALAYSIA', 'Malaysia')""").fetchall()
        one_name_per_code = con.execute(
            "SELECT count(*) FROM (SELECT iso2 FROM countries GROUP BY iso2 HAVING count(DISTINCT country) > 1)"
        ).fetchone()
        jprn = con.execute("""SELECT list(DISTINCT country ORDER BY country) FROM record_countries
                              WHERE country_raw = 'Japan,North America,Europe'""").fetchone()
    assert uncoded == (0,)
    assert not names & {
        "ASIA",
        "EUROPE",
        "South America",
        "North America",
        "MALAYSIA",
        "Korea, North",
        "Wuhan",
    }
    # a comma survives only inside an ISO 3166 name ("Virgin Islands, British"), never as a list
    for name, iso2 in comma_names:
        country = pycountry.countries.get(alpha_2=iso2)
        assert country is not None and name == country.name, name
    assert {"Asia", "Europe", "South America", "North America", "Africa"} <= regions
    assert malaysia == [("Malaysia", "MY", "MYS")]
    assert one_name_per_code == (0,)
    assert jprn == (["Japan"],)


def test_no_export_damage_left_in_titles_sponsors_interventions(full_store_path: Path) -> None:
    wb = openpyxl.load_workbook(ICTRP_XLSX, read_only=True, data_only=True)
    try:
        it = wb.worksheets[0].iter_rows(values_only=True)
        header = list(next(it))
        col = header.index("Primary sponsor")
        # the stored raw name is the registry's with runs of spaces collapsed
        damaged = {" ".join(str(v[col]).split()) for v in it if v[col] and "√" in str(v[col])}
    finally:
        wb.close()
    with celltrials.open(full_store_path, read_only=True) as store:
        con = store.con
        left = con.execute("""
            SELECT (SELECT count(*) FROM records WHERE title LIKE '%√%' OR title LIKE '%\\_x000D\\_%' ESCAPE '\\'
                      OR title LIKE '%<br>%' OR official_title LIKE '%√%' OR lead_sponsor LIKE '%√%'),
                   (SELECT count(*) FROM record_sponsors WHERE name LIKE '%√%' OR name LIKE '%&#39;%'),
                   (SELECT count(*) FROM record_interventions WHERE name LIKE '%√%' OR name LIKE '%\\_x000D\\_%' ESCAPE '\\')
        """).fetchone()
        repaired = {
            r[0]
            for r in con.execute(
                "SELECT raw FROM record_text_repairs WHERE field = 'sponsor' AND list_contains(kinds, 'mojibake')"
            ).fetchall()
        }
        aphp = con.execute("""
            SELECT count(DISTINCT lead_sponsor_raw), count(DISTINCT lead_sponsor_key), count(DISTINCT lead_sponsor)
            FROM records WHERE lead_sponsor_raw IN ('Assistance Publique - H√¥pitaux de Paris',
                                                    'Assistance Publique - Hôpitaux de Paris')""").fetchone()
    assert left == (0, 0, 0)
    assert len(damaged) > 50 and damaged <= repaired
    assert aphp == (2, 1, 1)  # the mojibake and the clean spelling are one sponsor


def test_report_methods_show_the_check_summary(full_store_path: Path, tmp_path: Path) -> None:
    from celltrials.quality import check as run_check

    db = tmp_path / "r.duckdb"
    db.write_bytes(full_store_path.read_bytes())
    with celltrials.open(db, read_only=True) as store:
        summary = run_check(store).summary()
    res = _cli("report", "--all-trials", "--no-figures", "--out", str(tmp_path / "rep"), db=db)
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "Data-quality check" in page
    assert f"{summary['n_records']:,} record versions" in page
    assert f"{summary['n_repairs']:,} text values repaired" in page
    # a title with both an Excel escape and mojibake is one value, two kinds
    assert summary["n_repairs"] < sum(summary["repairs_by_kind"].values())


def test_sponsor_chart_groups_spellings_of_one_sponsor(full_store: celltrials.Store) -> None:
    from celltrials.analysis import landscape as L

    con = full_store.con
    L.ensure_label_view(con)
    sel = L.select_trials(con, L.Filters(scope="all"))
    table = L.sponsors(con, sel)
    # independently: trials whose lead sponsor reads APHP in any spelling, folded by hand
    raw = con.execute(
        "SELECT trial_id, lead_sponsor_raw FROM trials WHERE lead_sponsor_raw IS NOT NULL"
    ).fetchall()

    def folded(name: str) -> str:
        return "".join(ch for ch in name.lower() if ch.isalnum())

    # the WHO export's Mac Roman mojibake is "H\u221a\u00a5pitaux" (√ and ¥), which folds to "hpitaux"
    wanted = {
        "assistancepubliquehôpitauxdeparis",
        "assistancepubliquehopitauxdeparis",
        "assistancepubliquehpitauxdeparis",
    }
    aphp_trials = {tid for tid, name in raw if folded(name) in wanted}
    rows = [r for r in table.itertuples() if any(folded(s) in wanted for s in r.spellings)]
    assert len(rows) == 1, [r.lead_sponsor for r in rows]
    assert set(rows[0].trial_ids) == aphp_trials and len(aphp_trials) > 5
    assert rows[0].lead_sponsor == "Assistance Publique - Hôpitaux de Paris"
    assert len(rows[0].spellings) >= 2
    assert table["lead_sponsor"].is_unique
    assert int(table["n_trials"].sum()) == sum(1 for _, name in raw if name.strip())


def test_implausible_start_dates_are_flagged(full_store_path: Path) -> None:
    wb = openpyxl.load_workbook(ICTRP_XLSX, read_only=True, data_only=True)
    try:
        it = wb.worksheets[0].iter_rows(values_only=True)
        header = list(next(it))
        tid, start = header.index("TrialID"), header.index("Date enrollement")
        far = sorted(
            str(v[tid]).strip()
            for v in it
            if v[start] is not None
            and (v[start].year if isinstance(v[start], datetime) else int(str(v[start])[-4:]))
            > 2031
        )
    finally:
        wb.close()
    with celltrials.open(full_store_path, read_only=True) as store:
        src = next(s for s in check(store).sources if s.format == "ictrp_xlsx")
    assert far and src.n_start_implausible == len(far)
    assert src.example_start_implausible == far[0]


def test_check_on_a_store_from_before_migration_5_says_how_to_upgrade(tmp_path: Path) -> None:
    import duckdb

    from celltrials.store import MIGRATIONS

    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
    )
    for m in MIGRATIONS:
        if m.version < 5:
            m.apply(con)
            con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [m.version, m.name])
    con.close()
    res = _cli("check", "--strict", db=db)
    assert res.returncode == 1
    assert "predates the data-quality audit" in res.stderr and "Hint:" in res.stderr
    assert "Traceback" not in res.stderr
