"""Load and validate the cell-therapy taxonomy (``taxonomy.yaml``).

The YAML file is data: synonyms are regular expressions a domain expert can
edit without touching Python. This module checks every entry (known keys
only, values from TAXONOMY.md, patterns that compile, no named groups) and
compiles *one regular expression per field*, so that classifying a trial costs
one scan per text and field in the regex engine instead of a Python loop over
word starts and patterns (see :class:`CompiledField`). A match is mapped back to
its entry through the empty group that closes its alternative (``m.lastindex``).

Errors are :class:`celltrials.errors.TaxonomyError` naming the file and the
entry at fault.
"""

from __future__ import annotations

import _sre
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from re import _compiler, _parser  # type: ignore[attr-defined]
from re import _constants as _c  # type: ignore[attr-defined]
from typing import Any

import yaml

from celltrials.errors import TaxonomyError

DEFAULT_PATH = Path(__file__).with_name("taxonomy.yaml")

#: The label vocabulary of TAXONOMY.md (the schema; synonyms live in YAML).
TAXONOMY_VALUES: dict[str, tuple[str, ...]] = {
    "is_cell_therapy": ("yes", "no"),
    "cell_type": (
        "car_t", "car_nk", "tcr_t", "til", "nk", "cik", "dc", "treg", "virus_specific_t",
        "gamma_delta_t", "macrophage", "other_immune", "msc", "hsc", "ipsc_derived",
        "esc_derived", "mononuclear_cells", "neural_stem", "other_stem", "somatic_other",
    ),
    "msc_source": (
        "umbilical_cord", "bone_marrow", "adipose", "placenta", "amnion", "dental_pulp",
        "endometrium_menstrual", "cord_blood", "other", "unspecified",
    ),
    "origin": ("autologous", "allogeneic", "both", "unspecified"),
    "product_form": ("cells", "extracellular_vesicles", "secretome", "gene_modified", "composite"),
    "indication_group": ("oncology", "degenerative", "immune_mediated", "other"),
    "therapeutic_area": (
        "hematologic_malignancy", "solid_tumor", "musculoskeletal", "neurological",
        "cardiovascular", "respiratory", "hepatic", "renal", "metabolic_endocrine",
        "autoimmune_inflammatory", "gvhd_transplant", "skin_wound", "ophthalmic",
        "reproductive", "infectious", "hematologic_nonmalignant", "other",
    ),
}

_TOP_KEYS = {
    "version", "values", "products", "cell_type", "generic_fallback", "generic_cell_cues",
    "exclusions", "background_cues", "comparator_prefixes", "msc_source", "origin",
    "implied_origin", "msc_source_target_cues", "product_form", "engineered_by_definition", "indications",
    "indication_fallback", "targets", "routes", "combinations", "manufacturing", "doses",
    "engineering", "code_names", "study_subject_cues", "in_vivo_car",
}
_REQUIRED_KEYS = {"version", "values", "cell_type", "msc_source", "origin", "product_form", "indications"}
_PATTERN_KEYS = ("patterns", "case_sensitive_patterns")


@dataclass(frozen=True, slots=True)
class Entry:
    """One taxonomy entry: the labels a match implies plus entry options."""

    name: str
    labels: Mapping[str, tuple[str, ...]]
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> str:
        """The entry's single value (for single-field entries)."""
        for vals in self.labels.values():
            if vals:
                return vals[0]
        return self.name


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    start: int
    end: int
    text: str


_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", _c.MAX_REPEAT)}


def _seq_anchors(seq: Any) -> frozenset[str] | None:
    """Lower-case literals one of which every match of ``seq`` contains (None: unknown)."""
    best: frozenset[str] | None = None
    best_len = 0
    run: list[str] = []

    def consider(cands: frozenset[str] | None) -> None:
        nonlocal best, best_len
        if cands:
            n = min(len(c) for c in cands)
            if n > best_len:
                best, best_len = cands, n

    for op, av in seq:
        if op is _c.LITERAL:
            run.append(chr(av))
            continue
        consider(frozenset({"".join(run).lower()}) if run else None)
        run = []
        if op is _c.SUBPATTERN:
            consider(_seq_anchors(av[-1]))
        elif op is _c.BRANCH:
            subs = [_seq_anchors(a) for a in av[1]]
            if all(x is not None for x in subs):
                consider(frozenset().union(*[x for x in subs if x is not None]))
        elif op in _REPEATS and av[0] >= 1:
            consider(_seq_anchors(av[2]))
    consider(frozenset({"".join(run).lower()}) if run else None)
    return best if best_len >= 2 else None


def pattern_anchors(pattern: str) -> frozenset[str] | None:
    """Literal strings (lower case) one of which every match of ``pattern`` contains,
    or None when the pattern has no such literal of two characters or more."""
    try:
        return _seq_anchors(_parser.parse(pattern, re.IGNORECASE))
    except Exception:  # pragma: no cover - patterns are validated before
        return None


_ANY = None  # first-character set "anything"


