"""The pattern engine's index (issue 10 item 5, speed): finite alternatives matched
as strings by one Aho–Corasick pass, the others tried where their beginnings
occur or searched. Whatever path an alternative takes, a field's hits must be
exactly those of the field's plain alternation (``CompiledField.regex``, the
patterns as written) applied by the matching rule: at each word start at or
after the previous hit, the first alternative that matches there; an empty
first match skips the word start.

The reference below uses only ``CompiledField.regex`` and ``re``: it searches
the text (after one space, as the engine reads it: a lookbehind at the start of
a text sees a space) and keeps the matches that start at a word start."""

from __future__ import annotations

import re
import string
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celltrials.classify import TrialText
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file
from celltrials.taxonomy import engine
from celltrials.taxonomy.engine import CompiledField, Entry, expand
from celltrials.taxonomy.loader import default_taxonomy
from tests.conftest import DATA

_Triple = tuple[str, int, int, str]


def _fields(obj: object) -> list[CompiledField]:
    from dataclasses import fields, is_dataclass

    out: list[CompiledField] = []
    for f in fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        if isinstance(v, CompiledField):
            out.append(v)
        elif is_dataclass(v) and not isinstance(v, type):
            out.extend(_fields(v))
    return out


def reference(fld: CompiledField, text: str) -> list[_Triple]:
    """The matching rule with the field's plain alternation."""
    padded = " " + text
    rx = fld.regex
    out: list[_Triple] = []
    pos = 1
    while True:
        m = rx.search(padded, pos)
        if m is None:
            return out
        s = m.start()
        if s == len(padded):
            return out
        if padded[s].isspace():  # not a word start
            pos = s + 1
            continue
        if m.end() == s:  # an empty first match skips the word start
            pos = s + 1
            continue
        entry = fld.entries[int((m.lastgroup or "e0")[1:])]
        out.append((entry.name, s - 1, m.end() - 1, m.group()))
        pos = m.end()


def _triples(fld: CompiledField, text: str) -> list[_Triple]:
    return [(h.entry.name, h.start, h.end, h.text) for h in fld.hits(text)]


@lru_cache(maxsize=1)
def _shared_texts() -> list[str]:
    """Every distinct text segment of every registry export in ../shared/data."""
    texts: set[str] = set()
    for path in sorted(Path(DATA).rglob("*")):
        if not path.is_file() or path.suffix.lower() in (".md", ".txt"):
            continue
        try:
            items = list(parse_file(path))
        except Exception:
            continue
        for rec in items:
            if isinstance(rec, ParsedRecord):
                texts.update(s.text for s in TrialText.from_record(rec).segments)
    return sorted(texts)


@pytest.mark.timeout(1200)  # ~80 CPU-seconds: every field's regex over 30,000 texts
def test_every_field_equals_its_plain_regex_on_every_shared_text() -> None:
    tax = default_taxonomy()
    fields = _fields(tax)
    texts = _shared_texts()
    assert len(texts) > 20_000 and len(fields) > 20
    modes = {m for f in fields for m in f.modes}
    assert modes == {"strings", "triggered", "searched"}
    n_hits = 0
    # text by text, as classify reads a text with many fields (the engine keeps the
    # shared pass over the text for the next field: that path is the one tested)
    for text in texts:
        for fld in fields:
            want = reference(fld, text)
            assert _triples(fld, text) == want, (fld.entries[0].name, text)
            assert fld.search(text) == bool(want)
            n_hits += len(want)
    assert n_hits > 50_000


# ---------------------------------------------------------------------------
# generated texts: synonyms of the packaged taxonomy, mangled


@lru_cache(maxsize=1)
def _vocabulary() -> list[str]:
    words: list[str] = []
    for fld in _fields(default_taxonomy()):
        for info in fld.infos:
            lits = expand(info.source)
            if lits:
                words.extend(lit.exact for lit in lits[:3])
    return sorted(set(words))


_LOOK_ALIKES = {
    "s": "\u017f",  # LONG S
    "k": "\u212a",  # KELVIN SIGN
    "i": "\u0130",  # DOTTED CAPITAL I
    "a": "\u00e4",
    "-": "\u2013",
    " ": "\u00a0",
    "e": "\u00e9",
}


@st.composite
def _mangled(draw: st.DrawFn) -> str:
    vocab = _vocabulary()
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 6))):
        word = draw(st.sampled_from(vocab))
        how = draw(st.sampled_from(["as is", "upper", "title", "swapcase", "look-alike", "suffix"]))
        if how == "upper":
            word = word.upper()
        elif how == "title":
            word = word.title()
        elif how == "swapcase":
            word = word.swapcase()
        elif how == "look-alike":
            i = draw(st.integers(0, max(0, len(word) - 1)))
            word = (
                word[:i]
                + _LOOK_ALIKES.get(word[i : i + 1].lower(), word[i : i + 1])
                + word[i + 1 :]
            )
        elif how == "suffix":
            word += draw(st.sampled_from(["s", "-19", "_x", "ed", "1", "é", ".", "-", "T"]))
        parts.append(word)
        parts.append(
            draw(
                st.sampled_from([" ", ", ", "-", "/", "(", ") ", "; ", "\n", "", "\u00a0", " and "])
            )
        )
    return "".join(parts)


