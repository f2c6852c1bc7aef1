"""The dashboard's read-only view of the store: a private snapshot copy.

DuckDB lets one process write a database file, and while it does no other
process may open the file, not even read-only; and any open connection (also
a read-only one) keeps writers out. A dashboard that kept the store open
would therefore stop ``celltrials ingest`` / ``classify`` / ``update`` from
running, and one that opened the store per request would fail whenever they
run. So the server never serves from the store itself:

1. It copies the store file (and its ``.wal``, if any) into a private
   snapshot folder while holding a read-only connection to the store, the
   shared lock that guarantees no writer is half-way through a transaction
   during the copy. A writer starting meanwhile waits (``Store.open`` retries
   a locked store for a few seconds), and the copy takes about as long as
   reading the file.
2. It serves every request from that copy, attached read-only to an
   in-memory DuckDB database that also holds the dashboard's precomputed
   tables (:mod:`celltrials.serve.queries`).
3. Every few seconds a request checks whether the store file changed (size,
   modification time, WAL). If it did and no writer holds the store, a
   background thread makes and loads a new snapshot and swaps it in; requests
   in flight finish on the old one. If a writer holds the store, the server
   keeps serving the last good snapshot and says on every page which process
   is writing and since when the snapshot dates.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from celltrials.errors import StoreError
from celltrials.store import LockHolder, lock_holder, typed_labels_view


def _signature(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    wal = path.with_name(path.name + ".wal")
    try:
        ws = wal.stat()
        wsig = (ws.st_mtime_ns, ws.st_size)
    except FileNotFoundError:
        wsig = (0, -1)
    return (st.st_mtime_ns, st.st_size, *wsig)


class Snapshot:
    """One loaded copy of the store: an in-memory DuckDB database with the
    copy attached read-only as ``store`` (and made the default catalog)."""

    def __init__(
        self,
        path: Path,
        number: int,
        taken_at: datetime,
        prepare: Callable[[duckdb.DuckDBPyConnection], dict[str, Any]],
    ) -> None:
        self.path = path
        self.number = number
        self.taken_at = taken_at
        self.con = duckdb.connect(":memory:")
        self._users = 0
        self._retired = False
        self._closed = False
        self._lock = threading.Lock()
        self._pool: dict[str, list[duckdb.DuckDBPyConnection]] = {}
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.info: dict[str, Any] = {}
        try:
            self.con.execute(f"ATTACH '{_sql_str(str(path))}' AS store (READ_ONLY)")
            self.con.execute("USE store")
            typed_labels_view(self.con)  # a store from before typed labels
            self.con.execute("SET enable_progress_bar = false")
            # one DuckDB worker per core: the long queries (facets, search) are
            # answered by the in-memory index now, and the look-ups left cost less
            # CPU with fewer workers (each query runs in its request's thread)
            threads = os.environ.get("CELLTRIALS_SERVE_THREADS") or str(os.cpu_count() or 1)
            self.con.execute(f"SET threads = {int(threads)}")
            self.info = prepare(self.con)
        except BaseException:
            self.con.close()
            raise

    def cursor(self, profile: str = "main") -> duckdb.DuckDBPyConnection:
        """A cursor (from a pool) with the store as default catalog and the
        snapshot's in-memory copies of hot views shadowing them (temp views
        named like the store's, ``info["shadows"][profile]``)."""
        with self._lock:
            pool = self._pool.setdefault(profile, [])
            if pool:
                return pool.pop()
        cur = self.con.cursor()
        cur.execute("USE store")
        typed_labels_view(cur)
        cur.execute("SET enable_progress_bar = false")
        for name, table in self.info.get("shadows", {}).get(profile, {}).items():
            cur.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {table}")
        return cur

    def cache_get(self, key: str) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        return None

    def cache_put(self, key: str, value: Any, size: int = 256) -> None:
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > size:
                self._cache.popitem(last=False)

    def give_back(self, cur: duckdb.DuckDBPyConnection, profile: str = "main") -> None:
        with self._lock:
            if not self._closed and len(self._pool.get(profile, [])) < 16:
                self._pool.setdefault(profile, []).append(cur)
                return
        with contextlib.suppress(duckdb.Error):
            cur.close()

    def acquire(self) -> bool:
        """Count one more user; False if the snapshot is already closed."""
        with self._lock:
            if self._closed:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            done = self._retired and self._users == 0 and not self._closed
            if done:
                self._closed = True
        if done:
            self._close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            done = self._users == 0 and not self._closed
            if done:
                self._closed = True
        if done:
            self._close()

    def _close(self) -> None:
        for pool in self._pool.values():
            for cur in pool:
                with contextlib.suppress(duckdb.Error):
                    cur.close()
        self._pool.clear()
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        for p in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(OSError):
                p.unlink()


def _sql_str(s: str) -> str:
    return s.replace("'", "''")


@dataclass
class SnapshotStatus:
    store: str
    snapshot_taken_at: str | None = None
    snapshot_number: int = 0
    writer: str | None = None
    writer_seen_at: str | None = None
    last_error: str | None = None
    refreshing: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "snapshot_taken_at": self.snapshot_taken_at,
            "snapshot_number": self.snapshot_number,
            "writer": self.writer,
            "writer_seen_at": self.writer_seen_at,
            "last_error": self.last_error,
            "refreshing": self.refreshing,
        }


