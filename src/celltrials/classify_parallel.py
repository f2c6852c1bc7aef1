"""Classifying many trials on several cores.

Classifying a trial is a pure function of its text and the taxonomy
(:meth:`celltrials.classify.Classifier.classify`: :class:`TrialText` in,
:class:`TrialLabels` with evidence out; no store, no state kept between
trials). :func:`classify_many` runs it over a sequence of trials, in this
process (``jobs=1``) or in worker processes (``concurrent.futures``), in
chunks, and yields the labels **in input order** — the output is the same
whatever the number of workers.

Workers are started with the ``forkserver`` method where the platform has it
(``spawn`` elsewhere), not ``fork``: the calling process may hold DuckDB's
threads, and forking a threaded process is unsafe (Python 3.12+ warns). Each
worker loads the taxonomy once (the packaged one, or the caller's from its
parsed YAML); the fork server has the packaged one loaded and warmed up, so its
workers start with it. Trials travel as plain tuples of strings and labels as
plain tuples (evidence included), each chunk as one ``marshal`` blob — much
cheaper to encode and decode than pickled objects, which matters because the
calling process decodes every trial while the workers classify. A bounded
number of chunks is in flight, so memory stays flat on large stores.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import marshal
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any, TypeVar

from celltrials.classify import Classifier, Evidence, Segment, TrialLabels, TrialText
from celltrials.procpool import available_cores, check_jobs, map_ordered
from celltrials.runtime import gc_paused
from celltrials.taxonomy.loader import Taxonomy, build_taxonomy

#: trials per task sent to a worker
CHUNK = 250
#: what the workers' fork server imports (see :func:`map_chunks`)
PRELOAD = ("celltrials._classify_preload",)
#: with ``jobs=None``, one worker per this many trials at most (starting a worker
#: costs about a second: small stores are classified in this process)
TRIALS_PER_WORKER = 4000

_Packed = tuple[str, tuple[tuple[str, str, str, bool], ...]]
_P = TypeVar("_P")
_R = TypeVar("_R")


def plan_jobs(n_trials: int, jobs: int | None) -> int:
    """Worker processes for ``n_trials``: ``jobs`` as given (1 = this process), or with
    None all cores, one per :data:`TRIALS_PER_WORKER` trials."""
    check_jobs(jobs)
    if jobs is not None:
        return max(1, min(jobs, -(-n_trials // CHUNK)))
    return max(1, min(available_cores(), n_trials // TRIALS_PER_WORKER))


def _pack(tt: TrialText) -> _Packed:
    return tt.trial_id, tuple((s.source, s.role, s.text, s.procedure) for s in tt.segments)


def _unpack(p: _Packed) -> TrialText:
    return TrialText(p[0], [Segment(*s) for s in p[1]])


_new_tuple = tuple.__new__
_LABEL_FIELDS = tuple(f.name for f in dataclasses.fields(TrialLabels))
_EVIDENCE_AT = _LABEL_FIELDS.index("evidence")


def _encode(labels: TrialLabels) -> tuple[Any, ...]:
    """``labels`` as a tuple of plain values (evidence as tuples): marshal-able."""
    vals = [getattr(labels, f) for f in _LABEL_FIELDS]
    vals[_EVIDENCE_AT] = tuple(tuple(e) for e in vals[_EVIDENCE_AT])
    return tuple(vals)


def _decode(vals: tuple[Any, ...]) -> TrialLabels:
    args = list(vals)
    # (tuple.__new__: Evidence._make is a Python method, ~3x slower; this process
    # decodes every label while the workers classify)
    args[_EVIDENCE_AT] = [_new_tuple(Evidence, e) for e in args[_EVIDENCE_AT]]
    return TrialLabels(*args)


_WORKER: Classifier | None = None
_EMPTY = marshal.dumps([])  # an empty chunk: the trials are used up


def _init_worker(raw: Any, source: str | None) -> None:
    global _WORKER
    _WORKER = Classifier(build_taxonomy(raw, source or "<taxonomy>") if raw is not None else None)
    warm_up(_WORKER)
    gc.freeze()  # the taxonomy lives as long as the worker: keep it out of collections


def warm_up(clf: Classifier) -> None:
    """Classify one small trial, so that what the engine builds on first use (its
    index) is built now."""
    clf.classify(TrialText("warm-up", [Segment("title", "title", "CD19 CAR-T cells")]))


def worker_classifier() -> Classifier:
    """The classifier of this worker process, for the functions :func:`map_chunks` runs."""
    if _WORKER is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker not initialised")
    return _WORKER


def _classify_chunk(blob: bytes) -> bytes:
    """One chunk: marshalled packed trials in, marshalled encoded labels out."""
    clf = worker_classifier()
    with gc_paused():  # (classifying makes no reference cycles: see gc_paused)
        return marshal.dumps([_encode(clf.classify(_unpack(p))) for p in marshal.loads(blob)])


def map_chunks(
    fn: Callable[[_P], _R],
    payloads: Iterable[_P],
    workers: int,
    taxonomy: Taxonomy | None = None,
    in_flight: int = 4,
    preload: Sequence[str] = (),
) -> Iterator[_R]:
    """``fn`` of each payload, in order, computed by ``workers`` processes that each
    hold a classifier of ``taxonomy`` (:func:`worker_classifier`). ``fn`` must be a
    module-level function; ``payloads`` is read lazily, ``in_flight`` per worker
    ahead of the results, so memory stays bounded; ``preload``: modules the fork
    server imports (those ``fn`` needs)."""
    raw, source = (None, None) if taxonomy is None else (taxonomy.raw, taxonomy.path)
    yield from map_ordered(
        fn,
        payloads,
        workers,
        initializer=_init_worker,
        initargs=(raw, source),
        in_flight=in_flight,
        preload=(*PRELOAD, *preload),
    )


def classify_many(
    texts: Iterable[TrialText],
    jobs: int | None = None,
    taxonomy: Taxonomy | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = CHUNK,
    total: int | None = None,
) -> Iterator[TrialLabels]:
    """Labels of ``texts``, in order, classified by ``jobs`` processes (see :func:`plan_jobs`).

    ``texts`` may be an iterator (read lazily, a few chunks ahead of the
    workers); then ``total``, the number of trials it yields at most, sizes
    the pool and the progress. ``progress(done, total)`` is called after each chunk."""
    if total is None:
        texts = texts if isinstance(texts, Sized) else list(texts)
        total = len(texts)
    n = total
    workers = plan_jobs(n, jobs)
    if workers == 1:
        clf = Classifier(taxonomy)
        texts_left = iter(texts)
        done = 0
        # chunk by chunk with the cyclic GC paused (as in a worker); the caller's
        # code between chunks runs with the GC as it was
        while chunk := list(itertools.islice(texts_left, chunk_size)):
            with gc_paused():
                labels = [clf.classify(tt) for tt in chunk]
            yield from labels
            done += len(labels)
            if progress is not None:
                progress(done, n)
        return
    it = iter(texts)
    blobs = iter(
        lambda: marshal.dumps([_pack(t) for t in itertools.islice(it, chunk_size)]), _EMPTY
    )
    done = 0
    for blob in map_chunks(_classify_chunk, blobs, workers, taxonomy):
        # (as above: the decoded labels hold no cycles; the collections their
        # allocations set off took half of this process's CPU in a 30,000-trial run)
        with gc_paused():
            labels = [_decode(v) for v in marshal.loads(blob)]
        yield from labels
        done += len(labels)
        if progress is not None:
            progress(done, n)
