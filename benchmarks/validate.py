"""Cost of validating records (:mod:`celltrials.sources.validate`: the API v2
type check, enrollment bounds, TrialID shape, the per-record fault guard)
on every record of ../shared/data, per format.

Each file is parsed twice per round: as shipped, and with the validators
replaced by pass-throughs; the difference is what validation costs. Best of
``--rounds``.

    taskset -c 0 .venv/bin/python benchmarks/validate.py
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celltrials.models import ParsedRecord
from celltrials.sources import ctgov_csv, ctgov_json, ictrp, parse_file, sniff

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _guard(parse: Any, **_: Any) -> Any:
    return parse()


_OFF: dict[str, Any] = {
    "check_study_lists": lambda study, **_: None,
    "check_record": lambda rec: rec,
    "check_trial_id": lambda trial_id, **_: None,
    "guard": _guard,
}


@contextlib.contextmanager
def validation_off() -> Iterator[None]:
    saved = []
    for mod in (ctgov_json, ctgov_csv, ictrp):
        for name, fn in _OFF.items():
            if hasattr(mod, name):
                saved.append((mod, name, getattr(mod, name)))
                setattr(mod, name, fn)
    try:
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


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
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    files = sorted(
        p
        for p in DATA.rglob("*")
        if p.is_file()
        and p.suffix in {".json", ".csv", ".xml", ".xlsx"}
        and not p.name.startswith("third_party")
    )
    _parse_all(files)  # warm-up: regex compilation, caches, imports
    best_on: dict[str, tuple[int, float]] = {}
    best_off: dict[str, tuple[int, float]] = {}
    for _ in range(args.rounds):
        on = _parse_all(files)
        with validation_off():
            off = _parse_all(files)
        for fmt, (n, s) in on.items():
            if fmt not in best_on or s < best_on[fmt][1]:
                best_on[fmt] = (n, s)
        for fmt, (n, s) in off.items():
            if fmt not in best_off or s < best_off[fmt][1]:
                best_off[fmt] = (n, s)
    print(
        f"{'format':<18}{'records':>9}{'parse s':>10}{'no-check s':>12}{'check µs/rec':>14}{'share':>8}"
    )
    for fmt in sorted(best_on):
        n, s_on = best_on[fmt]
        s_off = best_off[fmt][1]
        cost = max(0.0, s_on - s_off)
        print(
            f"{fmt:<18}{n:>9,}{s_on:>10.2f}{s_off:>12.2f}{cost / max(n, 1) * 1e6:>14.0f}{cost / s_on:>8.0%}"
        )


if __name__ == "__main__":
    main()
