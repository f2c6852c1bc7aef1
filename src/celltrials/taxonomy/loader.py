"""Load and validate the cell-therapy taxonomy (``taxonomy.yaml``).

The YAML file is data: synonyms are regular expressions a domain expert can
edit without touching Python. This module checks every entry (known keys
only, values from TAXONOMY.md, patterns that compile, no named groups) and
compiles each field's patterns with :mod:`celltrials.taxonomy.engine`
(:class:`CompiledField`: the matching rule, the literal prefilter and bounded
repeats that keep classification linear in text length).

Errors are :class:`celltrials.errors.TaxonomyError` naming the file and the
entry at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from celltrials.errors import TaxonomyError
from celltrials.taxonomy.code_names import code_name_entries
from celltrials.taxonomy.engine import CompiledField, Entry, Hit, LiteralGate
from celltrials.taxonomy.values import TAXONOMY_VALUES

__all__ = [
    "TAXONOMY_VALUES",
    "CompiledField",
    "Entry",
    "Hit",
    "Taxonomy",
    "build_taxonomy",
    "default_taxonomy",
    "load_taxonomy",
]

DEFAULT_PATH = Path(__file__).with_name("taxonomy.yaml")

_TOP_KEYS = {
    "version",
    "values",
    "products",
    "cell_type",
    "generic_fallback",
    "generic_cell_cues",
    "exclusions",
    "background_cues",
    "comparator_prefixes",
    "msc_source",
    "origin",
    "implied_origin",
    "msc_source_target_cues",
    "product_form",
    "engineered_by_definition",
    "indications",
    "indication_fallback",
    "targets",
    "routes",
    "combinations",
    "manufacturing",
    "doses",
    "engineering",
    "code_names",
    "study_subject_cues",
    "in_vivo_car",
}
_REQUIRED_KEYS = {
    "version",
    "values",
    "cell_type",
    "msc_source",
    "origin",
    "product_form",
    "indications",
}
_PATTERN_KEYS = ("patterns", "case_sensitive_patterns")


@dataclass(frozen=True, slots=True)
class Engineering:
    """The engineering model (``engineering`` in taxonomy.yaml): a product is a
    *base cell* plus *engineering* — a receptor (CAR, TCR, TCR-like CAR) and extra
    edits (armour, knock-out, switch, dominant-negative receptor, mRNA...).
    ``cell_types[(receptor, base)]`` maps a receptor placed on a base cell to the
    guide's cell types; an edit makes the product ``gene_modified``."""

    receptors: (
        CompiledField  # entry value = receptor; option "base" when the word names the cell too
    )
    bases: CompiledField  # entry value = base cell
    cell_types: Mapping[tuple[str, str], tuple[str, ...]]
    window: int  # max characters between a receptor and the base cell it is placed on
    edits: CompiledField  # entry value = edit kind; option "weak" (not for engineered_by_definition types)


@dataclass(frozen=True, slots=True)
class InVivoCar:
    """In vivo CAR (no cells given): cues in titles / intervention names, stricter
    cues in summaries, and the cell types such a trial does not get."""

    cues: CompiledField
    summary_cues: CompiledField
    cell_types: frozenset[str]


@dataclass(slots=True)
class Taxonomy:
    version: str
    path: str
    products: CompiledField
    cell_type: CompiledField
    generic_fallback_cell_type: str
    generic_fallback: CompiledField
    generic_cell_cues: CompiledField
    exclusions: CompiledField
    background_cue: re.Pattern[str]
    comparator_prefix: re.Pattern[str]
    msc_source: CompiledField
    origin: CompiledField
    implied_origin_by_source: dict[str, str]
    implied_origin_by_cell_type: dict[str, str]
    product_form: CompiledField
    product_form_weak: CompiledField
    engineered_by_definition: frozenset[str]
    indications: CompiledField
    indications_unlimited: CompiledField
    indications_priority: CompiledField
    msc_source_target_cue: re.Pattern[str]
    oncology_cell_types: frozenset[str]
    default_indication: tuple[str, str]
    targets: CompiledField
    routes: CompiledField
    combinations: CompiledField
    manufacturing: CompiledField
    doses: CompiledField
    raw: dict[str, Any]
    engineering: Engineering | None = None
    study_subject_cues: CompiledField | None = None
    in_vivo_car: InVivoCar | None = None
    #: a necessary condition for ``background_cue`` (its cues' literals; see
    #: engine.LiteralGate): most windows before a mention have none of them
    background_gate: LiteralGate | None = None

    def cell_type_option(self, value: str, option: str) -> Any:
        for e in self.cell_type.entries:
            if e.value == value:
                return e.options.get(option)
        return None


