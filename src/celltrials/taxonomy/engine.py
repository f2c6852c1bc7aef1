"""The taxonomy's pattern engine: every field's synonyms matched with the public
``re`` API, an Aho–Corasick literal prefilter (``ahocorasick_rs``) and bounded
repeats, so that a text costs time linear in its length.

**Matching rule** (what :meth:`CompiledField.hits` returns). A field is an
ordered list of alternatives (regular expressions, matched case-insensitively
unless scoped ``(?-i:...)``), each belonging to an entry. Scanning a text left to
right, at each *word start* — a non-space character not preceded by a word
character — at or after the end of the previous hit, the alternatives are tried
in order (entry order, then pattern order); the first that matches there and is
followed by a non-word character or the end of the text is the hit. A first
match that is empty skips the position. This is the plain semantics of the
field's alternation ``(?<!\\w)(?:alt1|alt2|...)(?!\\w)`` searched at word starts
(the text read after one space: a lookbehind at its start sees a space);
``tests/test_classify.py`` checks it against a loop written that way and
``tests/test_engine_index.py`` against ``CompiledField.regex`` on every text of
the shared registry exports and on generated texts.

**How it is fast.** Every alternative is analysed once by a small parser of
Python's regular-expression syntax (no private ``re`` modules) and matched by
one of three paths:

* *strings* (:func:`expand`): most alternatives denote a small finite set of
  strings (``urinary tract infections?``, ``CHM[- _]?2101``, ``(?-i:AML)``),
  optionally followed by a word run (``lymphom\\w*``). Their strings, in the order
  the regex engine prefers them, are keys of one Aho–Corasick automaton shared
  by all fields (``ahocorasick_rs``, a DFA), run once per text over a copy of it in which
  every non-word character is one separator; a key starts and (unless a word
  run follows) ends with that separator, so only matches at a word start that
  end at a word end are reported. Strings that share a key (``chm-2101``,
  ``chm 2101``) and case-sensitive characters are told apart by comparing the
  text; a word run is measured up to the next separator.
* *triggered* (:func:`beginnings`): an alternative that is not finite but whose
  matches all begin with one of a few strings of 3–6 characters
  (``CAR-?(?:19|BCMA|CD\\d+)\\w*``): those beginnings are keys too, and the
  alternative's regex is tried (``match``) only at the word starts where one
  occurs.
* *searched*: the rest (a leading class repeat such as ``[a-z]*lymphom\\w*``,
  non-ASCII characters, ``\\d``/``\\s`` at the start). Their *required literals*
  (ASCII strings one of which every match contains, ``"stem"`` for ``stem
  cells?``) are keys that may occur anywhere; an alternative whose literals do
  not occur is not run. A literal followed by a small class that every match
  has there is extended by each member (``Th\\d+``: ``th0`` ... ``th9``, which a
  text that is not ASCII is taken to hold, as ``\\d`` matches any decimal
  digit; ``FR[αa]``: ``frα``, ``fra``); a pattern whose only requirement is a
  digit has the literal :data:`DIGIT`, present when the text has a decimal
  digit. Alternatives with the same literals are compiled
  together into one *cluster* pattern (each in a named group; alternatives
  without a literal join every cluster); a set of clusters that many texts
  need is compiled as one more cluster (bounded per field).

At each word start the candidates of all three paths are merged by the rule
above (earliest alternative first; an empty first match skips the word start).
Case look-alikes that the regex engine folds to ASCII letters (LONG S, KELVIN
SIGN, dotted/dotless I) are read as those letters, so neither the keys nor the
literals miss a match; any other non-ASCII character matches no key (a
pattern's non-ASCII characters keep it on the searched path).

*Bounded repeats*: ``*``, ``+`` and ``{m,}`` are rewritten as ``{0,MAX_REPEAT}``,
``{1,MAX_REPEAT}`` and ``{m,MAX_REPEAT}`` (1,000). An attempt at one word start
then examines a bounded number of characters, so a pattern such as
``(?:mesenchymal|stem)[\\w -]*?cells? (?:in|from) the`` no longer rescans the rest
of the text at every word start (issue 12: a 100,000-character title took
11.6 s, 200,000 took 40.7 s). The only change in meaning: one repeat matches at
most 1,000 times. Each cluster's searches move strictly forward and the
automaton reads a text once, so the work is linear in the length of the text.

A text's pass over the automaton is kept for the next few hundred texts (one
trial's texts are read by many fields), and with it each field's hits in that
text once asked (a trial often asks a field about a text twice); nothing else
is cached.
Costs: ``benchmarks/classify.py`` (BENCHMARKS.md). A pattern the parser cannot
follow (backreference, conditional group, verbose flag) is kept as written, has
no literal and is run on every text.
"""

from __future__ import annotations

import re
import string
import unicodedata
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import chain
from typing import Any, Final, NamedTuple

import ahocorasick_rs

# (module constants are Final: compiled, each use is the value, not a lookup in
# the module's dict; _INDEX and UNION_AFTER are not, tests replace them)

#: Upper bound that replaces the open end of ``*``, ``+`` and ``{m,}``.
MAX_REPEAT: Final = 1000

_MIN_ANCHOR: Final = 2  # shortest literal worth prefiltering on

