"""Investigational product code names: a curated, cited list (``code_names.csv``).

Each row names one investigational cell product by its code (``NKR-2``,
``CYAD-101``, ``QN-019a``...) with what is known about it — cell type, MSC
source, origin, product form, targets — and the source that says so
(``source_url``: a company pipeline page, a publication, an INN list or the
registry record whose own description defines the code). ``verified`` is
``yes`` only when the row's facts were checked against that source;
``no`` rows are a curator's reading still to be checked (they are used for
matching all the same).

The list's version and controlled values live in ``code_names.meta.yaml``.
:func:`load_code_names` validates both and raises
:class:`~celltrials.errors.TaxonomyError` naming the file, the line and the
problem; :func:`code_name_entries` turns the rows into taxonomy product
entries (one regular expression per name: case-insensitive, ``-``/space/no
separator between letters and digits all match).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from celltrials.errors import TaxonomyError
from celltrials.taxonomy.engine import Entry
from celltrials.taxonomy.values import TAXONOMY_VALUES

COLUMNS: tuple[str, ...] = (
    "code_name",
    "aliases",
    "cell_type",
    "msc_source",
    "origin",
    "product_form",
    "targets",
    "developer",
    "source_url",
    "verified",
    "note",
)
REQUIRED: tuple[str, ...] = (
    "code_name",
    "cell_type",
    "origin",
    "product_form",
    "source_url",
    "verified",
)
DEFAULT_PATH = Path(__file__).with_name("code_names.csv")
_MIN_CHARS = 4  # letters/digits a name needs to be matched (shorter: ambiguous)
_URL = re.compile(r"https?://[^\s/]+\.[^\s]+")


@dataclass(frozen=True, slots=True)
class CodeName:
    """One row of the code-name list."""

    line: int
    code_name: str
    aliases: tuple[str, ...]
    cell_type: tuple[str, ...]
    msc_source: tuple[str, ...]
    origin: str
    product_form: tuple[str, ...]
    targets: tuple[str, ...]
    developer: str
    source_url: str
    verified: bool
    note: str

    @property
    def names(self) -> tuple[str, ...]:
        return (self.code_name, *self.aliases)


def _meta_path(path: Path) -> Path:
    return path.with_name(path.stem + ".meta.yaml")


def load_meta(path: Path) -> dict[str, Any]:
    """The list's meta file: version, compiled date and allowed values."""
    mp = _meta_path(path)
    try:
        meta = yaml.safe_load(mp.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaxonomyError(
            f"{mp}: cannot read: {exc}", hint="The code-name list needs its .meta.yaml beside it."
        ) from None
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{mp}: not valid YAML: {exc}", hint="Fix the YAML syntax.") from None
    if not isinstance(meta, dict):
        raise TaxonomyError(
            f"{mp}: top level must be a mapping", hint="See the packaged code_names.meta.yaml."
        )
    version = meta.get("version")
    if not isinstance(version, str) or not re.fullmatch(r"\d{4}\.\d{1,2}\.\d+", version):
        raise TaxonomyError(
            f"{mp}: version must be a string like '2026.11.1', got {version!r}",
            hint="Bump `version` whenever code_names.csv changes.",
        )
    return meta


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(";") if v.strip())


def name_pattern(name: str) -> str:
    """A regular expression for a code name: case-insensitive; between letters and
    digits (and where the name has ``-``, space or ``_``) a hyphen, a space or
    nothing all match ("QN-019a" = "QN019a" = "QN 019a")."""
    parts = [p for p in re.split(r"[-\s_]+", name.strip()) if p]
    out: list[str] = []
    for i, part in enumerate(parts):
        chunks = re.findall(r"[A-Za-z]+|\d+|[^A-Za-z\d]+", part)
        sub = ""
        for j, ch in enumerate(chunks):
            if (
                j
                and (chunks[j - 1][-1].isalpha() != ch[0].isalpha())
                and (ch[0].isalnum() and chunks[j - 1][-1].isalnum())
            ):
                sub += "[- ]?"
            sub += re.escape(ch)
        out.append(sub)
        if i < len(parts) - 1:
            out.append("[- _]?")
    return "".join(out)