def _first_chars(seq: Any) -> set[str] | None:
    """Lower-case characters a match of ``seq`` can start with (None: any/unknown).

    Returns an empty set when ``seq`` can match the empty string (the caller
    then also looks at what follows)."""
    out: set[str] = set()
    for op, av in seq:
        if op is _c.LITERAL:
            out.add(chr(av).lower())
            return out
        if op is _c.IN:
            chars = _in_chars(av)
            if chars is None:
                return None
            return out | chars
        if op is _c.SUBPATTERN:
            sub = _first_chars(av[-1])
            if sub is None:
                return None
            out |= sub - {""}
            if "" not in sub:
                return out
            continue
        if op is _c.BRANCH:
            nullable = False
            for alt in av[1]:
                sub = _first_chars(alt)
                if sub is None:
                    return None
                nullable = nullable or "" in sub
                out |= sub - {""}
            if not nullable:
                return out
            continue
        if op in _REPEATS:
            sub = _first_chars(av[2])
            if sub is None:
                return None
            out |= sub - {""}
            if av[0] >= 1 and "" not in sub:
                return out
            continue
        if op in (_c.ASSERT, _c.ASSERT_NOT, _c.AT):
            continue
        return None  # ANY, CATEGORY, GROUPREF, ...
    out.add("")  # can match empty
    return out


def _in_chars(items: Any) -> set[str] | None:
    chars: set[str] = set()
    for op, av in items:
        if op is _c.LITERAL:
            chars.add(chr(av).lower())
        elif op is _c.RANGE:
            lo, hi = av
            if hi - lo > 200:
                return None
            chars |= {chr(x).lower() for x in range(lo, hi + 1)}
        else:  # NEGATE, CATEGORY
            return None
    return chars


# ---------------------------------------------------------------------------
# fast engine: one pattern per field, dispatched inside the regex engine
#
# The matching rule of :class:`CompiledField` (see there) is: at every word
# start p (a non-space character not preceded by a word character) at or after
# the end of the previous hit, the alternatives of the bucket of
# ``text[p].lower()`` (or the "anywhere" alternatives when there is no such
# bucket) are tried in entry order; the first that matches, followed by a
# non-word character or the end, is the hit. The bucket loop ran in Python at
# every word start. Here the same rule is compiled into one pattern
#
#     \W (?: [D(c1)] (?:rest|rest|...) | [D(c2)] (...) | ... | anywhere )
#
# searched by the C engine: ``\W`` is the character before a word start (the
# engine skips to candidates with a character-set scan), ``D(c)`` the characters
# whose ``lower()`` is the bucket key c, and each alternative of the bucket
# follows with its first character peeled off (``(?:a|b)x`` is distributed
# into ``ax|bx``, ``a?x`` into ``ax|x``: both keep the leftmost-first order).
# Case-insensitivity is spelled out as character classes (``[cC]``) and the
# pattern is compiled without IGNORECASE: the engine then skips a failing
# alternative on its first character without backtracking. An alternative
# that cannot be peeled is re-matched from p inside ``(?<=(?=...).)``. An empty
# group after each alternative names its entry (``lastindex``) and marks the
# end of the hit. Position 0 is tried with the same pattern without ``\W``.
# Anything the translation does not support falls back to the bucket loop.


class _Unsupported(Exception):
    pass


@lru_cache(maxsize=1)
def _case_tables() -> tuple[dict[int, list[int]], dict[str, list[str]]]:
    """(codepoints by their regex-engine lower case, characters by ``str.lower()``)."""
    by_sre: dict[int, list[int]] = {}
    by_str: dict[str, list[str]] = {}
    tolower = _sre.unicode_tolower
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        lo = tolower(cp)
        if lo != cp:
            by_sre.setdefault(lo, []).append(cp)
        ch = chr(cp)
        low = ch.lower()
        if low != ch:
            by_str.setdefault(low, []).append(ch)
    return by_sre, by_str


def _fold_set(cps: set[int]) -> set[int]:
    """The characters the engine matches, case-insensitively, for lower-cased ``cps``."""
    by_sre, _ = _case_tables()
    fixes = _compiler._EXTRA_CASES
    targets = set(cps)
    for lo in list(targets):
        targets.update(fixes.get(lo, ()))
    out = {t for t in targets if _sre.unicode_tolower(t) == t}
    for t in targets:
        out.update(by_sre.get(t, ()))
    return out


def _literal_set(cp: int, icase: bool) -> set[int]:
    if not icase or not _sre.unicode_iscased(cp):
        return {cp}
    return _fold_set({_sre.unicode_tolower(cp)})


def _class_set(items: Any, icase: bool) -> set[int] | None:
    """The characters a class of literals/ranges matches (None: has categories/negation)."""
    raw: set[int] = set()
    for op, av in items:
        if op is _c.LITERAL:
            raw.add(av)
        elif op is _c.RANGE:
            if av[1] - av[0] > 2000:
                raise _Unsupported("wide range")
            raw.update(range(av[0], av[1] + 1))
        else:
            return None
    if not icase or not any(_sre.unicode_iscased(x) for x in raw):
        return raw
    return _fold_set({_sre.unicode_tolower(x) for x in raw})


def _esc(cp: int) -> str:
    return re.escape(chr(cp))