@pytest.mark.unit
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_mangled())
def test_generated_texts_match_the_plain_regex(text: str) -> None:
    for fld in _fields(default_taxonomy()):
        assert _triples(fld, text) == reference(fld, text), (fld.entries[0].name, text)


# ---------------------------------------------------------------------------
# the pieces


@pytest.mark.unit
def test_expansion_lists_strings_in_the_regex_engines_order() -> None:
    def strings(p: str) -> list[tuple[str, tuple[int, int] | None]]:
        lits = expand(p)
        assert lits is not None, p
        return [(lit.exact, lit.run) for lit in lits]

    assert strings("(?:urinary tract infections?)") == [
        ("urinary tract infections", None),
        ("urinary tract infection", None),
    ]
    assert strings("(?:a|ab)(?:c|bc)") == [("ac", None), ("abc", None), ("abbc", None)]
    assert strings("(?:x{0,2}?y)") == [("y", None), ("xy", None), ("xxy", None)]
    assert strings("(?:nutrition\\w*|diet)") == [("nutrition", (0, 1000)), ("diet", None)]
    assert strings("(?:XSTEM(?:-\\w+)?)") == [("xstem-", (1, 1000)), ("xstem", None)]
    assert strings("(?:CD-?10(?![0-9]))") == [("cd-10", None), ("cd10", None)]
    cs = expand("(?:(?-i:CAR)[- ]T)")
    assert cs is not None and [(lit.exact, lit.cs) for lit in cs] == [
        ("CAR t", (0, 1, 2)),
        ("CAR-t", (0, 1, 2)),
    ]
    # not finite, or not followed: stays a regex
    for p in ("(?:\\d+ cells)", "(?:γδ T)", "(?:a.c)", "(?:[^x]y)", "(?:a(?=b))", "(?:(a)\\1)"):
        assert expand(p) is None, p


@pytest.mark.unit
def test_each_path_agrees_with_the_plain_regex_on_constructs() -> None:
    alts = [
        ["(?:(?-i:CAR)[- ]?(?-i:T)(?:[- ]cells?)?)", "(?:i\\.v\\.)", "(?:T\\w*)"],
        ["(?:CD-?10(?![0-9]))", "(?:\\d+ ?x ?10\\^\\d+)", "(?:XSTEM(?:-\\w{1,3})?)"],
        ["(?:(?<=/)20)", "(?:(?<=\\s)NK)", "(?:γδ ?T)", "(?:[a-z]*leuk\\w*)"],
        ["(?:a(?=b)|ab?)", "(?:(?:circulating|B)[- ]cells?(?:[- ]\\w+)?)", "(?:(?!x)\\w?)"],
    ]
    entries = [Entry(f"e{i}", {"x": (str(i),)}) for i in range(len(alts))]
    fld = CompiledField(entries, alts)
    assert set(fld.modes) == {"strings", "triggered", "searched"}
    texts = [
        "CAR-T cells, CAR T, car t, CART19, T-cell, i.v. and i.v.x, I.V.",
        "CD10 CD-10 CD101 3 x 10^6, XSTEM-abc XSTEM-abcd XSTEM- XSTEM",
        "/20 20 a/20 x 20, NK cells\u00a0NK, γδT ΓΔ T, preleukemia LEUKEMIA",
        "ab a abb, circulating cells-x B-cell b cells, ſtem \u212aRAS \u0130PSC x",
        "NK at the start",
    ]
    for text in texts:
        assert _triples(fld, text) == reference(fld, text), text


@pytest.mark.unit
def test_fold_matches_as_the_regex_engine_ignores_case() -> None:
    # the index compares folded text with lower-case ASCII strings: a character
    # must fold to an ASCII character exactly when the regex engine matches it with
    # that character case-insensitively
    everything = "".join(map(chr, range(0x110000)))
    everything = everything[:0xD800] + everything[0xE000:]
    table = engine._fold_ascii()
    folded = everything.translate(table)
    assert len(folded) == len(everything)
    folds_to: dict[str, set[str]] = {}
    for c, f in zip(everything, folded, strict=True):
        if f.isascii():
            folds_to.setdefault(f, set()).add(c)
    for a in string.ascii_lowercase + string.digits + string.punctuation + " ":
        want = set(re.findall(re.escape(a), everything, re.IGNORECASE))
        assert folds_to.get(a, set()) == want, a


