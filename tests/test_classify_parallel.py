"""Classification on several cores gives byte-identical output to one core, on the
real reference data; the engine uses no private modules of ``re``."""

from __future__ import annotations

import copy
import marshal
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import celltrials
from celltrials.classify import Classifier, TrialText, classify
from celltrials.classify_parallel import (
    CHUNK,
    _decode,
    _encode,
    _pack,
    _unpack,
    classify_many,
    plan_jobs,
)
from celltrials.cli import cli
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file
from celltrials.taxonomy.loader import build_taxonomy, default_taxonomy
from tests.conftest import CAR_JSON, ICTRP_CSV, MSC_CSV
from tests.conftest_report import classified_store_path

SRC = Path(__file__).resolve().parents[1] / "src"


def _texts() -> list[TrialText]:
    out = []
    for path in (MSC_CSV, ICTRP_CSV, CAR_JSON):
        for i, rec in enumerate(parse_file(path)):
            if i >= 120:
                break
            if isinstance(rec, ParsedRecord):
                out.append(TrialText.from_record(rec))
    return out


def test_workers_return_the_labels_of_one_core_in_input_order() -> None:
    texts = _texts()
    assert len(texts) > 300
    one = [lab.to_dict() for lab in classify_many(texts, jobs=1)]
    assert one == [classify(t).to_dict() for t in texts]  # the pure function, trial by trial
    seen: list[tuple[int, int]] = []
    many = [
        lab.to_dict()
        for lab in classify_many(
            texts, jobs=2, chunk_size=7, progress=lambda d, n: seen.append((d, n))
        )
    ]
    assert many == one
    assert seen[-1] == (len(texts), len(texts)) and [d for d, _ in seen] == sorted(
        d for d, _ in seen
    )


def test_a_classifier_carries_nothing_from_one_trial_to_the_next() -> None:
    """One Classifier for every trial (as in a worker) labels each trial as a new
    Classifier does, in either order: what it remembers while labelling a trial
    (whether a hit follows a background cue, by text and place) stays with that trial."""
    texts = _texts()
    fresh = [Classifier().classify(t).to_dict() for t in texts]
    shared = Classifier()
    assert [shared.classify(t).to_dict() for t in texts] == fresh
    assert [shared.classify(t).to_dict() for t in reversed(texts)] == fresh[::-1]


def test_workers_use_the_callers_taxonomy() -> None:
    raw = copy.deepcopy(default_taxonomy().raw)
    raw["version"] = "2000.1.1"
    raw["cell_type"] = [e for e in raw["cell_type"] if e["value"] != "msc"]  # no MSC synonyms
    tax = build_taxonomy(raw, source="custom.yaml")
    texts = _texts()
    labs = list(classify_many(texts, jobs=2, taxonomy=tax, chunk_size=50))
    assert {lab.taxonomy_version for lab in labs} == {"2000.1.1"}
    n_msc = sum("msc" in lab.cell_type for lab in labs)
    assert n_msc < sum(
        "msc" in classify(t).cell_type for t in texts
    )  # fewer MSC trials without the synonyms
    assert [lab.to_dict() for lab in labs] == [
        lab.to_dict() for lab in classify_many(texts, jobs=1, taxonomy=tax)
    ]


def test_plan_jobs() -> None:
    assert plan_jobs(10, 1) == 1
    assert plan_jobs(10, 8) == 1  # one chunk: no workers
    assert plan_jobs(10 * CHUNK, 3) == 3
    assert plan_jobs(100, None) == 1  # small stores stay in this process
    with pytest.raises(celltrials.errors.CelltrialsError):
        plan_jobs(10, 0)


def test_classify_jobs_output_is_byte_identical_to_one_core(
    full_store_path: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    runner = CliRunner()
    outputs = {}
    # two workers: the session's classified store (classify_store(jobs=2) on the full store)
    shutil.copy(classified_store_path(tmp_path_factory, full_store_path), tmp_path / "j2.duckdb")
    shutil.copy(full_store_path, tmp_path / "j1.duckdb")
    res = runner.invoke(
        cli, ["--db", str(tmp_path / "j1.duckdb"), "classify", "--jobs", "1", "--json"]
    )
    assert res.exit_code == 0, res.output
    for jobs in (1, 2):
        db = tmp_path / f"j{jobs}.duckdb"
        out = tmp_path / f"labels{jobs}.csv"
        res = runner.invoke(cli, ["--db", str(db), "labels", "--out", str(out)])
        assert res.exit_code == 0, res.output
        with celltrials.open(db, read_only=True) as store:
            table = store.con.execute(
                "SELECT * EXCLUDE (classified_at) FROM labels ORDER BY trial_id"
            ).fetchall()
            evidence = store.con.execute("SELECT * FROM label_evidence ORDER BY ALL").fetchall()
        outputs[jobs] = (out.read_bytes(), table, evidence)
    assert outputs[1][0].count(b"\n") > 8000
    assert outputs[1] == outputs[2]
    res = runner.invoke(cli, ["--db", str(tmp_path / "j1.duckdb"), "classify", "--jobs", "0"])
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_no_private_regex_modules_in_src() -> None:
    private = re.compile(
        r"^\s*import\s+(?:_sre|sre_parse|sre_compile|sre_constants)\b"
        r"|^\s*from\s+(?:_sre|sre_\w+|re\._\w+)\s+import\b"
        r"|^\s*from\s+re\s+import\s+\(?\s*_"
        r"|\bre\._\w+|\b_sre\b",
        re.M,
    )
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if private.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    # the check finds what it is meant to find
    assert private.search("import _sre\n") and private.search("from re import _parser\n")
    assert private.search("x = re._parser.parse(p)\n") and not private.search("import re\n")


def test_labels_travel_between_processes_unchanged() -> None:
    # workers send labels as marshalled plain tuples (evidence included): decoding
    # gives back equal TrialLabels, every field and every piece of evidence
    texts = _texts()
    labels = [classify(t) for t in texts]
    assert sum(len(lab.evidence) for lab in labels) > 1000
    back = [_decode(v) for v in marshal.loads(marshal.dumps([_encode(lab) for lab in labels]))]
    assert back == labels
    assert [b.to_dict() for b in back] == [lab.to_dict() for lab in labels]
    moved = [_unpack(p) for p in marshal.loads(marshal.dumps([_pack(t) for t in texts]))]
    assert [(m.trial_id, m.segments) for m in moved] == [(t.trial_id, t.segments) for t in texts]


#: classify the reference texts with the cyclic GC off, then count the garbage
#: only it could free (workers classify with it paused: runtime.gc_paused)
_CYCLES = """
import gc, sys
from celltrials.classify import Classifier, TrialText
from celltrials.sources import parse_file
from celltrials.models import ParsedRecord
texts = [TrialText.from_record(r) for p in sys.argv[1:] for r in parse_file(p) if isinstance(r, ParsedRecord)]
clf = Classifier()
clf.classify(texts[0])
gc.collect()
gc.disable()
n = sum(len(clf.classify(t).to_dict()["evidence"]) for t in texts)
print(len(texts), n, gc.collect())
"""


@pytest.mark.parametrize("pure", [False, True], ids=["as installed", "pure Python"])
def test_classifying_makes_no_reference_cycles(pure: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("CELLTRIALS_PURE_PYTHON", None)
    if pure:
        env["CELLTRIALS_PURE_PYTHON"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", _CYCLES, str(MSC_CSV), str(ICTRP_CSV), str(CAR_JSON)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    n_texts, n_evidence, unreachable = map(int, out)
    assert n_texts > 1000 and n_evidence > 1000
    assert unreachable == 0
