"""Live sync with the ClinicalTrials.gov API v2 (``/studies``).

A *query* is a set of API parameters (``query.cond``, ``query.intr``,
``query.term``, ``filter.advanced``, ``filter.overallStatus``) plus the base
URL it runs against; its id is a stable hash of both. :func:`fetch` pages
through ``/studies`` (``format=json``, ``pageSize=1000``, ``pageToken``,
``countTotal=true``), parses every study of a page with the same
:func:`~celltrials.sources.ctgov_json.parse_study` that file ingest uses and
commits each page in ONE store transaction together with the checkpoint
(the next page token). A rerun of the same query resumes from the last
committed page; :func:`update` reruns every saved query for studies whose
``LastUpdatePostDate`` is on or after the start date of the query's last
complete sync.

Politeness: requests are spaced to at most ``rate`` per minute (default
30, i.e. one every 2 s); 429, 5xx, timeouts and broken connections are
retried with exponential backoff and full jitter, ``Retry-After`` (seconds or
HTTP-date) is honoured, and after ``max_retries`` retries a
:class:`~celltrials.errors.FetchError` says what failed. A page that is not
valid JSON, has no ``studies`` list, or holds a study the parser rejects is a
:class:`~celltrials.errors.PageError` naming the page; nothing of that page
is stored.

Schema step 3 (``sync``) adds ``sync_queries`` and ``sync_runs``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import duckdb
import httpx
import orjson
import yaml

from celltrials import __version__
from celltrials.errors import ConfigError, FetchError, PageError, RecordError, TaxonomyError
from celltrials.models import ParsedRecord
from celltrials.sources.ctgov_json import FORMAT, parse_study
from celltrials.store import Store, register_migration

DEFAULT_BASE_URL = "https://clinicaltrials.gov/api/v2"
#: requests per minute; ClinicalTrials.gov is commonly quoted at ~50/min per IP
DEFAULT_RATE = 30.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF = 2.0
DEFAULT_MAX_BACKOFF = 120.0
#: a Retry-After longer than this is not waited out: the sync stops (resumable)
MAX_RETRY_AFTER = 900.0
PAGE_SIZE = 1000
#: keep every request URL below this many bytes (proxies cut at 8 kB)
MAX_URL_BYTES = 8000

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
QUERY_PARAMS = ("query.cond", "query.intr", "query.term", "filter.advanced", "filter.overallStatus")
_NCT = re.compile(r"^NCT\d{8}$")

# ------------------------------------------------------------------ schema v3
SCHEMA_SYNC = """
CREATE TABLE IF NOT EXISTS sync_queries (
    query_id VARCHAR PRIMARY KEY, name VARCHAR, params JSON, base_url VARCHAR,
    created_at TIMESTAMP, last_complete_sync TIMESTAMP, last_complete_started DATE
);
CREATE SEQUENCE IF NOT EXISTS sync_run_seq START 1;
CREATE TABLE IF NOT EXISTS sync_runs (
    run_id INTEGER PRIMARY KEY, query_id VARCHAR, kind VARCHAR, params JSON,
    started_at TIMESTAMP, updated_at TIMESTAMP, finished_at TIMESTAMP, status VARCHAR,
    next_page_token VARCHAR, pages_done INTEGER, studies_seen INTEGER, n_new INTEGER,
    total_count INTEGER, page_size INTEGER, error VARCHAR
);
"""


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA_SYNC)


register_migration(3, "sync", _migrate)


# ------------------------------------------------------------------- queries
def _clean(value: str | None) -> str:
    return " ".join(str(value or "").split())


@dataclass(frozen=True)
class Query:
    """API search parameters (no paging ones), normalised so that the same
    search always has the same id."""

    params: tuple[tuple[str, str], ...]
    name: str = ""

    @classmethod
    def build(
        cls,
        *,
        cond: str | None = None,
        intr: str | None = None,
        term: str | None = None,
        advanced: str | None = None,
        status: Iterable[str] | str | None = None,
        name: str = "",
    ) -> Query:
        return cls.from_params(
            {"query.cond": cond, "query.intr": intr, "query.term": term,
             "filter.advanced": advanced, "filter.overallStatus": _status(status)},
            name=name,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, name: str = "") -> Query:
        out: dict[str, str] = {}
        for key, value in params.items():
            if key not in QUERY_PARAMS:
                raise ConfigError(f"unknown query parameter {key!r}", hint=f"One of: {', '.join(QUERY_PARAMS)}.")
            text = _status(value) if key == "filter.overallStatus" else _clean(value)
            if text:
                out[key] = text
        if not out:
            raise ConfigError(
                "the query is empty: it would download the whole registry",
                hint="Give --cond, --intr, --term, --advanced, --status or --preset.",
            )
        return cls(tuple(sorted(out.items())), name=name or _auto_name(out))

    def as_params(self) -> dict[str, str]:
        return dict(self.params)

    def query_id(self, base_url: str) -> str:
        return query_id(self.as_params(), base_url)

    def with_filters(self, *, advanced: str | None = None, status: Iterable[str] | str | None = None) -> Query:
        params = self.as_params()
        if advanced:
            params["filter.advanced"] = and_advanced(params.get("filter.advanced"), advanced)
        if status:
            params["filter.overallStatus"] = _status(status)
        return Query.from_params(params, name=self.name)


def _status(value: Iterable[str] | str | None) -> str:
    if not value:
        return ""
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    return ",".join(sorted({p.strip().upper().replace(" ", "_") for p in parts if p.strip()}))


def _auto_name(params: Mapping[str, str]) -> str:
    text = "; ".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(params.items()))
    return text if len(text) <= 80 else text[:77] + "..."


def normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--base-url {base_url!r} is not an http(s) URL", hint=f"e.g. {DEFAULT_BASE_URL}")
    return url


def query_id(params: Mapping[str, str], base_url: str) -> str:
    """Stable id of a search: hash of its normalised params and base URL."""
    blob = orjson.dumps({"base_url": normalize_base_url(base_url), "params": dict(sorted(params.items()))},
                        option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def and_advanced(existing: str | None, extra: str) -> str:
    """AND an Essie expression onto an existing ``filter.advanced``."""
    existing = _clean(existing)
    return f"({existing}) AND {extra}" if existing else extra


def since_filter(since: date) -> str:
    return f"AREA[LastUpdatePostDate]RANGE[{since.isoformat()},MAX]"


def request_url(base_url: str, params: Mapping[str, str], page_token: str | None = None,
                page_size: int = PAGE_SIZE) -> str:
    """The full ``/studies`` URL a page request uses (for length checks and messages)."""
    return f"{normalize_base_url(base_url)}/studies?{urlencode(_page_params(params, page_token, page_size), quote_via=quote)}"


def _page_params(params: Mapping[str, str], page_token: str | None, page_size: int) -> dict[str, str]:
    out = {"format": "json", "pageSize": str(page_size), "countTotal": "true", **params}
    if page_token:
        out["pageToken"] = page_token
    return out


# ------------------------------------------------------------------- presets
@dataclass(frozen=True)
class PresetQuery:
    name: str
    param: str
    phrases: tuple[str, ...]

    def expression(self) -> str:
        return essie_or(self.phrases)

    def query(self, preset: str) -> Query:
        return Query.from_params({self.param: self.expression()}, name=f"{preset}/{self.name}")


@dataclass(frozen=True)
class Preset:
    name: str
    version: str
    description: str
    queries: tuple[PresetQuery, ...]

    def phrases(self) -> list[str]:
        return [p for q in self.queries for p in q.phrases]

    def as_queries(self) -> list[Query]:
        return [q.query(self.name) for q in self.queries]


def essie_or(phrases: Iterable[str]) -> str:
    """``"a" OR "b" OR ...``: each phrase quoted (Essie phrase search)."""
    return " OR ".join('"' + p.replace('"', "") + '"' for p in phrases)


def load_presets(text: str | None = None) -> dict[str, Preset]:
    """The maintained searches in ``taxonomy/presets.yaml`` (validated)."""
    if text is None:
        text = resources.files("celltrials.taxonomy").joinpath("presets.yaml").read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"presets.yaml: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not data.get("version") or not isinstance(data.get("presets"), dict):
        raise TaxonomyError("presets.yaml: needs `version` and a `presets` mapping")
    version = str(data["version"])
    out: dict[str, Preset] = {}
    for name, spec in data["presets"].items():
        queries = []
        for i, q in enumerate((spec or {}).get("queries") or [], start=1):
            param = q.get("param", "query.term")
            phrases = tuple(_clean(p) for p in q.get("phrases") or [] if _clean(p))
            if param not in QUERY_PARAMS or not phrases or not q.get("name"):
                raise TaxonomyError(f"presets.yaml: preset {name!r} query {i} needs name, a known param and phrases")
            if any('"' in p for p in phrases):
                raise TaxonomyError(f"presets.yaml: preset {name!r} query {q['name']!r}: phrases may not contain '\"'")
            pq = PresetQuery(str(q["name"]), param, phrases)
            if len(request_url(DEFAULT_BASE_URL, {param: pq.expression()}, "x" * 64).encode()) > MAX_URL_BYTES:
                raise TaxonomyError(f"presets.yaml: preset {name!r} query {q['name']!r} makes a URL over {MAX_URL_BYTES} bytes; split it")
            queries.append(pq)
        if not queries:
            raise TaxonomyError(f"presets.yaml: preset {name!r} has no queries")
        out[str(name)] = Preset(str(name), version, _clean(spec.get("description")), tuple(queries))
    return out


def get_preset(name: str) -> Preset:
    presets = load_presets()
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}", hint=f"One of: {', '.join(sorted(presets))}.")
    return presets[name]


# ------------------------------------------------------- offline recall check
def _norm_tokens(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " " + " ".join(re.sub(r"[^\w]+|_", " ", text).split()) + " "


def record_text(rec: ParsedRecord) -> str:
    """What the preset's phrases are matched against offline: titles, acronym,
    keywords, conditions, interventions (names, other names, descriptions),
    brief summary and detailed description."""
    parts = [rec.title, rec.official_title, rec.acronym, rec.brief_summary, rec.detailed_description,
             *rec.keywords, *rec.conditions]
    for x in rec.interventions:
        parts += [x.name, x.description, *x.other_names]
    return " \n ".join(p for p in parts if p)


class PhraseMatcher:
    """Case-insensitive whole-token phrase matching, an offline stand-in for
    Essie phrase search (punctuation splits tokens: "CAR-T" matches "CAR T")."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = list(phrases)
        self._norm = [(p, _norm_tokens(p)) for p in self.phrases]

    def matches(self, text: str) -> list[str]:
        norm = _norm_tokens(text)
        return [p for p, n in self._norm if n.strip() and n in norm]

    def hits(self, text: str) -> bool:
        norm = _norm_tokens(text)
        return any(n.strip() and n in norm for _, n in self._norm)