# Literals so frequent in trial texts that they hardly prune: a pattern is
# prefiltered on one of them only when it requires no other literal.
_COMMON: Final = frozenset(
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


#: the "literal" of a pattern that requires a decimal digit (``\\d``) and no
#: better literal: present when the text has a digit (not an automaton key)
DIGIT: Final = "\x00\\d"
_ASCII_DIGITS: Final = tuple("0123456789")
_MAX_CLASS: Final = 10  # most members of a class that extends a literal
#: literals made of a literal run and an ASCII digit standing for ``\d``: a text
#: that is not ASCII may hold another decimal digit there, so they count as present
_DIGIT_EXTENDED: Final[set[str]] = set()
_HAS_DIGIT: Final = re.compile(r"\d")


def _score(literal: str) -> float:
    if literal == DIGIT:
        return 1.0
    return 1.5 if literal.strip(" -") in _COMMON else len(literal)


@dataclass(frozen=True, slots=True)
class Entry:
    """One taxonomy entry: the labels a match implies plus entry options.

    ``value``: the entry's single value (for single-field entries): the first
    label, else the name."""

    name: str
    labels: Mapping[str, tuple[str, ...]]
    options: Mapping[str, Any] = field(default_factory=dict)
    value: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = self.name
        for vals in self.labels.values():
            if vals:
                value = vals[0]
                break
        object.__setattr__(self, "value", value)


class Hit(NamedTuple):
    """One match of a field: its entry, its span in the text read and the matched
    text (an immutable tuple: made by the thousand, cheaply)."""

    entry: Entry
    start: int
    end: int
    text: str


def new_hit(entry: Entry, start: int, end: int, text: str) -> Hit:
    """``Hit(entry, start, end, text)`` without the named tuple's ``__new__``, a
    Python function that compiled callers would otherwise enter for every match
    (~200 ns each; the same tuple)."""
    return tuple.__new__(Hit, (entry, start, end, text))


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
    attempt at one position can examine ahead (None: unbounded or unknown);
    ``lead``: when every match holds an occurrence of an anchor preceded, within
    the match, by at most ``lead`` characters, none of them white space, that
    bound (:data:`_NO_BOUND`: the white space alone bounds it); else None. Such a
    match starts in the run of non-space characters that holds the occurrence."""

    source: str
    anchors: frozenset[str] | None
    reach: int | None
    lead: int | None = None


_ESCAPES: Final = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_FLAGS: Final = frozenset("aiLmsux")

# an atom: (kind, anchors of a group, reach); kinds: "lit" (one literal character,
# given as the anchors slot's single member), "sub" (a group), "zero" (zero-width),
# "other" (anything else that consumes)
_Atom = tuple[str, Any, int | None]
#: a lead without a bound of its own (see PatternInfo.lead)
_NO_BOUND: Final = 1 << 40
# what a parsed piece tells about white space: (the lead of its anchors, see
# PatternInfo.lead; whether no string it matches holds white space)
_Lead = tuple[int | None, bool]
_WS_FREE_ESCAPES: Final = frozenset("wdS")  # never white space


def _no_space_in(lo: int, hi: int) -> bool:
    """Whether no character from ``lo`` to ``hi`` (code points) is white space."""
    if hi - lo > 0x3100:
        return False  # (a wide range: not worth checking)
    return not any(chr(c).isspace() for c in range(lo, hi + 1))


def _class_ws_free(body: str) -> bool:
    """Whether the class ``[body]`` matches no white space (conservative: escapes
    other than w, d, S and punctuation, nested or negated classes: no)."""
    if not body or body[0] == "^" or "[" in body:
        return False
    chars: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            e = body[i + 1 : i + 2]
            if e and e in _WS_FREE_ESCAPES:
                chars.append("")  # (a class escape: no character of its own)
                i += 2
                continue
            if not e or e.isalnum():
                return False
            c = e
            i += 1
        chars.append(c)
        i += 1
    for j, c in enumerate(chars):  # ranges "a-z" (a "-" first or last is itself)
        if c == "-" and 0 < j < len(chars) - 1 and chars[j - 1] and chars[j + 1]:
            if not _no_space_in(ord(chars[j - 1]), ord(chars[j + 1])):
                return False
        elif c and c.isspace():
            return False
    return True


def _atom_ws_free(kind: str, val: Any, src: str) -> bool:
    """Whether no string the atom ``src`` (of ``kind``) matches holds white space."""
    if kind == "zero":
        return True
    if kind == "lit":
        return not str(val).isspace()
    if kind == "cls":
        return not any(m.isspace() for m in val)
    if src.startswith("\\"):
        return src[1:2] in _WS_FREE_ESCAPES
    if src.startswith("[") and src.endswith("]"):
        return _class_ws_free(src[1:-1])
    return False  # "." and the like


class _Parser:
    def __init__(self, src: str) -> None:
        self.s = src
        self.n = len(src)
        self.i = 0
        self.edits: list[tuple[int, int, str]] = []
        # the _Lead of the last alternation, sequence or group parsed
        self.info: _Lead = (None, False)

    def parse(self) -> tuple[frozenset[str] | None, int | None]:
        out = self.alternation()
        if self.i != self.n:
            raise _Bail("unbalanced parenthesis")
        return out

    def alternation(self) -> tuple[frozenset[str] | None, int | None]:
        branches = [self.sequence()]
        infos = [self.info]
        while self.i < self.n and self.s[self.i] == "|":
            self.i += 1
            branches.append(self.sequence())
            infos.append(self.info)
        anchors: frozenset[str] | None = None
        if all(a is not None for a, _ in branches):
            anchors = frozenset().union(*(a for a, _ in branches if a is not None))
        reaches = [r for _, r in branches]
        reach = (
            None if any(r is None for r in reaches) else max(r for r in reaches if r is not None)
        )
        leads = [ld for ld, _ in infos]
        lead = None if anchors is None or None in leads else max(x or 0 for x in leads)
        self.info = (lead, all(free for _, free in infos))
        return anchors, reach

    def sequence(self) -> tuple[frozenset[str] | None, int | None]:
        best: frozenset[str] | None = None
        best_score = 0.0
        best_lead: int | None = None
        run: list[str] = []
        reach: int | None = 0
        # before the atom being read: whether what the sequence matched so far holds
        # no white space, and how long it is at most (_NO_BOUND: not bounded)
        free, length = True, 0
        run_pre: list[tuple[bool, int]] = []  # (free, length) before each run character

        def lead_of(pre: tuple[bool, int], inner: int | None = 0) -> int | None:
            if not pre[0] or inner is None:
                return None
            return min(pre[1] + inner, _NO_BOUND)

        def consider(cands: frozenset[str] | None, lead: int | None) -> None:
            nonlocal best, best_score, best_lead
            if cands:
                n = min(_score(c) for c in cands)
                if n > best_score:
                    best, best_score = cands, n
                    best_lead = None if DIGIT in cands else lead

        def flush() -> None:
            # literal runs split at characters whose case folding the prefilter
            # cannot follow (see _foldable)
            piece: list[str] = []
            for k, ch in enumerate([*run, None]):
                if ch is not None and _foldable(ch):
                    piece.append(ch)
                    continue
                if len(piece) >= _MIN_ANCHOR:
                    lead = lead_of(run_pre[k - len(piece)])
                    consider(frozenset({"".join(piece).lower()}), lead)
                piece = []
            run.clear()
            run_pre.clear()

        while self.i < self.n and self.s[self.i] not in "|)":
            at = self.i
            kind, val, r = self.atom()
            sub_info = self.info if kind == "sub" else (None, False)
            if kind == "sub":
                free_atom = sub_info[1]
            else:
                free_atom = _atom_ws_free(kind, val, self.s[at : self.i])
            q = self.quantifier()
            if kind == "cls" and (q is None or q[0] >= 1):
                # a class every match has here: the literal run before it extended by
                # each member ("Th\d": th0 ... th9), a digit when it is \d
                piece: list[str] = []
                for ch in reversed(run):
                    if not _foldable(ch):
                        break
                    piece.append(ch)
                members: tuple[str, ...] = val
                if len(piece) + 1 >= _MIN_ANCHOR and all(_foldable(m) for m in members):
                    stem = "".join(reversed(piece))
                    ext = frozenset((stem + m).lower() for m in members)
                    if members is _ASCII_DIGITS:
                        _DIGIT_EXTENDED.update(ext)
                    # (a digit standing for \d: a text that is not ASCII may hold another
                    # decimal digit there, with no occurrence of the literal: no lead)
                    digit = members is _ASCII_DIGITS
                    consider(ext, None if digit else lead_of(run_pre[len(run) - len(piece)]))
                if members is _ASCII_DIGITS:
                    consider(frozenset({DIGIT}), None)
            if q is None:
                if kind == "lit":
                    run.append(val)
                    run_pre.append((free, length))
                else:
                    flush()
                    if kind == "sub":
                        consider(val, lead_of((free, length), sub_info[0]))
            else:
                flush()
                lo, hi = q
                if kind == "sub" and lo >= 1:
                    consider(val, lead_of((free, length), sub_info[0]))
                r = None if r is None or hi is None else r * hi
            reach = None if reach is None or r is None else reach + r
            free = free and free_atom
            length = _NO_BOUND if r is None else min(length + r, _NO_BOUND)
        flush()
        self.info = (best_lead if best is not None else None, free)
        return best, reach

    def atom(self) -> _Atom:
        s, i = self.s, self.i
        c = s[i]
        if c == "\\":
            return self.escape()
        if c == "[":
            start = self.i
            self.skip_class()
            members = self.class_members(s[start + 1 : self.i - 1])
            return ("other", None, 1) if members is None else ("cls", members, 1)
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
        if c == "d":  # a decimal digit: 0-9 in an ASCII text
            self.i = i + 1
            return ("cls", _ASCII_DIGITS, 1)
        if c in "DsSwW":
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

    @staticmethod
    def class_members(body: str) -> tuple[str, ...] | None:
        """The members of a small class of plain characters (``αa``, ``0-9``), or None
        (negated, escapes, large ranges, more than ``_MAX_CLASS`` members)."""
        if not body or body[0] == "^" or "\\" in body or "[" in body:
            return None
        out: list[str] = []
        i = 0
        while i < len(body):
            if i + 2 < len(body) and body[i + 1] == "-":
                lo, hi = ord(body[i]), ord(body[i + 2])
                if hi < lo or hi - lo >= _MAX_CLASS:
                    return None
                out.extend(map(chr, range(lo, hi + 1)))
                i += 3
            else:
                out.append(body[i])
                i += 1
        members = tuple(dict.fromkeys(out))
        return members if len(members) <= _MAX_CLASS else None

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
        return ("sub", anchors, reach)  # (its _Lead in self.info)

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
    lead = p.info[0] if anchors is not None else None
    out = pattern
    for a, b, rep in sorted(p.edits, reverse=True):
        out = out[:a] + rep + out[b:]
    try:
        re.compile(out)
    except (re.error, OverflowError, RecursionError):  # pragma: no cover - defensive
        return PatternInfo(pattern, anchors, None)
    return PatternInfo(out, anchors, reach, lead)


# ---------------------------------------------------------------------------
# what an alternative matches at a word start: its strings (when finite) or the
# strings its matches begin with

#: most strings one alternative is expanded to (beyond that it stays a regex)
MAX_STRINGS: Final = 2048
#: characters of a match's beginning used to trigger a regex alternative
PREFIX_LEN: Final = 6
_MIN_PREFIX: Final = 3  # a shorter open beginning triggers too often: search instead

# one character of an expanded string: (character, matched case-sensitively)
_Char = tuple[str, bool]
# an expanded string: its characters and, when it ends in a run of word
# characters (``\w{m,n}``), that run's bounds; in prefix mode (0, -1) marks a
# string whose continuation is unknown ("open")
_Str = tuple[tuple[_Char, ...], tuple[int, int] | None]
_OPEN: Final = (0, -1)
# a parsed item: (node, min, max, lazy); nodes: ("chars", options), ("word",)
# (\w), ("any",) (consumes what the expansion does not follow), ("look", word)
# (zero-width; word: a negative lookahead of word characters only), ("group", branches)
_Item = tuple[tuple[Any, ...], int, int, bool]


class _Infinite(Exception):
    """Not (or not cheaply) a finite set of strings."""


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _Expander:
    """Parses an alternative into items; :meth:`strings` expands them into the strings
    it matches, in the regex engine's order of preference (alternation left to right,
    greedy repeats longest first, lazy ones shortest first), :meth:`prefixes` into the
    strings of at most ``PREFIX_LEN`` characters every match begins with. Only ASCII
    characters are followed."""

    def __init__(self, src: str) -> None:
        self.s = src
        self.n = len(src)
        self.i = 0
        self.tree = self.branches(False)
        if self.i != self.n:
            raise _Infinite("unbalanced parenthesis")

    # -- parsing -----------------------------------------------------------
    def branches(self, cs: bool) -> list[list[_Item]]:
        out = [self.sequence(cs)]
        while self.i < self.n and self.s[self.i] == "|":
            self.i += 1
            out.append(self.sequence(cs))
        return out

    def sequence(self, cs: bool) -> list[_Item]:
        items: list[_Item] = []
        while self.i < self.n and self.s[self.i] not in "|)":
            node = self.atom(cs)
            lo, hi, lazy = self.quantifier()
            if node[0] == "look" and (lo, hi) != (1, 1):
                node = ("any",)  # a repeated assertion: not followed
            items.append((node, lo, hi, lazy))
        return items

    @staticmethod
    def char(ch: str, cs: bool) -> tuple[Any, ...]:
        if not ch.isascii():
            return ("any",)
        return ("chars", ((ch if cs else ch.lower(), cs),))

    def atom(self, cs: bool) -> tuple[Any, ...]:
        s, i = self.s, self.i
        c = s[i]
        if c == "\\":
            nxt = s[i + 1 : i + 2]
            if nxt == "w":
                self.i = i + 2
                return ("word",)
            if nxt and nxt in "dDsSWp":
                self.i = i + 2
                return ("any",)
            if nxt and nxt in "bBAZ":
                self.i = i + 2
                return ("look", False)
            return self.char(self.escape(), cs)
        if c == "[":
            members = self.char_class(cs)
            if members is None:
                return ("any",)
            return ("chars", tuple((ch, cs) for ch in members))
        if c == "(":
            return self.group(cs)
        if c == ".":
            self.i = i + 1
            return ("any",)
        if c in "^$":
            self.i = i + 1
            return ("look", False)
        if c in "*+?{" and (c != "{" or _Parser(s).brace(i) is not None):
            raise _Infinite("nothing to repeat")
        self.i = i + 1
        return self.char(c, cs)

    def escape(self) -> str:
        """The character of the escape at ``self.i``."""
        s, i = self.s, self.i + 1
        if i >= self.n:
            raise _Infinite("trailing backslash")
        c = s[i]
        if c in _ESCAPES:
            self.i = i + 1
            return _ESCAPES[c]
        width = {"x": 2, "u": 4, "U": 8}.get(c)
        if width is not None:
            digits = s[i + 1 : i + 1 + width]
            if len(digits) != width or any(d not in string.hexdigits for d in digits):
                raise _Infinite("bad hex escape")
            self.i = i + 1 + width
            return chr(int(digits, 16))
        if c == "N":
            end = s.find("}", i)
            if not s.startswith("{", i + 1) or end < 0:
                raise _Infinite("bad \\N escape")
            try:
                ch = unicodedata.lookup(s[i + 2 : end])
            except KeyError:
                raise _Infinite("unknown character name") from None
            self.i = end + 1
            return ch
        if c.isascii() and c.isalnum():
            raise _Infinite(f"escape \\{c}")  # backreference, octal, unknown
        self.i = i + 1
        return c

    def char_class(self, cs: bool) -> list[str] | None:
        """The members of the class at ``self.i`` (lower case unless ``cs``), or None
        when it is negated, large, uses class escapes or non-ASCII members."""
        s, i = self.s, self.i + 1
        negated = s.startswith("^", i)
        if negated:
            i += 1
        members: list[str] = []
        ok = not negated
        first = True
        while i < self.n and (s[i] != "]" or first):
            first = False
            if s[i] == "\\":
                if s[i + 1 : i + 2] and s[i + 1] in "dDsSwWp":
                    ok = False
                    i += 2
                    continue
                self.i = i
                lo = self.escape()
                i = self.i
            else:
                lo = s[i]
                i += 1
            if s.startswith("-", i) and i + 1 < self.n and s[i + 1] != "]":
                i += 1
                if s[i] == "\\":
                    self.i = i
                    hi = self.escape()
                    i = self.i
                else:
                    hi = s[i]
                    i += 1
                if ord(hi) < ord(lo) or ord(hi) - ord(lo) > 64:
                    ok = False
                else:
                    members.extend(chr(o) for o in range(ord(lo), ord(hi) + 1))
            else:
                members.append(lo)
        if i >= self.n:
            raise _Infinite("unterminated class")
        self.i = i + 1
        if not ok or not all(m.isascii() for m in members):
            return None
        return sorted({m if cs else m.lower() for m in members})

    def group(self, cs: bool) -> tuple[Any, ...]:
        s, i = self.s, self.i + 1
        inner = cs
        kind = "group"
        if not s.startswith("?", i):
            self.i = i
        elif s.startswith("?:", i):
            self.i = i + 2
        elif s.startswith("?-i:", i):
            self.i, inner = i + 4, True
        elif s.startswith("?i:", i):
            self.i, inner = i + 3, False
        elif s.startswith("?P<", i):
            end = s.find(">", i)
            if end < 0:
                raise _Infinite("bad group name")
            self.i = end + 1
        elif s.startswith("?!", i):
            self.i, kind = i + 2, "nla"
        elif s.startswith(("?=", "?<=", "?<!"), i):
            self.i, kind = i + (2 if s[i + 1] == "=" else 3), "look"
        elif s.startswith("?>", i):
            self.i, kind = i + 2, "any"
        else:
            raise _Infinite("group kind")  # flags, comments, conditionals, P=
        branches = self.branches(inner)
        if self.i >= self.n or s[self.i] != ")":
            raise _Infinite("missing )")
        self.i += 1
        if kind == "nla":
            # (?![0-9]) and the like: a character class of word characters only
            only_word = (
                len(branches) == 1
                and len(branches[0]) == 1
                and branches[0][0][0][0] == "chars"
                and branches[0][0][1:3] == (1, 1)
                and all(_is_word(ch) for ch, _ in branches[0][0][0][1])
            )
            return ("look", only_word)
        if kind == "look":
            return ("look", False)
        if kind == "any":
            return ("any",)
        return ("group", branches)

    def quantifier(self) -> tuple[int, int, bool]:
        s, i = self.s, self.i
        if i >= self.n:
            return 1, 1, False
        c = s[i]
        if c == "*":
            lo, hi, end = 0, MAX_REPEAT, i + 1
        elif c == "+":
            lo, hi, end = 1, MAX_REPEAT, i + 1
        elif c == "?":
            lo, hi, end = 0, 1, i + 1
        else:
            b = _Parser(s).brace(i)
            if b is None:
                return 1, 1, False
            lo, hi_, end = b
            hi = MAX_REPEAT if hi_ is None else hi_
        lazy = s.startswith("?", end)
        if s.startswith("+", end):
            raise _Infinite("possessive repeat")
        self.i = end + (1 if lazy else 0)
        if hi < lo:
            raise _Infinite("bad repeat")
        return lo, hi, lazy

    # -- the strings of a finite alternative ---------------------------------
    def strings(self) -> list[_Str]:
        return self.exact_branches(self.tree, True)

    def exact_branches(self, branches: list[list[_Item]], at_end: bool) -> list[_Str]:
        out: list[_Str] = []
        for items in branches:
            out.extend(self.exact_sequence(items, at_end))
            if len(out) > MAX_STRINGS:
                raise _Infinite("too many strings")
        return out

    def exact_sequence(self, items: list[_Item], at_end: bool) -> list[_Str]:
        # a final lookahead that no word character may follow is implied by the
        # (?!\w) after every alternative
        while at_end and items and items[-1][0] == ("look", True):
            items = items[:-1]
        acc: list[_Str] = [((), None)]
        for j, (node, lo, hi, lazy) in enumerate(items):
            last = at_end and j == len(items) - 1
            kind = node[0]
            if kind in ("look", "any"):
                raise _Infinite(kind)
            if kind == "word":
                if not last:
                    raise _Infinite("word run not at the end")
                acc = [(chars, (lo, hi)) for chars, _ in acc]
                continue
            if kind == "chars":
                opts: list[_Str] = [((ch,), None) for ch in node[1]]
            else:
                opts = self.exact_branches(node[1], last and hi == 1)
            rep = opts if (lo, hi) == (1, 1) else _repeat(opts, lo, hi, lazy)
            acc = [(a + b, sfx) for a, _ in acc for b, sfx in rep]
            if len(acc) > MAX_STRINGS:
                raise _Infinite("too many strings")
        return acc

    # -- the beginnings of any alternative ---------------------------------
    def prefixes(self) -> list[_Str]:
        return self.prefix_branches(self.tree, [((), None)])

    def prefix_branches(self, branches: list[list[_Item]], acc: list[_Str]) -> list[_Str]:
        out: list[_Str] = []
        for items in branches:
            out.extend(self.prefix_sequence(items, acc))
        return _dedupe(out)

    def prefix_sequence(self, items: list[_Item], acc: list[_Str]) -> list[_Str]:
        for node, lo, hi, _ in items:
            growing = [a for a in acc if a[1] is None and len(a[0]) < PREFIX_LEN]
            if not growing:
                break
            done = [a for a in acc if not (a[1] is None and len(a[0]) < PREFIX_LEN)]
            kind = node[0]
            nxt: list[_Str]
            once: list[_Str]
            if kind == "look":
                continue
            if kind in ("any", "word") or (lo == 0 and hi > 1):
                nxt = [(a, _OPEN) for a, _ in growing]
            else:
                if kind == "chars":
                    once = [((*a, ch), None) for a, _ in growing for ch in node[1]]
                else:
                    once = self.prefix_branches(node[1], growing)
                if lo > 1:
                    once = [(a, _OPEN) for a, _ in once]  # further copies: not followed
                elif hi > 1:
                    once = [(a, _OPEN if s is None else s) for a, s in once]
                nxt = once + (growing if lo == 0 else [])
            acc = _dedupe(
                done + [(a[:PREFIX_LEN], _OPEN if len(a) >= PREFIX_LEN else s) for a, s in nxt]
            )
            if len(acc) > MAX_STRINGS:
                raise _Infinite("too many beginnings")
        return acc


def _dedupe(strs: list[_Str]) -> list[_Str]:
    return list(dict.fromkeys(strs))


def _repeat(opts: list[_Str], lo: int, hi: int, lazy: bool) -> list[_Str]:
    """The strings of ``opts`` repeated ``lo`` to ``hi`` times, in the engine's order
    (only the last copy may end in a word run, so only when at most one copy)."""
    if any(not chars for chars, _ in opts) or (hi > 1 and any(s is not None for _, s in opts)):
        raise _Infinite("repeat of an empty string or a word run")
    if hi > 8 or len(opts) ** hi > MAX_STRINGS * 4:
        raise _Infinite("large repeat")

    def rep(lo: int, hi: int) -> list[_Str]:
        if hi == 0:
            return [((), None)]
        more = [
            (o + r, s if not r else rs) for o, s in opts for r, rs in rep(max(lo - 1, 0), hi - 1)
        ]
        if lo > 0:
            return more
        return [((), None), *more] if lazy else [*more, ((), None)]

    return rep(lo, hi)


@dataclass(frozen=True, slots=True)
class Literal:
    """One string an alternative matches (:func:`expand`), or begins with
    (:func:`beginnings`).

    ``exact``: the string, lower case where matched case-insensitively;
    ``cs``: positions matched case-sensitively; ``run``: (min, max) word
    characters that follow within the match (``\\w{m,n}`` at its end), or None;
    (0, -1) for a beginning: anything may follow."""

    exact: str
    cs: tuple[int, ...]
    run: tuple[int, int] | None


def _literals(strs: list[_Str]) -> tuple[Literal, ...] | None:
    out: list[Literal] = []
    for chars, run in strs:
        if not chars:
            return None  # an empty match (or beginning): keep the regex
        if chars[0][0].isspace():
            continue  # never at a word start
        out.append(
            Literal(
                "".join(c for c, _ in chars), tuple(i for i, (_, cs) in enumerate(chars) if cs), run
            )
        )
    return tuple(dict.fromkeys(out))


@lru_cache(maxsize=8192)
def expand(source: str) -> tuple[Literal, ...] | None:
    """The strings ``source`` matches (case-insensitively, as an alternative: followed
    by a non-word character unless it ends in a word run), in the order the regex
    engine prefers them; None when it is not a small finite set of ASCII strings
    (optionally followed by ``\\w{m,n}``). Strings that start with white space can
    never match at a word start and are left out."""
    try:
        return _literals(_Expander(source).strings())
    except (_Infinite, RecursionError):
        return None


@lru_cache(maxsize=8192)
def beginnings(source: str) -> tuple[Literal, ...] | None:
    """Strings one of which every match of ``source`` at a word start begins with
    (lower-case where case-insensitive, at most ``PREFIX_LEN`` characters; ``run``
    None when the match ends there, (0, -1) when more may follow); None when they
    are not known or too short to be selective."""
    try:
        lits = _literals(_Expander(source).prefixes())
    except (_Infinite, RecursionError):
        return None
    if lits is None or any(lit.run and len(lit.exact) < _MIN_PREFIX for lit in lits):
        return None
    return lits


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


class LiteralGate:
    """A necessary condition for a pattern to match, checked with plain substring
    tests: one of the required literals (:func:`analyse`) of each alternative of
    ``patterns`` must occur in the text (read as the index reads it, :func:`_g`;
    a literal that starts an alternative, preceded by a separator when the
    alternatives may match only at a word start, ``word_start``). ``keys`` is None
    (every text passes) when an alternative has no such literal."""

    __slots__ = ("_auto", "keys")

    def __init__(self, patterns: Sequence[str], word_start: bool = False) -> None:
        self.keys: tuple[str, ...] | None = None
        self._auto: _Automaton | None = None
        keys: set[str] = set()
        if not patterns:
            return  # (an empty alternation matches everywhere)
        for pat in patterns:
            info = analyse(f"(?:{pat})")
            if not info.anchors or DIGIT in info.anchors:
                return
            at_start = word_start and info.lead == 0
            for lit in info.anchors:
                keys.add((_SEP if at_start else "") + _g(lit))
        # a key holding another is redundant
        self.keys = tuple(sorted(k for k in keys if not any(o != k and o in k for o in keys)))
        if self.keys:
            self._auto = _Automaton(list(self.keys), [()] * len(self.keys))

    def may_match(self, text: str) -> bool:
        """False when no alternative can match in ``text``."""
        if self.keys is None:
            return True
        if not self.keys:
            return False
        assert self._auto is not None
        return self._auto.occurs(_g(" " + text))


def fold(text: str) -> str:
    """``text`` lower-cased for the prefilter: an ASCII literal that a pattern
    matches case-insensitively in ``text`` occurs in ``fold(text)`` in lower case."""
    if text.isascii():
        return text.lower()
    return text.translate(_fold_table()).lower()


# ---------------------------------------------------------------------------
# the shared index: one Aho–Corasick pass per text for every field

_SEP: Final = "\x01"  # stands for every non-word character (and the text's two ends)
_NO_RUN: Final = -1
_REGEX: Final = -1  # a variant's length when the regex decides (a triggered alternative)

# ASCII text (as bytes): upper case to lower, non-word characters to _SEP
_G_ASCII: Final = bytes(
    ord(_SEP if not _is_word(chr(o)) else chr(o).lower()) if o < 128 else o for o in range(256)
)


@lru_cache(maxsize=1)
def _fold_ascii() -> dict[int, str]:
    """Upper-case ASCII letters and their non-ASCII look-alikes (:func:`_fold_table`),
    mapped to the lower-case letter: the characters that match it case-insensitively."""
    table = {ord(c): c.lower() for c in string.ascii_uppercase}
    table.update(_fold_table())
    return table


def _g(text: str) -> str:
    """``text`` as the index reads it (same length): lower case, the look-alikes of
    ASCII letters as those letters, every non-word character ``_SEP``, character
    by character (:func:`_g_char`). A string that a pattern matches
    case-insensitively, ``g`` of it occurs in ``g(text)``."""
    if text.isascii():
        return text.encode("ascii").translate(_G_ASCII).decode("ascii")
    # each non-ASCII character encodes as one "?" (a separator after the table);
    # only the word characters among them are put back: a text is rarely more
    # than a few percent non-ASCII, and rewriting every non-word character of it
    # with a regex, as before, cost several times this
    raw = text.encode("ascii", "replace")
    out = raw.translate(_G_ASCII).decode("ascii")
    pieces: list[str] = []
    last = 0
    p = raw.find(b"?")
    while p >= 0:
        ch = text[p]
        if ch != "?":
            gc = _G_CHAR.get(ch)
            if gc is None:
                gc = _G_CHAR[ch] = _g_char(ch)
            if gc != _SEP:
                pieces.append(out[last:p])
                pieces.append(gc)
                last = p + 1
        p = raw.find(b"?", p + 1)
    if not pieces:
        return out
    pieces.append(out[last:])
    return "".join(pieces)


#: :func:`_g_char` of the non-ASCII characters seen (a few hundred in practice)
_G_CHAR: Final[dict[str, str]] = {}


def _g_char(ch: str) -> str:
    """One character as the index reads it: its ASCII look-alike letter if it has
    one (:func:`_fold_table`), ``_SEP`` if that is no word character, else its
    lower case when that is one character. (Character by character: a whole
    string's ``lower()`` would make a capital sigma at a word's end a final sigma
    in pure Python but not in the mypyc-compiled module, whose ``str.lower`` does
    not apply that rule.)"""
    t = ch.translate(_fold_ascii())
    if not _is_word(t):
        return _SEP
    low = t.lower()
    return low if len(low) == 1 else t


# a variant of a key for one field: (rank, length, lower, exact, pairs, run min,
# run max). rank = alternative << _RANK_BITS | preference; length _REGEX: the
# alternative's regex decides at that word start; lower: compare the text's folded
# slice with it (None: the key match suffices); exact: compare the raw slice (all
# case-sensitive); pairs: (offset, character) compared raw; run max -1: no word run
_Variant = tuple[
    int, int, "str | None", "str | None", "tuple[tuple[int, str], ...] | None", int, int
]
_RANK_BITS: Final = 12
# a candidate is one int: field << _FIELD_SHIFT | start << _KEY_BITS | key id
_KEY_BITS: Final = 24
_KEY_MASK: Final = (1 << _KEY_BITS) - 1
_FIELD_SHIFT: Final = 32 + _KEY_BITS  # texts up to 4 G characters
#: texts whose scan is kept (two generations of this many: a trial's texts are
#: read by many fields, one after another)
SCAN_CACHE: Final = 128


# an anchor's occurrence is a candidate too, below every field's (negative):
# _ANCHOR_BASE + (end << _KEY_BITS | anchor id)
_ANCHOR_BASE: Final = -(1 << 62)


def _fold_slice(text: str, start: int, n: int) -> str:
    """``_Scan.fold`` of ``text[start : start + n]``, folding only that slice (the fold
    maps character by character: folding a whole long non-ASCII text through the
    translation table cost ~0.5 ms per 10,000 characters, once per text)."""
    s = text[start : start + n]
    return s.lower() if s.isascii() else s.translate(_fold_ascii())


def _has_digit(text: str) -> bool:
    """Whether ``\\d`` matches in ``text`` (an ASCII text by ten substring searches,
    which are several times quicker than the regex's scan)."""
    if text.isascii():
        return any(d in text for d in "0123456789")
    return _HAS_DIGIT.search(text) is not None


class _Scan:
    """One text's pass over the index: the candidates of every field, as one sorted
    list of ints (field << _FIELD_SHIFT | start << _KEY_BITS | key id), preceded by
    the anchors' occurrences (negative, see :meth:`present`), and each field's hits
    once asked (``memo``, by field id). Few objects: they are kept for a while."""

    __slots__ = ("_present", "codes", "g", "memo", "padded", "text")

    def __init__(self, text: str, g: str, codes: list[int]) -> None:
        self.text = text
        self.g = g
        self.codes = codes
        self.memo: dict[int, list[Hit]] = {}
        self._present: int | None = None
        self.padded: str | None = None

    def present(self) -> int:
        """The anchors that occur in the text (a bit mask by anchor id)."""
        p = self._present
        if p is None:
            p = 0
            for c in self.codes:
                if c >= 0:
                    break
                p |= 1 << ((c - _ANCHOR_BASE) & _KEY_MASK)
            if _INDEX.digit_bit and _has_digit(self.text):
                p |= _INDEX.digit_bit
            if not self.text.isascii():
                p |= _INDEX.non_ascii_bits
            self._present = p
        return p

    def pad(self) -> str:
        """The text after one space (a cluster's match starts at the non-word
        character before a word start)."""
        p = self.padded
        if p is None:
            p = self.padded = " " + self.text
        return p


class _Automaton:
    """Aho–Corasick over ``words`` (``ahocorasick_rs``, its DFA: a few instructions
    per character; the index's keys are a few thousand), each word with its
    ``values``: the candidate codes a match of it adds, less its end."""

    __slots__ = ("_ac", "_values")

    def __init__(self, words: list[str], values: list[tuple[int, ...]]) -> None:
        self._ac = ahocorasick_rs.AhoCorasick(
            words,
            matchkind=ahocorasick_rs.MatchKind.Standard,
            implementation=ahocorasick_rs.Implementation.DFA,
        )
        self._values = values

    def codes(self, g: str) -> list[int]:
        """Every occurrence's values plus its last character's offset in ``g``
        (<< _KEY_BITS), sorted."""
        values = self._values
        # (declared: when mypyc compiles this module before ahocorasick_rs is
        # installed, as pip does in a new environment, the call's result is Any
        # and every addition and shift below a generic Python call)
        found: list[tuple[int, int, int]] = self._ac.find_matches_as_indexes(g, overlapping=True)
        out = [c + ((end - 1) << _KEY_BITS) for k, _start, end in found for c in values[k]]
        out.sort()
        return out

    def occurs(self, g: str) -> bool:
        """Whether a word occurs in ``g``."""
        found: list[tuple[int, int, int]] = self._ac.find_matches_as_indexes(g)
        return bool(found)


class _Index:
    """One Aho–Corasick automaton over the keys of every field:

    * the strings of finite alternatives and the beginnings of triggered ones,
      keyed so that only matches at a word start are reported: a text ``t`` is
      scanned as ``SEP + g(t) + SEP`` (:func:`_g`); a string ``s`` is the key
      ``SEP + g(s) + SEP``, or ``SEP + g(s)`` when more may follow (a word run, a
      beginning). Strings that share a key are told apart by comparing the text
      (punctuation, case-sensitive characters);
    * the required literals (anchors) of the alternatives that are searched,
      as ``g(literal)`` anywhere."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.key_len: list[int] = []
        self.variants: list[dict[int, list[_Variant]]] = []  # by key: by field
        self.anchor_of: list[int] = []  # by key: anchor id or -1
        self.anchors: dict[str, int] = {}
        self.anchor_len: list[int] = []  # by anchor id: its key's length
        self.anchor_key: list[str | None] = []  # by anchor id: its key (DIGIT: None)
        self.key_str: list[str] = []  # by key id: the key
        self.field_keys: dict[int, list[int]] = {}  # by field: its keys' ids
        # fields read only through their own automaton (see CompiledField): the
        # shared automaton leaves their keys out
        self.private: set[int] = set()
        self.automaton: Any = None
        self.digit_bit = 0  # the bit of DIGIT
        self.non_ascii_bits = 0  # anchors present in every text that is not ASCII
        self.n_fields = 0
        self.cache: dict[str, _Scan] = {}
        self.old: dict[str, _Scan] = {}
        # a field's own automaton (its keys and its clusters' anchors only), for texts
        # that field reads alone (see CompiledField.hits), and its recent passes
        self.own: dict[int, Any] = {}
        self.own_cache: dict[int, dict[str, _Scan]] = {}
        self.own_g: dict[str, str] = {}  # g of the texts read alone lately

    def _key(self, key: str) -> int:
        kid = self.keys.get(key)
        if kid is None:
            kid = self.keys[key] = len(self.key_len)
            self.key_str.append(key)
            self.key_len.append(len(key))
            self.variants.append({})
            self.anchor_of.append(-1)
            self.automaton = None
            self.own.clear()
        return kid

    def new_field(self) -> int:
        self.n_fields += 1
        return self.n_fields - 1

    def add_strings(self, fid: int, k: int, lits: tuple[Literal, ...], regex: bool) -> bool:
        """Register alternative ``k`` of field ``fid``: the strings it matches, or
        (``regex``) the beginnings at which its regex is tried. True when a key ends
        in two separators (a string ending in a non-word character)."""
        sep2 = False
        for pref, lit in enumerate(lits):
            low = lit.exact.lower()
            g = _g(low)  # (an ASCII string)
            key = _SEP + g + ("" if lit.run else _SEP)
            sep2 = sep2 or key.endswith(_SEP + _SEP)
            kid = self._key(key)
            variant: _Variant
            if regex:
                variant = (k << _RANK_BITS, _REGEX, None, None, None, 0, 0)
            else:
                exact = lit.exact if len(lit.cs) == len(lit.exact) else None
                lo, hi = lit.run or (0, _NO_RUN)
                variant = (
                    k << _RANK_BITS | pref,
                    len(low),
                    low if g != low and exact is None else None,
                    exact,
                    tuple((i, lit.exact[i]) for i in lit.cs) if lit.cs and not exact else None,
                    lo,
                    hi,
                )
            if fid not in self.variants[kid]:
                self.field_keys.setdefault(fid, []).append(kid)
            self.variants[kid].setdefault(fid, []).append(variant)
        self.automaton = None  # (its build sorts the variants)
        self._forget()
        return sep2

    def anchor_id(self, literal: str) -> int:
        """The id of a required literal (anchor); literals that differ only in their
        non-word characters share one. :data:`DIGIT` is no key: its bit is set when
        the text has a digit."""
        key = (
            literal if literal == DIGIT else "".join(ch if _is_word(ch) else _SEP for ch in literal)
        )
        aid = self.anchors.get(key)
        if aid is None:
            aid = self.anchors[key] = len(self.anchors)
            self.anchor_len.append(0 if key == DIGIT else len(key))
            self.anchor_key.append(None if key == DIGIT else key)
            if key == DIGIT:
                self.digit_bit = 1 << aid
            else:
                self.anchor_of[self._key(key)] = aid
                # the key may be a field's already: its value in the automaton
                # must now list the anchor too
                self.automaton = None
            self._forget()
        if literal in _DIGIT_EXTENDED and not self.non_ascii_bits & 1 << aid:
            self.non_ascii_bits |= 1 << aid
            self._forget()
        return aid

    def _forget(self) -> None:
        """Drop the kept passes and the fields' own automata (the keys changed)."""
        self.cache.clear()
        self.old.clear()
        self.own.clear()
        self.own_cache.clear()

    def _build(self, fid: int | None = None, anchor_mask: int = 0) -> Any:
        """The automaton of every field, or (``fid``) of one field: its keys and the
        anchors in ``anchor_mask`` (a text's pass over it lists what the shared
        automaton's lists for that field: the same codes, sorted the same)."""
        if fid is not None:
            return self._build_own(fid, anchor_mask)
        for by_field in self.variants:
            for f, vs in by_field.items():
                by_field[f] = sorted(set(vs))  # rank order, each once
        words: list[str] = []
        values: list[tuple[int, ...]] = []
        private = self.private
        for key, kid in self.keys.items():
            # a key ending at g[end] has its leading SEP at g[end - back], the offset in
            # the text where the match starts: its candidate for each field is the
            # value's member plus end << _KEY_BITS (and its anchor's occurrence too)
            back = (self.key_len[kid] - 1) << _KEY_BITS
            value = tuple(
                (f << _FIELD_SHIFT | kid) - back for f in self.variants[kid] if f not in private
            )
            if self.anchor_of[kid] >= 0:
                value = (_ANCHOR_BASE + self.anchor_of[kid], *value)
            if value:
                words.append(key)
                values.append(value)
        auto = self.automaton = _Automaton(words, values)
        return auto

    def _build_own(self, fid: int, anchor_mask: int) -> Any:
        """:meth:`_build` of one field: its keys and the keys of its anchors only
        (after the shared build, which sorts the variants)."""
        kids = set(self.field_keys.get(fid, ()))
        for aid, key in enumerate(self.anchor_key):
            if key is not None and anchor_mask >> aid & 1:
                kids.add(self.keys[key])
        words: list[str] = []
        values: list[tuple[int, ...]] = []
        for kid in sorted(kids):
            back = (self.key_len[kid] - 1) << _KEY_BITS
            value: tuple[int, ...] = (
                ((fid << _FIELD_SHIFT | kid) - back,) if fid in self.variants[kid] else ()
            )
            aid = self.anchor_of[kid]
            if aid >= 0 and anchor_mask >> aid & 1:
                value = (_ANCHOR_BASE + aid, *value)
            if value:
                words.append(self.key_str[kid])
                values.append(value)
        if not words:
            self.own[fid] = None  # (a field without keys: every pass is empty)
            return None
        auto = self.own[fid] = _Automaton(words, values)
        return auto

    def scan(self, text: str) -> _Scan:
        """The pass over ``text`` (kept for recent texts: one trial's texts are read by
        many fields)."""
        got = self.cache.get(text)
        if got is not None:
            return got
        got = self.old.get(text)
        if got is None:
            got = self._scan(text)
        if len(self.cache) >= SCAN_CACHE:
            self.old = self.cache
            self.cache = {}
        self.cache[text] = got
        return got

    def _scan(self, text: str) -> _Scan:
        auto = self.automaton
        g = _g(f" {text} ")  # (SEP + g(text) + SEP)
        if auto is None:
            if not self.keys:
                return _Scan(text, g, [])
            auto = self._build()
        return _Scan(text, g, auto.codes(g))

    def own_scan(self, fid: int, anchor_mask: int, text: str) -> _Scan:
        """The pass over ``text`` for field ``fid`` alone: the shared pass when it is
        at hand, else a pass over the field's own automaton (a long text that one
        field reads costs that field's matches, not every field's)."""
        if fid not in self.private:
            got = self.cache.get(text) or self.old.get(text)
            if got is not None:
                return got
        kept = self.own_cache.get(fid)
        if kept is None:
            kept = self.own_cache[fid] = {}
        got = kept.get(text)
        if got is not None:
            return got
        if self.automaton is None and self.keys:
            self._build()  # (sorts the variants)
        if fid in self.own:
            auto = self.own[fid]
        else:
            auto = self._build(fid, anchor_mask)
        g = self.own_g.get(text)  # (several fields may read a text alone)
        if g is None:
            if len(self.own_g) >= SCAN_CACHE:
                self.own_g.clear()
            g = self.own_g[text] = _g(f" {text} ")
        if auto is None:
            got = _Scan(text, g, [])
        else:
            got = _Scan(text, g, auto.codes(g))
        if len(kept) >= SCAN_CACHE:
            kept.clear()
        kept[text] = got
        return got


_INDEX = _Index()
_BIG: Final = 1 << 62


def _first(rx: re.Pattern[str], padded: str, starts: list[int], pos: int) -> re.Match[str] | None:
    """``rx.search(padded, pos)`` when ``rx`` can match only at ``starts`` (sorted):
    the first of them at or after ``pos`` where it matches."""
    for k in range(bisect_left(starts, pos), len(starts)):
        m = rx.match(padded, starts[k])
        if m is not None:
            return m
    return None


# ---------------------------------------------------------------------------
# a field


_GROUP_REF: Final = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")  # backreference, conditional group

_MAX_CACHED: Final = 8192  # candidate lists kept per field
#: a set of clusters is compiled as one pattern after this many texts needed it
UNION_AFTER = 5
_MAX_UNIONS: Final = 96  # such patterns per field (compiling costs milliseconds each)

# a compiled group of alternatives: (pattern, alternative index by group number)
_Cluster = tuple["re.Pattern[str]", list[int]]
# a match found through the index: (start, end, alternative); end == start: the
# alternative's first match there is empty (the word start is skipped)
_Found = tuple[int, int, int]


class CompiledField:
    """All patterns of one field, matched by the rule in the module doc.

    ``alternatives[i]`` are the pattern sources of ``entries[i]``. :meth:`hits`
    lists the matches, :meth:`search` says whether there is one; ``regex`` is the
    whole field as one plain alternation with word boundaries (patterns as
    written). ``infos`` holds the analysis of each alternative, in order, and
    ``modes`` how each is matched: ``"strings"`` (a finite set of strings, found
    by the index), ``"triggered"`` (its regex tried where the index finds one of
    its beginnings) or ``"searched"``.

    Searched alternatives with the same required literals are compiled together
    into one *cluster* pattern (each in a named group); a text runs the clusters
    whose literals occur in it and merges their matches with the index's."""

    def __init__(
        self, entries: Sequence[Entry], alternatives: Sequence[list[str]], shared: bool = True
    ) -> None:
        self.entries = list(entries)
        self.alternatives = [list(a) for a in alternatives]
        parts = [f"(?P<e{i}>{'|'.join(alts)})" for i, alts in enumerate(self.alternatives) if alts]
        self._regex_src = rf"(?<!\w)(?:{'|'.join(parts) if parts else '(?!)'})(?!\w)"
        infos: list[PatternInfo] = []
        modes: list[str] = []
        owner: list[Entry] = []
        groups: dict[frozenset[str] | None, list[int]] = {}
        self._fid = _INDEX.new_field()
        # not shared: a field read alone (see hits) is read only through its own
        # automaton, and the shared pass over every text lists none of its keys
        self._private = not shared
        if not shared:
            _INDEX.private.add(self._fid)
        sep2 = False  # a key ends in two separators (see may_hit)
        for entry, sources in zip(self.entries, self.alternatives, strict=True):
            for src in sources:
                k = len(infos)
                info = analyse(src)
                lits = expand(info.source)
                starts = None if lits is not None else beginnings(info.source)
                if lits is not None:
                    sep2 = _INDEX.add_strings(self._fid, k, lits, regex=False) or sep2
                    modes.append("strings")
                elif starts is not None and not _GROUP_REF.search(info.source):
                    sep2 = _INDEX.add_strings(self._fid, k, starts, regex=True) or sep2
                    modes.append("triggered")
                else:
                    groups.setdefault(info.anchors, []).append(k)
                    modes.append("searched")
                infos.append(info)
                owner.append(entry)
        self.infos = infos
        self.modes = modes
        self._owner = owner
        self._rx: dict[int, re.Pattern[str]] = {}  # triggered alternatives, compiled
        # the variants of several keys found at one word start, in rank order
        self._merged: dict[tuple[int, ...], list[_Variant]] = {}
        # the alternatives without literals join every cluster (one search per
        # cluster then covers them) and form a cluster of their own for texts
        # where no other cluster can match; one that refers to its own groups
        # (a backreference) is compiled alone, its group numbers unchanged
        plain = groups.pop(None, [])
        alone = [k for k in plain if _GROUP_REF.search(infos[k].source)]
        plain = [k for k in plain if k not in alone]
        self._clusters: list[_Cluster] = []
        self._members: list[tuple[int, ...]] = []  # the alternatives of each cluster
        # each cluster's (lead, anchor bits) when its matches start near its anchors'
        # occurrences (see _starts), else None
        self._leads: list[tuple[int, int] | None] = []
        always: list[int] = []
        by_anchor: dict[int, list[int]] = {}  # anchor bit: clusters
        for anchors, ks in sorted(groups.items(), key=lambda kv: kv[1][0]):
            for lit in anchors or ():
                bit = 1 << _INDEX.anchor_id(lit)
                by_anchor.setdefault(bit, []).append(len(self._clusters))
            self._add_cluster(sorted(ks + plain))
        for k in alone:
            always.append(self._add_cluster([k]))
        self._alone = tuple(always)
        if plain:
            always.append(self._add_cluster(plain))
        # a set of clusters seen often is compiled as one more cluster (one search
        # instead of several); bounded, so diverse texts cannot make it compile much
        self._seen: dict[tuple[int, ...], int] = {}
        self._unions: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._always = tuple(always)
        self._by_anchor = by_anchor
        self._anchor_mask = sum(by_anchor)
        self._by_present: dict[int, tuple[int, ...]] = {0: self._always}
        self._code_lo = self._fid << _FIELD_SHIFT  # this field's candidates
        self._code_hi = self._code_lo + (1 << _FIELD_SHIFT)
        self._sep2 = sep2

    def _add_cluster(self, ks: list[int]) -> int:
        self._clusters.append(self._cluster(ks))
        self._members.append(tuple(ks))
        self._leads.append(self._lead(ks))
        return len(self._clusters) - 1

    def _lead(self, ks: list[int]) -> tuple[int, int] | None:
        """(the longest lead, the anchors' bits) of alternatives ``ks`` when each has a
        lead (:attr:`PatternInfo.lead`: anchors the index finds where they occur);
        else None."""
        lead = mask = 0
        for k in ks:
            info = self.infos[k]
            if info.lead is None or not info.anchors:
                return None
            for lit in info.anchors:
                mask |= 1 << _INDEX.anchor_id(lit)
            lead = max(lead, info.lead)
        return lead, mask

    def _starts(self, ci: int, scan: _Scan) -> list[int] | None:
        """The word starts where cluster ``ci`` can match in the scanned text, in
        order, or None (it is searched): a match of each of its alternatives starts
        at most ``lead`` characters, none of them white space, before an occurrence
        of one of its anchors, which the scan lists (an anchor's key ends at g index
        ``end``: it starts in the text at ``end`` less its length)."""
        got = self._leads[ci]
        if got is None:
            return None
        lead, mask = got
        alen = _INDEX.anchor_len
        occ: list[int] = []
        for c in scan.codes:
            if c >= 0:
                break
            v = c - _ANCHOR_BASE
            aid = v & _KEY_MASK
            if mask >> aid & 1:
                occ.append((v >> _KEY_BITS) - alen[aid])
        if len(occ) > 1:
            occ.sort()
        text = scan.text
        out: list[int] = []
        prev = -1  # positions up to here were examined for an earlier occurrence
        for a in occ:
            lo = a - lead
            j = a
            while j > prev:
                if j == 0:
                    out.append(0)
                    break
                ch = text[j - 1]
                if ch.isspace():
                    out.append(j)
                    break
                if not (ch.isalnum() or ch == "_"):
                    out.append(j)  # a word start (if a non-space follows)
                if j <= lo:
                    break
                j -= 1
            if a > prev:
                prev = a
        out.sort()
        return out

    def _union(self, cis: tuple[int, ...]) -> tuple[int, ...]:
        """``cis``, or the clusters compiled for them once they are seen often: one
        for those with a lead (tried near their anchors, see _starts) and one for
        the others (searched), so that a cluster without a lead does not make the
        others searched too."""
        got = self._unions.get(cis)
        if got is not None:
            return got
        if len(self._unions) >= _MAX_UNIONS or set(cis) & set(self._alone):
            return cis
        n = self._seen[cis] = self._seen.get(cis, 0) + 1
        if n < UNION_AFTER:
            if len(self._seen) >= _MAX_CACHED:
                self._seen.clear()
            return cis
        out: list[int] = []
        for part in (
            [ci for ci in cis if self._leads[ci] is not None],
            [ci for ci in cis if self._leads[ci] is None],
        ):
            if len(part) > 1:
                out.append(self._add_cluster(sorted({k for ci in part for k in self._members[ci]})))
            elif part:
                out.append(part[0])
        got = self._unions[cis] = tuple(sorted(out))
        return got

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
        """Indexes of the searched alternatives that can match in ``text`` (their
        literals occur)."""
        return sorted({k for ci in self._for(_INDEX.scan(text)) for k in self._members[ci]})

    def _for(self, scan: _Scan) -> tuple[int, ...]:
        """The clusters that can match in the scanned text, in order."""
        present = scan.present() & self._anchor_mask
        if not present:
            return self._always
        got = self._by_present.get(present)
        if got is None:
            picked = set(self._alone)
            for bit, cis in self._by_anchor.items():
                if present & bit:
                    picked.update(cis)
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

    def _compile(self, k: int) -> re.Pattern[str]:
        """Triggered alternative ``k``, compiled to be matched at a word start."""
        rx = self._rx[k] = re.compile(rf"(?:{self.infos[k].source})(?!\w)", re.IGNORECASE)
        return rx

    def _found(self, scan: _Scan, i: int, n: int, alone: bool) -> list[_Found]:
        """The index's matches (candidates ``scan.codes[i:n]``): at each word start
        with candidates, the first alternative (and its preferred string) that
        matches there. ``alone``: no cluster runs on this text, so the matches are
        the hits: word starts inside the previous one are skipped, empty ones left
        out."""
        codes = scan.codes
        text, g = scan.text, scan.g
        variants = _INDEX.variants
        fid = self._fid
        code_lo = self._code_lo
        out: list[_Found] = []
        last = 0
        while i < n:
            p = (codes[i] - code_lo) >> _KEY_BITS
            j = i + 1
            nxt = code_lo + ((p + 1) << _KEY_BITS)  # the first code of a later start
            while j < n and codes[j] < nxt:  # several keys here
                j += 1
            if alone and p < last:  # inside the previous hit
                i = j
                continue
            # the first alternative (lowest rank) that matches here: the variants of
            # the keys found here, in rank order (merged once for several keys)
            if j == i + 1:
                vs = variants[codes[i] & _KEY_MASK][fid]
            else:
                kids = tuple([codes[t] & _KEY_MASK for t in range(i, j)])
                got = self._merged.get(kids)
                if got is None:
                    if len(self._merged) >= _MAX_CACHED:
                        self._merged.clear()
                    got = self._merged[kids] = sorted(
                        {v for kid in kids for v in variants[kid][fid]}
                    )
                vs = got
            best, best_end = _BIG, -1
            for rank, ln, low, exact, pairs, lo, hi in vs:
                if ln == _REGEX:
                    rx = self._rx.get(rank >> _RANK_BITS)
                    if rx is None:
                        rx = self._compile(rank >> _RANK_BITS)
                    m = rx.match(scan.pad(), p + 1)  # as in a cluster
                    if m is None:
                        continue
                    best, best_end = rank, m.end() - 1
                    break
                if low is not None and _fold_slice(text, p, len(low)) != low:
                    continue
                if exact is not None and not text.startswith(exact, p):
                    continue
                if pairs is not None and any(text[p + o] != c for o, c in pairs):
                    continue
                end = p + ln
                if hi >= 0:  # a word run follows: up to the next SEP
                    run = g.find(_SEP, end + 1) - 1 - end
                    if run < lo or run > hi:
                        continue
                    end += run
                best, best_end = rank, end
                break
            i = j
            if best_end > p or (best_end == p and not alone):
                out.append((p, best_end, best >> _RANK_BITS))
                if best_end > p:
                    last = best_end
        return out

    def hits(self, text: str, lower: str | None = None, *, alone: bool = False) -> list[Hit]:
        """The field's matches in ``text``, left to right (``lower`` is unused).

        ``alone``: a hint that few other fields read ``text`` (a condition, a MeSH
        term, a summary of a trial whose product texts name the product): unless the shared pass over it is at hand, the
        text is read with this field's own automaton (same hits; a pass costs the
        field's matches instead of every field's)."""
        if alone or self._private:
            scan = _INDEX.own_scan(self._fid, self._anchor_mask, text)
        else:
            scan = _INDEX.cache.get(text) or _INDEX.scan(text)
        got = scan.memo.get(self._fid)  # one trial's text is often asked twice
        if got is None:
            got = scan.memo[self._fid] = self._hits(scan)
        return got.copy()

    def search(self, text: str, lower: str | None = None, *, alone: bool = False) -> bool:
        """Whether the field has a hit in ``text`` (``alone``: as in :meth:`hits`)."""
        if alone or self._private:
            scan = _INDEX.own_scan(self._fid, self._anchor_mask, text)
        else:
            scan = _INDEX.cache.get(text) or _INDEX.scan(text)
        got = scan.memo.get(self._fid)
        if got is None:
            got = scan.memo[self._fid] = self._hits(scan)
        return bool(got)

    def may_hit(self, text: str, start: int, end: int) -> bool:
        """False when ``hits(text[start:end])`` is sure to be empty, judged from the
        scan of ``text``: no candidate of the field starts in the slice and no anchor
        of its clusters occurs in ``text``. For a slice that starts at the text's start
        or after a non-word character, and ends with a non-word character or before
        one or at the text's end (a sentence): the slice's pass over the index reads
        the same characters, so its keys occur in the text at the same offsets; but
        a key ending in two separators may end at the slice's end only (then True
        when a word character follows the slice). An ASCII text only (lower-casing
        is not character by character elsewhere)."""
        if self._always or not text.isascii():
            return True
        if self._sep2 and end < len(text) and _is_word(text[end]):
            return True
        scan = _INDEX.own_scan(self._fid, self._anchor_mask, text)
        if self._clusters and scan.present() & self._anchor_mask:
            return True
        codes = scan.codes
        i = bisect_left(codes, self._code_lo + (start << _KEY_BITS))
        return i < len(codes) and codes[i] < self._code_lo + (end << _KEY_BITS)

    def _merge_one(self, scan: _Scan, found: list[_Found], ci: int) -> list[Hit]:
        """:meth:`_hits` when one cluster runs: its matches merged with ``found``."""
        text, padded, owner = scan.text, scan.pad(), self._owner
        out: list[Hit] = []
        n_found = len(found)
        rx, alt_of = self._clusters[ci]
        starts = self._starts(ci, scan)
        m = rx.search(padded) if starts is None else _first(rx, padded, starts, 0)
        fi = 0
        while True:
            if m is None:
                if fi >= n_found:
                    return out
                s, e, k = found[fi]
            else:
                ms = m.start()
                mk = alt_of[m.lastindex or 0]
                if fi < n_found and (
                    found[fi][0] < ms or (found[fi][0] == ms and found[fi][2] < mk)
                ):
                    s, e, k = found[fi]
                else:
                    s, e, k = ms, m.end() - 1, mk
            if e == s:  # the first match here is empty: skip the position
                pos = s + 1
            else:
                out.append(new_hit(owner[k], s, e, text[s:e]))
                pos = e
            while fi < n_found and found[fi][0] < pos:
                fi += 1
            if m is not None and ms < pos:
                m = rx.search(padded, pos) if starts is None else _first(rx, padded, starts, pos)

    def _hits(self, scan: _Scan) -> list[Hit]:
        text = scan.text
        codes = scan.codes
        i = bisect_left(codes, self._code_lo)
        n = bisect_left(codes, self._code_hi, i)
        owner = self._owner
        if not self._clusters:
            if i == n:
                return []
            return [new_hit(owner[k], s, e, text[s:e]) for s, e, k in self._found(scan, i, n, True)]
        present = scan._present
        if present is None:
            present = scan.present()
        present &= self._anchor_mask
        cis = self._by_present.get(present) if present else self._always
        if cis is None or len(cis) > 1:
            cis = self._for(scan)  # (counts the sets of clusters seen, for a union)
        if not cis:
            if i == n:
                return []
            return [new_hit(owner[k], s, e, text[s:e]) for s, e, k in self._found(scan, i, n, True)]
        found = self._found(scan, i, n, False) if i < n else []
        if len(cis) == 1:
            return self._merge_one(scan, found, cis[0])
        out: list[Hit] = []
        padded = scan.pad()  # a match starts at the \W before the word start: its
        # offset in ``padded`` is the word start's offset in ``text``
        # keep each cluster's next match and the next one found through the index;
        # the leftmost wins, on a tie the earlier alternative; a win with an empty
        # match skips its word start; re-search the clusters it overtook
        n_found = len(found)
        clusters = [self._clusters[ci] for ci in cis]
        starts_of = [self._starts(ci, scan) for ci in cis]
        nxt = [
            rx.search(padded) if st is None else _first(rx, padded, st, 0)
            for (rx, _), st in zip(clusters, starts_of, strict=True)
        ]
        fi = 0
        while True:
            best = None
            best_s = best_k = _BIG
            for (_, alt_of), m in zip(clusters, nxt, strict=True):
                if m is None:
                    continue
                s = m.start()
                if s < best_s:
                    best, best_s, best_k = m, s, alt_of[m.lastindex or 0]
                elif s == best_s:
                    k = alt_of[m.lastindex or 0]
                    if k < best_k:
                        best, best_k = m, k
            if fi < n_found and (
                found[fi][0] < best_s or (found[fi][0] == best_s and found[fi][2] < best_k)
            ):
                s, e, k = found[fi]
            elif best is None:
                return out
            else:
                s, e, k = best_s, best.end() - 1, best_k
            if e == s:  # the first match here is empty: skip the position
                pos = s + 1
            else:
                out.append(new_hit(owner[k], s, e, text[s:e]))
                pos = e
            while fi < n_found and found[fi][0] < pos:
                fi += 1
            for i, m in enumerate(nxt):
                if m is not None and m.start() < pos:
                    st = starts_of[i]
                    rx = clusters[i][0]
                    nxt[i] = rx.search(padded, pos) if st is None else _first(rx, padded, st, pos)