def _ranges_src(cps: set[int]) -> str:
    out: list[str] = []
    run: list[int] = []
    for x in sorted(cps):
        if run and x == run[-1] + 1:
            run.append(x)
            continue
        if run:
            out.append(_esc(run[0]) + ("-" + _esc(run[-1]) if len(run) > 2 else "".join(_esc(y) for y in run[1:])))
        run = [x]
    if run:
        out.append(_esc(run[0]) + ("-" + _esc(run[-1]) if len(run) > 2 else "".join(_esc(y) for y in run[1:])))
    return "".join(out)


def _set_src(cps: set[int], negate: bool = False) -> str:
    if len(cps) == 1 and not negate:
        return _esc(next(iter(cps)))
    return "[" + ("^" if negate else "") + _ranges_src(cps) + "]"


_CAT_SRC = {
    _c.CATEGORY_DIGIT: r"\d", _c.CATEGORY_NOT_DIGIT: r"\D", _c.CATEGORY_SPACE: r"\s",
    _c.CATEGORY_NOT_SPACE: r"\S", _c.CATEGORY_WORD: r"\w", _c.CATEGORY_NOT_WORD: r"\W",
}
_AT_SRC = {
    _c.AT_BEGINNING: "^", _c.AT_END: "$", _c.AT_BEGINNING_STRING: r"\A", _c.AT_END_STRING: r"\Z",
    _c.AT_BOUNDARY: r"\b", _c.AT_NON_BOUNDARY: r"\B",
}

# a parsed item with the case-insensitivity in force where it stands
_Item = tuple[bool, Any, Any]


def _items(seq: Any, icase: bool) -> list[_Item]:
    return [(icase, op, av) for op, av in seq]


def _class_items_src(items: Any) -> str:
    out: list[str] = []
    for op, av in items:
        if op is _c.NEGATE:
            out.insert(0, "^")
        elif op is _c.LITERAL:
            out.append(_esc(av))
        elif op is _c.RANGE:
            out.append(_esc(av[0]) + "-" + _esc(av[1]))
        elif op is _c.CATEGORY and av in _CAT_SRC:
            out.append(_CAT_SRC[av])
        else:
            raise _Unsupported(f"class item {op}")
    return "[" + "".join(out) + "]"


def _unit_src(icase: bool, op: Any, av: Any) -> str:
    """Source of one parsed item, to stand inside a scope of its case flag."""
    if op is _c.LITERAL:
        return _esc(av)
    if op is _c.NOT_LITERAL:
        return "[^" + _esc(av) + "]"
    if op is _c.IN:
        return _class_items_src(av)
    if op is _c.ANY:
        return "."
    if op is _c.CATEGORY:
        if av not in _CAT_SRC:
            raise _Unsupported(f"category {av}")
        return _CAT_SRC[av]
    if op is _c.AT:
        if av not in _AT_SRC:
            raise _Unsupported(f"at {av}")
        return _AT_SRC[av]
    if op is _c.BRANCH:
        return "(?:" + "|".join(_src(_items(a, icase)) for a in av[1]) + ")"
    if op is _c.SUBPATTERN:
        _group, add, rem, p = av
        if (add | rem) & ~re.IGNORECASE:
            raise _Unsupported("inline flags")
        sub_icase = (icase or bool(add & re.IGNORECASE)) and not rem & re.IGNORECASE
        return "(?:" + _src(_items(p, sub_icase)) + ")"
    if op in _REPEATS:
        lo, hi, p = av
        rep = f"{{{lo},{'' if hi is _c.MAXREPEAT else hi}}}"
        if op is _c.MIN_REPEAT:
            rep += "?"
        elif op is not _c.MAX_REPEAT:
            rep += "+"
        return "(?:" + _src(_items(p, icase)) + ")" + rep
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        direction, p = av
        kind = ("=" if op is _c.ASSERT else "!") if direction == 1 else ("<=" if op is _c.ASSERT else "<!")
        return f"(?{kind}" + _src(_items(p, icase)) + ")"
    raise _Unsupported(f"op {op}")


def _src(items: list[_Item], explicit_first: bool = False) -> str:
    """Regular-expression source for ``items``, to be compiled without flags: runs of
    items are scoped ``(?i:...)`` / ``(?-i:...)`` as they were matched; with
    ``explicit_first`` a leading literal is spelled as the class of characters it
    matches (``[cC]``), so that the engine can skip the alternative on it cheaply."""
    out: list[str] = []
    if explicit_first and items:
        fs = _first_set(items[0])
        if fs is not None:
            out.append(_set_src(fs))
            items = items[1:]
    run: list[str] = []
    run_icase: bool | None = None
    for icase, op, av in items:
        if run_icase is not None and icase != run_icase:
            out.append(("(?i:" if run_icase else "(?-i:") + "".join(run) + ")")
            run = []
        run_icase = icase
        run.append(_unit_src(icase, op, av))
    if run:
        out.append(("(?i:" if run_icase else "(?-i:") + "".join(run) + ")")
    return "".join(out)


_MAX_PIECES = 64


def _first_set(item: _Item) -> set[int] | None:
    icase, op, av = item
    if op is _c.LITERAL:
        return _literal_set(av, icase)
    if op is _c.IN:
        return _class_set(av, icase)
    return None


# a piece of an alternative at a dispatch character: (characters the dispatch
# character must be, when not all of them; what follows it, or None; or the source
# that matches from the dispatch character on)
_Piece = tuple[frozenset[int] | None, list[_Item] | None, str]


