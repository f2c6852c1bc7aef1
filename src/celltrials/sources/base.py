"""What every source module shares: hashing, bad-record handling, helpers."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from celltrials.errors import RecordError
from celltrials.models import ParsedRecord

#: a CSV field may be long: a real ClinicalTrials.gov "Locations" cell lists 7,000+ sites,
#: over Python's default limit of 131,072 characters. 1 GiB bounds it (fits a C long everywhere).
CSV_FIELD_LIMIT = 1 << 30
if csv.field_size_limit() < CSV_FIELD_LIMIT:
    csv.field_size_limit(CSV_FIELD_LIMIT)

#: what a parser yields: a good record, or a bad one described as an error
ParseItem = ParsedRecord | RecordError
ParseStream = Iterator[ParseItem]


def content_hash(obj: Any, *, exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 of the canonical JSON of ``obj`` without volatile keys
    (export timestamps, search rank) so the same content hashes the same."""
    if exclude and isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k not in exclude}
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


def split_list(value: str | None, sep: str = "|") -> list[str]:
    if not value:
        return []
    return [p.strip() for p in str(value).split(sep) if p.strip()]
