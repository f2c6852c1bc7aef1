"""Approved cell-therapy products: the catalog, its validator and alias matching.

The catalog is data (``taxonomy/products.csv``, one row per product per
regulator) with its version, controlled vocabulary and matching rules in
``taxonomy/products.meta.yaml``. :func:`load_catalog` validates it and raises
:class:`~celltrials.errors.TaxonomyError` listing every problem;
:func:`check_catalog` returns the problems as :class:`Finding` objects.

:class:`ProductMatcher` finds product names, INNs and code names in free text
(intervention names, other names, titles, descriptions). Matching is
case- and punctuation-insensitive and respects word boundaries: text and
aliases are normalised the same way (case-folded, accents removed, every run
of characters that are not letters or digits turned into one space), and all
usable aliases are compiled into one regular expression.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from celltrials.errors import ConfigError, TaxonomyError
from celltrials.normalize import PHASES
from celltrials.store import PRODUCT_LINK_COLUMNS, Store

COLUMNS: tuple[str, ...] = (
    "product",
    "substance",
    "inn_or_code",
    "cell_type",
    "msc_source",
    "origin",
    "gene_modified",
    "sponsor",
    "regulator",
    "country_or_region",
    "approval_type",
    "approval_date",
    "indication",
    "status",
    "aliases",
    "source_url",
    "verification",
    "notes",
)
REQUIRED: tuple[str, ...] = (
    "product",
    "substance",
    "cell_type",
    "origin",
    "gene_modified",
    "sponsor",
    "regulator",
    "country_or_region",
    "status",
    "aliases",
    "source_url",
    "verification",
)
_DATE_RE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$")
_URL_RE = re.compile(r"^https?://[^\s/$.?#][^\s]*\.[^\s]+$", re.IGNORECASE)


def _resource(name: str) -> Path:
    return Path(str(resources.files("celltrials.taxonomy") / name))


DEFAULT_CATALOG = _resource("products.csv")


def _meta_path(catalog: Path) -> Path:
    return catalog.with_name(catalog.stem + ".meta.yaml")


# ----------------------------------------------------------------------------- meta


@dataclass(frozen=True)
class CatalogMeta:
    """Contents of ``products.meta.yaml``."""

    version: str
    compiled: str
    allowed: dict[str, frozenset[str]]
    min_alias_chars: int
    min_cjk_alias_chars: int
    generic_words: frozenset[str]
    stop_aliases: frozenset[str]
    path: str = ""


def load_meta(path: str | Path | None = None) -> CatalogMeta:
    """Read and validate the catalog's meta file (``products.meta.yaml``)."""
    p = Path(path) if path is not None else _meta_path(DEFAULT_CATALOG)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TaxonomyError(
            f"{p}: meta file not found", hint="Each catalog CSV needs a NAME.meta.yaml beside it."
        ) from exc
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TaxonomyError(f"{p}: expected a mapping at the top level")
    problems: list[str] = []
    version = str(raw.get("version") or "").strip()
    if not version:
        problems.append("`version` is missing")
    compiled = str(raw.get("compiled") or "").strip()
    if not _valid_date(compiled):
        problems.append(f"`compiled` must be a date YYYY-MM-DD, got {compiled!r}")
    allowed_raw = raw.get("allowed")
    allowed: dict[str, frozenset[str]] = {}
    if not isinstance(allowed_raw, dict):
        problems.append("`allowed` must map column names to lists of values")
    else:
        for col in (
            "cell_type",
            "msc_source",
            "origin",
            "gene_modified",
            "approval_type",
            "status",
            "verification",
        ):
            vals = allowed_raw.get(col)
            if not isinstance(vals, list) or not vals:
                problems.append(f"`allowed.{col}` must be a non-empty list")
                continue
            allowed[col] = frozenset(str(v) for v in vals)
    matching = raw.get("matching") or {}
    if not isinstance(matching, dict):
        problems.append("`matching` must be a mapping")
        matching = {}
    min_chars = matching.get("min_alias_chars", 4)
    min_cjk = matching.get("min_cjk_alias_chars", 2)
    for key, val in (("min_alias_chars", min_chars), ("min_cjk_alias_chars", min_cjk)):
        if not isinstance(val, int) or val < 1:
            problems.append(f"`matching.{key}` must be a positive integer, got {val!r}")
    generic = matching.get("generic_words") or []
    stop = matching.get("stop_aliases") or []
    if not isinstance(generic, list) or not isinstance(stop, list):
        problems.append("`matching.generic_words` and `matching.stop_aliases` must be lists")
        generic, stop = [], []
    if problems:
        raise TaxonomyError(f"{p}: " + "; ".join(problems))
    return CatalogMeta(
        version=version,
        compiled=compiled,
        allowed=allowed,
        min_alias_chars=int(min_chars),
        min_cjk_alias_chars=int(min_cjk),
        generic_words=frozenset(normalize(str(w)) for w in generic),
        stop_aliases=frozenset(normalize(str(s)) for s in stop),
        path=str(p),
    )


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Finding:
    """One problem in the catalog. ``line`` is the CSV line (header = 1)."""

    line: int | None
    product: str
    column: str
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        who = f" ({self.product})" if self.product else ""
        col = f" [{self.column}]" if self.column else ""
        return f"{where}{who}{col}: {self.problem}"