def _peel(items: list[_Item], dc: set[int]) -> list[_Piece]:
    """``items`` at a character of ``dc`` as ordered pieces."""
    if not items:
        raise _Unsupported("empty")
    first, rest = items[0], items[1:]
    icase, op, av = first
    fs = _first_set(first)
    if fs is not None:
        inter = fs & dc
        if not inter:
            return []
        return [(None if inter >= dc else frozenset(inter), rest, "")]
    if op is _c.SUBPATTERN:
        group, add, rem, p = av
        if group is None and not (add | rem) & ~re.IGNORECASE:
            sub_icase = (icase or bool(add & re.IGNORECASE)) and not rem & re.IGNORECASE
            return _peel(_items(p, sub_icase) + rest, dc)
    elif op is _c.BRANCH:
        out: list[_Piece] = []
        for a in av[1]:
            out.extend(_peel(_items(a, icase) + rest, dc))
            if len(out) > _MAX_PIECES:
                raise _Unsupported("too many pieces")
        return out
    elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT) and av[0] == 0 and av[1] == 1:
        body = _items(av[2], icase)
        if av[2].getwidth()[0] == 0:
            return [(None, None, _src(items))]
        with_it = _peel(body + rest, dc)
        without = _peel(rest, dc) if rest else []
        return with_it + without if op is _c.MAX_REPEAT else without + with_it
    return [(None, None, _src(items))]


class _Bucket:
    """The pieces of one dispatch character, grouped by the character after it.

    A piece joins an earlier group of the same second characters only when no
    piece in between can start with one of them (such pieces never match at the
    same place, so their order does not matter); anything else keeps its place."""

    def __init__(self) -> None:
        self.groups: list[tuple[frozenset[int] | None, list[str]]] = []
        self.open: dict[frozenset[int], int] = {}

    def add(self, second: frozenset[int] | None, src: str) -> None:
        if second is None:
            self.groups.append((None, [src]))
            self.open.clear()
            return
        gi = self.open.get(second)
        if gi is None:
            for other in [k for k in self.open if k & second]:
                del self.open[other]
            self.groups.append((second, [src]))
            gi = self.open[second] = len(self.groups) - 1
        else:
            self.groups[gi][1].append(src)

    def src(self) -> str:
        parts = []
        for second, members in self.groups:
            if second is None:
                parts.append(members[0])
            else:
                parts.append(_set_src(set(second)) + "(?:" + "|".join(members) + ")")
        return "(?:" + "|".join(parts) + ")"


@lru_cache(maxsize=1)
def _ascii_lookalikes() -> re.Pattern[str]:
    """Non-ASCII characters that match an ASCII letter case-insensitively, or
    whose ``lower()`` has one (K KELVIN SIGN, LONG S, DOTTED I...)."""
    _, by_str = _case_tables()
    out: set[int] = set()
    for lo in range(128):
        out |= {x for x in _fold_set({lo}) if x >= 128}
    for low, chars in by_str.items():
        if any(c.isascii() for c in low):
            out |= {ord(c) for c in chars if not c.isascii()}
    return re.compile(_set_src(out) if out else "(?!)")


_MAX_VARIANTS = 4


class _FastField:
    """The compiled one-pattern form of a field (see the comment above)."""

    __slots__ = ("entries", "rx")

    def __init__(self, entries: list[Entry], buckets: dict[str, list[tuple[int, str]]],
                 anywhere: list[tuple[int, str]], drop: frozenset[str] = frozenset()) -> None:
        _, by_str = _case_tables()
        parsed: dict[str, Any] = {}
        branches: list[str] = []
        entries_of: list[Entry] = []
        all_d: set[int] = set()

        def parse(alt: str) -> list[_Item]:
            seq = parsed.get(alt)
            if seq is None:
                seq = parsed[alt] = _parser.parse(alt, re.IGNORECASE)
            return _items(seq, True)

        def marker(i: int) -> str:
            entries_of.append(entries[i])
            return f"(?P<g{len(entries_of) - 1}>)"

        for key, items in buckets.items():
            chars = ([key] if len(key) == 1 and key.lower() == key else []) + by_str.get(key, [])
            dc = {ord(ch) for ch in chars if not ch.isspace()}
            if not dc:
                continue
            all_d |= dc
            bucket = _Bucket()
            for i, alt in items:
                if alt in drop:
                    continue
                for guard, rest, full in _peel(parse(alt), dc):
                    mark = r"(?!\w)" + marker(i)
                    if rest is None:  # matched again from the dispatch character
                        bucket.add(None, r"(?<=(?=" + full + mark + r")[\s\S])")
                        continue
                    second = _first_set(rest[0]) if rest else None
                    if second is None:
                        pre = "" if guard is None else "(?<=" + _set_src(set(guard)) + ")"
                        bucket.add(None, pre + _src(rest, explicit_first=True) + mark)
                    else:
                        pre = "" if guard is None else "(?<=" + _set_src(set(guard)) + r"[\s\S])"
                        bucket.add(frozenset(second), pre + _src(rest[1:], explicit_first=True) + mark)
            if bucket.groups:
                branches.append(_set_src(dc) + bucket.src())
        if any(alt not in drop for _, alt in anywhere):
            pieces = [_src(parse(alt)) + r"(?!\w)" + marker(i) for i, alt in anywhere if alt not in drop]
            not_dispatched = "(?!" + _set_src(all_d) + ")" if all_d else ""
            branches.append(not_dispatched + r"(?=\S)(?:" + "|".join(pieces) + ")")
        body = "(?:" + "|".join(branches) + ")" if branches else "(?!)"
        # ``\W`` first: the engine scans for candidate positions in C. Position 0
        # is matched in " " + text.
        self.rx = re.compile(r"\W" + body)
        idx: list[Entry | None] = [None] * (self.rx.groups + 1)
        for name, g in self.rx.groupindex.items():
            idx[g] = entries_of[int(name[1:])]
        self.entries = idx

