"""Worker processes for the bulk steps (classify, ingest): one pool pattern.

Workers are started with the ``forkserver`` method where the platform has it
(``spawn`` elsewhere), not ``fork``: the calling process may hold DuckDB's
threads, and forking a threaded process is unsafe (Python 3.12+ warns). The
fork server imports the ``preload`` modules once, so each worker starts with
them. :func:`map_ordered` runs a module-level function over payloads read
lazily, a bounded number in flight, and yields the results **in input order**.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

import pyarrow as pa

_P = TypeVar("_P")
_R = TypeVar("_R")


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def context(preload: Sequence[str] = ()) -> Any:
    """The multiprocessing context workers start from (see module docstring).
    Only the first pool of a process starts the fork server: the preloads of
    later pools are imported by each worker on its first task."""
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(list(preload))
    return ctx


def map_ordered(
    fn: Callable[[_P], _R],
    payloads: Iterable[_P],
    workers: int,
    *,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    in_flight: int = 4,
    preload: Sequence[str] = (),
) -> Generator[_R, None, None]:
    """``fn`` of each payload, in order, computed by ``workers`` processes.
    ``fn`` must be a module-level function; ``payloads`` is read lazily,
    ``in_flight`` per worker ahead of the results, so memory stays bounded.
    Closing the iterator early cancels the payloads not yet started."""
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context(preload),
        initializer=initializer,
        initargs=initargs,
    ) as pool:
        pending: deque[Future[_R]] = deque()
        it = iter(payloads)

        def submit() -> None:
            for p in itertools.islice(it, 1):
                pending.append(pool.submit(fn, p))

        try:
            for _ in range(in_flight * workers):
                submit()
            while pending:
                result = pending.popleft().result()
                submit()
                yield result
        finally:
            for f in pending:
                f.cancel()


def to_ipc(table: pa.Table) -> bytes:
    """``table`` as an Arrow IPC stream: what travels to and from a worker."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def from_ipc(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(blob).read_all()


__all__ = ["available_cores", "context", "from_ipc", "map_ordered", "to_ipc"]
