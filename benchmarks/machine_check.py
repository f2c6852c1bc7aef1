"""How much parallel work this machine does right now, for reading the benchmarks.

A virtual machine's "2 cores" are not always two cores' worth of work: the
host may be running other guests. :func:`parallel_capacity` runs the same
busy loop in one process, then in ``k`` processes at once, for the same wall
time, and returns the work done by ``k`` relative to one (``k`` would be
``k`` full cores). Used by ``classify.py`` and ``scale.py``, which print it at
their start and end: a wall-time result on 2 cores means little without it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any


def _spin(start: Any, seconds: float, out: Any) -> None:
    start.wait()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        n += 1
    out.put(n)


def _work(k: int, seconds: float) -> int:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_spin, args=(start, seconds, out)) for _ in range(k)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # (all started and waiting)
    start.set()
    total = sum(int(out.get()) for _ in procs)
    for p in procs:
        p.join()
    return total


def parallel_capacity(k: int | None = None, seconds: float = 2.0) -> float:
    """Work done by ``k`` busy processes at once (default: one per visible core),
    relative to one process alone, over the same wall time."""
    k = k or len(os.sched_getaffinity(0))
    one = _work(1, seconds)
    return _work(k, seconds) / one if one else 0.0


def describe(k: int | None = None) -> str:
    k = k or len(os.sched_getaffinity(0))
    cap = parallel_capacity(k)
    return (
        f"parallel capacity: {k} busy processes do {cap:.2f}x the work of one "
        f"({k:.2f}x = {k} full cores)"
    )


if __name__ == "__main__":
    print(describe())