_STARTS = re.compile(r"(?<!\w)\S")
# word-initial letters, most frequent first (the order the fast pattern tries buckets in)
_START_FREQ = "tscapmdbfhirelonwguvkyjqxz0123456789"


class CompiledField:
    """All patterns of one field, matched leftmost-first with entry precedence.

    The rule: at each word start (a non-space character not preceded by a word
    character) at or after the end of the previous hit, the alternatives that can
    start with that character (by ``lower()``) are tried in entry order; the first
    that matches, followed by a non-word character, is the hit. :meth:`_bucket_hits`
    is that rule as a Python loop (the reference, and the fallback); :meth:`hits`
    runs it as one compiled pattern per field (see ``_FastField``), in pattern
    variants without the alternatives whose literals the text lacks.
    ``regex`` is the whole field as one plain alternation with word boundaries.
    """

    def __init__(self, entries: Sequence[Entry], alternatives: Sequence[list[str]]) -> None:
        self.entries = list(entries)
        parts = []
        for i, alts in enumerate(alternatives):
            if alts:
                parts.append(f"(?P<e{i}>{'|'.join(alts)})")
        body = "|".join(parts) if parts else "(?!)"
        self._regex_src = rf"(?<!\w)(?:{body})(?!\w)"
        # bucket alternatives by first character
        per_char: dict[str, list[tuple[int, str]]] = {}
        anywhere: list[tuple[int, str]] = []
        nullable = False
        for i, alts in enumerate(alternatives):
            for a in alts:
                parsed = _parser.parse(a, re.IGNORECASE)
                nullable = nullable or parsed.getwidth()[0] == 0
                fc = _first_chars(parsed)
                if fc is None or "" in fc:
                    anywhere.append((i, a))
                else:
                    for ch in fc:
                        per_char.setdefault(ch, []).append((i, a))
        self._per_char = per_char
        self._anywhere_items = anywhere
        self._nullable = nullable
        self._variants: dict[int, _FastField | None] = {}

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The whole field as one case-insensitive alternation with word boundaries."""
        return re.compile(self._regex_src, re.IGNORECASE)

    @cached_property
    def _buckets(self) -> dict[str, re.Pattern[str]]:
        return {ch: self._compile(items + self._anywhere_items) for ch, items in self._per_char.items()}

    @cached_property
    def _anywhere(self) -> re.Pattern[str] | None:
        return self._compile(self._anywhere_items) if self._anywhere_items else None

    @cached_property
    def _prunable(self) -> list[tuple[tuple[str, ...], frozenset[str]]]:
        """Alternatives that can start almost anywhere (``[a-z]*leuk...``), costly at
        every word start, grouped by the literals one of which each match contains
        (ASCII only): a text without any of them cannot match them."""
        groups: dict[frozenset[str], set[str]] = {}
        wide = {a for _, a in self._anywhere_items}
        counts: dict[str, int] = {}
        for items in self._per_char.values():
            for _, a in items:
                counts[a] = counts.get(a, 0) + 1
        wide |= {a for a, n in counts.items() if n > 8}
        for a in sorted(wide):
            anchors = pattern_anchors(a)
            if anchors and all(x.isascii() for x in anchors):
                groups.setdefault(anchors, set()).add(a)
        # a group whose every literal contains a literal of another group is present
        # only with it: fold it in (fewer distinct variants, each still right)
        for k in sorted(groups, key=lambda g: (len(g), sorted(g))):
            for other in groups:
                if other != k and k in groups and all(any(o in x for o in other) for x in k):
                    groups[other] |= groups.pop(k)
                    break
        return [(tuple(sorted(k)), frozenset(v)) for k, v in sorted(groups.items(), key=lambda kv: sorted(kv[0]))]

    @cached_property
    def _anchor_bits(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        return tuple((1 << k, anchors) for k, (anchors, _) in enumerate(self._prunable))

    def _variant(self, text: str) -> _FastField | None:
        """The one-pattern engine for ``text``, compiled on first use (None: the field
        needs the bucket loop). Alternatives whose literals ``text`` lacks are left out."""
        bits = self._anchor_bits
        key = 0
        if bits:
            if text.isascii() or _ascii_lookalikes().search(text) is None:
                low = text.lower()
                for bit, anchors in bits:
                    for a in anchors:
                        if a in low:
                            key |= bit
                            break
            else:
                key = (1 << len(bits)) - 1
        variants = self._variants
        fast = variants.get(key, False)
        if fast is not False:
            return fast  # type: ignore[return-value]
        if len(variants) >= _MAX_VARIANTS:
            # a compiled variant keeping more alternatives is right too: the smallest
            full = (1 << len(bits)) - 1  # every alternative: right for any text
            supersets = [k for k in variants if not key & ~k]
            key = min(supersets, key=lambda k: bin(k).count("1")) if supersets else full
            fast = variants.get(key, False)
            if fast is not False:
                return fast  # type: ignore[return-value]
        fast = self._compile_variant(key)
        variants[key] = fast
        return fast

    def _compile_variant(self, key: int) -> _FastField | None:
        """The engine without the prunable alternatives whose bit is not in ``key``."""
        if self._nullable:
            return None
        drop: frozenset[str] = frozenset().union(
            *(alts for k, (_, alts) in enumerate(self._prunable) if not key >> k & 1))
        order = {ch: n for n, ch in enumerate(_START_FREQ)}
        keys = sorted(self._per_char, key=lambda ch: order.get(ch, len(order)))
        anywhere = self._anywhere_items
        try:
            return _FastField(
                self.entries, {ch: sorted(self._per_char[ch] + anywhere, key=lambda x: x[0]) for ch in keys},
                anywhere, drop)
        except (_Unsupported, re.error, RecursionError, OverflowError):
            return None

    @staticmethod
    def _compile(items: list[tuple[int, str]]) -> re.Pattern[str]:
        by_entry: dict[int, list[str]] = {}
        for i, a in sorted(items, key=lambda x: x[0]):
            by_entry.setdefault(i, []).append(a)
        body = "|".join(f"(?P<e{i}>{'|'.join(alts)})" for i, alts in by_entry.items())
        return re.compile(rf"(?:{body})(?!\w)", re.IGNORECASE)

    def hits(self, text: str, lower: str | None = None) -> list[Hit]:
        """The field's matches in ``text``, left to right (``lower`` is unused)."""
        fast = self._variant(text)
        if fast is None:
            return list(self._bucket_hits(text))
        out: list[Hit] = []
        entries = fast.entries
        search = fast.rx.search
        # the pattern starts with the \W before a word start: search " " + text, so
        # that position 0 needs no other call (offsets in ``padded`` are one more)
        padded = " " + text
        m = search(padded)
        while m is not None:
            g = m.lastindex
            start = m.start()
            end = m.start(g) - 1  # type: ignore[arg-type]
            out.append(Hit(entries[g], start, end, text[start:end]))  # type: ignore[arg-type,index]
            m = search(padded, end)
        return out

    def _bucket_hits(self, text: str) -> Iterator[Hit]:
        """The reference implementation of :meth:`hits` (a Python loop over word starts)."""
        entries = self.entries
        buckets = self._buckets
        anywhere = self._anywhere
        last = 0
        for sm in _STARTS.finditer(text):
            p = sm.start()
            if p < last:
                continue
            rx = buckets.get(text[p].lower(), anywhere)
            if rx is None:
                continue
            m = rx.match(text, p)
            if m is None or m.end() == p:
                continue
            name = m.lastgroup
            if name is None:  # pragma: no cover - every alternative is a named group
                continue
            last = m.end()
            yield Hit(entries[int(name[1:])], p, last, m.group())

    def search(self, text: str, lower: str | None = None) -> bool:
        """Whether the field matches anywhere in ``text``."""
        fast = self._variant(text)
        if fast is None:
            return next(self._bucket_hits(text), None) is not None
        return fast.rx.search(" " + text) is not None


