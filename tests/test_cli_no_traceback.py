"""Every command with bad paths, bad ids and bad options: the user sees a
message (and a hint), a non-zero exit code, and never a traceback.

The commands run in-process through :func:`celltrials.cli.main` — the same
entry point as the console script — so an escaping exception would fail the
test itself; one subprocess run checks the real console script end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import celltrials
from celltrials.cli import main
from celltrials.ingest import ingest_paths
from tests.conftest import GENERAL_JSON, ICTRP_CSV, REPO, stored_json


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cli-faults")
    good = tmp / "good.duckdb"
    with celltrials.open(good) as store:
        ingest_paths(store, [GENERAL_JSON])
        from celltrials.labelling import classify_store

        classify_store(store)
    truncated = tmp / "truncated.duckdb"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    damaged = tmp / "damaged.duckdb"
    data = bytearray(good.read_bytes())
    data[4096 : 4096 + 8192] = b"\0" * 8192
    damaged.write_bytes(bytes(data))
    text = tmp / "not-a-store.duckdb"
    text.write_text("NCT Number,Title\n", encoding="utf-8")
    folder = tmp / "a-folder.duckdb"
    folder.mkdir()
    return {
        "good": good,
        "truncated": truncated,
        "damaged": damaged,
        "text": text,
        "folder": folder,
        "missing": tmp / "nowhere" / "missing.duckdb",
    }


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:  # pragma: no cover - main always exits
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


def _bad_files(tmp: Path) -> dict[str, Path]:
    junk = tmp / "junk.csv"
    junk.write_text("a,b\n1,2\n", encoding="utf-8")
    empty = tmp / "empty.csv"
    empty.write_text("", encoding="utf-8")
    binary = tmp / "binary.csv"
    binary.write_bytes(os.urandom(2000))
    existing = tmp / "exists.csv"
    existing.write_text("keep me", encoding="utf-8")
    afile = tmp / "afile"
    afile.write_text("x", encoding="utf-8")
    ro = tmp / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    return {
        "junk": junk,
        "empty": empty,
        "binary": binary,
        "existing": existing,
        "afile": afile,
        "ro": ro,
    }


def _cases(f: dict[str, Path]) -> list[list[str]]:
    return [
        ["show", "NCT00000000"],
        ["show", ""],
        ["show", "<script>[red]x[/red]"],
        ["show", "NCT00000000", "--raw"],
        ["explain", "NCT00000000"],
        ["explain", "ChiCTR-garbage"],
        ["results", "NCT00000000"],
        ["results"],
        ["results", "--export", "/proc/no/such/x.csv"],
        ["results", "--export", str(f["afile"] / "x.csv")],
        ["results", "NCT00000000", "--limit", "-3"],
        ["labels", "--out", "/proc/no/labels.csv"],
        ["labels", "--out", str(f["ro"] / "labels.csv")],
        ["labels", "--out", str(f["afile"] / "sub" / "labels.csv")],
        ["export", "--format", "xlsx", "--out", "t.csv"],
        ["export", "--out", str(f["existing"])],
        ["export", "--out", "/proc/x/trials.csv"],
        ["export", "--out", "/dev/full", "--force"],
        ["export", "--format", "pdf"],
        ["export", "--out", str(f["ro"] / "t.csv")],
        ["export", "--out", str(f["afile"] / "t.csv")],
        ["report", "--out", "/proc/no/report"],
        ["report", "--out", str(f["afile"])],
        ["report", "--out", str(f["ro"] / "rep")],
        ["report", "--start-year", "abc"],
        ["report", "--start-year", "2024-2019"],
        ["report", "--phase", "9"],
        ["report", "--country", "Atlantis", "--no-figures"],
        ["report", "--cell-type", "unicorn"],
        ["evaluate", "--gold", "/nonexistent.csv"],
        ["evaluate", "--gold", str(f["junk"])],
        ["evaluate", "--gold", str(f["binary"])],
        ["evaluate", "--gold", str(f["empty"])],
        ["meta", "/nonexistent.csv"],
        ["meta", str(f["junk"])],
        ["meta", str(f["empty"])],
        ["meta", str(f["binary"])],
        ["meta", str(f["junk"]), "--measure", "rr", "--col", "ai=a", "--col", "bi=b"],
        ["meta", str(f["junk"]), "--level", "200"],
        ["meta", str(f["junk"]), "--col", "nonsense"],
        ["products", "show", "NoSuchProductAnywhere"],
        ["products", "--check", "--catalog", "/nonexistent.csv"],
        ["products", "--check", "--catalog", str(f["binary"])],
        ["products", "--check", "--catalog", str(f["junk"])],
        ["sync-status"],
        ["update", "--rate", "0", "--max-retries", "0", "--timeout", "1"],
        ["fetch", "--rate", "-1", "--id", "NCT00000000"],
        ["fetch", "--base-url", "ftp://example.invalid", "--id", "NCT1"],
        [
            "fetch",
            "--base-url",
            "http://127.0.0.1:9",
            "--id",
            "NCT04315987",
            "--rate",
            "0",
            "--max-retries",
            "0",
            "--timeout",
            "1",
        ],
        ["fetch", "--preset", "no-such-preset"],
        ["fetch"],
        ["ingest", "/nonexistent/file.json"],
        ["ingest", str(f["junk"])],
        ["ingest", str(f["binary"])],
        ["ingest", str(f["empty"])],
        ["ingest", "--skip-bad", str(f["binary"]), str(f["empty"])],
        ["ingest", "/nonexistent/**/*.json"],
        ["run", "/nonexistent/data"],
        ["run", str(f["junk"]), "--out", "/proc/no/report"],
        ["classify"],
        ["stats"],
        ["dups", "--limit", "-1"],
        ["no-such-command"],
        ["stats", "--no-such-option"],
    ]


def test_no_command_shows_a_traceback(
    stores: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    files = _bad_files(tmp_path)
    seen = 0
    problems: list[str] = []
    try:
        for name, db in stores.items():
            cases = _cases(files)
            if name != "good":  # every store fault, through the commands that open a store
                cases = [
                    c
                    for c in cases
                    if c[0] in ("stats", "show", "export", "report", "classify", "ingest")
                ][:8]
            for argv in cases:
                copy = tmp_path / f"{name}-work.duckdb"
                if db.is_file():
                    shutil.copy(db, copy)
                target = copy if db.is_file() else db
                try:
                    code, out, err = run(["--db", str(target), *argv], capsys)
                except (
                    BaseException
                ) as exc:  # an escaping exception is what the user would see as a traceback
                    problems.append(
                        f"{name}: celltrials {' '.join(argv)} -> {type(exc).__name__}: {exc}"
                    )
                    capsys.readouterr()
                    continue
                seen += 1
                where = f"[{name}] celltrials {' '.join(argv)}"
                if "Traceback" in err + out:
                    problems.append(f"{where}: traceback")
                if code != 0 and not err.strip():
                    problems.append(f"{where}: exit {code} with nothing said")
    finally:
        files["ro"].chmod(0o755)
    assert problems == []
    assert seen > 100


def test_error_messages_name_the_problem_and_hint(
    stores: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    good = ["--db", str(stores["good"])]
    existing = tmp_path / "exists.csv"
    existing.write_text("keep me", encoding="utf-8")
    code, _, err = run([*good, "export", "--out", str(existing)], capsys)
    assert code == 1 and "already exists" in err and "--force" in err
    assert existing.read_text(encoding="utf-8") == "keep me"
    code, _, err = run([*good, "export", "--format", "xlsx", "--out", "t.csv"], capsys)
    assert code == 1 and "--format xlsx" in err and not Path("t.csv").exists()
    code, _, err = run([*good, "export", "--out", "/dev/full", "--force"], capsys)
    assert code == 1 and "no space left" in err
    code, _, err = run(
        [*good, "export", "--out", str(tmp_path / "new" / "deeper" / "t.csv")], capsys
    )
    assert code == 0 and (tmp_path / "new" / "deeper" / "t.csv").is_file()
    code, _, err = run([*good, "ingest", "/nonexistent"], capsys)
    assert code == 1 and "no such file or folder" in err and "--skip-bad" not in err
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(GENERAL_JSON.read_bytes()[:5000])
    code, _, err = run([*good, "ingest", str(truncated)], capsys)
    assert code == 1 and "malformed or truncated JSON" in err and "cannot be read as a whole" in err
    bad_record = tmp_path / "bad_record.json"
    studies = json.loads(GENERAL_JSON.read_bytes())[:2]
    studies[1]["protocolSection"]["conditionsModule"]["conditions"] = "Lymphoma"
    bad_record.write_text(json.dumps(studies), encoding="utf-8")
    code, _, err = run([*good, "ingest", str(bad_record)], capsys)
    assert (
        code == 1
        and "record 2" in err
        and "expected a list" in err
        and "--skip-bad to ingest its good" in err
    )
    for name in ("truncated", "damaged", "text"):
        copy = tmp_path / f"{name}.duckdb"
        shutil.copy(stores[name], copy)
        code, _, err = run(["--db", str(copy), "stats"], capsys)
        assert code == 1 and "Error:" in err and "Hint:" in err, (name, err)
        assert "rebuild" in err or "damaged" in err, (name, err)


def test_library_and_cli_agree_on_labels_and_raw(
    stores: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with celltrials.open(stores["good"], read_only=True) as db:
        trials = db.trials()
        labels = db.table("labels")
        first = str(trials["trial_id"].iloc[0])
        trial = db.trial(first)
        raw = db.query("SELECT raw FROM records WHERE record_id = ?", [first])["raw"].iloc[0]
    assert {"cell_type", "is_cell_therapy", "taxonomy_version"} <= set(trials.columns)
    assert len(labels) == len(trials)
    assert trial is not None and trial["labels"] is not None and "cell_type" in trial["labels"]
    code, out, _ = run(["--db", str(stores["good"]), "show", first, "--raw"], capsys)
    assert code == 0
    body = out.split("# raw record ", 1)[1].split("\n", 1)[1]
    assert json.loads(body) == stored_json(raw)  # the record exactly as ingested
    code, out, _ = run(["--db", str(stores["good"]), "show", first, "--json"], capsys)
    assert json.loads(out)["labels"] == json.loads(json.dumps(trial["labels"], default=str))


def test_console_script_has_no_traceback(stores: dict[str, Path], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for argv in (
        ["--db", str(stores["truncated"]), "stats"],
        ["ingest", "/nonexistent"],
        ["--db", str(tmp_path / "x.duckdb"), "ingest", str(ICTRP_CSV), "--no-such"],
    ):
        res = subprocess.run(
            [sys.executable, "-m", "celltrials", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert res.returncode != 0 and "Traceback" not in res.stderr + res.stdout, res.stderr


def test_ctrl_c_during_ingest_is_a_clean_message(tmp_path: Path) -> None:
    """SIGINT in the middle of ingesting every real file: a message, exit 130,
    and a store holding only files that finished (each whole)."""
    import signal
    import time

    from tests.conftest import DATA

    db = tmp_path / "int.duckdb"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}

    def interruptible() -> None:
        # a runner started in the background (``ci &``, nohup) passes SIGINT on
        # ignored, and Python then never raises KeyboardInterrupt: the ingest ran
        # to the end and the test skipped. A user's Ctrl-C reaches a foreground
        # process with the default disposition, so the child gets that.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, "-m", "celltrials", "--db", str(db), "ingest", str(DATA)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline and not db.exists()
    ):  # the store exists once ingesting started
        time.sleep(0.05)
    time.sleep(0.2)  # soon after: the files are parsed ahead of the store
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    # (exit 0: the ingest ran to its end, seconds after the signal; a Ctrl-C arriving
    # while pyarrow imported pandas on its first pa.array was once lost that way)
    assert proc.returncode == 130, err
    assert "Traceback" not in err + out and "Interrupted" in err
    with celltrials.open(db, read_only=True) as store:
        per_file = store.con.execute("""
            SELECT i.n_records, (SELECT count(*) FROM records r WHERE r.ingest_id = i.ingest_id)
            FROM ingests i""").fetchall()
    assert all(n is not None for n, _ in per_file)  # no ingest left unfinished