def _valid_date(value: str) -> bool:
    m = _DATE_RE.match(value)
    if not m:
        return False
    year, month, day = int(m.group(1)), int(m.group(2)), m.group(3)
    try:
        date(year, month, int(day) if day else 1)
    except ValueError:
        return False
    return True


def split_aliases(value: str) -> list[str]:
    return [a.strip() for a in value.split(";") if a.strip()]


def check_catalog(df: pd.DataFrame, meta: CatalogMeta | None = None) -> list[Finding]:
    """Every problem in a catalog table, collected (nothing is raised).

    Checks: all columns present; required fields non-empty; controlled values
    (``meta.allowed``); ``msc_source`` set exactly for MSC rows; dates
    ``YYYY-MM-DD`` or ``YYYY-MM``; ``source_url`` http(s); aliases non-empty;
    no duplicate product x regulator rows; one ``substance`` per product and,
    per substance, one cell type, MSC source and gene-modified flag. ``line`` assumes the table was read
    from a CSV with one line per record (row 0 is line 2).
    """
    meta = meta or load_meta()
    findings: list[Finding] = []
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        return [Finding(None, "", c, "column is missing") for c in missing]
    seen: dict[tuple[str, str], int] = {}
    for pos, rec in enumerate(df.astype(str).to_dict("records")):
        line = pos + 2
        product = rec["product"].strip()

        def add(column: str, problem: str, _line: int = line, _product: str = product) -> None:
            findings.append(Finding(_line, _product, column, problem))

        for col in REQUIRED:
            if not rec[col].strip():
                add(col, "is empty")
        for col in ("origin", "gene_modified", "status", "verification"):
            val = rec[col].strip()
            if val and val not in meta.allowed[col]:
                add(col, f"{val!r} is not one of {sorted(meta.allowed[col])}")
        cell_types = [c.strip() for c in rec["cell_type"].split(";") if c.strip()]
        bad_ct = [c for c in cell_types if c not in meta.allowed["cell_type"]]
        if bad_ct:
            add("cell_type", f"{bad_ct} not in the taxonomy's cell_type values (TAXONOMY.md)")
        src = rec["msc_source"].strip()
        if "msc" in cell_types:
            if not src:
                add("msc_source", "is empty for an MSC product (use `unspecified` if unknown)")
            elif src not in meta.allowed["msc_source"]:
                add("msc_source", f"{src!r} is not one of {sorted(meta.allowed['msc_source'])}")
        elif src:
            add("msc_source", f"is {src!r} but cell_type does not include msc")
        atype = rec["approval_type"].strip()
        if atype and atype not in meta.allowed["approval_type"]:
            add(
                "approval_type",
                f"{atype!r} is not one of {sorted(meta.allowed['approval_type'])} (or blank)",
            )
        adate = rec["approval_date"].strip()
        if adate and not _valid_date(adate):
            add("approval_date", f"{adate!r} is not a valid date YYYY-MM-DD or YYYY-MM")
        url = rec["source_url"].strip()
        if url and not _URL_RE.match(url):
            add("source_url", f"{url!r} is not an http(s) URL")
        raw_aliases = rec["aliases"]
        if raw_aliases.strip() and not split_aliases(raw_aliases):
            add("aliases", "has no non-empty alias")
        elif any(not a.strip() for a in raw_aliases.split(";")) and raw_aliases.strip():
            add("aliases", "contains an empty entry (check the ';' separators)")
        key = (product.casefold(), rec["regulator"].strip().casefold())
        if product and key in seen:
            add("regulator", f"duplicate product x regulator row (first on line {seen[key]})")
        else:
            seen.setdefault(key, line)
    # rows already reported are left out of the cross-row check (one problem, one finding)
    findings.extend(_substance_findings(df, skip={f.line for f in findings}))
    return findings