# ---------------------------------------------------------------------------
# validation helpers


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, msg: str) -> TaxonomyError:
        return TaxonomyError(
            f"{self.path}: {where}: {msg}",
            hint="Fix the named entry in taxonomy.yaml; values must be those of TAXONOMY.md.",
        )


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, list):
        return x
    return [x]


def _check_pattern(ctx: _Ctx, where: str, pat: Any) -> str:
    if not isinstance(pat, str) or not pat.strip():
        raise ctx.fail(where, f"pattern must be a non-empty string, got {pat!r}")
    try:
        compiled = re.compile(pat, re.IGNORECASE)
    except re.error as exc:
        raise ctx.fail(where, f"pattern {pat!r} does not compile: {exc}") from None
    if compiled.groupindex:
        raise ctx.fail(where, f"pattern {pat!r} must not contain named groups")
    if compiled.match(""):
        raise ctx.fail(where, f"pattern {pat!r} matches the empty string")
    return pat


def _alternatives(
    ctx: _Ctx, where: str, item: Mapping[str, Any], *, required: bool = True
) -> list[str]:
    """An entry's patterns; one listed under ``case_sensitive_patterns`` is only
    matched case-sensitively, even if it is also listed under ``patterns``."""
    alts: list[str] = []
    cs = item.get("case_sensitive_patterns")
    cs_set = set(cs) if isinstance(cs, list) else set()
    for key in _PATTERN_KEYS:
        raw = item.get(key)
        if raw is None:
            continue
        if not isinstance(raw, list):
            raise ctx.fail(where, f"'{key}' must be a list of regular expressions")
        for p in raw:
            if key == "patterns" and p in cs_set:
                continue
            pat = _check_pattern(ctx, where, p)
            alts.append(f"(?-i:{pat})" if key == "case_sensitive_patterns" else f"(?:{pat})")
    if required and not alts:
        raise ctx.fail(where, "entry has no patterns")
    return alts


def _check_value(ctx: _Ctx, where: str, fld: str, value: Any) -> str:
    allowed = TAXONOMY_VALUES.get(fld)
    if not isinstance(value, str):
        raise ctx.fail(where, f"{fld} value must be a string, got {value!r}")
    if allowed is not None and value not in allowed:
        raise ctx.fail(where, f"unknown {fld} value {value!r}; allowed: {', '.join(allowed)}")
    return value


def _check_keys(ctx: _Ctx, where: str, item: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise ctx.fail(where, f"expected a mapping, got {type(item).__name__}")
    unknown = set(item) - allowed
    if unknown:
        raise ctx.fail(
            where,
            f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(allowed))}",
        )
    return item


def _value_field(
    ctx: _Ctx, section: str, data: Any, fld: str | None, extra_keys: AbstractSet[str] = frozenset()
) -> CompiledField:
    """A list of ``{value, patterns, case_sensitive_patterns, ...}`` entries."""
    if not isinstance(data, list):
        raise ctx.fail(section, "expected a list of entries")
    entries: list[Entry] = []
    alts: list[list[str]] = []
    for i, item in enumerate(data):
        where = f"{section}[{i}]"
        item = _check_keys(ctx, where, item, {"value", *_PATTERN_KEYS, *extra_keys})
        if "value" not in item:
            raise ctx.fail(where, "missing 'value'")
        value = item["value"]
        where = f"{section}[{i}] ({value})"
        if fld is not None:
            _check_value(ctx, where, fld, value)
        elif not isinstance(value, str) or not value:
            raise ctx.fail(where, "value must be a non-empty string")
        options = {k: item[k] for k in extra_keys if k in item}
        entries.append(Entry(str(value), {fld or section: (str(value),)}, options))
        alts.append(_alternatives(ctx, where, item))
    return CompiledField(entries, alts)


def _pattern_list(ctx: _Ctx, section: str, data: Any) -> list[str]:
    if not isinstance(data, list) or not data:
        raise ctx.fail(section, "expected a non-empty list of regular expressions")
    return [_check_pattern(ctx, f"{section}[{i}]", p) for i, p in enumerate(data)]


