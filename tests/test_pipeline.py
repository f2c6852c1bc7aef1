"""The main job end to end on real exports: ingest → classify → products → report."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import celltrials
from celltrials.cli import cli
from tests.conftest import ICTRP_CSV, MSC_CSV, PROCHYMAL_CSV


def test_run_builds_store_labels_links_and_report(tmp_path: Path) -> None:
    db, out = tmp_path / "s.duckdb", tmp_path / "report"
    res = CliRunner().invoke(
        cli,
        [
            "--db",
            str(db),
            "run",
            "--json",
            "--out",
            str(out),
            str(MSC_CSV),
            str(PROCHYMAL_CSV),
            str(ICTRP_CSV),
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["ingest"]["clean"] and result["report"] == str(out / "report.html")
    html = (out / "report.html").read_text()
    with celltrials.open(db, read_only=True) as s:
        n_trials = s.con.execute("SELECT count(*) FROM trials").fetchone()[0]  # type: ignore[index]
        n_labels = s.con.execute("SELECT count(*) FROM labels").fetchone()[0]  # type: ignore[index]
        n_cell = s.con.execute("SELECT count(*) FROM labels WHERE is_cell_therapy").fetchone()[0]  # type: ignore[index]
        prochymal = set(
            s.query(
                "SELECT DISTINCT trial_id FROM product_links WHERE product IN ('Prochymal', 'Ryoncil')"
            )["trial_id"]
        )
    assert n_labels == n_trials == result["steps"]["classify"]["trials"]
    assert (
        result["steps"]["classify"]["cell_therapy_trials"]
        == n_cell
        == result["steps"]["report"]["trials"]
    )
    with PROCHYMAL_CSV.open(encoding="utf-8-sig") as fh:
        import csv

        named = {
            r["NCT Number"]
            for r in csv.DictReader(fh)
            if "prochymal" in (r["Title"] + r["Interventions"]).lower()
        }
    assert named and named <= prochymal
    assert f"{n_cell:,}" in html or str(n_cell) in html
    # a second run adds nothing and reclassifies nothing
    again = json.loads(
        CliRunner()
        .invoke(cli, ["--db", str(db), "run", "--json", "--out", str(out), str(PROCHYMAL_CSV)])
        .stdout
    )
    assert again["ingest"]["n_new"] == 0 and again["steps"]["classify"]["classified"] == 0
