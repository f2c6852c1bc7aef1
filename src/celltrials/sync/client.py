"""The HTTP client: rate limit, retries with backoff and ``Retry-After``
(the retry policy is :mod:`tenacity`'s), JSON decoding; an injectable httpx
transport makes it testable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

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
    sent ``Retry-After`` (waited out, up to ``max_retry_after`` seconds; a
    longer one stops at once). ``sleep`` and ``clock`` are injectable for
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
        #: full jitter: uniform in [0, min(max_backoff, backoff * 2**k)] before retry k
        self._jitter = wait_random_exponential(multiplier=backoff, max=max_backoff)
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
        query = dict(params or {})
        attempts = self.max_retries + 1
        honoured = False  # the coming wait is the server's Retry-After

        def wait(rs: RetryCallState) -> float:
            nonlocal honoured
            failed = rs.outcome.exception() if rs.outcome else None
            after = failed.retry_after if isinstance(failed, _Retryable) else None
            honoured = after is not None
            return after if after is not None else float(self._jitter(rs))

        def pause(delay: float) -> None:
            if delay > 0:
                self.sleep(delay)
            if honoured and self.rate:
                with self._lock:  # the wait counts as spacing
                    self._next_slot = self.clock()

        def report(rs: RetryCallState) -> None:
            if self.on_retry and rs.outcome and rs.next_action:
                self.on_retry(
                    ProgressEvent(
                        "sync",
                        "retry",
                        shown,
                        done=rs.attempt_number,
                        total=attempts,
                        message=f"{rs.outcome.exception()}; retrying in {rs.next_action.sleep:.1f} s",
                    )
                )

        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=report,
            sleep=pause,
            reraise=True,
        )
        resp: httpx.Response | None = None
        try:
            for attempt in retrying:
                with attempt:
                    n = attempt.retry_state.attempt_number
                    resp = self._attempt(url, query, shown, what, n, attempts)
        except _Retryable as exc:
            raise FetchError(
                f"{what or 'GET'} {shown}: {exc} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})",
                hint="Check the network or --base-url, or raise --max-retries/--timeout; "
                "rerun the same command to resume from the last committed page.",
            ) from None
        assert resp is not None  # the last attempt returned (or raised above)
        return resp

    def _attempt(
        self, url: str, query: dict[str, str], shown: str, what: str, n: int, attempts: int
    ) -> httpx.Response:
        """One request after the rate limit's wait: the response, or
        :class:`_Retryable` for a timeout, a failed connection or a status of
        :data:`RETRY_STATUS`; :class:`FetchError` when the server asks to wait
        longer than ``max_retry_after``."""
        self._wait_for_slot()
        self.n_requests += 1
        logger.debug("GET %s (attempt %d/%d)", shown, n, attempts)
        try:
            resp = self._http.get(url, params=query)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from None
        if resp.status_code not in RETRY_STATUS:
            return resp
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if retry_after is not None and retry_after > self.max_retry_after:
            raise FetchError(
                f"{what or 'GET'} {shown}: HTTP {resp.status_code}, server asks to wait {retry_after:.0f} s",
                hint="The registry is throttling or down; rerun the same command later to resume.",
            )
        raise _Retryable(f"HTTP {resp.status_code}", retry_after)

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


class _Retryable(Exception):
    """An attempt that failed in a way worth retrying: its reason, and the
    server's ``Retry-After`` in seconds when it sent one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _TokenRefused(FetchError):
    """The server refused a page token (expired or from another query)."""


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _page_label(page: int, token: str | None) -> str:
    return f"page {page}" + (f" (pageToken {_short(token, 60)})" if token else " (first page)")