#: columns every row of one substance must agree on (they decide its funnel group)
SUBSTANCE_FIXED: tuple[str, ...] = ("cell_type", "msc_source", "gene_modified")


def _substance_findings(
    df: pd.DataFrame, skip: set[int | None] | frozenset[int] = frozenset()
) -> list[Finding]:
    """A product name has one substance; a substance has one cell type, MSC
    source and gene-modified flag (its approvals differ only by regulator,
    brand, date and status)."""
    findings: list[Finding] = []
    recs: list[dict[str, str]] = [
        {str(k): str(v) for k, v in r.items()} for r in df.to_dict("records")
    ]
    first_sub: dict[str, tuple[str, int]] = {}
    first_row: dict[str, tuple[dict[str, str], int]] = {}
    for pos, rec in enumerate(recs):
        line = pos + 2
        product, sub = rec["product"].strip(), rec["substance"].strip()
        if not product or not sub or line in skip:
            continue
        seen = first_sub.setdefault(product.casefold(), (sub, line))
        if seen[0] != sub:
            findings.append(
                Finding(
                    line,
                    product,
                    "substance",
                    f"{sub!r} differs from {seen[0]!r} on line {seen[1]} for the same product",
                )
            )
        base, base_line = first_row.setdefault(sub.casefold(), (rec, line))
        for col in SUBSTANCE_FIXED:
            if rec[col].strip() != base[col].strip():
                findings.append(
                    Finding(
                        line,
                        product,
                        col,
                        f"{rec[col].strip()!r} differs from "
                        f"{base[col].strip()!r} on line {base_line} (same substance {sub!r})",
                    )
                )
    return findings


def read_catalog(path: str | Path | None = None) -> pd.DataFrame:
    """Read the catalog CSV as strings, without validating it."""
    p = Path(path) if path is not None else DEFAULT_CATALOG
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError as exc:
        raise TaxonomyError(f"{p}: catalog file not found") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TaxonomyError(f"{p}: not a readable UTF-8 CSV: {exc}") from exc
    return df


def check_file(path: str | Path | None = None) -> list[Finding]:
    """Findings for a catalog file and its meta file (an unreadable file is one finding)."""
    p = Path(path) if path is not None else DEFAULT_CATALOG
    try:
        meta = load_meta(_meta_path(p)) if path is not None else load_meta()
        df = read_catalog(p)
    except TaxonomyError as exc:
        return [Finding(None, "", "", exc.message)]
    return check_catalog(df, meta)


def load_catalog(path: str | Path | None = None) -> pd.DataFrame:
    """The validated catalog (all columns as strings).

    ``path`` defaults to the packaged ``taxonomy/products.csv``; its
    ``NAME.meta.yaml`` must sit beside it. ``df.attrs`` carries ``version``,
    ``compiled`` and ``path``. Raises :class:`TaxonomyError` listing every
    finding when the catalog is invalid.
    """
    p = Path(path) if path is not None else DEFAULT_CATALOG
    meta = load_meta(_meta_path(p))
    df = read_catalog(p)
    findings = check_catalog(df, meta)
    if findings:
        shown = "\n  ".join(str(f) for f in findings[:50])
        more = f"\n  ... and {len(findings) - 50} more" if len(findings) > 50 else ""
        raise TaxonomyError(
            f"{p}: {len(findings)} problem(s) in the product catalog:\n  {shown}{more}",
            hint="Fix the named rows; allowed values are listed in products.meta.yaml (see TAXONOMY.md).",
        )
    df = df[list(COLUMNS)].copy()
    df.attrs.update(version=meta.version, compiled=meta.compiled, path=str(p))
    return df


