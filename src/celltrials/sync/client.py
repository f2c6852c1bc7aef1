"""The HTTP client: rate limit, retries with backoff and ``Retry-After``,
JSON decoding; an injectable httpx transport makes it testable."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from celltrials import __version__
from celltrials.errors import ConfigError, FetchError, PageError
from celltrials.progress import Progress, ProgressEvent, logger
from celltrials.sync.queries import DEFAULT_BASE_URL, PAGE_SIZE, _page_params, normalize_base_url

#: requests per minute; ClinicalTrials.gov is commonly quoted at ~50/min per IP
DEFAULT_RATE = 30.0
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF = 2.0
DEFAULT_MAX_BACKOFF = 120.0
#: a Retry-After longer than this is not waited out: the sync stops (resumable)
MAX_RETRY_AFTER = 900.0
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


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
        on_retry: Progress | None = None,
    ) -> None:
        if max_retries < 0:
            raise ConfigError("--max-retries must be 0 or more")
        if rate is not None and rate < 0:
            raise ConfigError(
                "--rate must be 0 (no limit) or a positive number of requests per minute"
            )
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
            headers={
                "User-Agent": f"celltrials/{__version__} (python-httpx)",
                "Accept": "application/json",
            },
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
        cap = min(self.max_backoff, self.backoff * (2**retry_index))
        return self.rng.uniform(0, cap) if cap > 0 else 0.0

    def get(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        base_url: str | None = None,
        what: str = "",
    ) -> httpx.Response:
        """GET with rate limiting and bounded retries; returns a 2xx/4xx response
        (4xx other than 429 is not retried); raises :class:`FetchError`."""
        url = f"{normalize_base_url(base_url) if base_url else self.base_url}{path}"
        shown = _short(f"{url}?{urlencode(dict(params or {}), quote_via=quote)}" if params else url)
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            self._wait_for_slot()
            self.n_requests += 1
            logger.debug("GET %s (attempt %d/%d)", shown, attempt, attempts)
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
                self.on_retry(
                    ProgressEvent(
                        "sync",
                        "retry",
                        shown,
                        done=attempt,
                        total=attempts,
                        message=f"{last}; retrying in {delay:.1f} s",
                    )
                )
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

    def get_json(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        base_url: str | None = None,
        what: str = "",
    ) -> Any:
        return self._decode(self.get(path, params, base_url=base_url, what=what), what)

    def _decode(self, resp: httpx.Response, what: str) -> Any:
        if resp.status_code >= 400:
            raise FetchError(
                f"{what or 'GET'} {_short(str(resp.url))}: HTTP {resp.status_code}: {_short(resp.text, 300)}",
                hint="The registry rejected the request; check the query options.",
            )
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise PageError(
                f"{what or 'response'} from {_short(str(resp.url))} is not valid JSON ({exc})",
                hint="The server sent a malformed page; nothing of it was stored. "
                "Rerun the same command to resume from this page.",
            ) from None

    # ------------------------------------------------------------- endpoints
    def studies_page(
        self,
        params: Mapping[str, str],
        page_token: str | None = None,
        *,
        page: int = 1,
        page_size: int = PAGE_SIZE,
        base_url: str | None = None,
    ) -> dict[str, Any]:
        """One ``/studies`` page, checked to be ``{"studies": [...], ...}``."""
        what = _page_label(page, page_token)
        if page_token:
            resp = self.get(
                "/studies",
                _page_params(params, page_token, page_size),
                base_url=base_url,
                what=what,
            )
            if resp.status_code in (400, 404, 410):
                raise _TokenRefused(
                    f"{what}: HTTP {resp.status_code}: {_short(resp.text, 300)}",
                    hint="The page token is no longer valid; rerun to start the query again.",
                )
            body = self._decode(resp, what)
        else:
            body = self.get_json(
                "/studies",
                _page_params(params, page_token, page_size),
                base_url=base_url,
                what=what,
            )
        if not isinstance(body, dict) or not isinstance(body.get("studies"), list):
            found = (
                "no 'studies' list"
                if isinstance(body, dict)
                else f"a JSON {type(body).__name__}, not an object"
            )
            raise PageError(
                f"{what}: malformed API page ({found})",
                hint="The server sent a page without studies; nothing of it was stored. "
                "Rerun the same command to resume from this page.",
            )
        token = body.get("nextPageToken")
        if token is not None and not isinstance(token, str):
            raise PageError(f"{what}: malformed API page (nextPageToken is {type(token).__name__})")
        return body

    def study(self, nct_id: str, *, base_url: str | None = None) -> dict[str, Any]:
        """One study by NCT id (``/studies/{nctId}``)."""
        resp = self.get(f"/studies/{nct_id}", {"format": "json"}, base_url=base_url, what=nct_id)
        if resp.status_code == 404:
            raise FetchError(
                f"{nct_id}: no such study at {base_url or self.base_url}",
                hint="Check the NCT number.",
            )
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
