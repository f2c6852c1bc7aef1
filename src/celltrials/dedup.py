"""Merging records into trials.

Records are linked when they name a common registry id (primary or
secondary, canonicalised by :mod:`celltrials.registry_ids`); each connected
component is one trial. Its primary record is chosen by this precedence:

1. a record from the registry that issued its own id — ClinicalTrials.gov's
   copy of an NCT trial beats ICTRP's relay of it; ICTRP's record is native
   for ChiCTR, EU-CTR, ISRCTN and the other registers it carries;
2. among those, ClinicalTrials.gov before EU-CTR before other registries
   (the richest structured record);
3. then the latest registry update date, then the latest ingest.

The trial is named after its primary record (EU-CTR's member-state suffix
dropped, so ``EUCTR2020-001162-12-FR`` and ``-DE`` are trial
``EUCTR2020-001162-12``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from celltrials.registry_ids import trial_id_for

_REGISTRY_RANK = {"ctgov": 3, "euctr": 2}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _is_native(channel: str, registry: str) -> bool:
    return (channel == "ctgov") == (registry == "ctgov")


def group_records(
    records: Sequence[tuple[Any, ...]], ids: Sequence[tuple[str, str]]
) -> list[tuple[str, str, bool, int, str]]:
    """``records``: (record_key, channel, record_id, registry, source_format,
    last_update, ingested_at); ``ids``: (record_key, id_key).

    Returns (trial_id, record_key, is_primary, n_records, merge_reason) rows.
    """
    uf = _UnionFind()
    for key, *_ in records:
        uf.find("r:" + key)
    ids_of: dict[str, list[str]] = defaultdict(list)
    for key, id_key in ids:
        uf.union("r:" + key, "i:" + id_key)
        ids_of[key].append(id_key)
    groups: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for rec in records:
        groups[uf.find("r:" + rec[0])].append(rec)
    lo = datetime.min

    def rank(rec: tuple[Any, ...]) -> tuple[Any, ...]:
        _, channel, record_id, registry, _fmt, last_update, ingested_at = rec
        lu = last_update if isinstance(last_update, date) else date.min
        return (
            _is_native(channel, registry),
            _REGISTRY_RANK.get(registry, 1),
            lu,
            ingested_at or lo,
            record_id,
        )

    out: list[tuple[str, str, bool, int, str]] = []
    for members in groups.values():
        primary = max(members, key=rank)
        trial_id = trial_id_for(primary[2])
        n = len(members)
        reason = ""
        if n > 1:
            shared: dict[str, int] = defaultdict(int)
            for m in members:
                for k in set(ids_of[m[0]]):
                    shared[k] += 1
            reason = "shared ids: " + ", ".join(sorted(k for k, c in shared.items() if c > 1))
        for m in members:
            out.append((trial_id, m[0], m is primary, n, reason))
    return out