# ----------------------------------------------------------------------------- matching


def _is_cjk(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def _normalize_with_map(text: str) -> tuple[str, list[int]]:
    """Normalised text plus, for each of its characters, the index in ``text``.

    Letters and digits are NFKD-decomposed (accents dropped) and case-folded;
    every run of anything else (spaces, punctuation, symbols such as ™ ®)
    becomes a single space.
    """
    if text.isascii():
        return _normalize_ascii(text)
    out: list[str] = []
    pos: list[int] = []
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat[0] in "LN":
            for c in unicodedata.normalize("NFKD", ch):
                if unicodedata.category(c) == "Mn":
                    continue
                for f in c.casefold():
                    if f.isalnum():
                        out.append(f)
                        pos.append(i)
                    elif out and out[-1] != " ":
                        out.append(" ")
                        pos.append(i)
        elif cat == "Mn":
            continue
        elif out and out[-1] != " ":
            out.append(" ")
            pos.append(i)
    return "".join(out), pos


_ASCII_RUN = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]+")


def _normalize_ascii(text: str) -> tuple[str, list[int]]:
    """Fast path of :func:`_normalize_with_map` for ASCII text (same result)."""
    out: list[str] = []
    pos: list[int] = []
    for m in _ASCII_RUN.finditer(text):
        run = m.group(0)
        if run[0].isalnum():
            out.append(run.lower())
            pos.extend(range(m.start(), m.end()))
        elif out:
            out.append(" ")
            pos.append(m.start())
    return "".join(out), pos


def normalize(text: str) -> str:
    """Case-, accent- and punctuation-insensitive form used for matching."""
    return _normalize_with_map(text)[0].strip()


def alias_rejection(alias: str, meta: CatalogMeta) -> str | None:
    """Why ``alias`` may not be used for matching, or None if it may."""
    norm = normalize(alias)
    if not norm:
        return "empty after normalisation"
    alnum = sum(1 for c in norm if c != " ")
    cjk = any(_is_cjk(c) for c in norm)
    minimum = meta.min_cjk_alias_chars if cjk else meta.min_alias_chars
    if alnum < minimum:
        return f"shorter than {minimum} letters/digits"
    if norm in meta.stop_aliases:
        return "in the stop-list"
    if all(w in meta.generic_words for w in norm.split()):
        return "only generic words"
    return None


def product_name_alias(product: str) -> str:
    """The product name without a trailing qualifier in parentheses."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", product).strip()


def _trie_regex(words: list[str]) -> str:
    """A regex matching exactly ``words`` (longest first), each followed by its edge check."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = w  # end marker

    def emit(node: dict[str, Any]) -> str:
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if "" in node:
            last = node[""][-1]
            alts.append(r"(?![0-9a-z])" if _is_cjk(last) else r"(?![^\W_])")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(trie)


@dataclass(frozen=True)
class Match:
    product: str
    alias: str  # the catalog alias (as written in the catalog) that matched
    start: int  # offsets into the original text
    end: int


@dataclass(frozen=True)
class ProductLink:
    product: str
    field: str
    alias: str
    snippet: str