@dataclass(frozen=True, slots=True)
class Engineering:
    """The engineering model (``engineering`` in taxonomy.yaml): a product is a
    *base cell* plus *engineering* — a receptor (CAR, TCR, TCR-like CAR) and extra
    edits (armour, knock-out, switch, dominant-negative receptor, mRNA...).
    ``cell_types[(receptor, base)]`` maps a receptor placed on a base cell to the
    guide's cell types; an edit makes the product ``gene_modified``."""

    receptors: CompiledField  # entry value = receptor; option "base" when the word names the cell too
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


def _alternatives(ctx: _Ctx, where: str, item: Mapping[str, Any], *, required: bool = True) -> list[str]:
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
        raise ctx.fail(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(allowed))}")
    return item


def _value_field(ctx: _Ctx, section: str, data: Any, fld: str | None, extra_keys: set[str] = frozenset()) -> CompiledField:  # type: ignore[assignment]
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


def _single(name: str, pats: list[str]) -> CompiledField:
    return CompiledField([Entry(name, {})], [[f"(?:{p})" for p in pats]])


# ---------------------------------------------------------------------------


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Read, validate and compile a taxonomy YAML file (default: the packaged one)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    ctx = _Ctx(str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaxonomyError(f"{p}: cannot read taxonomy: {exc}", hint="Check the path of the taxonomy file.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ctx.fail("file", f"not valid YAML: {exc}") from None
    return build_taxonomy(raw, source=str(p))


def build_taxonomy(raw: Any, source: str = "<taxonomy>") -> Taxonomy:
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
    version = raw["version"]
    if not isinstance(version, str) or not re.fullmatch(r"\d{4}\.\d{1,2}\.\d+", version):
        raise ctx.fail("version", f"version must be a string like '2026.11.1', got {version!r}")

    # values must agree with TAXONOMY.md exactly
    values = _check_keys(ctx, "values", raw["values"], set(TAXONOMY_VALUES))
    for fld, allowed in TAXONOMY_VALUES.items():
        got = values.get(fld)
        if not isinstance(got, list) or [str(v) for v in got] != list(allowed):
            raise ctx.fail(f"values.{fld}", f"must list exactly the TAXONOMY.md values {list(allowed)}")

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
    products = CompiledField(prod_entries, prod_alts)

    # cell types (ordered by precedence)
    ct_raw = raw["cell_type"]
    if not isinstance(ct_raw, list):
        raise ctx.fail("cell_type", "expected a list of entries")
    ct_entries: list[Entry] = []
    ct_alts: list[list[str]] = []
    seen: set[str] = set()
    for i, item in enumerate(ct_raw):
        where = f"cell_type[{i}]"
        item = _check_keys(ctx, where, item, {"value", *_PATTERN_KEYS, "primary_only", "dropped_with_other_cells_in", "dropped_with_cell_types"})
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
                _check_value(ctx, where, "therapeutic_area", v) for v in _as_list(item["dropped_with_other_cells_in"])
            )
        if "dropped_with_cell_types" in item:
            opts["dropped_with_cell_types"] = frozenset(
                _check_value(ctx, where, "cell_type", v) for v in _as_list(item["dropped_with_cell_types"])
            )
        ct_entries.append(Entry(value, {"cell_type": (value,)}, opts))
        ct_alts.append(_alternatives(ctx, where, item))
    cell_type = CompiledField(ct_entries, ct_alts)

    gf = _check_keys(ctx, "generic_fallback", raw.get("generic_fallback") or {"cell_type": "other_stem", "patterns": ["stem cells?"]}, {"cell_type", "patterns"})
    gf_value = _check_value(ctx, "generic_fallback", "cell_type", gf.get("cell_type"))
    generic_fallback = _single("generic", _pattern_list(ctx, "generic_fallback.patterns", gf.get("patterns")))
    generic_cues = _single("generic_cue", _pattern_list(ctx, "generic_cell_cues", raw.get("generic_cell_cues") or ["cells?"]))

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
    background_cue = re.compile(r"(?<!\w)(?:" + "|".join(f"(?:{c})" for c in cues) + r")(?:\W+\w+){0,4}?\W*$", re.IGNORECASE)
    comps = _pattern_list(ctx, "comparator_prefixes", raw.get("comparator_prefixes") or ["control\\s*:"])
    comparator_prefix = re.compile(r"^\s*(?:" + "|".join(f"(?:{c})" for c in comps) + ")", re.IGNORECASE)

    msc_source = _value_field(ctx, "msc_source", raw["msc_source"], "msc_source")
    origin = _value_field(ctx, "origin", raw["origin"], "origin")

    io = _check_keys(ctx, "implied_origin", raw.get("implied_origin") or {}, {"by_msc_source", "by_cell_type"})
    by_src: dict[str, str] = {}
    for k, v in _check_keys(ctx, "implied_origin.by_msc_source", io.get("by_msc_source") or {}, set(TAXONOMY_VALUES["msc_source"])).items():
        by_src[k] = _check_value(ctx, f"implied_origin.by_msc_source.{k}", "origin", v)
    by_ct: dict[str, str] = {}
    for k, v in _check_keys(ctx, "implied_origin.by_cell_type", io.get("by_cell_type") or {}, set(TAXONOMY_VALUES["cell_type"])).items():
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
            weak_alts.append([f"(?:{p})" for p in _pattern_list(ctx, f"{where}.weak_patterns", item["weak_patterns"])])
    product_form = CompiledField(pf_entries, pf_alts)
    product_form_weak = CompiledField(weak_entries, weak_alts)
    engineered = frozenset(
        _check_value(ctx, "engineered_by_definition", "cell_type", v) for v in _as_list(raw.get("engineered_by_definition"))
    )

    # indications
    ind_raw = raw["indications"]
    if not isinstance(ind_raw, list) or not ind_raw:
        raise ctx.fail("indications", "expected a non-empty list of rules")
    ind_entries: list[Entry] = []
    ind_alts: list[list[str]] = []
    for i, item in enumerate(ind_raw):
        where = f"indications[{i}]"
        item = _check_keys(ctx, where, item, {*_PATTERN_KEYS, "indication_group", "therapeutic_area", "cell_types", "generic", "priority"})
        group = _check_value(ctx, where, "indication_group", item.get("indication_group"))
        areas = tuple(_check_value(ctx, where, "therapeutic_area", v) for v in _as_list(item.get("therapeutic_area")))
        if not areas:
            raise ctx.fail(where, "missing therapeutic_area")
        iopts: dict[str, Any] = {"rank": i, "generic": bool(item.get("generic", False)), "priority": bool(item.get("priority", False))}
        if "cell_types" in item:
            iopts["cell_types"] = frozenset(_check_value(ctx, where, "cell_type", v) for v in _as_list(item["cell_types"]))
        ind_entries.append(Entry(f"indications[{i}]", {"indication_group": (group,), "therapeutic_area": areas}, iopts))
        ind_alts.append(_alternatives(ctx, where, item))
    indications = CompiledField(ind_entries, ind_alts)
    indications_priority = CompiledField(
        ind_entries, [a if e.options.get("priority") else [] for e, a in zip(ind_entries, ind_alts, strict=True)]
    )
    # the same rules without those limited to some cell types (rescan when such a rule is not allowed)
    indications_unlimited = CompiledField(
        ind_entries, [a if "cell_types" not in e.options else [] for e, a in zip(ind_entries, ind_alts, strict=True)]
    )
    tcues = _pattern_list(ctx, "msc_source_target_cues", raw.get("msc_source_target_cues") or ["for"])
    msc_source_target_cue = re.compile(r"(?<!\w)(?:" + "|".join(f"(?:{c})" for c in tcues) + r")(?:\W+\w+){0,2}?\W*$", re.IGNORECASE)
    fb = _check_keys(ctx, "indication_fallback", raw.get("indication_fallback") or {}, {"oncology_cell_types", "default"})
    onc_types = frozenset(_check_value(ctx, "indication_fallback", "cell_type", v) for v in _as_list(fb.get("oncology_cell_types")))
    dflt = _check_keys(ctx, "indication_fallback.default", fb.get("default") or {"indication_group": "other", "therapeutic_area": "other"}, {"indication_group", "therapeutic_area"})
    default_ind = (
        _check_value(ctx, "indication_fallback.default", "indication_group", dflt.get("indication_group")),
        _check_value(ctx, "indication_fallback.default", "therapeutic_area", dflt.get("therapeutic_area")),
    )

    targets = _value_field(ctx, "targets", raw.get("targets") or [], None)
    target_values = {e.value for e in targets.entries}
    for e in products.entries:
        for tv in e.labels.get("targets", ()):
            if tv not in target_values:
                raise ctx.fail(f"products ({e.name})", f"unknown target {tv!r}; add it to 'targets' first")
    routes = _value_field(ctx, "routes", raw.get("routes") or [], None)
    combinations = _value_field(ctx, "combinations", raw.get("combinations") or [], None)
    manufacturing = _value_field(ctx, "manufacturing", raw.get("manufacturing") or [], None)
    doses = _single("dose", _pattern_list(ctx, "doses", raw.get("doses") or ["\\d+ cells/kg"]))
    engineering = _engineering(ctx, raw["engineering"]) if raw.get("engineering") is not None else None
    code_names = raw.get("code_names")
    if code_names is not None:
        from celltrials.taxonomy.code_names import code_name_entries

        if not isinstance(code_names, str) or not code_names.strip():
            raise ctx.fail("code_names", "must be the file name of the code-name list (CSV)")
        base_dir = Path(source).parent if Path(source).is_file() else DEFAULT_PATH.parent
        cn_entries, cn_alts = code_name_entries(base_dir / code_names, {e.value for e in targets.entries})
        # YAML products first: at one text position the entry listed first wins
        products = CompiledField([*prod_entries, *cn_entries], [*prod_alts, *cn_alts])

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
        in_vivo_car=_in_vivo_car(ctx, raw["in_vivo_car"]) if raw.get("in_vivo_car") is not None else None,
        study_subject_cues=(_single("study_subject", _pattern_list(ctx, "study_subject_cues", raw["study_subject_cues"]))
                            if raw.get("study_subject_cues") is not None else None),
    )


