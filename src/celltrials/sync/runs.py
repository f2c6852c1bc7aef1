"""Sync runs: saved queries, checkpoints (one transaction per page with its
next page token), resume, incremental update and status.

Schema step 3 (``sync``) adds ``sync_queries`` and ``sync_runs``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from celltrials.errors import ConfigError, FetchError, PageError, RecordError
from celltrials.models import ParsedRecord
from celltrials.progress import Progress, ProgressEvent
from celltrials.sources.ctgov_json import FORMAT, parse_study
from celltrials.store import Store
from celltrials.sync.client import CtgovClient, _page_label, _TokenRefused
from celltrials.sync.presets import Preset, get_preset
from celltrials.sync.queries import (
    DEFAULT_BASE_URL,
    MAX_URL_BYTES,
    PAGE_SIZE,
    Query,
    and_advanced,
    normalize_base_url,
    request_url,
    since_filter,
)

_NCT = re.compile(r"^NCT\d{8}$")

# ------------------------------------------------------------------ schema v3
# the store owns the schema: sync_queries and sync_runs are its migration 3 (SCHEMA_SYNC)


# -------------------------------------------------------------- sync results
@dataclass
class QueryRun:
    query_id: str
    name: str
    kind: str  # "full" | "update"
    run_id: int
    params: dict[str, str]
    base_url: str
    status: str = "running"  # "running" | "complete" | "interrupted"
    resumed: bool = False
    resumed_from_page: int = 0
    pages: int = 0  # pages fetched in this call
    pages_done: int = 0  # pages committed in the run overall
    studies_seen: int = 0
    n_new: int = 0
    total_count: int | None = None
    next_page_token: str | None = None
    page_size: int = PAGE_SIZE  # a resumed run keeps the page size it began with
    restarted: bool = False  # the saved page token was refused; the run began again at page 1


@dataclass
class SyncResult:
    runs: list[QueryRun] = field(default_factory=list)
    studies: list[dict[str, Any]] = field(default_factory=list)  # --id refreshes

    @property
    def n_new(self) -> int:
        return sum(r.n_new for r in self.runs) + sum(1 for s in self.studies if s["new"])

    @property
    def complete(self) -> bool:
        return all(r.status == "complete" for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "n_new": self.n_new,
            "pages": sum(r.pages for r in self.runs),
            "runs": [asdict(r) for r in self.runs],
            "studies": list(self.studies),
        }


# -------------------------------------------------------------------- syncing
def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _save_query(store: Store, query: Query, base_url: str) -> str:
    qid = query.query_id(base_url)
    store.con.execute(
        "INSERT INTO sync_queries (query_id, name, params, base_url, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [qid, query.name, orjson.dumps(query.as_params()).decode(), base_url, _now()],
    )
    return qid


def _open_run(
    store: Store,
    qid: str,
    kind: str,
    params: dict[str, str] | None,
    name: str,
    base_url: str,
    page_size: int,
) -> QueryRun:
    """The unfinished run of this query and kind to resume, or a new one."""
    row = store.con.execute(
        "SELECT run_id, params, next_page_token, pages_done, studies_seen, n_new, total_count, page_size "
        "FROM sync_runs "
        "WHERE query_id = ? AND kind = ? AND status <> 'complete' ORDER BY run_id DESC LIMIT 1",
        [qid, kind],
    ).fetchone()
    if row is not None:
        run = QueryRun(
            qid,
            name,
            kind,
            int(row[0]),
            orjson.loads(row[1]),
            base_url,
            resumed=True,
            pages_done=int(row[3] or 0),
            studies_seen=int(row[4] or 0),
            total_count=row[6],
            next_page_token=row[2],
            page_size=int(row[7] or page_size),
        )
        run.resumed_from_page = run.pages_done + 1
        with store.transaction():
            store.con.execute(
                "UPDATE sync_runs SET status = 'running', updated_at = ?, error = NULL WHERE run_id = ?",
                [_now(), run.run_id],
            )
        return run
    assert params is not None
    with store.transaction():
        r = store.con.execute("SELECT nextval('sync_run_seq')").fetchone()
        assert r is not None
        run_id = int(r[0])
        now = _now()
        store.con.execute(
            "INSERT INTO sync_runs (run_id, query_id, kind, params, started_at, updated_at, status, "
            "next_page_token, pages_done, studies_seen, n_new, page_size) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running', NULL, 0, 0, 0, ?)",
            [run_id, qid, kind, orjson.dumps(params).decode(), now, now, page_size],
        )
    return QueryRun(qid, name, kind, run_id, params, base_url, page_size=page_size)


def _parse_page(studies: list[Any], label: str) -> list[ParsedRecord]:
    records = []
    for pos, study in enumerate(studies, start=1):
        try:
            records.append(parse_study(study, position=pos, source_format=FORMAT))
        except RecordError as exc:
            nct = None
            if isinstance(study, dict):
                nct = ((study.get("protocolSection") or {}).get("identificationModule") or {}).get(
                    "nctId"
                )
            who = f"study {pos} of {len(studies)}" + (f" ({nct})" if nct else "")
            raise PageError(
                f"{label}: {who}: {exc.reason}",
                hint="Nothing from this page was stored (earlier pages were). The study is malformed at the "
                "source; rerun the same command to resume from this page once it is fixed.",
            ) from None
    return records


def _run_query(store: Store, client: CtgovClient, run: QueryRun, progress: Progress | None) -> None:
    page_size = run.page_size
    token = run.next_page_token
    page = run.pages_done + 1
    if progress:
        progress(
            ProgressEvent(
                "sync",
                "query_start",
                run.name,
                index=page,
                done=run.studies_seen,
                total=run.total_count,
                message=f"resuming at page {page}" if run.resumed else "",
            )
        )
    try:
        while True:
            label = f"{run.name}: {_page_label(page, token)}"
            try:
                body = client.studies_page(
                    run.params, token, page=page, page_size=page_size, base_url=run.base_url
                )
            except _TokenRefused:
                if not run.resumed or run.pages:
                    raise
                # a saved token from an earlier session expired: start over (no gaps;
                # the store's content-hash dedup keeps already stored studies once)
                run.restarted, token, page, run.pages_done, run.studies_seen = True, None, 1, 0, 0
                if progress:
                    progress(
                        ProgressEvent(
                            "sync",
                            "restart",
                            run.name,
                            message="saved page token refused; starting again",
                        )
                    )
                continue
            except PageError as exc:
                raise PageError(f"{run.name}: {exc.message}", hint=exc.hint) from None
            records = _parse_page(body["studies"], label)
            next_token = body.get("nextPageToken") or None
            total = body.get("totalCount")
            if isinstance(total, int):
                run.total_count = total
            source = request_url(run.base_url, run.params, token, page_size) + f"#page={page}"
            with store.transaction():
                ingest_id = store.begin_ingest(source, "ctgov_api")
                added = store.add_records(records, source=source, ingest_id=ingest_id)
                store.finish_ingest(ingest_id, added, 0)
                run.pages += 1
                run.pages_done += 1
                run.studies_seen += len(records)
                run.n_new += added.n_new
                run.next_page_token = next_token
                now = _now()
                done = next_token is None
                store.con.execute(
                    "UPDATE sync_runs SET next_page_token = ?, pages_done = ?, studies_seen = ?, "
                    "n_new = n_new + ?, total_count = ?, updated_at = ?, status = ?, finished_at = ? "
                    "WHERE run_id = ?",
                    [
                        next_token,
                        run.pages_done,
                        run.studies_seen,
                        added.n_new,
                        run.total_count,
                        now,
                        "complete" if done else "running",
                        now if done else None,
                        run.run_id,
                    ],
                )
                if done:
                    started = store.con.execute(
                        "SELECT started_at FROM sync_runs WHERE run_id = ?", [run.run_id]
                    ).fetchone()
                    assert started is not None
                    store.con.execute(
                        "UPDATE sync_queries SET last_complete_sync = ?, last_complete_started = ? WHERE query_id = ?",
                        [now, started[0].date(), run.query_id],
                    )
            if progress:
                progress(
                    ProgressEvent(
                        "sync",
                        "page",
                        run.name,
                        index=page,
                        n=len(records),
                        done=run.studies_seen,
                        total=run.total_count,
                    )
                )
            if done:
                run.status = "complete"
                break
            token = next_token
            page += 1
    except (Exception, KeyboardInterrupt) as exc:
        run.status = "interrupted"
        msg = exc.message if isinstance(exc, FetchError) else type(exc).__name__
        try:
            with store.transaction():
                store.con.execute(
                    "UPDATE sync_runs SET status = 'interrupted', error = ?, updated_at = ? WHERE run_id = ?",
                    [msg, _now(), run.run_id],
                )
        except duckdb.Error:
            pass
        raise
    if progress:
        progress(
            ProgressEvent(
                "sync",
                "query_done",
                run.name,
                index=page,
                done=run.studies_seen,
                total=run.total_count,
            )
        )


def _queries(query: Query | Preset | Sequence[Query]) -> list[Query]:
    if isinstance(query, Query):
        return [query]
    if isinstance(query, Preset):
        return query.as_queries()
    return list(query)


def fetch(
    store: Store,
    query: Query | Preset | Sequence[Query],
    *,
    client: CtgovClient | None = None,
    base_url: str | None = None,
    page_size: int = PAGE_SIZE,
    progress: Progress | None = None,
) -> SyncResult:
    """Download every study matching ``query`` (one or several) into ``store``.

    Each query is saved in ``sync_queries``; an unfinished run of the same
    query (same params and base URL) resumes from its last committed page.
    """
    if not 1 <= page_size <= PAGE_SIZE:
        raise ConfigError(f"page size {page_size} is not between 1 and {PAGE_SIZE}")
    result = SyncResult()
    with _client(client, base_url or DEFAULT_BASE_URL) as cl:
        url = normalize_base_url(base_url) if base_url else cl.base_url
        for q in _queries(query):
            _check_url(url, q.as_params(), page_size)
            with store.transaction():
                qid = _save_query(store, q, url)
            run = _open_run(store, qid, "full", q.as_params(), q.name, url, page_size)
            result.runs.append(run)
            _run_query(store, cl, run, progress)
    return result


@contextlib.contextmanager
def _client(client: CtgovClient | None, base_url: str | None = None) -> Iterator[CtgovClient]:
    """The caller's client, or a new one that is closed afterwards."""
    if client is not None:
        yield client
        return
    own = CtgovClient(base_url) if base_url else CtgovClient()
    try:
        yield own
    finally:
        own.close()


