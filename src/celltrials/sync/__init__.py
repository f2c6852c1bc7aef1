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

Modules: ``queries`` (parameters, ids, URLs), ``presets`` (maintained searches
and their offline recall check), ``client`` (HTTP, rate limit, retries) and
``runs`` (saved queries, checkpoints, resume, update; schema step 3).
"""

from celltrials.progress import Progress, ProgressEvent
from celltrials.sync.client import (
    DEFAULT_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATE,
    DEFAULT_TIMEOUT,
    MAX_RETRY_AFTER,
    RETRY_STATUS,
    CtgovClient,
    parse_retry_after,
)
from celltrials.sync.presets import (
    PhraseMatcher,
    Preset,
    PresetQuery,
    essie_or,
    get_preset,
    load_presets,
    preset_recall,
    record_text,
)
from celltrials.sync.queries import (
    DEFAULT_BASE_URL,
    MAX_URL_BYTES,
    PAGE_SIZE,
    QUERY_PARAMS,
    Query,
    and_advanced,
    normalize_base_url,
    query_id,
    request_url,
    since_filter,
)
from celltrials.sync.runs import (
    QueryRun,
    SyncResult,
    fetch,
    fetch_ids,
    fetch_preset,
    sync_status,
    update,
)

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RATE",
    "DEFAULT_TIMEOUT",
    "MAX_RETRY_AFTER",
    "MAX_URL_BYTES",
    "PAGE_SIZE",
    "QUERY_PARAMS",
    "RETRY_STATUS",
    "CtgovClient",
    "PhraseMatcher",
    "Preset",
    "PresetQuery",
    "Progress",
    "ProgressEvent",
    "Query",
    "QueryRun",
    "SyncResult",
    "and_advanced",
    "essie_or",
    "fetch",
    "fetch_ids",
    "fetch_preset",
    "get_preset",
    "load_presets",
    "normalize_base_url",
    "parse_retry_after",
    "preset_recall",
    "query_id",
    "record_text",
    "request_url",
    "since_filter",
    "sync_status",
    "update",
]