def preset_recall(preset: Preset | Sequence[str], records: Iterable[ParsedRecord]) -> dict[str, Any]:
    """Fraction of ``records`` (distinct record ids) that the preset's phrases hit.

    Returns ``{"n": ..., "hits": ..., "recall": ..., "missed": [ids], "by_query": {name: hits}}``.
    """
    queries = preset.queries if isinstance(preset, Preset) else (PresetQuery("phrases", "query.term", tuple(preset)),)
    matchers = [(q.name, PhraseMatcher(q.phrases)) for q in queries]
    seen: set[str] = set()
    hits = 0
    missed: list[str] = []
    by_query = {name: 0 for name, _ in matchers}
    for rec in records:
        if rec.record_id in seen:
            continue
        seen.add(rec.record_id)
        text = record_text(rec)
        hit = False
        for name, m in matchers:
            if m.hits(text):
                by_query[name] += 1
                hit = True
        if hit:
            hits += 1
        else:
            missed.append(rec.record_id)
    n = len(seen)
    return {"n": n, "hits": hits, "recall": hits / n if n else 0.0, "missed": sorted(missed), "by_query": by_query}


# -------------------------------------------------------------------- client
@dataclass
class RetryEvent:
    url: str
    attempt: int  # the attempt that failed, 1-based
    max_attempts: int
    reason: str
    delay: float


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class CtgovClient:
    """A polite HTTP client for the ClinicalTrials.gov API v2.

    ``rate`` is the most requests per minute (``0`` or ``None``: no limit, for
    a local mirror); ``timeout`` is seconds per connect/read; a request is
    tried ``max_retries + 1`` times; retry *k* waits a random time in
    ``[0, min(max_backoff, backoff * 2**k)]`` (full jitter) unless the server
    sent ``Retry-After``. ``sleep``, ``clock`` and ``rng`` are injectable for
    tests; ``transport`` is handed to :class:`httpx.Client`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: httpx.BaseTransport | None = None,
        rate: float | None = DEFAULT_RATE,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_retry_after: float = MAX_RETRY_AFTER,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        if max_retries < 0:
            raise ConfigError("--max-retries must be 0 or more")
        if rate is not None and rate < 0:
            raise ConfigError("--rate must be 0 (no limit) or a positive number of requests per minute")
        if timeout <= 0:
            raise ConfigError("--timeout must be positive")
        self.base_url = normalize_base_url(base_url)
        self.rate = rate or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_retry = on_retry
        self.n_requests = 0
        self._next_slot: float | None = None
        self._lock = threading.Lock()
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": f"celltrials/{__version__} (python-httpx)", "Accept": "application/json"},
            follow_redirects=True,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CtgovClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- plumbing
    def _wait_for_slot(self) -> None:
        if not self.rate:
            return
        interval = 60.0 / self.rate
        with self._lock:
            now = self.clock()
            if self._next_slot is not None and now < self._next_slot:
                self.sleep(self._next_slot - now)
                now = self._next_slot
            self._next_slot = now + interval

    def _backoff(self, retry_index: int) -> float:
        cap = min(self.max_backoff, self.backoff * (2 ** retry_index))
        return self.rng.uniform(0, cap) if cap > 0 else 0.0

    def get(self, path: str, params: Mapping[str, str] | None = None, *, base_url: str | None = None,
            what: str = "") -> httpx.Response:
        """GET with rate limiting and bounded retries; returns a 2xx/4xx response
        (4xx other than 429 is not retried); raises :class:`FetchError`."""
        url = f"{normalize_base_url(base_url) if base_url else self.base_url}{path}"
        shown = _short(f"{url}?{urlencode(dict(params or {}), quote_via=quote)}" if params else url)
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            self._wait_for_slot()
            self.n_requests += 1
            retry_after: float | None = None
            try:
                resp = self._http.get(url, params=dict(params or {}))
            except httpx.TimeoutException as exc:
                last = f"timed out after {self.timeout:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                if resp.status_code not in RETRY_STATUS:
                    return resp
                last = f"HTTP {resp.status_code}"
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if retry_after is not None and retry_after > self.max_retry_after:
                    raise FetchError(
                        f"{what or 'GET'} {shown}: HTTP {resp.status_code}, server asks to wait {retry_after:.0f} s",
                        hint="The registry is throttling or down; rerun the same command later to resume.",
                    )
            if attempt == attempts:
                break
            delay = retry_after if retry_after is not None else self._backoff(attempt - 1)
            if self.on_retry:
                self.on_retry(RetryEvent(shown, attempt, attempts, last, delay))
            if delay > 0:
                self.sleep(delay)
            if retry_after is not None and self.rate:
                with self._lock:  # the wait counts as spacing
                    self._next_slot = self.clock()
        raise FetchError(
            f"{what or 'GET'} {shown}: {last} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})",
            hint="Check the network or --base-url, or raise --max-retries/--timeout; "
                 "rerun the same command to resume from the last committed page.",
        )

    def get_json(self, path: str, params: Mapping[str, str] | None = None, *, base_url: str | None = None,
                 what: str = "") -> Any:
        return self._decode(self.get(path, params, base_url=base_url, what=what), what)

    def _decode(self, resp: httpx.Response, what: str) -> Any:
        if resp.status_code >= 400:
            raise FetchError(f"{what or 'GET'} {_short(str(resp.url))}: HTTP {resp.status_code}: {_short(resp.text, 300)}",
                             hint="The registry rejected the request; check the query options.")
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise PageError(f"{what or 'response'} from {_short(str(resp.url))} is not valid JSON ({exc})",
                            hint="The server sent a malformed page; nothing of it was stored. "
                                 "Rerun the same command to resume from this page.") from None

    # ------------------------------------------------------------- endpoints
    def studies_page(self, params: Mapping[str, str], page_token: str | None = None, *, page: int = 1,
                     page_size: int = PAGE_SIZE, base_url: str | None = None) -> dict[str, Any]:
        """One ``/studies`` page, checked to be ``{"studies": [...], ...}``."""
        what = _page_label(page, page_token)
        if page_token:
            resp = self.get("/studies", _page_params(params, page_token, page_size), base_url=base_url, what=what)
            if resp.status_code in (400, 404, 410):
                raise _TokenRefused(f"{what}: HTTP {resp.status_code}: {_short(resp.text, 300)}",
                                    hint="The page token is no longer valid; rerun to start the query again.")
            body = self._decode(resp, what)
        else:
            body = self.get_json("/studies", _page_params(params, page_token, page_size), base_url=base_url, what=what)
        if not isinstance(body, dict) or not isinstance(body.get("studies"), list):
            found = "no 'studies' list" if isinstance(body, dict) else f"a JSON {type(body).__name__}, not an object"
            raise PageError(f"{what}: malformed API page ({found})",
                            hint="The server sent a page without studies; nothing of it was stored. "
                                 "Rerun the same command to resume from this page.")
        token = body.get("nextPageToken")
        if token is not None and not isinstance(token, str):
            raise PageError(f"{what}: malformed API page (nextPageToken is {type(token).__name__})")
        return body

    def study(self, nct_id: str, *, base_url: str | None = None) -> dict[str, Any]:
        """One study by NCT id (``/studies/{nctId}``)."""
        resp = self.get(f"/studies/{nct_id}", {"format": "json"}, base_url=base_url, what=nct_id)
        if resp.status_code == 404:
            raise FetchError(f"{nct_id}: no such study at {base_url or self.base_url}",
                             hint="Check the NCT number.")
        if resp.status_code >= 400:
            raise FetchError(f"{nct_id}: HTTP {resp.status_code}: {_short(resp.text, 300)}")
        try:
            body = orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise PageError(f"{nct_id}: response is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise PageError(f"{nct_id}: response is not a study object")
        return body


class _TokenRefused(FetchError):
    """The server refused a page token (expired or from another query)."""


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _page_label(page: int, token: str | None) -> str:
    return f"page {page}" + (f" (pageToken {_short(token, 60)})" if token else " (first page)")


# -------------------------------------------------------------- sync results
@dataclass
class SyncEvent:
    kind: str  # "query_start" | "page" | "restart" | "query_done" | "study"
    query: str
    page: int = 0
    n: int = 0
    studies_seen: int = 0
    total_count: int | None = None
    message: str = ""


Progress = Callable[[SyncEvent], None]


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


def _open_run(store: Store, qid: str, kind: str, params: dict[str, str] | None, name: str,
              base_url: str, page_size: int) -> QueryRun:
    """The unfinished run of this query and kind to resume, or a new one."""
    row = store.con.execute(
        "SELECT run_id, params, next_page_token, pages_done, studies_seen, n_new, total_count, page_size "
        "FROM sync_runs "
        "WHERE query_id = ? AND kind = ? AND status <> 'complete' ORDER BY run_id DESC LIMIT 1",
        [qid, kind],
    ).fetchone()
    if row is not None:
        run = QueryRun(qid, name, kind, int(row[0]), orjson.loads(row[1]), base_url, resumed=True,
                       pages_done=int(row[3] or 0), studies_seen=int(row[4] or 0),
                       total_count=row[6], next_page_token=row[2], page_size=int(row[7] or page_size))
        run.resumed_from_page = run.pages_done + 1
        with store.transaction():
            store.con.execute("UPDATE sync_runs SET status = 'running', updated_at = ?, error = NULL WHERE run_id = ?",
                              [_now(), run.run_id])
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
                nct = ((study.get("protocolSection") or {}).get("identificationModule") or {}).get("nctId")
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
        progress(SyncEvent("query_start", run.name, page=page, studies_seen=run.studies_seen,
                           total_count=run.total_count,
                           message=f"resuming at page {page}" if run.resumed else ""))
    try:
        while True:
            label = f"{run.name}: {_page_label(page, token)}"
            try:
                body = client.studies_page(run.params, token, page=page, page_size=page_size, base_url=run.base_url)
            except _TokenRefused:
                if not run.resumed or run.pages:
                    raise
                # a saved token from an earlier session expired: start over (no gaps;
                # the store's content-hash dedup keeps already stored studies once)
                run.restarted, token, page, run.pages_done, run.studies_seen = True, None, 1, 0, 0
                if progress:
                    progress(SyncEvent("restart", run.name, message="saved page token refused; starting again"))
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
                    [next_token, run.pages_done, run.studies_seen, added.n_new, run.total_count, now,
                     "complete" if done else "running", now if done else None, run.run_id],
                )
                if done:
                    started = store.con.execute("SELECT started_at FROM sync_runs WHERE run_id = ?",
                                                [run.run_id]).fetchone()
                    assert started is not None
                    store.con.execute(
                        "UPDATE sync_queries SET last_complete_sync = ?, last_complete_started = ? WHERE query_id = ?",
                        [now, started[0].date(), run.query_id],
                    )
            if progress:
                progress(SyncEvent("page", run.name, page=page, n=len(records), studies_seen=run.studies_seen,
                                   total_count=run.total_count))
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
                store.con.execute("UPDATE sync_runs SET status = 'interrupted', error = ?, updated_at = ? WHERE run_id = ?",
                                  [msg, _now(), run.run_id])
        except duckdb.Error:
            pass
        raise
    if progress:
        progress(SyncEvent("query_done", run.name, page=page, studies_seen=run.studies_seen,
                           total_count=run.total_count))


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
    result = fetch(store, preset, client=client, base_url=base_url, page_size=page_size, progress=progress)
    return {"preset": preset.name, "preset_version": preset.version, **result.to_dict()}


def _check_url(base_url: str, params: Mapping[str, str], page_size: int) -> None:
    n = len(request_url(base_url, params, "x" * 64, page_size).encode())
    if n > MAX_URL_BYTES:
        raise ConfigError(f"the request URL would be {n} bytes (limit {MAX_URL_BYTES})",
                          hint="Split the query into several smaller ones.")


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
                    [qid]).fetchone()
                eff = dict(params)
                eff["filter.advanced"] = and_advanced(params.get("filter.advanced"), since_filter(last_started))
                run = _open_run(store, qid, "update", None if pending else eff, name, base_url, page_size)
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
                raise ConfigError(f"{part!r} is not an NCT number", hint="Write e.g. --id NCT01234567.")
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
                progress(SyncEvent("study", nct, n=1, studies_seen=i, total_count=len(wanted)))
        with store.transaction():
            for rec in records:
                source = f"{url}/studies/{rec.record_id}"
                ingest_id = store.begin_ingest(source, "ctgov_api")
                added = store.add_records([rec], source=source, ingest_id=ingest_id)
                store.finish_ingest(ingest_id, added, 0)
                result.studies.append({"nct_id": rec.record_id, "new": bool(added.n_new),
                                       "last_update": rec.last_update.isoformat() if rec.last_update else None})
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
    for (qid, name, params, base_url, created, last_sync, last_started, run_id, kind, status, started, finished,
         pages, seen, n_new, total, token, error, n_runs) in rows:
        out.append({
            "query_id": qid, "name": name, "params": orjson.loads(params), "base_url": base_url,
            "created_at": _iso(created), "last_complete_sync": _iso(last_sync),
            "last_complete_started": _iso(last_started), "n_runs": int(n_runs),
            "last_run": None if run_id is None else {
                "run_id": run_id, "kind": kind, "status": status, "started_at": _iso(started),
                "finished_at": _iso(finished), "pages_done": pages, "studies_seen": seen, "n_new": n_new,
                "total_count": total, "resumable": status != "complete", "error": error,
                "has_next_page_token": token is not None,
            },
        })
    return out


def _iso(v: Any) -> str | None:
    return None if v is None else v.isoformat()


__all__ = [
    "DEFAULT_BASE_URL", "DEFAULT_RATE", "CtgovClient", "PhraseMatcher", "Preset", "Query", "QueryRun",
    "SyncEvent", "SyncResult", "fetch", "fetch_ids", "fetch_preset", "get_preset", "load_presets", "parse_retry_after",
    "preset_recall", "record_text", "sync_status", "update",
]
