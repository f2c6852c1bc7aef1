"""The worker pool of the bulk steps (celltrials/procpool.py): a worker that
ends abruptly is a user-facing error with a fix-it hint, not a bare
``BrokenProcessPool`` traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from celltrials.errors import CelltrialsError, WorkerError
from celltrials.procpool import map_ordered

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[1] / "src"


def _die_on_three(x: int) -> int:
    if x == 3:
        os._exit(9)  # as a worker killed by the OOM killer would
    return x * x


def test_a_worker_that_dies_is_a_worker_error() -> None:
    got: list[int] = []
    with pytest.raises(WorkerError) as info:
        for r in map_ordered(_die_on_three, range(8), 2, in_flight=1):
            got.append(r)
    assert isinstance(info.value, CelltrialsError)
    assert "--jobs 1" in info.value.hint and "__main__" in info.value.hint
    assert "_die_on_three" in str(info.value)
    # in order, up to the payload whose worker died (payload 2 may be lost with it:
    # a broken pool fails every task still running)
    assert got in ([0, 1], [0, 1, 4])


#: the mistake a user makes first: a script that starts workers at import time
_UNGUARDED = """
from celltrials.classify import Segment, TrialText
from celltrials.classify_parallel import classify_many

texts = [TrialText(f"t{i}", [Segment("title", "title", "CD19 CAR-T cells")]) for i in range(600)]
print(sum(lab.is_cell_therapy for lab in classify_many(texts, jobs=2)))
"""


def test_a_script_without_a_main_guard_gets_the_hint(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "celltrials.errors.WorkerError" in out.stderr
    guarded = "if __name__ == '__main__':\n" + "".join(
        f"    {line}\n" for line in _UNGUARDED.strip().splitlines()
    )
    script.write_text(guarded, encoding="utf-8")
    ok = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "600"
