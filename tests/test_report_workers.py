"""The report's figure workers (report/build.py ``_Drawing``): a worker that
cannot start costs time, never figures, and a report killed with ``kill -9``
leaves no worker behind. Each test runs a real script in a subprocess on the
classified real-data store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest_report import classified_store_path, default_report

pytestmark = pytest.mark.data

SRC = Path(__file__).resolve().parents[1] / "src"

#: what a user writes first: no ``if __name__ == "__main__":``, so every worker
#: process runs the script again when it starts
_UNGUARDED = """
import json, sys, time
import celltrials
from celltrials.analysis.landscape import Filters
from celltrials.report.build import build_report

def slow_sections(event):  # (the worker has died by the time the charts are handed out)
    if event.item == "sections":
        time.sleep(4)

with celltrials.open(sys.argv[1], read_only=True) as store:
    res = build_report(store, sys.argv[2], Filters(), progress=slow_sections, jobs=1)
print(json.dumps(sorted(p.name for p in res.figures)))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def _script_argv(store_path: Path, tmp_path: Path, name: str, text: str) -> list[str]:
    """The command line of ``text`` saved as a script, given the store and a report folder."""
    script = tmp_path / name
    script.write_text(text, encoding="utf-8")
    return [sys.executable, str(script), str(store_path), str(tmp_path / "report")]


def test_a_script_without_a_main_guard_still_gets_every_figure(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path, tmp_path: Path
) -> None:
    store_path = classified_store_path(tmp_path_factory, full_store_path)
    out = tmp_path / "report"
    run = subprocess.run(
        _script_argv(store_path, tmp_path, "unguarded.py", _UNGUARDED),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    # the worker ran the script again and stopped where it would start workers itself
    assert "if __name__ == '__main__':" in run.stderr
    names = json.loads(run.stdout.strip().splitlines()[-1])
    # every figure, drawn in the script's own process: the files of the same
    # report built in this run (its figures drawn by workers), byte for byte
    want = default_report(tmp_path_factory, store_path)
    assert names == sorted(p.name for p in want.figures) and len(names) >= 20
    for p in want.figures:
        assert (out / "figures" / p.name).read_bytes() == p.read_bytes()


_KILLED = """
import sys, time
import celltrials
from celltrials.analysis.landscape import Filters
from celltrials.report.build import build_report

def wait_to_be_killed(event):
    if event.item == "sections":  # the figure workers have started
        print("ready", flush=True)
        time.sleep(600)

if __name__ == "__main__":
    with celltrials.open(sys.argv[1], read_only=True) as store:
        build_report(store, sys.argv[2], Filters(scope="all"), progress=wait_to_be_killed, jobs=1)
"""


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc: parent ids)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        todo.extend(kids - found)
        found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_report_killed_leaves_no_figure_worker(
    tmp_path_factory: pytest.TempPathFactory, full_store_path: Path, tmp_path: Path
) -> None:
    store_path = classified_store_path(tmp_path_factory, full_store_path)
    with subprocess.Popen(
        _script_argv(store_path, tmp_path, "killed.py", _KILLED),
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            helpers: set[int] = set()
            deadline = time.monotonic() + 60
            # the fork server and its worker (started before the first step; wait for both)
            while len(helpers) < 2 and time.monotonic() < deadline:
                helpers = {p for p in _descendants(proc.pid) if _alive(p)}
                time.sleep(0.1)
            assert len(helpers) >= 2, helpers
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in helpers):
        time.sleep(0.2)
    left = [p for p in helpers if _alive(p)]
    for p in left:  # (not to leave them to the rest of the run)
        os.kill(p, signal.SIGKILL)
    assert not left