@pytest.mark.unit
def test_the_scan_cache_does_not_decide_results() -> None:
    tax = default_taxonomy()
    text = "Autologous CD19 CAR-T cells in relapsed B-ALL"
    first = [_triples(f, text) for f in _fields(tax)]
    engine._INDEX.cache.clear()  # (each field's hits are kept with the scan)
    engine._INDEX.old.clear()
    assert [_triples(f, text) for f in _fields(tax)] == first


@pytest.mark.unit
def test_a_literal_before_a_class_is_extended_by_its_members() -> None:
    # "Th\d+" needs "th" and a digit: th0 ... th9 prune far more than "th"; a text
    # that is not ASCII may hold another decimal digit there (\d is Unicode-aware)
    from celltrials.taxonomy.engine import DIGIT, analyse

    assert analyse("Th\\d+").anchors == frozenset(f"th{d}" for d in range(10))
    assert analyse("Th\\d+(?:/Th\\d+)+").anchors == frozenset(f"/th{d}" for d in range(10))
    assert analyse("FR[αa]").anchors == frozenset({"frα", "fra"})
    assert analyse("\\d+ ?(?:x|×)").anchors == frozenset({DIGIT})
    assert analyse("cells?").anchors == frozenset({"cell"})  # optional: nothing to add
    assert analyse("CD[0-9]?x").anchors == frozenset({"cd"})
    alts = [["(?:Th\\d+(?:/Th\\d+)+)"], ["(?:FR[αa])"], ["(?:\\d+ ?(?:x|×))"]]
    fld = CompiledField([Entry(f"e{i}", {"x": (str(i),)}) for i in range(3)], alts)
    assert fld.modes == ["searched"] * 3
    texts = [
        "Th1/Th17 and Th2/Th22 cells",
        "Th\u0661/Th\u0667 cells",  # ARABIC-INDIC DIGIT ONE, SEVEN
        "FRα FRa FR\u0391 FRb fra",
        "5x \u0665× x10x 10 x",
        "no digits, no Th/Th here",
    ]
    for text in texts:
        assert _triples(fld, text) == reference(fld, text), text
    assert len(reference(fld, texts[1])) == 1 and len(reference(fld, texts[3])) == 3


@pytest.mark.unit
def test_may_hit_is_false_only_for_sentences_without_a_hit() -> None:
    # classify reads origin words sentence by sentence; may_hit lets it skip the
    # sentences where the text's own scan shows that no key of the field starts
    from celltrials.classify import _SENTENCE

    tax = default_taxonomy()
    texts = [t for t in _shared_texts() if "." in t and t.isascii()][:1500]
    texts += [
        "Autologous or allo. Cells auto.5 and allo.x; Auto.",
        "e.g. autologous cells. i.e. allo-HSCT! auto-",
        "An autologous.allogeneic mix.of cells.",
    ]
    skipped = 0
    for fld in _fields(tax):
        for text in texts:
            for sm in _SENTENCE.finditer(text):
                if not fld.may_hit(text, sm.start(), sm.end()):
                    skipped += 1
                    assert fld.hits(sm.group()) == [], (fld.entries[0].name, sm.group())
    assert skipped > 10_000


def _g_by_definition(text: str) -> str:
    """What :func:`engine._g` is, read off its docstring with ``re`` alone: each
    character's ASCII look-alike letter if it has one, the separator for a
    non-word character, else its lower case when that is one character."""
    out = []
    for c in text.translate(engine._fold_ascii()):
        low = c.lower()
        if re.fullmatch(r"\w", c) is None:
            out.append(engine._SEP)
        else:
            out.append(low if len(low) == 1 else c)
    return "".join(out)


@pytest.mark.unit
def test_the_index_reads_every_character_as_its_definition_says() -> None:
    # every code point, in runs of 500, alone and between ASCII words, '?' (what
    # a non-ASCII character becomes in the quick reading of a text that is not
    # ASCII) and capital sigmas (a whole string's lower() makes one at a word's
    # end a final sigma; the index reads each character alone)
    chars = [chr(c) for c in range(0x110000)]
    for i in range(0, len(chars), 500):
        run = "".join(chars[i : i + 500])
        text = f"Ab? {run} ?x9 ΣΟΦΙΑΣ"
        assert engine._g(text) == _g_by_definition(text), i


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("aZ9_ -?.,\n") + list("éÉſKİıΣσςγδ×±，ßﬁ½²٣Ⅰǅ\u212a\u00a0"))
        | st.characters(),
        max_size=40,
    )
)
def test_the_index_reads_generated_texts_as_its_definition_says(text: str) -> None:
    assert engine._g(text) == _g_by_definition(text)
    assert engine._has_digit(text) == (re.search(r"\d", text) is not None)


@pytest.mark.unit
def test_a_digit_is_found_as_the_regex_engine_finds_one() -> None:
    for c in map(chr, range(0x110000)):
        text = f"ab {c}"
        assert engine._has_digit(text) == (re.search(r"\d", text) is not None), hex(ord(c))