def fetch_preset(
    store: Store,
    name: str,
    *,
    client: CtgovClient | None = None,
    base_url: str | None = None,
    page_size: int = PAGE_SIZE,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """:func:`fetch` of a maintained preset (e.g. ``"cell-therapy"``), as a JSON-ready dict
    with the preset's name and version added."""
    preset = get_preset(name)
    result = fetch(
        store, preset, client=client, base_url=base_url, page_size=page_size, progress=progress
    )
    return {"preset": preset.name, "preset_version": preset.version, **result.to_dict()}


def _check_url(base_url: str, params: Mapping[str, str], page_size: int) -> None:
    n = len(request_url(base_url, params, "x" * 64, page_size).encode())
    if n > MAX_URL_BYTES:
        raise ConfigError(
            f"the request URL would be {n} bytes (limit {MAX_URL_BYTES})",
            hint="Split the query into several smaller ones.",
        )


def update(
    store: Store,
    *,
    client: CtgovClient | None = None,
    page_size: int = PAGE_SIZE,
    progress: Progress | None = None,
) -> SyncResult:
    """Rerun every saved query for studies updated since its last complete sync.

    Adds ``AREA[LastUpdatePostDate]RANGE[<start date of the last complete
    sync>,MAX]`` to ``filter.advanced``; new record versions are kept next to
    the old ones. A query never synced to the end is resumed instead. An
    interrupted update resumes with its own date filter.
    """
    rows = store.con.execute(
        "SELECT query_id, name, params, base_url, last_complete_started FROM sync_queries ORDER BY created_at, query_id"
    ).fetchall()
    result = SyncResult()
    with _client(client) as cl:
        for qid, name, params_json, base_url, last_started in rows:
            params = orjson.loads(params_json)
            if last_started is None:
                run = _open_run(store, qid, "full", params, name, base_url, page_size)
            else:
                pending = store.con.execute(
                    "SELECT 1 FROM sync_runs WHERE query_id = ? AND kind = 'update' AND status <> 'complete'",
                    [qid],
                ).fetchone()
                eff = dict(params)
                eff["filter.advanced"] = and_advanced(
                    params.get("filter.advanced"), since_filter(last_started)
                )
                run = _open_run(
                    store, qid, "update", None if pending else eff, name, base_url, page_size
                )
            result.runs.append(run)
            _run_query(store, cl, run, progress)
    return result


def fetch_ids(
    store: Store,
    ids: Iterable[str],
    *,
    client: CtgovClient | None = None,
    base_url: str | None = None,
    progress: Progress | None = None,
) -> SyncResult:
    """Refresh single studies by NCT id (``/studies/{nctId}``); all are fetched
    first, then committed in one transaction."""
    wanted = []
    for raw in ids:
        for part in str(raw).replace(",", " ").split():
            nct = part.strip().upper()
            if not _NCT.match(nct):
                raise ConfigError(
                    f"{part!r} is not an NCT number", hint="Write e.g. --id NCT01234567."
                )
            if nct not in wanted:
                wanted.append(nct)
    if not wanted:
        raise ConfigError("no NCT ids given")
    result = SyncResult()
    with _client(client, base_url or DEFAULT_BASE_URL) as cl:
        url = normalize_base_url(base_url) if base_url else cl.base_url
        records = []
        for i, nct in enumerate(wanted, start=1):
            study = cl.study(nct, base_url=url)
            try:
                rec = parse_study(study, position=i)
            except RecordError as exc:
                raise PageError(f"{nct}: {exc.reason}") from None
            if rec.record_id != nct:
                raise PageError(f"{nct}: the server answered with study {rec.record_id}")
            records.append(rec)
            if progress:
                progress(ProgressEvent("sync", "study", nct, n=1, done=i, total=len(wanted)))
        with store.transaction():
            for rec in records:
                source = f"{url}/studies/{rec.record_id}"
                ingest_id = store.begin_ingest(source, "ctgov_api")
                added = store.add_records([rec], source=source, ingest_id=ingest_id)
                store.finish_ingest(ingest_id, added, 0)
                result.studies.append(
                    {
                        "nct_id": rec.record_id,
                        "new": bool(added.n_new),
                        "last_update": rec.last_update.isoformat() if rec.last_update else None,
                    }
                )
    return result


def sync_status(store: Store) -> list[dict[str, Any]]:
    """One dict per saved query: its last complete sync and its latest run."""
    rows = store.con.execute("""
        SELECT q.query_id, q.name, q.params, q.base_url, q.created_at, q.last_complete_sync,
               q.last_complete_started,
               r.run_id, r.kind, r.status, r.started_at, r.finished_at, r.pages_done, r.studies_seen,
               r.n_new, r.total_count, r.next_page_token, r.error,
               (SELECT count(*) FROM sync_runs x WHERE x.query_id = q.query_id) AS n_runs
        FROM sync_queries q
        LEFT JOIN (SELECT *, row_number() OVER (PARTITION BY query_id ORDER BY run_id DESC) AS rn FROM sync_runs) r
               ON r.query_id = q.query_id AND r.rn = 1
        ORDER BY q.created_at, q.query_id""").fetchall()
    out = []
    for (
        qid,
        name,
        params,
        base_url,
        created,
        last_sync,
        last_started,
        run_id,
        kind,
        status,
        started,
        finished,
        pages,
        seen,
        n_new,
        total,
        token,
        error,
        n_runs,
    ) in rows:
        out.append(
            {
                "query_id": qid,
                "name": name,
                "params": orjson.loads(params),
                "base_url": base_url,
                "created_at": _iso(created),
                "last_complete_sync": _iso(last_sync),
                "last_complete_started": _iso(last_started),
                "n_runs": int(n_runs),
                "last_run": None
                if run_id is None
                else {
                    "run_id": run_id,
                    "kind": kind,
                    "status": status,
                    "started_at": _iso(started),
                    "finished_at": _iso(finished),
                    "pages_done": pages,
                    "studies_seen": seen,
                    "n_new": n_new,
                    "total_count": total,
                    "resumable": status != "complete",
                    "error": error,
                    "has_next_page_token": token is not None,
                },
            }
        )
    return out


def _iso(v: Any) -> str | None:
    return None if v is None else v.isoformat()
