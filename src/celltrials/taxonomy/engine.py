"""The taxonomy's pattern engine: every field's synonyms matched with the public
``re`` API, an Aho–Corasick literal prefilter (``pyahocorasick``) and bounded
repeats, so that a text costs time linear in its length.

**Matching rule** (what :meth:`CompiledField.hits` returns). A field is an
ordered list of alternatives (regular expressions, matched case-insensitively
unless scoped ``(?-i:...)``), each belonging to an entry. Scanning a text left to
right, at each *word start* — a non-space character not preceded by a word
character — at or after the end of the previous hit, the alternatives are tried
in order (entry order, then pattern order); the first that matches there and is
followed by a non-word character or the end of the text is the hit. A first
match that is empty skips the position. This is the plain semantics of the
field's alternation ``(?<!\\w)(?:alt1|alt2|...)(?!\\w)`` searched at word starts;
``tests/test_classify.py`` checks it against a loop written that way.

**How it is fast.** Every alternative is analysed once by a small parser of
Python's regular-expression syntax (:func:`analyse`, no private ``re``
modules):

* *required literals*: ASCII strings one of which every match of the
  alternative contains (``"stem"`` for ``stem cells?``). One Aho–Corasick pass
  over the lower-cased text (shared by all fields and cached per text) tells
  which literals occur; an alternative whose literals do not occur cannot
  match and is not run. Most texts leave a field with no alternative to run at
  all. Case look-alikes that the regex engine folds to ASCII letters (LONG S,
  KELVIN SIGN, dotted/dotless I) are mapped to those letters before the pass,
  so the prefilter never drops a pattern that could match.
* *bounded repeats*: ``*``, ``+`` and ``{m,}`` are rewritten as
  ``{0,MAX_REPEAT}``, ``{1,MAX_REPEAT}`` and ``{m,MAX_REPEAT}`` (1,000). An
  attempt at one word start then examines a bounded number of characters, so a
  pattern such as ``(?:mesenchymal|stem)[\\w -]*?cells? (?:in|from) the`` no
  longer rescans the rest of the text at every word start (issue 12: a
  100,000-character title took 11.6 s, 200,000 took 40.7 s). The only change
  in meaning: one repeat matches at most 1,000 times.

Alternatives with the same required literals are compiled together into one
*cluster* pattern (each alternative in a named group; alternatives without a
literal join every cluster). A text runs the clusters whose literals occur;
with several, their hits are merged by the rule above (leftmost word start,
then the earlier alternative); a set of clusters that many texts need is
compiled as one more cluster (bounded per field). Each cluster's searches move strictly forward,
so the work is linear in the length of the text.

Costs measured in ``benchmarks/classify.py`` (BENCHMARKS.md): per CPU-second
on real trials this engine is at parity with the one it replaces; the gain is
linear time and the public API. A pattern the parser cannot follow
(backreference, conditional group, verbose flag) is kept as written, has no
literal and is run on every text.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

import ahocorasick

#: Upper bound that replaces the open end of ``*``, ``+`` and ``{m,}``.
MAX_REPEAT = 1000

_MIN_ANCHOR = 2  # shortest literal worth prefiltering on

# Literals so frequent in trial texts that they hardly prune: a pattern is
# prefiltered on one of them only when it requires no other literal.
_COMMON = frozenset(
    {
        "cell",
        "cells",
        "with",
        "the",
        "and",
        "for",
        "of",
        "in",
        "or",
        "therapy",
        "infusion",
        "transplant",
        "transplantation",
        "patients",
        "treatment",
        "derived",
        "human",
        "stem",
        "blood",
        "t cell",
        "injection",
        "disease",
        "study",
        "induced",
        "cell therapy",
    }
)


def _score(literal: str) -> float:
    return 1.5 if literal.strip(" -") in _COMMON else len(literal)


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


# ---------------------------------------------------------------------------
# analysis of one pattern (a small parser of Python's regex syntax)


class _Bail(Exception):
    """A construct the analysis does not handle: keep the pattern as written."""


@dataclass(frozen=True, slots=True)
class PatternInfo:
    """What :func:`analyse` learns about one pattern.

    ``source``: the pattern with bounded repeats (or as written, when the
    analysis bailed out); ``anchors``: lower-case ASCII strings one of which every
    match contains (None: no such literal known); ``reach``: the most characters an
    attempt at one position can examine ahead (None: unbounded or unknown)."""

    source: str
    anchors: frozenset[str] | None
    reach: int | None


_ESCAPES = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_FLAGS = frozenset("aiLmsux")

# an atom: (kind, anchors of a group, reach); kinds: "lit" (one literal character,
# given as the anchors slot's single member), "sub" (a group), "zero" (zero-width),
# "other" (anything else that consumes)
_Atom = tuple[str, Any, int | None]


class _Parser:
    def __init__(self, src: str) -> None:
        self.s = src
        self.n = len(src)
        self.i = 0
        self.edits: list[tuple[int, int, str]] = []

    def parse(self) -> tuple[frozenset[str] | None, int | None]:
        out = self.alternation()
        if self.i != self.n:
            raise _Bail("unbalanced parenthesis")
        return out

    def alternation(self) -> tuple[frozenset[str] | None, int | None]:
        branches = [self.sequence()]
        while self.i < self.n and self.s[self.i] == "|":
            self.i += 1
            branches.append(self.sequence())
        anchors: frozenset[str] | None = None
        if all(a is not None for a, _ in branches):
            anchors = frozenset().union(*(a for a, _ in branches if a is not None))
        reaches = [r for _, r in branches]
        reach = (
            None if any(r is None for r in reaches) else max(r for r in reaches if r is not None)
        )
        return anchors, reach

    def sequence(self) -> tuple[frozenset[str] | None, int | None]:
        best: frozenset[str] | None = None
        best_score = 0.0
        run: list[str] = []
        reach: int | None = 0

        def consider(cands: frozenset[str] | None) -> None:
            nonlocal best, best_score
            if cands:
                n = min(_score(c) for c in cands)
                if n > best_score:
                    best, best_score = cands, n

        def flush() -> None:
            # literal runs split at characters whose case folding the prefilter
            # cannot follow (see _foldable)
            piece: list[str] = []
            for ch in [*run, None]:
                if ch is not None and _foldable(ch):
                    piece.append(ch)
                    continue
                if len(piece) >= _MIN_ANCHOR:
                    consider(frozenset({"".join(piece).lower()}))
                piece = []
            run.clear()

        while self.i < self.n and self.s[self.i] not in "|)":
            kind, val, r = self.atom()
            q = self.quantifier()
            if q is None:
                if kind == "lit":
                    run.append(val)
                else:
                    flush()
                    if kind == "sub":
                        consider(val)
            else:
                flush()
                lo, hi = q
                if kind == "sub" and lo >= 1:
                    consider(val)
                r = None if r is None or hi is None else r * hi
            reach = None if reach is None or r is None else reach + r
        flush()
        return best, reach

    def atom(self) -> _Atom:
        s, i = self.s, self.i
        c = s[i]
        if c == "\\":
            return self.escape()
        if c == "[":
            self.skip_class()
            return ("other", None, 1)
        if c == ".":
            self.i += 1
            return ("other", None, 1)
        if c in "^$":
            self.i += 1
            return ("zero", None, 0)
        if c == "(":
            return self.group()
        if c in "*+?" or (c == "{" and self.brace(i) is not None):
            raise _Bail("nothing to repeat")
        self.i += 1
        return ("lit", c, 1)

    def escape(self) -> _Atom:
        s, i = self.s, self.i + 1
        if i >= self.n:
            raise _Bail("trailing backslash")
        c = s[i]
        if c in "dDsSwW":
            self.i = i + 1
            return ("other", None, 1)
        if c in "bBAZ":
            self.i = i + 1
            return ("zero", None, 0)
        if c.isdigit():
            raise _Bail("backreference or octal escape")
        if c in _ESCAPES:
            self.i = i + 1
            return ("lit", _ESCAPES[c], 1)
        width = {"x": 2, "u": 4, "U": 8}.get(c)
        if width is not None:
            digits = s[i + 1 : i + 1 + width]
            if len(digits) != width or any(d not in string.hexdigits for d in digits):
                raise _Bail("bad hex escape")
            self.i = i + 1 + width
            return ("lit", chr(int(digits, 16)), 1)
        if c == "N":
            end = s.find("}", i)
            if not s.startswith("{", i + 1) or end < 0:
                raise _Bail("bad \\N escape")
            try:
                ch = unicodedata.lookup(s[i + 2 : end])
            except KeyError:
                raise _Bail("unknown character name") from None
            self.i = end + 1
            return ("lit", ch, 1)
        if c.isascii() and c.isalnum():
            raise _Bail(f"unknown escape \\{c}")
        self.i = i + 1
        return ("lit", c, 1)

    def skip_class(self) -> None:
        s, i = self.s, self.i + 1
        if i < self.n and s[i] == "^":
            i += 1
        if i < self.n and s[i] == "]":
            i += 1
        while i < self.n and s[i] != "]":
            i += 2 if s[i] == "\\" else 1
        if i >= self.n:
            raise _Bail("unterminated character class")
        self.i = i + 1

    def expect_close(self) -> None:
        if self.i >= self.n or self.s[self.i] != ")":
            raise _Bail("missing )")
        self.i += 1

    def group(self) -> _Atom:
        s, i = self.s, self.i + 1
        if not s.startswith("?", i):
            self.i = i
        else:
            i += 1
            c = s[i] if i < self.n else ""
            if c in ":>":  # non-capturing, atomic
                self.i = i + 1
            elif c == "P" and s.startswith("<", i + 1):
                end = s.find(">", i)
                if end < 0:
                    raise _Bail("bad group name")
                self.i = end + 1
            elif c == "P" and s.startswith("=", i + 1):
                raise _Bail("named backreference")
            elif c in "=!" or (c == "<" and s[i + 1 : i + 2] in ("=", "!")):
                behind = c == "<"
                self.i = i + (2 if behind else 1)
                _, r = self.alternation()
                self.expect_close()
                return ("zero", None, 0 if behind else r)
            elif c == "#":
                end = s.find(")", i)
                if end < 0:
                    raise _Bail("unterminated comment")
                self.i = end + 1
                return ("zero", None, 0)
            else:  # flags: (?aiLmsux) or (?flags-flags:...)
                j = i
                while j < self.n and s[j] in _FLAGS:
                    j += 1
                added = s[i:j]
                if j < self.n and s[j] == "-":
                    j += 1
                    while j < self.n and s[j] in _FLAGS:
                        j += 1
                if "x" in added:
                    raise _Bail("verbose flag")
                if j < self.n and s[j] == ")" and "-" not in s[i:j]:
                    self.i = j + 1
                    return ("zero", None, 0)
                if j >= self.n or s[j] != ":":
                    raise _Bail("unsupported group")
                self.i = j + 1
        anchors, reach = self.alternation()
        self.expect_close()
        return ("sub", anchors, reach)

    def brace(self, i: int) -> tuple[int, int | None, int] | None:
        """``{m}``, ``{m,}``, ``{,n}``, ``{m,n}`` at ``i``: (min, max or None, end)."""
        s = self.s
        if not s.startswith("{", i) or s.startswith("}", i + 1):
            return None
        j = i + 1
        while j < self.n and s[j].isdigit():
            j += 1
        lo = s[i + 1 : j]
        hi: str | None = lo
        if j < self.n and s[j] == ",":
            k = j + 1
            while k < self.n and s[k].isdigit():
                k += 1
            hi = s[j + 1 : k] or None
            j = k
        if j >= self.n or s[j] != "}":
            return None
        return (int(lo) if lo else 0), (int(hi) if hi else None), j + 1

    def quantifier(self) -> tuple[int, int | None] | None:
        s, i = self.s, self.i
        if i >= self.n:
            return None
        c = s[i]
        hi: int | None
        if c == "*":
            lo, hi, end = 0, None, i + 1
        elif c == "+":
            lo, hi, end = 1, None, i + 1
        elif c == "?":
            lo, hi, end = 0, 1, i + 1
        else:
            b = self.brace(i)
            if b is None:
                return None
            lo, hi, end = b
        self.i = end + (1 if end < self.n and s[end] in "?+" else 0)
        if hi is None and lo <= MAX_REPEAT:
            self.edits.append((i, end, f"{{{lo},{MAX_REPEAT}}}"))
            hi = MAX_REPEAT
        return lo, hi


@lru_cache(maxsize=8192)
def analyse(pattern: str) -> PatternInfo:
    """Bounded source, required literals and reach of ``pattern`` (see the module doc)."""
    p = _Parser(pattern)
    try:
        anchors, reach = p.parse()
    except _Bail:
        return PatternInfo(pattern, None, None)
    out = pattern
    for a, b, rep in sorted(p.edits, reverse=True):
        out = out[:a] + rep + out[b:]
    try:
        re.compile(out)
    except (re.error, OverflowError, RecursionError):  # pragma: no cover - defensive
        return PatternInfo(pattern, anchors, None)
    return PatternInfo(out, anchors, reach)


# ---------------------------------------------------------------------------
# the shared literal prefilter


@lru_cache(maxsize=1)
def _fold_table() -> dict[int, str]:
    """Non-ASCII characters the regex engine matches case-insensitively with an
    ASCII letter (LONG S, KELVIN SIGN, dotted/dotless I...), mapped to that letter."""
    table: dict[int, str] = {}
    for ch in set(re.findall("[a-z]", _everything(), re.IGNORECASE)):
        for letter in string.ascii_lowercase:
            if re.fullmatch(letter, ch, re.IGNORECASE):
                table[ord(ch)] = letter
                break
    return table


@lru_cache(maxsize=1)
def _everything() -> str:
    return "".join(map(chr, chain(range(0x80, 0xD800), range(0xE000, 0x110000))))


@lru_cache(maxsize=4096)
def _foldable(ch: str) -> bool:
    """Whether every character the regex engine matches with ``ch``, case-insensitively,
    folds (:func:`fold`) to ``ch.lower()``, so that ``ch`` can be part of a literal."""
    if ch.isascii():
        return True  # the fold table covers the non-ASCII look-alikes of ASCII letters
    low = ch.lower()
    if len(low) != 1:
        return False
    return all(fold(x) == low for x in re.findall(re.escape(ch), _everything(), re.IGNORECASE))


def fold(text: str) -> str:
    """``text`` lower-cased for the prefilter: an ASCII literal that a pattern
    matches case-insensitively in ``text`` occurs in ``fold(text)`` in lower case."""
    if text.isascii():
        return text.lower()
    return text.translate(_fold_table()).lower()


_second = itemgetter(1)
_EMPTY: frozenset[int] = frozenset()


class _Prefilter:
    """One Aho–Corasick automaton over the required literals of every field."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.automaton: Any = None
        self.cache: dict[str, frozenset[int]] = {}

    def anchor_id(self, literal: str) -> int:
        i = self.ids.get(literal)
        if i is None:
            i = self.ids[literal] = len(self.ids)
            self.automaton = None
            self.cache.clear()
        return i

    def present(self, text: str) -> frozenset[int]:
        """Ids of the literals that occur in ``text`` (cached for recent texts: one
        trial's texts are scanned by many fields)."""
        got = self.cache.get(text)
        if got is None:
            auto = self.automaton
            if auto is None:
                auto = self.automaton = ahocorasick.Automaton()
                for lit, i in self.ids.items():
                    auto.add_word(lit, i)
                auto.make_automaton()
            got = frozenset(map(_second, auto.iter(fold(text)))) if self.ids else _EMPTY
            if len(self.cache) >= 2048:
                self.cache.clear()
            self.cache[text] = got
        return got


