"""Cost of completing normalisation (:func:`celltrials.normalize.finish_record`:
text repair with ftfy, study type, ISO countries and regions, sponsor keys)
on every record of ../shared/data, per format.

Each file is parsed twice per round, once as shipped and once with the
parsers' ``finish_record`` replaced by the identity; the difference is the
cost of finishing. Best of ``--rounds``.

    taskset -c 0 .venv/bin/python benchmarks/normalize.py
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from celltrials.models import ParsedRecord
from celltrials.sources import ctgov_csv, ctgov_json, ictrp, parse_file, sniff

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_MODULES = (ctgov_csv, ctgov_json, ictrp)


def _parse_all(files: list[Path]) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    for f in files:
        fmt = sniff(f).format
        t = time.perf_counter()
        n = sum(isinstance(r, ParsedRecord) for r in parse_file(f))
        dt = time.perf_counter() - t
        prev = out.get(fmt, (0, 0.0))
        out[fmt] = (prev[0] + n, prev[1] + dt)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    files = sorted(
        p
        for p in DATA.rglob("*")
        if p.suffix in {".json", ".csv", ".xml", ".xlsx"} and p.name != "third_party_labels.csv"
    )
    originals: dict[object, Callable[[ParsedRecord], ParsedRecord]] = {
        m: m.finish_record for m in _MODULES
    }
    best_with: dict[str, float] = defaultdict(lambda: float("inf"))
    best_without: dict[str, float] = defaultdict(lambda: float("inf"))
    counts: dict[str, int] = {}
    for _ in range(args.rounds):
        for fmt, (n, dt) in _parse_all(files).items():
            counts[fmt] = n
            best_with[fmt] = min(best_with[fmt], dt)
        for m in _MODULES:
            m.finish_record = lambda rec: rec  # type: ignore[attr-defined]
        try:
            for fmt, (_, dt) in _parse_all(files).items():
                best_without[fmt] = min(best_without[fmt], dt)
        finally:
            for m, fn in originals.items():
                m.finish_record = fn  # type: ignore[attr-defined]
    print(
        f"{'format':<18}{'records':>9}{'parse s':>10}{'finish s':>10}{'finish µs/rec':>15}{'share':>8}"
    )
    for fmt in sorted(counts):
        n, w, wo = counts[fmt], best_with[fmt], best_without[fmt]
        cost = max(w - wo, 0.0)
        print(
            f"{fmt:<18}{n:>9,}{w:>10.2f}{cost:>10.2f}{cost / max(n, 1) * 1e6:>15.0f}{cost / w:>8.0%}"
        )


if __name__ == "__main__":
    main()
