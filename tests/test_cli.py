"""The command line as a user meets it: real processes, exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

import celltrials
from celltrials.ingest import ingest_paths
from celltrials.summary import store_stats
from tests.conftest import GENERAL_JSON, PROCHYMAL_CSV

EXE = [sys.executable, "-c", "from celltrials.cli import main; main()"]


def run(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, "--db", str(db), *args], capture_output=True, text=True, timeout=120
    )


def test_error_shows_message_and_hint_without_traceback(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    assert run("--quiet", "ingest", str(PROCHYMAL_CSV), db=db).returncode == 0
    res = run("show", "NCT99999999", db=db)
    assert res.returncode == 1
    assert "Error: no trial with id 'NCT99999999'" in res.stderr
    assert "Hint:" in res.stderr and "Traceback" not in res.stderr
    debug = run("--debug", "show", "NCT99999999", db=db)
    assert "Traceback" in debug.stderr


def test_bad_file_names_file_record_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    studies = json.loads(GENERAL_JSON.read_text())[:3]
    studies[1]["protocolSection"]["statusModule"]["startDateStruct"]["date"] = "2023-02-30"
    bad.write_text(json.dumps(studies))
    res = run("ingest", str(bad), db=tmp_path / "s.duckdb")
    assert res.returncode == 1
    assert str(bad) in res.stderr and "record 2" in res.stderr and "2023-02-30" in res.stderr
    with celltrials.open(tmp_path / "s.duckdb", read_only=True) as s:
        assert s.con.execute("SELECT count(*) FROM records").fetchone()[0] == 0  # type: ignore[index]
    skipped = run("--quiet", "ingest", "--skip-bad", str(bad), db=tmp_path / "s.duckdb")
    assert skipped.returncode == 1  # something was left out
    with celltrials.open(tmp_path / "s.duckdb", read_only=True) as s:
        assert s.con.execute("SELECT count(*) FROM records").fetchone()[0] == 2  # type: ignore[index]


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    res = run("--quiet", "ingest", str(PROCHYMAL_CSV), db=tmp_path / "s.duckdb")
    assert res.returncode == 0 and res.stdout == "" and res.stderr == ""


def test_db_from_environment(tmp_path: Path) -> None:
    db = tmp_path / "env.duckdb"
    res = subprocess.run(
        [*EXE, "--quiet", "ingest", str(PROCHYMAL_CSV)],
        capture_output=True,
        text=True,
        env={"CELLTRIALS_DB": str(db), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert db.exists()


def test_python_api_returns_dataframes(full_store_path: Path) -> None:
    with celltrials.open(full_store_path, read_only=True) as db:
        trials = db.trials()
        assert isinstance(trials, pd.DataFrame) and trials["trial_id"].is_unique
        countries = db.table("countries")
        assert set(countries.columns) == {"trial_id", "country", "iso2", "iso3"}
        china = db.query(
            "SELECT count(DISTINCT trial_id) AS n FROM countries WHERE country = 'China'"
        )["n"][0]
        assert china == countries[countries["country"] == "China"]["trial_id"].nunique() > 1000
        t = db.trial("ChiCTR2000029580")
        assert t is not None and t["registry"] == "chictr"


def test_each_command_is_registered_by_the_module_the_group_names() -> None:
    """The group imports a command's module when the command is asked for
    (``COMMAND_MODULES``): that table and the modules' registrations agree."""
    from celltrials.commands.base import COMMAND_MODULES, cli, load_all_commands

    load_all_commands()
    assert set(cli.commands) == set(COMMAND_MODULES)
    for name, module in COMMAND_MODULES.items():
        cmd = cli.commands[name]
        assert cmd.callback is not None
        assert cmd.callback.__module__ == f"celltrials.commands.{module}", name


def test_stats_and_version_start_without_the_analysis_libraries(tmp_path: Path) -> None:
    """``celltrials stats`` imports only its own command module, not what other
    commands need (SciPy, Matplotlib, openpyxl, Jinja, httpx: with them every
    command took ~2.5 s to start on a 2-vCPU machine), and ``--version`` not
    even the store (nor pandas)."""
    db = tmp_path / "s.duckdb"
    with celltrials.open(db) as store:
        ingest_paths(store, [PROCHYMAL_CSV])
        want = store_stats(store)
    code = (
        "import sys\n"
        "from celltrials.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'scipy', 'matplotlib', 'openpyxl', 'jinja2', 'httpx'}\n"
        "print(sorted(heavy), 'pandas' in sys.modules, file=sys.stderr)\n"
    )
    outs = []
    for args in (["--version"], ["--db", str(db), "stats", "--json"]):
        res = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr
        outs.append((res.stdout, res.stderr.strip().splitlines()[-1]))
    assert outs[0][1] == "[] False"  # --version: not even pandas
    assert celltrials.__version__ in outs[0][0]
    assert outs[1][1] == "[] True"  # stats: the store (which imports pandas)
    assert json.loads(outs[1][0]) == json.loads(json.dumps(want))