@dataclass
class ProductMatcher:
    """Finds catalog products in text with one compiled regular expression.

    Build it with :meth:`from_catalog`. ``aliases`` maps each usable
    normalised alias to the products it names (and the catalog spelling);
    ``dropped`` lists ``(product, alias, reason)`` for aliases the rules in
    ``products.meta.yaml`` exclude.
    """

    aliases: dict[str, tuple[tuple[str, str], ...]]
    dropped: list[tuple[str, str, str]] = field(default_factory=list)
    snippet_chars: int = 60

    def __post_init__(self) -> None:
        # One regex: the aliases as a prefix trie (so the engine does not try
        # hundreds of alternatives at every position). Latin-script edges must
        # not touch another letter/digit; CJK edges only must not touch a
        # Latin letter/digit (CJK text has no spaces between words).
        groups: list[str] = []
        latin = [a for a in self.aliases if not _is_cjk(a[0])]
        cjk = [a for a in self.aliases if _is_cjk(a[0])]
        if latin:
            groups.append(r"(?<![^\W_])" + _trie_regex(latin))
        if cjk:
            groups.append(r"(?<![0-9a-z])" + _trie_regex(cjk))
        self._regex: re.Pattern[str] | None = re.compile("|".join(groups)) if groups else None

    @classmethod
    def from_catalog(
        cls, catalog: pd.DataFrame | None = None, meta: CatalogMeta | None = None
    ) -> ProductMatcher:
        df = catalog if catalog is not None else load_catalog()
        meta = meta or load_meta()
        table: dict[str, dict[str, str]] = {}
        dropped: set[tuple[str, str, str]] = set()
        for rec in df[["product", "aliases"]].astype(str).to_dict("records"):
            product = rec["product"].strip()
            for alias in [product_name_alias(product), *split_aliases(rec["aliases"])]:
                reason = alias_rejection(alias, meta)
                if reason:
                    dropped.add((product, alias, reason))
                    continue
                table.setdefault(normalize(alias), {}).setdefault(product, alias)
        aliases = {norm: tuple(sorted(prods.items())) for norm, prods in table.items()}
        return cls(aliases=aliases, dropped=sorted(dropped))

    @property
    def pattern(self) -> re.Pattern[str] | None:
        """The single compiled regular expression holding every usable alias."""
        return self._regex

    @property
    def products(self) -> list[str]:
        return sorted({p for prods in self.aliases.values() for p, _ in prods})

    def find(self, text: str | None) -> list[Match]:
        """All product mentions in ``text``, in order; one Match per product named."""
        if not text or self._regex is None:
            return []
        norm, pos = _normalize_with_map(text)
        found: list[Match] = []
        for m in self._regex.finditer(norm):
            start = pos[m.start()]
            end = pos[m.end() - 1] + 1
            for product, alias in self.aliases[m.group(0)]:
                found.append(Match(product, alias, start, end))
        return found

    def match_trial(self, fields: Mapping[str, str | None]) -> list[ProductLink]:
        """One link per (product, field): the first mention in that field, with a snippet."""
        links: list[ProductLink] = []
        for name, text in fields.items():
            if not text:
                continue
            seen: set[str] = set()
            for m in self.find(text):
                if m.product in seen:
                    continue
                seen.add(m.product)
                links.append(
                    ProductLink(
                        m.product, name, m.alias, _snippet(text, m.start, m.end, self.snippet_chars)
                    )
                )
        return links


def _snippet(text: str, start: int, end: int, width: int) -> str:
    a = max(0, start - width)
    b = min(len(text), end + width)
    s = " ".join(text[a:b].split())
    return ("…" if a > 0 else "") + s + ("…" if b < len(text) else "")


@functools.lru_cache(maxsize=1)
def default_matcher() -> ProductMatcher:
    """The matcher for the packaged catalog (built once per process)."""
    return ProductMatcher.from_catalog()