def _single(name: str, pats: list[str], shared: bool = True) -> CompiledField:
    return CompiledField([Entry(name, {})], [[f"(?:{p})" for p in pats]], shared)


# ---------------------------------------------------------------------------


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Read, validate and compile a taxonomy YAML file (default: the packaged one)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    return build_taxonomy(_read_yaml(p), source=str(p))


def _check_version(ctx: _Ctx, version: Any) -> str:
    if not isinstance(version, str) or not re.fullmatch(r"\d{4}\.\d{1,2}\.\d+", version):
        raise ctx.fail("version", f"version must be a string like '2026.11.1', got {version!r}")
    return version


def _read_yaml(p: Path) -> Any:
    ctx = _Ctx(str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaxonomyError(
            f"{p}: cannot read taxonomy: {exc}", hint="Check the path of the taxonomy file."
        ) from None
    try:
        # libyaml's parser when PyYAML has it (the same safe constructor, a tenth of
        # the time: every classifying process, and the fork server of its workers, reads it)
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ctx.fail("file", f"not valid YAML: {exc}") from None
    return raw


def build_taxonomy(raw: Any, source: str = "<taxonomy>") -> Taxonomy:  # noqa: C901 - one check per section of taxonomy.yaml
    """Validate and compile an already parsed taxonomy mapping."""
    ctx = _Ctx(source)
    if not isinstance(raw, dict):
        raise ctx.fail("file", "top level must be a mapping")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ctx.fail("top level", f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    missing = _REQUIRED_KEYS - set(raw)
    if missing:
        raise ctx.fail("top level", f"missing key(s) {', '.join(sorted(missing))}")
    version = _check_version(ctx, raw["version"])

    # values must agree with TAXONOMY.md exactly
    values = _check_keys(ctx, "values", raw["values"], set(TAXONOMY_VALUES))
    for fld, allowed in TAXONOMY_VALUES.items():
        got = values.get(fld)
        if not isinstance(got, list) or [str(v) for v in got] != list(allowed):
            raise ctx.fail(
                f"values.{fld}", f"must list exactly the TAXONOMY.md values {list(allowed)}"
            )

    # products: entries implying several labels
    prod_entries: list[Entry] = []
    prod_alts: list[list[str]] = []
    label_fields = ("cell_type", "msc_source", "origin", "product_form")
    for i, item in enumerate(_as_list(raw.get("products"))):
        where = f"products[{i}]"
        item = _check_keys(ctx, where, item, {"name", *_PATTERN_KEYS, *label_fields, "targets"})
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ctx.fail(where, "missing 'name'")
        where = f"products[{i}] ({name})"
        labels: dict[str, tuple[str, ...]] = {}
        for fld in label_fields:
            if fld in item:
                labels[fld] = tuple(_check_value(ctx, where, fld, v) for v in _as_list(item[fld]))
        if "targets" in item:
            labels["targets"] = tuple(str(v) for v in _as_list(item["targets"]))
        if "cell_type" not in labels:
            raise ctx.fail(where, "a product must name its cell_type")
        prod_entries.append(Entry(name, labels))
        prod_alts.append(_alternatives(ctx, where, item))
    # (compiled once, below, with the code names: every field compiled joins the
    # shared index, and each text's scan lists its candidates, asked or not)

    # cell types (ordered by precedence)
    ct_raw = raw["cell_type"]
    if not isinstance(ct_raw, list):
        raise ctx.fail("cell_type", "expected a list of entries")
    ct_entries: list[Entry] = []
    ct_alts: list[list[str]] = []
    seen: set[str] = set()
    for i, item in enumerate(ct_raw):
        where = f"cell_type[{i}]"
        item = _check_keys(
            ctx,
            where,
            item,
            {
                "value",
                *_PATTERN_KEYS,
                "primary_only",
                "dropped_with_other_cells_in",
                "dropped_with_cell_types",
            },
        )
        value = _check_value(ctx, where, "cell_type", item.get("value"))
        where = f"cell_type[{i}] ({value})"
        if value in seen:
            raise ctx.fail(where, "duplicate cell_type entry")
        seen.add(value)
        opts: dict[str, Any] = {}
        if "primary_only" in item:
            if not isinstance(item["primary_only"], bool):
                raise ctx.fail(where, "primary_only must be true/false")
            opts["primary_only"] = item["primary_only"]
        if "dropped_with_other_cells_in" in item:
            opts["dropped_with_other_cells_in"] = frozenset(
                _check_value(ctx, where, "therapeutic_area", v)
                for v in _as_list(item["dropped_with_other_cells_in"])
            )
        if "dropped_with_cell_types" in item:
            opts["dropped_with_cell_types"] = frozenset(
                _check_value(ctx, where, "cell_type", v)
                for v in _as_list(item["dropped_with_cell_types"])
            )
        ct_entries.append(Entry(value, {"cell_type": (value,)}, opts))
        ct_alts.append(_alternatives(ctx, where, item))
    cell_type = CompiledField(ct_entries, ct_alts)

    gf = _check_keys(
        ctx,
        "generic_fallback",
        raw.get("generic_fallback") or {"cell_type": "other_stem", "patterns": ["stem cells?"]},
        {"cell_type", "patterns"},
    )
    gf_value = _check_value(ctx, "generic_fallback", "cell_type", gf.get("cell_type"))
    generic_fallback = _single(
        "generic", _pattern_list(ctx, "generic_fallback.patterns", gf.get("patterns"))
    )
    generic_cues = _single(
        "generic_cue",
        _pattern_list(ctx, "generic_cell_cues", raw.get("generic_cell_cues") or ["cells?"]),
    )

    # exclusions
    ex_entries: list[Entry] = []
    ex_alts: list[list[str]] = []
    for i, item in enumerate(_as_list(raw.get("exclusions"))):
        where = f"exclusions[{i}]"
        item = _check_keys(ctx, where, item, {"name", *_PATTERN_KEYS})
        ex_entries.append(Entry(str(item.get("name", where)), {}))
        ex_alts.append(_alternatives(ctx, where, item))
    exclusions = CompiledField(ex_entries, ex_alts)

    cues = _pattern_list(ctx, "background_cues", raw.get("background_cues") or ["prior"])
    background_cue = re.compile(
        r"(?<!\w)(?:" + "|".join(f"(?:{c})" for c in cues) + r")(?:\W+\w+){0,4}?\W*$", re.IGNORECASE
    )
    comps = _pattern_list(
        ctx, "comparator_prefixes", raw.get("comparator_prefixes") or ["control\\s*:"]
    )
    comparator_prefix = re.compile(
        r"^\s*(?:" + "|".join(f"(?:{c})" for c in comps) + ")", re.IGNORECASE
    )

    msc_source = _value_field(ctx, "msc_source", raw["msc_source"], "msc_source")
    origin = _value_field(ctx, "origin", raw["origin"], "origin")

    io = _check_keys(
        ctx, "implied_origin", raw.get("implied_origin") or {}, {"by_msc_source", "by_cell_type"}
    )
    by_src: dict[str, str] = {}
    for k, v in _check_keys(
        ctx,
        "implied_origin.by_msc_source",
        io.get("by_msc_source") or {},
        set(TAXONOMY_VALUES["msc_source"]),
    ).items():
        by_src[k] = _check_value(ctx, f"implied_origin.by_msc_source.{k}", "origin", v)
    by_ct: dict[str, str] = {}
    for k, v in _check_keys(
        ctx,
        "implied_origin.by_cell_type",
        io.get("by_cell_type") or {},
        set(TAXONOMY_VALUES["cell_type"]),
    ).items():
        by_ct[k] = _check_value(ctx, f"implied_origin.by_cell_type.{k}", "origin", v)

    # product forms (+ weak gene_modified patterns)
    pf_raw = raw["product_form"]
    if not isinstance(pf_raw, list):
        raise ctx.fail("product_form", "expected a list of entries")
    pf_entries: list[Entry] = []
    pf_alts: list[list[str]] = []
    weak_entries: list[Entry] = []
    weak_alts: list[list[str]] = []
    for i, item in enumerate(pf_raw):
        where = f"product_form[{i}]"
        item = _check_keys(ctx, where, item, {"value", *_PATTERN_KEYS, "weak_patterns"})
        value = _check_value(ctx, where, "product_form", item.get("value"))
        where = f"product_form[{i}] ({value})"
        pf_entries.append(Entry(value, {"product_form": (value,)}))
        pf_alts.append(_alternatives(ctx, where, item))
        if "weak_patterns" in item:
            weak_entries.append(Entry(value, {"product_form": (value,)}))
            weak_alts.append(
                [
                    f"(?:{p})"
                    for p in _pattern_list(ctx, f"{where}.weak_patterns", item["weak_patterns"])
                ]
            )
    product_form = CompiledField(pf_entries, pf_alts)
    # (fields read on their own texts mostly: not shared, see CompiledField.hits)
    product_form_weak = CompiledField(weak_entries, weak_alts, shared=False)
    engineered = frozenset(
        _check_value(ctx, "engineered_by_definition", "cell_type", v)
        for v in _as_list(raw.get("engineered_by_definition"))
    )

    # indications
    ind_raw = raw["indications"]
    if not isinstance(ind_raw, list) or not ind_raw:
        raise ctx.fail("indications", "expected a non-empty list of rules")
    ind_entries: list[Entry] = []
    ind_alts: list[list[str]] = []
    for i, item in enumerate(ind_raw):
        where = f"indications[{i}]"
        item = _check_keys(
            ctx,
            where,
            item,
            {
                *_PATTERN_KEYS,
                "indication_group",
                "therapeutic_area",
                "cell_types",
                "generic",
                "priority",
            },
        )
        group = _check_value(ctx, where, "indication_group", item.get("indication_group"))
        areas = tuple(
            _check_value(ctx, where, "therapeutic_area", v)
            for v in _as_list(item.get("therapeutic_area"))
        )
        if not areas:
            raise ctx.fail(where, "missing therapeutic_area")
        iopts: dict[str, Any] = {
            "rank": i,
            "generic": bool(item.get("generic", False)),
            "priority": bool(item.get("priority", False)),
        }
        if "cell_types" in item:
            iopts["cell_types"] = frozenset(
                _check_value(ctx, where, "cell_type", v) for v in _as_list(item["cell_types"])
            )
        ind_entries.append(
            Entry(
                f"indications[{i}]",
                {"indication_group": (group,), "therapeutic_area": areas},
                iopts,
            )
        )
        ind_alts.append(_alternatives(ctx, where, item))
    indications = CompiledField(ind_entries, ind_alts, shared=False)
    indications_priority = CompiledField(
        ind_entries,
        [
            a if e.options.get("priority") else []
            for e, a in zip(ind_entries, ind_alts, strict=True)
        ],
    )
    # the same rules without those limited to some cell types (rescan when such a rule is not allowed)
    indications_unlimited = CompiledField(
        ind_entries,
        [
            a if "cell_types" not in e.options else []
            for e, a in zip(ind_entries, ind_alts, strict=True)
        ],
        shared=False,
    )
    tcues = _pattern_list(
        ctx, "msc_source_target_cues", raw.get("msc_source_target_cues") or ["for"]
    )
    msc_source_target_cue = re.compile(
        r"(?<!\w)(?:" + "|".join(f"(?:{c})" for c in tcues) + r")(?:\W+\w+){0,2}?\W*$",
        re.IGNORECASE,
    )
    fb = _check_keys(
        ctx,
        "indication_fallback",
        raw.get("indication_fallback") or {},
        {"oncology_cell_types", "default"},
    )
    onc_types = frozenset(
        _check_value(ctx, "indication_fallback", "cell_type", v)
        for v in _as_list(fb.get("oncology_cell_types"))
    )
    dflt = _check_keys(
        ctx,
        "indication_fallback.default",
        fb.get("default") or {"indication_group": "other", "therapeutic_area": "other"},
        {"indication_group", "therapeutic_area"},
    )
    default_ind = (
        _check_value(
            ctx, "indication_fallback.default", "indication_group", dflt.get("indication_group")
        ),
        _check_value(
            ctx, "indication_fallback.default", "therapeutic_area", dflt.get("therapeutic_area")
        ),
    )

    targets = _value_field(ctx, "targets", raw.get("targets") or [], None)
    target_values = {e.value for e in targets.entries}
    for e in prod_entries:
        for tv in e.labels.get("targets", ()):
            if tv not in target_values:
                raise ctx.fail(
                    f"products ({e.name})", f"unknown target {tv!r}; add it to 'targets' first"
                )
    routes = _value_field(ctx, "routes", raw.get("routes") or [], None)
    combinations = _value_field(ctx, "combinations", raw.get("combinations") or [], None)
    manufacturing = _value_field(ctx, "manufacturing", raw.get("manufacturing") or [], None)
    doses = _single("dose", _pattern_list(ctx, "doses", raw.get("doses") or ["\\d+ cells/kg"]))
    engineering = (
        _engineering(ctx, raw["engineering"]) if raw.get("engineering") is not None else None
    )
    code_names = raw.get("code_names")
    if code_names is not None:
        if not isinstance(code_names, str) or not code_names.strip():
            raise ctx.fail("code_names", "must be the file name of the code-name list (CSV)")
        base_dir = Path(source).parent if Path(source).is_file() else DEFAULT_PATH.parent
        cn_entries, cn_alts = code_name_entries(
            base_dir / code_names, {e.value for e in targets.entries}
        )
        # YAML products first: at one text position the entry listed first wins
        prod_entries = [*prod_entries, *cn_entries]
        prod_alts = [*prod_alts, *cn_alts]
    products = CompiledField(prod_entries, prod_alts)

    return Taxonomy(
        version=version,
        path=source,
        products=products,
        cell_type=cell_type,
        generic_fallback_cell_type=gf_value,
        generic_fallback=generic_fallback,
        generic_cell_cues=generic_cues,
        exclusions=exclusions,
        background_cue=background_cue,
        comparator_prefix=comparator_prefix,
        msc_source=msc_source,
        origin=origin,
        implied_origin_by_source=by_src,
        implied_origin_by_cell_type=by_ct,
        product_form=product_form,
        product_form_weak=product_form_weak,
        engineered_by_definition=engineered,
        indications=indications,
        indications_unlimited=indications_unlimited,
        indications_priority=indications_priority,
        msc_source_target_cue=msc_source_target_cue,
        oncology_cell_types=onc_types,
        default_indication=default_ind,
        targets=targets,
        routes=routes,
        combinations=combinations,
        manufacturing=manufacturing,
        doses=doses,
        raw=raw,
        engineering=engineering,
        in_vivo_car=_in_vivo_car(ctx, raw["in_vivo_car"])
        if raw.get("in_vivo_car") is not None
        else None,
        study_subject_cues=(
            _single(
                "study_subject", _pattern_list(ctx, "study_subject_cues", raw["study_subject_cues"])
            )
            if raw.get("study_subject_cues") is not None
            else None
        ),
        # (the cues follow (?<!\w): a literal that starts a cue starts a word)
        background_gate=LiteralGate(cues, word_start=True),
    )


_RECEPTORS = ("car", "tcr", "tcr_like_car")


def _in_vivo_car(ctx: _Ctx, data: Any) -> InVivoCar:
    ivc = _check_keys(ctx, "in_vivo_car", data, {"cues", "summary_cues", "cell_types"})
    cts = frozenset(
        _check_value(ctx, "in_vivo_car.cell_types", "cell_type", v)
        for v in _as_list(ivc.get("cell_types"))
    )
    if not cts:
        raise ctx.fail("in_vivo_car.cell_types", "expected a non-empty list of cell types")
    return InVivoCar(
        cues=_single("in_vivo_car", _pattern_list(ctx, "in_vivo_car.cues", ivc.get("cues"))),
        summary_cues=_single(
            "in_vivo_car",
            _pattern_list(ctx, "in_vivo_car.summary_cues", ivc.get("summary_cues")),
            shared=False,
        ),
        cell_types=cts,
    )


def _engineering(ctx: _Ctx, data: Any) -> Engineering:
    """Validate the ``engineering`` section (see :class:`Engineering`)."""
    eng = _check_keys(
        ctx, "engineering", data, {"receptors", "base_cells", "cell_types", "window", "edits"}
    )
    for key in ("receptors", "base_cells", "cell_types", "edits"):
        if not isinstance(eng.get(key), list) or not eng[key]:
            raise ctx.fail(f"engineering.{key}", "expected a non-empty list")
    bases: list[Entry] = []
    base_alts: list[list[str]] = []
    for i, item in enumerate(eng["base_cells"]):
        where = f"engineering.base_cells[{i}]"
        item = _check_keys(ctx, where, item, {"value", *_PATTERN_KEYS})
        value = item.get("value")
        if not isinstance(value, str) or not re.fullmatch(r"[a-z_]+", value):
            raise ctx.fail(where, f"value must be a lower-case name, got {value!r}")
        bases.append(Entry(value, {"base": (value,)}))
        base_alts.append(_alternatives(ctx, f"{where} ({value})", item))
    base_names = {e.value for e in bases}
    receptors: list[Entry] = []
    rec_alts: list[list[str]] = []
    for i, item in enumerate(eng["receptors"]):
        where = f"engineering.receptors[{i}]"
        item = _check_keys(ctx, where, item, {"value", "base", *_PATTERN_KEYS})
        value = item.get("value")
        if value not in _RECEPTORS:
            raise ctx.fail(where, f"unknown receptor {value!r}; allowed: {', '.join(_RECEPTORS)}")
        opts: dict[str, Any] = {}
        if "base" in item:
            if item["base"] not in base_names:
                raise ctx.fail(
                    where, f"unknown base cell {item['base']!r}; add it to engineering.base_cells"
                )
            opts["base"] = item["base"]
        receptors.append(Entry(value, {"receptor": (value,)}, opts))
        rec_alts.append(_alternatives(ctx, f"{where} ({value})", item))
    mapping: dict[tuple[str, str], tuple[str, ...]] = {}
    for i, item in enumerate(eng["cell_types"]):
        where = f"engineering.cell_types[{i}]"
        item = _check_keys(ctx, where, item, {"receptor", "base", "cell_type"})
        rec, base = item.get("receptor"), item.get("base")
        if rec not in _RECEPTORS:
            raise ctx.fail(where, f"unknown receptor {rec!r}; allowed: {', '.join(_RECEPTORS)}")
        if base not in base_names:
            raise ctx.fail(where, f"unknown base cell {base!r}; add it to engineering.base_cells")
        cts = tuple(
            _check_value(ctx, where, "cell_type", v) for v in _as_list(item.get("cell_type"))
        )
        if not cts:
            raise ctx.fail(where, "missing cell_type")
        if (rec, base) in mapping:
            raise ctx.fail(where, f"duplicate mapping for receptor {rec} on {base}")
        mapping[(rec, base)] = cts
    for rec in {e.value for e in receptors}:
        if not any(r == rec for r, _ in mapping):
            raise ctx.fail(
                "engineering.cell_types", f"receptor {rec!r} is never mapped to a cell type"
            )
    window = eng.get("window", 40)
    if not isinstance(window, int) or isinstance(window, bool) or not 0 < window <= 200:
        raise ctx.fail(
            "engineering.window", f"must be an integer between 1 and 200, got {window!r}"
        )
    edits: list[Entry] = []
    edit_alts: list[list[str]] = []
    for i, item in enumerate(eng["edits"]):
        where = f"engineering.edits[{i}]"
        item = _check_keys(ctx, where, item, {"value", "weak", *_PATTERN_KEYS})
        value = item.get("value")
        if not isinstance(value, str) or not re.fullmatch(r"[a-z_]+", value):
            raise ctx.fail(where, f"value must be a lower-case name, got {value!r}")
        if not isinstance(item.get("weak", False), bool):
            raise ctx.fail(where, "weak must be true/false")
        edits.append(Entry(value, {"edit": (value,)}, {"weak": bool(item.get("weak", False))}))
        edit_alts.append(_alternatives(ctx, f"{where} ({value})", item))
    return Engineering(
        receptors=CompiledField(receptors, rec_alts),
        bases=CompiledField(bases, base_alts),
        cell_types=mapping,
        window=window,
        edits=CompiledField(edits, edit_alts),
    )


@lru_cache(maxsize=4)
def _cached(path: str) -> Taxonomy:
    return load_taxonomy(path)


def default_taxonomy() -> Taxonomy:
    """The packaged taxonomy, loaded once per process."""
    return _cached(str(DEFAULT_PATH))


def default_taxonomy_version() -> str:
    """The packaged taxonomy's version, read without compiling the taxonomy when this
    process has not loaded it (a process that leaves classifying to its workers
    needs no more: compiling costs about a second before they can start)."""
    if _cached.cache_info().currsize:
        return default_taxonomy().version
    raw = _read_yaml(DEFAULT_PATH)
    ctx = _Ctx(str(DEFAULT_PATH))
    if not isinstance(raw, dict) or "version" not in raw:
        raise ctx.fail("top level", "missing key(s) version")
    return _check_version(ctx, raw["version"])