_RECEPTORS = ("car", "tcr", "tcr_like_car")


def _in_vivo_car(ctx: _Ctx, data: Any) -> InVivoCar:
    ivc = _check_keys(ctx, "in_vivo_car", data, {"cues", "summary_cues", "cell_types"})
    cts = frozenset(_check_value(ctx, "in_vivo_car.cell_types", "cell_type", v) for v in _as_list(ivc.get("cell_types")))
    if not cts:
        raise ctx.fail("in_vivo_car.cell_types", "expected a non-empty list of cell types")
    return InVivoCar(
        cues=_single("in_vivo_car", _pattern_list(ctx, "in_vivo_car.cues", ivc.get("cues"))),
        summary_cues=_single("in_vivo_car", _pattern_list(ctx, "in_vivo_car.summary_cues", ivc.get("summary_cues"))),
        cell_types=cts,
    )


def _engineering(ctx: _Ctx, data: Any) -> Engineering:
    """Validate the ``engineering`` section (see :class:`Engineering`)."""
    eng = _check_keys(ctx, "engineering", data, {"receptors", "base_cells", "cell_types", "window", "edits"})
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
                raise ctx.fail(where, f"unknown base cell {item['base']!r}; add it to engineering.base_cells")
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
        cts = tuple(_check_value(ctx, where, "cell_type", v) for v in _as_list(item.get("cell_type")))
        if not cts:
            raise ctx.fail(where, "missing cell_type")
        if (rec, base) in mapping:
            raise ctx.fail(where, f"duplicate mapping for receptor {rec} on {base}")
        mapping[(rec, base)] = cts
    for rec in {e.value for e in receptors}:
        if not any(r == rec for r, _ in mapping):
            raise ctx.fail("engineering.cell_types", f"receptor {rec!r} is never mapped to a cell type")
    window = eng.get("window", 40)
    if not isinstance(window, int) or isinstance(window, bool) or not 0 < window <= 200:
        raise ctx.fail("engineering.window", f"must be an integer between 1 and 200, got {window!r}")
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