_PREFILTER = _Prefilter()


# ---------------------------------------------------------------------------
# a field


_GROUP_REF = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")  # backreference, conditional group

_MAX_CACHED = 8192  # candidate lists kept per field
#: a set of clusters is compiled as one pattern after this many texts needed it
UNION_AFTER = 5
_MAX_UNIONS = 96  # such patterns per field (compiling costs milliseconds each)

# a compiled group of alternatives: (pattern, alternative index by group number)
_Cluster = tuple["re.Pattern[str]", list[int]]


class CompiledField:
    """All patterns of one field, matched by the rule in the module doc.

    ``alternatives[i]`` are the pattern sources of ``entries[i]``. :meth:`hits`
    lists the matches, :meth:`search` says whether there is one; ``regex`` is the
    whole field as one plain alternation with word boundaries (patterns as
    written). ``infos`` holds the analysis of each alternative, in order.

    Alternatives with the same required literals are compiled together into one
    *cluster* pattern (each in a named group); a text runs the clusters whose
    literals occur in it and merges their matches."""

    def __init__(self, entries: Sequence[Entry], alternatives: Sequence[list[str]]) -> None:
        self.entries = list(entries)
        self.alternatives = [list(a) for a in alternatives]
        parts = [f"(?P<e{i}>{'|'.join(alts)})" for i, alts in enumerate(self.alternatives) if alts]
        self._regex_src = rf"(?<!\w)(?:{'|'.join(parts) if parts else '(?!)'})(?!\w)"
        infos: list[PatternInfo] = []
        owner: list[Entry] = []
        groups: dict[frozenset[str] | None, list[int]] = {}
        for entry, sources in zip(self.entries, self.alternatives, strict=True):
            for src in sources:
                info = analyse(src)
                groups.setdefault(info.anchors, []).append(len(infos))
                infos.append(info)
                owner.append(entry)
        self.infos = infos
        self._owner = owner
        # the alternatives without literals join every cluster (one search per
        # cluster then covers them) and form a cluster of their own for texts
        # where no other cluster can match; one that refers to its own groups
        # (a backreference) is compiled alone, its group numbers unchanged
        plain = groups.pop(None, [])
        alone = [k for k in plain if _GROUP_REF.search(infos[k].source)]
        plain = [k for k in plain if k not in alone]
        self._clusters: list[_Cluster] = []
        self._members: list[tuple[int, ...]] = []  # the alternatives of each cluster
        always: list[int] = []
        by_anchor: dict[int, list[int]] = {}
        for anchors, ks in sorted(groups.items(), key=lambda kv: kv[1][0]):
            for lit in anchors or ():
                by_anchor.setdefault(_PREFILTER.anchor_id(lit), []).append(len(self._clusters))
            self._add_cluster(sorted(ks + plain))
        for k in alone:
            always.append(self._add_cluster([k]))
        self._alone = tuple(always)
        if plain:
            always.append(self._add_cluster(plain))
        # a set of clusters seen often is compiled as one more cluster (one search
        # instead of several); bounded, so diverse texts cannot make it compile much
        self._seen: dict[tuple[int, ...], int] = {}
        self._unions: dict[tuple[int, ...], int] = {}
        self._always = tuple(always)
        self._by_anchor = by_anchor
        self._anchor_ids = frozenset(by_anchor)
        self._by_present: dict[frozenset[int], tuple[int, ...]] = {_EMPTY: self._always}

    def _add_cluster(self, ks: list[int]) -> int:
        self._clusters.append(self._cluster(ks))
        self._members.append(tuple(ks))
        return len(self._clusters) - 1

    def _union(self, cis: tuple[int, ...]) -> tuple[int, ...]:
        """``cis``, or the one cluster compiled for them once they are seen often."""
        u = self._unions.get(cis)
        if u is not None:
            return (u,)
        if len(self._unions) >= _MAX_UNIONS or set(cis) & set(self._alone):
            return cis
        n = self._seen[cis] = self._seen.get(cis, 0) + 1
        if n < UNION_AFTER:
            if len(self._seen) >= _MAX_CACHED:
                self._seen.clear()
            return cis
        u = self._unions[cis] = self._add_cluster(
            sorted({k for ci in cis for k in self._members[ci]})
        )
        return (u,)

    def _cluster(self, ks: list[int]) -> _Cluster:
        if len(ks) == 1:  # no group of ours: a backreference keeps its number
            rx = re.compile(rf"\W(?=\S)(?:{self.infos[ks[0]].source})(?!\w)", re.IGNORECASE)
            return rx, [ks[0]] * (rx.groups + 1)
        body = "|".join(f"(?P<a{k}>{self.infos[k].source})" for k in ks)
        rx = re.compile(rf"\W(?=\S)(?:{body})(?!\w)", re.IGNORECASE)
        alt_of = [0] * (rx.groups + 1)
        for name, g in rx.groupindex.items():
            alt_of[g] = int(name[1:])
        return rx, alt_of

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The whole field as one case-insensitive alternation with word boundaries."""
        return re.compile(self._regex_src, re.IGNORECASE)

    def candidates(self, text: str) -> list[int]:
        """Indexes of the alternatives that can match in ``text`` (their literals occur)."""
        return sorted({k for ci in self._for(text) for k in self._members[ci]})

    def _for(self, text: str) -> tuple[int, ...]:
        """The clusters that can match in ``text``, in order."""
        present = _PREFILTER.present(text)
        if self._anchor_ids.isdisjoint(present):
            return self._always
        present = present & self._anchor_ids
        got = self._by_present.get(present)
        if got is None:
            picked = set(self._alone)
            for a in present:
                picked.update(self._by_anchor[a])
            got = tuple(sorted(picked))
            if len(self._by_present) >= _MAX_CACHED:
                self._by_present.clear()
            self._by_present[present] = got
        if len(got) > 1:
            union = self._union(got)
            if union is not got:
                self._by_present[present] = union
            return union
        return got

    def hits(self, text: str, lower: str | None = None) -> list[Hit]:
        """The field's matches in ``text``, left to right (``lower`` is unused)."""
        cis = self._for(text)
        if not cis:
            return []
        padded = " " + text  # a match starts at the \W before the word start: its
        # offset in ``padded`` is the word start's offset in ``text``
        owner = self._owner
        out: list[Hit] = []
        if len(cis) == 1:
            rx, alt_of = self._clusters[cis[0]]
            search = rx.search
            m = search(padded)
            while m is not None:
                s = m.start()
                e = m.end() - 1
                if e == s:  # the first match here is empty: skip the position
                    m = search(padded, s + 1)
                    continue
                out.append(Hit(owner[alt_of[m.lastindex or 0]], s, e, text[s:e]))
                m = search(padded, e)
            return out
        # several clusters: keep each one's next match; the leftmost wins, on a tie
        # the earlier alternative; re-search the clusters it overtook
        clusters = [self._clusters[ci] for ci in cis]
        nxt = [rx.search(padded) for rx, _ in clusters]
        while True:
            best = None
            best_k = 0
            for (_, alt_of), m in zip(clusters, nxt, strict=True):
                if m is None:
                    continue
                if best is None or m.start() < best.start():
                    best, best_k = m, alt_of[m.lastindex or 0]
                elif m.start() == best.start():
                    k = alt_of[m.lastindex or 0]
                    if k < best_k:
                        best, best_k = m, k
            if best is None:
                return out
            s = best.start()
            e = best.end() - 1
            if e == s:
                pos = s + 1
            else:
                out.append(Hit(owner[best_k], s, e, text[s:e]))
                pos = e
            for i, m in enumerate(nxt):
                if m is not None and m.start() < pos:
                    nxt[i] = clusters[i][0].search(padded, pos)

    def search(self, text: str, lower: str | None = None) -> bool:
        """Whether the field has a hit in ``text``."""
        cis = self._for(text)
        if not cis:
            return False
        padded = " " + text
        best = None
        best_k = 0
        for ci in cis:
            rx, alt_of = self._clusters[ci]
            m = rx.search(padded)
            if m is not None and (
                best is None
                or m.start() < best.start()
                or (m.start() == best.start() and alt_of[m.lastindex or 0] < best_k)
            ):
                best, best_k = m, alt_of[m.lastindex or 0]
        if best is None:
            return False
        if best.end() - 1 > best.start():
            return True
        return bool(self.hits(text))  # pragma: no cover - an empty first match