def catalog_records(df: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """The catalog as JSON-ready records (aliases split into lists)."""
    df = df if df is not None else load_catalog()
    recs: list[dict[str, Any]] = []
    for raw in df.astype(str).to_dict("records"):
        rec: dict[str, Any] = {str(k): v for k, v in raw.items()}
        rec["aliases"] = split_aliases(rec["aliases"])
        recs.append(rec)
    return recs


# ----------------------------------------------------------------------------- store

#: trial text fields searched for product names (brief summaries and detailed
#: descriptions are not: they often cite other products as background)
LINK_FIELDS: tuple[str, ...] = (
    "title",
    "official_title",
    "intervention_name",
    "intervention_other_name",
    "intervention_description",
)


def trial_texts(store: Store) -> pd.DataFrame:
    """Long table (trial_id, field, text) of the store's texts that :func:`link_products` searches."""
    return store.query(
        """
        SELECT trial_id, 'title' AS field, title AS text FROM trials WHERE title IS NOT NULL
        UNION ALL
        SELECT trial_id, 'official_title', official_title FROM trials WHERE official_title IS NOT NULL
        UNION ALL
        SELECT trial_id, 'intervention_name', name FROM interventions WHERE name IS NOT NULL
        UNION ALL
        SELECT trial_id, 'intervention_other_name', unnest(other_names) FROM interventions
        UNION ALL
        SELECT trial_id, 'intervention_description', description FROM interventions
            WHERE description IS NOT NULL
        """
    )


def find_links(
    texts: pd.DataFrame,
    matcher: ProductMatcher | None = None,
    catalog: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Links for a long table of texts (columns trial_id, field, text).

    One row per (trial_id, product, field): the first mention in the first
    text of that field, in ``LINK_FIELDS`` order then input order.
    """
    catalog = catalog if catalog is not None else load_catalog()
    matcher = matcher or ProductMatcher.from_catalog(catalog)
    regs = catalog.groupby("product")["regulator"].agg(lambda s: "; ".join(dict.fromkeys(s)))
    version = str(catalog.attrs.get("version", ""))
    rows: list[dict[str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    order = {f: i for i, f in enumerate(LINK_FIELDS)}
    ordered = texts.assign(_o=texts["field"].map(order).fillna(len(order))).sort_values(
        ["trial_id", "_o"], kind="stable"
    )
    for trial_id, field_name, text in ordered[["trial_id", "field", "text"]].itertuples(
        index=False
    ):
        if not isinstance(text, str) or not text:
            continue
        for link in matcher.match_trial({str(field_name): text}):
            key = (str(trial_id), link.product, link.field)
            if key in seen:
                continue
            seen.add(key)
            rows.append(
                {
                    "trial_id": str(trial_id),
                    "product": link.product,
                    "regulators": str(regs.get(link.product, "")),
                    "field": link.field,
                    "alias": link.alias,
                    "snippet": link.snippet,
                    "catalog_version": version,
                }
            )
    return pd.DataFrame(rows, columns=list(PRODUCT_LINK_COLUMNS))


def link_products(store: Store, catalog: pd.DataFrame | None = None) -> pd.DataFrame:
    """Find catalog products in every trial of ``store`` and (re)write ``product_links``.

    Returns the links (trial_id, product, regulators, field, alias, snippet,
    catalog_version); the table is replaced in one transaction.
    """
    catalog = catalog if catalog is not None else load_catalog()
    links = find_links(trial_texts(store), catalog=catalog)
    store.write_product_links(links)
    return links


def stored_links(store: Store) -> pd.DataFrame:
    """The ``product_links`` table (empty frame if links were never computed)."""
    return store.product_links()


def _first_date(values: Iterable[Any]) -> str:
    dates = sorted(v for v in values if v)
    return dates[0] if dates else ""


def product_summary(catalog: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """One row per catalog product: vocabulary fields, regulators, first
    approval date, statuses and the number of distinct linked trials."""
    n_trials = (
        links.groupby("product")["trial_id"].nunique() if len(links) else pd.Series(dtype=int)
    )
    out = []
    for product, g in catalog.groupby("product", sort=True):
        out.append(
            {
                "product": str(product),
                "substance": _join(g["substance"]),
                "inn_or_code": _join(g["inn_or_code"]),
                "cell_type": _join(g["cell_type"]),
                "msc_source": _join(g["msc_source"]),
                "gene_modified": _join(g["gene_modified"]),
                "regulators": _join(g["regulator"]),
                "first_approval": _first_date(g["approval_date"]),
                "status": _join(g["status"]),
                "verification": "verified"
                if (g["verification"] == "verified").all()
                else "unverified",
                "n_trials": int(n_trials.get(product, 0)),
            }
        )
    df = pd.DataFrame(out)
    return df.sort_values(
        ["n_trials", "product"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def substances(catalog: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per active substance (the catalog's ``substance`` key): a
    product in the funnel's sense. Brands, code names and regulators are
    approvals of it (Prochymal and Ryoncil are both remestemcel-L).

    Columns: substance, products (brand names, ``; ``), cell_type, msc_source,
    regulators, n_approvals (catalog rows), first_approval (earliest stated
    approval date, ``YYYY-MM-DD`` or ``YYYY-MM``; blank when none is stated),
    status (``; ``-joined)."""
    catalog = catalog if catalog is not None else load_catalog()
    # (grouped in plain Python: a pandas group per substance cost 0.1 s per call)
    rows_of: dict[str, list[dict[Any, Any]]] = {}
    for rec in catalog.to_dict("records"):
        rows_of.setdefault(str(rec["substance"]), []).append(rec)
    out = []
    for sub in sorted(rows_of):
        g = rows_of[sub]
        out.append(
            {
                "substance": sub,
                "products": _join(r["product"] for r in g),
                "cell_type": str(g[0]["cell_type"]),
                "msc_source": str(g[0]["msc_source"]),
                "regulators": _join(r["regulator"] for r in g),
                "n_approvals": len(g),
                "first_approval": _first_date(r["approval_date"] for r in g),
                "status": _join(r["status"] for r in g),
            }
        )
    cols = [
        "substance",
        "products",
        "cell_type",
        "msc_source",
        "regulators",
        "n_approvals",
        "first_approval",
        "status",
    ]
    return pd.DataFrame(out, columns=cols)


def _join(values: Iterable[Any]) -> str:
    return "; ".join(dict.fromkeys(v for v in values if v))


def resolve_product(name: str, catalog: pd.DataFrame | None = None) -> str | None:
    """The catalog product a name or alias refers to (case/punctuation-insensitive)."""
    catalog = catalog if catalog is not None else load_catalog()
    key = normalize(name)
    for product in catalog["product"]:
        if normalize(product) == key:
            return str(product)
    for product, aliases in catalog[["product", "aliases"]].itertuples(index=False):
        if key in {normalize(a) for a in [product_name_alias(product), *split_aliases(aliases)]}:
            return str(product)
    return None


def product_trials(store: Store, product: str) -> pd.DataFrame:
    """Trials linked to ``product`` (from ``product_links``), by phase then start date.

    Columns: trial_id, title, phase, status, start_date, registration_date,
    fields (where the product was named), aliases.
    """

    df = store.query(
        """
        SELECT l.trial_id, t.title, t.phase, t.status, t.start_date, t.registration_date,
               string_agg(DISTINCT l.field, '; ' ORDER BY l.field) AS fields,
               string_agg(DISTINCT l.alias, '; ' ORDER BY l.alias) AS aliases
        FROM product_links l JOIN trials t USING (trial_id)
        WHERE l.product = ?
        GROUP BY ALL
        """,
        [product],
    )
    rank = {p: i for i, p in enumerate(PHASES)}
    df["_rank"] = df["phase"].map(rank).fillna(len(rank))
    df = df.sort_values(["_rank", "start_date", "trial_id"], kind="stable", na_position="last")
    return df.drop(columns="_rank").reset_index(drop=True)


def _json_value(v: Any) -> Any:
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp):
        return None if pd.isna(v) else v.date().isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float) and v != v:  # NaN
        return None
    if hasattr(v, "item"):  # numpy scalar
        return _json_value(v.item())
    return v


