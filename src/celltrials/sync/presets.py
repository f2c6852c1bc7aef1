"""Maintained search presets (``taxonomy/presets.yaml``) and the offline
recall check that applies their phrases to stored records."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from celltrials.errors import ConfigError, TaxonomyError
from celltrials.models import ParsedRecord
from celltrials.sync.queries import (
    DEFAULT_BASE_URL,
    MAX_URL_BYTES,
    QUERY_PARAMS,
    Query,
    _clean,
    request_url,
)


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
        text = (
            resources.files("celltrials.taxonomy")
            .joinpath("presets.yaml")
            .read_text(encoding="utf-8")
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"presets.yaml: not valid YAML ({exc})") from None
    if (
        not isinstance(data, dict)
        or not data.get("version")
        or not isinstance(data.get("presets"), dict)
    ):
        raise TaxonomyError("presets.yaml: needs `version` and a `presets` mapping")
    version = str(data["version"])
    out: dict[str, Preset] = {}
    for name, spec in data["presets"].items():
        queries = []
        for i, q in enumerate((spec or {}).get("queries") or [], start=1):
            param = q.get("param", "query.term")
            phrases = tuple(_clean(p) for p in q.get("phrases") or [] if _clean(p))
            if param not in QUERY_PARAMS or not phrases or not q.get("name"):
                raise TaxonomyError(
                    f"presets.yaml: preset {name!r} query {i} needs name, a known param and phrases"
                )
            if any('"' in p for p in phrases):
                raise TaxonomyError(
                    f"presets.yaml: preset {name!r} query {q['name']!r}: phrases may not contain '\"'"
                )
            pq = PresetQuery(str(q["name"]), param, phrases)
            if (
                len(request_url(DEFAULT_BASE_URL, {param: pq.expression()}, "x" * 64).encode())
                > MAX_URL_BYTES
            ):
                raise TaxonomyError(
                    f"presets.yaml: preset {name!r} query {q['name']!r} makes a URL over {MAX_URL_BYTES} bytes; split it"
                )
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
    parts = [
        rec.title,
        rec.official_title,
        rec.acronym,
        rec.brief_summary,
        rec.detailed_description,
        *rec.keywords,
        *rec.conditions,
    ]
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


def preset_recall(
    preset: Preset | Sequence[str], records: Iterable[ParsedRecord]
) -> dict[str, Any]:
    """Fraction of ``records`` (distinct record ids) that the preset's phrases hit.

    Returns ``{"n": ..., "hits": ..., "recall": ..., "missed": [ids], "by_query": {name: hits}}``.
    """
    queries = (
        preset.queries
        if isinstance(preset, Preset)
        else (PresetQuery("phrases", "query.term", tuple(preset)),)
    )
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
    return {
        "n": n,
        "hits": hits,
        "recall": hits / n if n else 0.0,
        "missed": sorted(missed),
        "by_query": by_query,
    }