class SnapshotManager:
    """Keeps a current :class:`Snapshot` of ``store_path`` (see module doc)."""

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        prepare: Callable[[duckdb.DuckDBPyConnection], dict[str, Any]],
        *,
        snapshot_dir: str | os.PathLike[str] | None = None,
        check_every: float = 2.0,
    ) -> None:
        self.store_path = Path(store_path).resolve()
        if not self.store_path.is_file():
            raise StoreError(
                f"no store at {store_path}",
                hint="Run `celltrials ingest PATH` first, or pass --db.",
            )
        self._own_dir = snapshot_dir is None
        self.dir = (
            Path(snapshot_dir)
            if snapshot_dir
            else Path(tempfile.mkdtemp(prefix="celltrials-serve-"))
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare = prepare
        self.check_every = check_every
        self.status = SnapshotStatus(store=str(self.store_path))
        self._current: Snapshot | None = None
        self._sig: tuple[int, int, int, int] | None = None
        self._last_check = 0.0
        self._number = 0
        self._refresh_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._warm: threading.Thread | None = None
        self._closed = False
        #: called (in a background thread) with each new snapshot once it serves
        self.on_swap: Callable[[Snapshot], None] | None = None

    # ------------------------------------------------------------- public
    def start(self, wait: float = 30.0) -> None:
        """Take the first snapshot, waiting up to ``wait`` seconds for a writer to finish."""
        deadline = time.monotonic() + wait
        while True:
            self.refresh()
            if self._current is not None:
                return
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"cannot read the store {self.store_path}: "
                    + (
                        f"it is being written by {self.status.writer}"
                        if self.status.writer
                        else (self.status.last_error or "unknown error")
                    ),
                    hint="Start the dashboard again when that process has finished.",
                )
            time.sleep(0.5)

    def current(self) -> Snapshot:
        """The snapshot to serve; starts a background refresh when the store changed."""
        now = time.monotonic()
        if now - self._last_check >= self.check_every and not self._closed:
            self._last_check = now
            try:
                changed = _signature(self.store_path) != self._sig or self.status.writer is not None
            except OSError:
                changed = False
            if changed and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(
                    target=self.refresh, name="celltrials-snapshot", daemon=True
                )
                self._thread.start()
        snap = self._current
        if snap is None:
            raise StoreError(
                "no snapshot of the store is loaded yet", hint="Wait for the writer to finish."
            )
        return snap

    @contextlib.contextmanager
    def use(self) -> Iterator[tuple[Snapshot, duckdb.DuckDBPyConnection]]:
        """The current snapshot and a cursor on it for one request."""
        while True:
            snap = self.current()
            if snap.acquire():
                break
        try:
            cur = snap.cursor()
            try:
                yield snap, cur
            finally:
                snap.give_back(cur)
        finally:
            snap.release()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for a running background refresh (tests)."""
        t = self._thread
        if t is not None:
            t.join(timeout)

    def wait_warm(self, timeout: float = 120.0) -> None:
        """Wait until the newest snapshot's ``on_swap`` (warming) is done."""
        t = self._warm
        if t is not None:
            t.join(timeout)

    def close(self) -> None:
        self._closed = True
        self.wait_idle()
        snap, self._current = self._current, None
        if snap is not None:
            snap.retire()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ refresh
    def refresh(self) -> bool:
        """Copy and load the store if it changed and no writer holds it.
        Returns whether a new snapshot was swapped in."""
        if not self._refresh_lock.acquire(blocking=False):
            return False
        self.status.refreshing = True
        try:
            return self._refresh()
        finally:
            self.status.refreshing = False
            self._refresh_lock.release()

    def _refresh(self) -> bool:
        try:
            sig = _signature(self.store_path)
        except OSError as exc:
            self.status.last_error = f"cannot read {self.store_path}: {exc.strerror}"
            return False
        if sig == self._sig and self._current is not None:
            return False
        self._number += 1
        target = self.dir / f"snapshot-{os.getpid()}-{self._number}.duckdb"
        try:
            guard = duckdb.connect(str(self.store_path), read_only=True)
        except duckdb.Error as exc:
            holder = lock_holder(str(exc))
            if holder is not None:
                self.status.writer = holder.describe()
                self.status.writer_seen_at = _now_iso()
            else:
                self.status.last_error = f"cannot open the store: {exc}"
            return False
        try:
            sig = _signature(self.store_path)  # stable while we hold the shared lock
            shutil.copyfile(self.store_path, target)
            wal = self.store_path.with_name(self.store_path.name + ".wal")
            if wal.exists():
                shutil.copyfile(wal, target.with_name(target.name + ".wal"))
        finally:
            guard.close()
        taken = datetime.now(UTC)
        try:
            snap = Snapshot(target, self._number, taken, self.prepare)
        except (duckdb.Error, StoreError) as exc:
            self.status.last_error = f"cannot load the snapshot: {exc}"
            with contextlib.suppress(OSError):
                target.unlink()
            return False
        old, self._current = self._current, snap
        self._sig = sig
        self.status.writer = None
        self.status.writer_seen_at = None
        self.status.last_error = None
        self.status.snapshot_taken_at = taken.replace(microsecond=0).isoformat()
        self.status.snapshot_number = self._number
        self.status.info = snap.info
        if old is not None:
            old.retire()
        if self.on_swap is not None:
            self._warm = threading.Thread(
                target=self.on_swap, args=(snap,), name="celltrials-warm", daemon=True
            )
            self._warm.start()
        return True


def _now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


__all__ = ["LockHolder", "Snapshot", "SnapshotManager", "SnapshotStatus", "lock_holder"]
