"""API v2 ``/studies`` queries: parameters, stable query ids, request URLs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from celltrials.errors import ConfigError

DEFAULT_BASE_URL = "https://clinicaltrials.gov/api/v2"
PAGE_SIZE = 1000
#: keep every request URL below this many bytes (proxies cut at 8 kB)
MAX_URL_BYTES = 8000
QUERY_PARAMS = ("query.cond", "query.intr", "query.term", "filter.advanced", "filter.overallStatus")


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
            {
                "query.cond": cond,
                "query.intr": intr,
                "query.term": term,
                "filter.advanced": advanced,
                "filter.overallStatus": _status(status),
            },
            name=name,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, name: str = "") -> Query:
        out: dict[str, str] = {}
        for key, value in params.items():
            if key not in QUERY_PARAMS:
                raise ConfigError(
                    f"unknown query parameter {key!r}", hint=f"One of: {', '.join(QUERY_PARAMS)}."
                )
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

    def with_filters(
        self, *, advanced: str | None = None, status: Iterable[str] | str | None = None
    ) -> Query:
        params = self.as_params()
        if advanced:
            params["filter.advanced"] = and_advanced(params.get("filter.advanced"), advanced)
        if status:
            params["filter.overallStatus"] = _status(status)
        return Query.from_params(params, name=self.name)


def _status(value: Iterable[str] | str | None) -> str:
    if not value:
        return ""
    parts = (
        value.split(",")
        if isinstance(value, str)
        else [p for v in value for p in str(v).split(",")]
    )
    return ",".join(sorted({p.strip().upper().replace(" ", "_") for p in parts if p.strip()}))


def _auto_name(params: Mapping[str, str]) -> str:
    text = "; ".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(params.items()))
    return text if len(text) <= 80 else text[:77] + "..."


def normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"--base-url {base_url!r} is not an http(s) URL", hint=f"e.g. {DEFAULT_BASE_URL}"
        )
    return url


def query_id(params: Mapping[str, str], base_url: str) -> str:
    """Stable id of a search: hash of its normalised params and base URL."""
    blob = orjson.dumps(
        {"base_url": normalize_base_url(base_url), "params": dict(sorted(params.items()))},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob).hexdigest()[:16]


def and_advanced(existing: str | None, extra: str) -> str:
    """AND an Essie expression onto an existing ``filter.advanced``."""
    existing = _clean(existing)
    return f"({existing}) AND {extra}" if existing else extra


def since_filter(since: date) -> str:
    return f"AREA[LastUpdatePostDate]RANGE[{since.isoformat()},MAX]"


def request_url(
    base_url: str,
    params: Mapping[str, str],
    page_token: str | None = None,
    page_size: int = PAGE_SIZE,
) -> str:
    """The full ``/studies`` URL a page request uses (for length checks and messages)."""
    return f"{normalize_base_url(base_url)}/studies?{urlencode(_page_params(params, page_token, page_size), quote_via=quote)}"


def _page_params(
    params: Mapping[str, str], page_token: str | None, page_size: int
) -> dict[str, str]:
    out = {"format": "json", "pageSize": str(page_size), "countTotal": "true", **params}
    if page_token:
        out["pageToken"] = page_token
    return out
