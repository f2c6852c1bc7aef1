"""Worker processes for the bulk steps (classify, ingest): one pool pattern.

Workers are started with the ``forkserver`` method where the platform has it
(``spawn`` elsewhere), not ``fork``: the calling process may hold DuckDB's
threads, and forking a threaded process is unsafe (Python 3.12+ warns). The
fork server imports the ``preload`` modules once, so each worker starts with
them. :func:`map_ordered` runs a module-level function over payloads read
lazily, a bounded number in flight, and yields the results **in input order**;
:func:`pool` and :func:`result` serve a caller that submits its own tasks
(ingest's files parsed ahead, :class:`celltrials.ingest_parallel.FilesAhead`).

A worker ends itself when the process that started the pool is gone (killed
with ``kill -9``, say): its task queue would never close (each worker holds
both ends), nor would the fork server, which lives while a worker holds its
"alive" pipe — without this watch they would wait forever.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import pyarrow as pa

from celltrials.errors import ConfigError, WorkerError

_P = TypeVar("_P")
_R = TypeVar("_R")


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def check_jobs(jobs: int | None) -> None:
    """``jobs`` as a caller gave it: None (all cores) or at least 1."""
    if jobs is not None and jobs < 1:
        raise ConfigError(
            f"--jobs must be at least 1, got {jobs}",
            hint="Use --jobs 1 for one core, or leave it out for all cores.",
        )


def context(preload: Sequence[str] = ()) -> Any:
    """The multiprocessing context workers start from (see module docstring).
    Only the first pool of a process starts the fork server: the preloads of
    later pools are imported by each worker on its first task."""
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(list(preload))
    return ctx


def start_fork_server(preload: Sequence[str] = ()) -> None:
    """Start the fork server now (where workers start from it): it imports its
    ``preload`` modules while this process goes on, instead of the first pool
    waiting for them (about half a second of one core)."""
    ctx = context(preload)
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver  # noqa: PLC0415 - Unix only

        forkserver.ensure_running()


def _exit_with(pid: int) -> None:
    """End this process as soon as process ``pid`` has ended."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux 5.3+, or already gone: poll
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pragma: no cover - alive, another user's
                pass
            time.sleep(1)
    select.select([fd], [], [])  # readable once the process has ended
    os._exit(1)


def _start_worker(
    parent: int, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]
) -> None:
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def executor(
    workers: int,
    *,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    preload: Sequence[str] = (),
) -> ProcessPoolExecutor:
    """``workers`` processes started as the module docstring says (each ends
    itself when this process is gone); the caller shuts it down."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context(preload),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


@contextlib.contextmanager
def pool(
    workers: int,
    *,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    preload: Sequence[str] = (),
) -> Iterator[ProcessPoolExecutor]:
    """:func:`executor` for callers that pick their own order of tasks
    (:func:`map_ordered` is the common case). Shut down on leaving."""
    with executor(workers, initializer=initializer, initargs=initargs, preload=preload) as ex:
        yield ex


def result(future: Future[_R], workers: int, fn: Callable[..., object]) -> _R:
    """A task's result; a worker that died (killed, out of memory, could not
    start) raises :class:`WorkerError` naming ``fn``."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise WorkerError(
            f"a worker process ended abruptly ({workers} workers running "
            f"{getattr(fn, '__qualname__', fn)}): killed, out of memory, or "
            "it could not start"
        ) from exc


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
    with pool(workers, initializer=initializer, initargs=initargs, preload=preload) as executor:
        pending: deque[Future[_R]] = deque()
        it = iter(payloads)

        def submit() -> None:
            for p in itertools.islice(it, 1):
                pending.append(executor.submit(fn, p))

        try:
            for _ in range(in_flight * workers):
                submit()
            while pending:
                done = result(pending.popleft(), workers, fn)
                submit()
                yield done
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


__all__ = [
    "available_cores",
    "check_jobs",
    "context",
    "executor",
    "from_ipc",
    "map_ordered",
    "pool",
    "result",
    "to_ipc",
]