def json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-ready dicts (dates ISO, missing values None)."""
    return [{str(k): _json_value(v) for k, v in row.items()} for row in df.to_dict("records")]


def products_table(store: Store, *, relink: bool = True) -> pd.DataFrame:
    """Catalog products with their number of linked trials in ``store``.

    With ``relink`` (default) the links are recomputed first
    (:func:`link_products`); otherwise the stored ``product_links`` are used.
    """
    catalog = load_catalog()
    links = link_products(store, catalog) if relink else stored_links(store)
    return product_summary(catalog, links)


def product_detail(store: Store, name: str, *, relink: bool = True) -> dict[str, Any]:
    """One product (by name or any alias): its catalog rows and linked trials.

    Returns ``{"product", "approvals": [catalog rows], "trials": [...],
    "by_phase": {phase: n}}``; trials are ordered by phase then start date.
    Raises :class:`~celltrials.errors.ConfigError` for an unknown name.
    """

    catalog = load_catalog()
    product = resolve_product(name, catalog)
    if product is None:
        raise ConfigError(
            f"no product {name!r} in the catalog",
            hint="List products with `celltrials products`; names, INNs and code names all work.",
        )
    if relink:
        link_products(store, catalog)
    trials = product_trials(store, product)
    rows = catalog[catalog["product"] == product]
    by_phase = trials.groupby("phase", sort=False).size() if len(trials) else pd.Series(dtype=int)
    return {
        "product": product,
        "approvals": json_records(rows.drop(columns=["notes"])),
        "trials": json_records(trials),
        "by_phase": {str(k): int(v) for k, v in by_phase.items()},
    }