def load_code_names(  # noqa: C901 - one check per column of the catalog
    path: str | Path | None = None, target_values: Iterable[str] | None = None
) -> list[CodeName]:
    """Read and validate the code-name list; every problem is reported at once."""

    p = Path(path) if path is not None else DEFAULT_PATH
    meta = load_meta(p)
    allowed_verified = {"yes", "no"}
    targets = set(target_values) if target_values is not None else None
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaxonomyError(
            f"{p}: cannot read: {exc}", hint="Check the path of the code-name list."
        ) from None
    reader = csv.DictReader(text.splitlines())
    header = tuple(reader.fieldnames or ())
    if header != COLUMNS:
        raise TaxonomyError(
            f"{p}: columns must be {', '.join(COLUMNS)}; got {', '.join(header)}",
            hint="Keep the header of the packaged code_names.csv.",
        )
    problems: list[str] = []
    rows: list[CodeName] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(reader, start=2):
        row = {k: (raw.get(k) or "").strip() for k in COLUMNS}
        if None in raw:
            problems.append(f"line {i}: more fields than columns")
        name = row["code_name"] or f"line {i}"

        def bad(msg: str, _i: int = i, _name: str = name) -> None:
            problems.append(f"line {_i} ({_name}): {msg}")

        for col in REQUIRED:
            if not row[col]:
                bad(f"missing {col}")
        cts = _split(row["cell_type"])
        for v in cts:
            if v not in TAXONOMY_VALUES["cell_type"]:
                bad(f"unknown cell_type {v!r}")
        srcs = _split(row["msc_source"])
        for v in srcs:
            if v not in TAXONOMY_VALUES["msc_source"]:
                bad(f"unknown msc_source {v!r}")
        if srcs and "msc" not in cts:
            bad("msc_source given for a product that is not msc")
        if row["origin"] and row["origin"] not in TAXONOMY_VALUES["origin"]:
            bad(f"unknown origin {row['origin']!r}")
        forms = _split(row["product_form"])
        for v in forms:
            if v not in TAXONOMY_VALUES["product_form"]:
                bad(f"unknown product_form {v!r}")
        tgs = _split(row["targets"])
        if targets is not None:
            for v in tgs:
                if v not in targets:
                    bad(f"unknown target {v!r}; add it to the taxonomy's 'targets' first")
        if row["source_url"] and not _URL.fullmatch(row["source_url"]):
            bad(f"source_url is not an http(s) URL: {row['source_url']!r}")
        if row["verified"] and row["verified"] not in allowed_verified:
            bad(f"verified must be yes or no, got {row['verified']!r}")
        aliases = _split(row["aliases"])
        for n in (row["code_name"], *aliases):
            if not n:
                continue
            key = re.sub(r"[^a-z0-9]", "", n.lower())
            if len(key) < _MIN_CHARS:
                bad(
                    f"name {n!r} is too short to match safely (< {_MIN_CHARS} letters/digits); use a longer alias"
                )
            elif key in seen and seen[key] != i:
                bad(f"name {n!r} already used on line {seen[key]}")
            else:
                seen[key] = i
        rows.append(
            CodeName(
                i,
                row["code_name"],
                aliases,
                cts,
                srcs,
                row["origin"],
                forms,
                tgs,
                row["developer"],
                row["source_url"],
                row["verified"] == "yes",
                row["note"],
            )
        )
    if problems:
        shown = "; ".join(problems[:20]) + (
            f"; … {len(problems) - 20} more" if len(problems) > 20 else ""
        )
        raise TaxonomyError(
            f"{p}: {len(problems)} problem(s): {shown}",
            hint=f"Fix the named lines; allowed values are those of TAXONOMY.md (version {meta['version']}).",
        )
    return rows


def code_name_entries(
    path: str | Path | None = None, target_values: Iterable[str] | None = None
) -> tuple[list[Any], list[list[str]]]:
    """Taxonomy product entries (and their pattern alternatives) for the list."""

    entries: list[Any] = []
    alts: list[list[str]] = []
    for cn in load_code_names(path, target_values):
        labels: dict[str, tuple[str, ...]] = {"cell_type": cn.cell_type}
        if cn.msc_source:
            labels["msc_source"] = cn.msc_source
        if cn.origin and cn.origin != "unspecified":
            labels["origin"] = (cn.origin,)
        if cn.product_form and cn.product_form != ("cells",):
            labels["product_form"] = cn.product_form
        if cn.targets:
            labels["targets"] = cn.targets
        entries.append(
            Entry(
                f"code name {cn.code_name}",
                labels,
                {"code_name": cn.code_name, "verified": cn.verified},
            )
        )
        alts.append([f"(?:{name_pattern(n)})" for n in cn.names])
    return entries, alts
