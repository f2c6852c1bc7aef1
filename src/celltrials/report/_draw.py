"""Worker process for the report's Matplotlib figures.

    python -m celltrials.report._draw CHARTS.json OUT_DIR CLAIM_DIR
    python -m celltrials.report._draw - OUT_DIR CLAIM_DIR      (path of CHARTS.json on stdin)

With ``-`` the worker imports Matplotlib first and then waits for the path
on its standard input (an empty input: nothing to draw). ``CHARTS.json`` is a list of :class:`celltrials.report.figures.Chart` as
dicts; each is drawn as ``OUT_DIR/<id>.svg`` and ``.png`` unless another
process has claimed it first (an exclusive ``CLAIM_DIR/<id>`` file, see
:func:`claim`); the written paths are printed one per line.
:func:`celltrials.report.build.build_report` runs a few of these beside its
own work and then draws the unclaimed charts itself, from the other end of
the list. A plain subprocess (not ``multiprocessing``) never re-imports the
caller's ``__main__``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from celltrials.report.figures import Chart, Series, _mpl, draw_matplotlib


def chart_to_dict(chart: Chart) -> dict[str, Any]:
    return asdict(chart)


def chart_from_dict(d: dict[str, Any]) -> Chart:
    d = dict(d)
    d["series"] = [Series(**s) for s in d.get("series", [])]
    return Chart(**d)


def claim(claim_dir: Path, chart_id: str) -> bool:
    """Atomically claim a chart for drawing; False when someone else has."""
    try:
        fd = os.open(claim_dir / chart_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    spec = argv[0]
    if spec == "-":
        _mpl()  # the slow imports, done while the caller is still selecting trials
        spec = sys.stdin.readline().strip()
        if not spec:
            return 0
    charts = [chart_from_dict(d) for d in json.loads(Path(spec).read_text(encoding="utf-8"))]
    out, claims = Path(argv[1]), Path(argv[2])
    for c in charts:
        if claim(claims, c.id):
            for p in draw_matplotlib(c, out):
                print(p, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
