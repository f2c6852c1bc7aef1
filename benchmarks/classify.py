"""Classifier throughput on one core: the real records of ../shared/data, replicated.

    .venv/bin/python benchmarks/classify.py [--n 100000]

Every record of ../shared/data is parsed once (not timed) and turned into a
:class:`celltrials.classify.TrialText`; the list is repeated up to N trials and
classified in one process, one core (CPU time of this process, so other load on the
machine does not count). Rows: per source format, then all formats
together. The classifier keeps no cache between trials, so a replicated trial
costs the same as a new one. (The taxonomy compiles a few pattern variants per
field the first time a text needs them; that time counts in the first rows.)
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from celltrials.classify import Classifier, TrialText
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _texts() -> dict[str, list[TrialText]]:
    by_format: dict[str, list[TrialText]] = {}
    for path in sorted(DATA.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in (".csv", ".json", ".xml", ".xlsx") or "third_party" in path.name:
            continue
        for item in parse_file(path):
            if isinstance(item, ParsedRecord):
                by_format.setdefault(item.source_format, []).append(TrialText.from_record(item))
    return by_format


def _run(clf: Classifier, texts: list[TrialText], n: int) -> tuple[int, float, int]:
    reps = [texts[i % len(texts)] for i in range(n)]
    t0 = time.process_time()
    cell = 0
    for tt in reps:
        if clf.classify(tt).is_cell_therapy:
            cell += 1
    return n, time.process_time() - t0, cell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="trials to classify in the 'all formats' row")
    args = ap.parse_args()
    by_format = _texts()
    clf = Classifier()
    clf.classify(next(iter(by_format.values()))[0])  # compile/warm up
    print(f"celltrials classifier benchmark — taxonomy {clf.tax.version}, Python {platform.python_version()}, "
          f"{platform.machine()}, one core")
    print(f"{'input':<22}{'records':>9}{'trials':>10}{'seconds':>10}{'trials/s':>11}{'cell-therapy':>14}")
    rows = []
    for fmt, texts in sorted(by_format.items()):
        n = min(args.n, max(len(texts), 20_000))
        rows.append((fmt, len(texts), *_run(clf, texts, n)))
    everything = [t for ts in by_format.values() for t in ts]
    rows.append(("all formats", len(everything), *_run(clf, everything, args.n)))
    for name, n_real, n, secs, cell in rows:
        print(f"{name:<22}{n_real:>9,}{n:>10,}{secs:>10.2f}{n / secs:>11,.0f}{cell / n:>13.1%}")


if __name__ == "__main__":
    main()
