"""Searched alternatives tried only near their anchors (issues 10 and 15, speed).

A searched alternative such as ``[A-Za-z0-9.-]*CAR-?Ts?`` or ``[a-z]*lymphom\\w*``
has a *lead* (``PatternInfo.lead``): every match holds an occurrence of one of its
anchors preceded, within the match, by at most ``lead`` characters, none of them
white space. Its cluster is then not searched over the whole text: it is tried
(``match``) only at the word starts of the run of non-space characters before
each occurrence of an anchor, which the index's pass lists. The hits must be
exactly those of the field's plain alternation by the matching rule (the
reference of tests/test_engine_index.py) — checked here on generated patterns of
that shape and generated texts, beside the general path (the cluster searched)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celltrials.taxonomy import engine
from celltrials.taxonomy.engine import _NO_BOUND, CompiledField, Entry, analyse
from tests.test_engine_index import _triples, reference

_Triple = tuple[str, int, int, str]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("pattern", "lead"),
    [
        ("[a-z]{0,5}-?MSCs?", 6),  # 5 letters and a hyphen at most before "msc"
        ("[a-z]*lymphom\\w*", engine.MAX_REPEAT),  # (bounded repeats)
        ("(?-i:[A-Za-z0-9.-]*CAR-?Ts?)", engine.MAX_REPEAT),
        ("(?:sj[oö]gren\\w*)", 3),  # "gren": "sjö" before it
        ("Igκ", 0),
        ("stem cells?", 0),  # white space after the anchor does not matter
        ("(?:γδ|gamma[- ]?delta)[- ]?T", 0),
        ("x.car", None),  # "." may be a space
        ("[^x]car", None),  # a negated class may be a space
        ("x\\scar", None),
        ("(?:ab|c d)efgh", None),  # one branch holds a space before the anchor
        ("[\\w/-]+ cell receptor", engine.MAX_REPEAT),  # (the anchor " cell receptor")
        ("(?:[\\w/-]+ ){0,4}T[- ]cell receptor", None),
        ("Th\\d+/Th\\d+", None),  # th0 ... th9 stand for \d: no occurrence in "Th١"
        ("\\d+ ?cells/kg", None),  # DIGIT: no occurrence at all
        ("(?:[A-Za-z0-9]+-)*STAR", _NO_BOUND),  # (1,000 repeats of 1,001 characters)
    ],
)
def test_lead_of_constructs(pattern: str, lead: int | None) -> None:
    got = analyse(pattern).lead
    if lead == _NO_BOUND:
        assert got is not None and got > 10 * engine.MAX_REPEAT
    else:
        assert got == lead


@pytest.mark.unit
def test_a_cluster_with_a_lead_is_tried_at_word_starts_before_its_anchors() -> None:
    alts = [["(?-i:[A-Za-z0-9.-]*CAR-?Ts?)"], ["[a-z]*lymphom\\w*"]]
    fld = CompiledField([Entry(f"e{i}", {"x": (str(i),)}) for i in range(2)], alts)
    assert fld.modes == ["searched", "searched"]
    assert all(ld is not None for ld in fld._leads)
    text = "Anti-CD19 CAR-T cells (huCART19.x-CAR-T) in B-cell lymphoma; careful scar"
    scan = engine._INDEX.scan(text)
    car = fld._members.index((0,))
    starts = fld._starts(car, scan)
    assert starts is not None
    # word starts of "CAR-T" up to its "CAR" (not its "T": a match holds an anchor
    # at or after its start), of "(huCART19.x-CAR-T)" up to its last "CAR", of
    # "careful" and of "scar" (the index reads "car" anywhere, case-insensitively)
    tok = text.index("(huCART19")
    want = {
        text.index("CAR-T"),
        tok + 1,
        text.index("x-CAR"),
        text.index("CAR-T)"),
        text.index("careful"),
        text.index("scar"),
    }
    assert want <= set(starts)
    assert text.index("T cells") not in starts
    assert starts == sorted(set(starts))
    assert [(h.entry.name, h.start, h.end, h.text) for h in fld.hits(text)] == reference(fld, text)


# patterns of the shape that has a lead: a non-space lead, an anchor, a tail
_LEADS = [
    "",
    "[a-z]*",
    "[a-z]{0,3}-?",
    "(?:[A-Za-z0-9]+-)*",
    "[A-Za-z0-9.-]*",
    "(?:anti-?)?",
    "\\w{1,4}",
    "[a-z]+\\.",
    "(?:[a-z]+|x y )",  # (a space: no lead)
    "[\\w ]{0,3}",  # (no lead)
]
_ANCHORS = ["CAR", "car", "msc", "lymphom", "(?-i:CAR)", "cart"]
_TAILS = ["", "\\w*", "s?", "(?:[- ]?cells?)?", "-?Ts?", "(?![A-Z])", "-[\\w.-]+"]


@st.composite
def _patterns(draw: st.DrawFn) -> list[str]:
    n = draw(st.integers(1, 4))
    return [
        draw(st.sampled_from(_LEADS))
        + draw(st.sampled_from(_ANCHORS))
        + draw(st.sampled_from(_TAILS))
        for _ in range(n)
    ]


_WORDS = [
    "CAR",
    "car",
    "Car",
    "CAR-T",
    "CART",
    "anti-CD19-CAR-T",
    "huCART19",
    "x.CAR",
    "MSC",
    "hMSCs",
    "lymphoma",
    "B-cell",
    "scar",
    "careful",
    "cells",
    "T",
    "-",
    ".",
    "ſcar",  # (LONG S: matches "s" case-insensitively)
    "CAR١",  # (a non-ASCII digit)
]


@st.composite
def _texts(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 8))):
        parts.append(draw(st.sampled_from(_WORDS)))
        parts.append(draw(st.sampled_from([" ", "-", "", ", ", "(", ")", "\n", "\u00a0", "/"])))
    return "".join(parts)


@contextmanager
def _own_index() -> Iterator[None]:
    """Fields made here registered in a fresh index, dropped afterwards: a new
    field's keys make the next pass rebuild the one automaton, which holds the
    packaged taxonomy's ~8,000 keys once another test has loaded it (400 such
    rebuilds took 20 s in the suite). Keys shared with another field are covered
    here by the two fields of each example and in
    test_an_anchor_on_a_key_already_in_the_automaton_is_found."""
    saved = engine._INDEX
    engine._INDEX = engine._Index()
    try:
        yield
    finally:
        engine._INDEX = saved


@pytest.mark.unit
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns=_patterns(), texts=st.lists(_texts(), min_size=1, max_size=4))
def test_generated_patterns_with_leads_match_the_plain_regex(
    patterns: list[str], texts: list[str]
) -> None:
    entries = [Entry(f"e{i}", {"x": (str(i),)}) for i in range(len(patterns))]
    with _own_index():
        fld = CompiledField(entries, [[p] for p in patterns])
        general = CompiledField(entries, [[p] for p in patterns])
        general._leads = [None] * len(general._leads)  # every cluster searched
        for text in texts:
            got = [(h.entry.name, h.start, h.end, h.text) for h in fld.hits(text)]
            assert got == reference(fld, text), (patterns, text)
            assert got == [(h.entry.name, h.start, h.end, h.text) for h in general.hits(text)]


def test_an_anchor_on_a_key_already_in_the_automaton_is_found() -> None:
    # hypothesis found it (seed 23): field A's run key " car" (from car\w*) is in
    # the automaton built by a pass; field B's pattern has the anchor ".car", whose
    # key is the same string. B's matches start near that anchor's occurrences,
    # so the automaton must be rebuilt to list it, or B never matches there.
    a = CompiledField([Entry("a", {"x": ("a",)})], [[r"car\w*"]])
    assert _triples(a, "careful x.car") == reference(a, "careful x.car")  # builds the automaton
    b = CompiledField([Entry("b", {"x": ("b",)})], [[r"[a-z]+\.car"]])
    text = "MSC/careful x.CAR x.CAR"
    assert reference(b, text) == [("b", 12, 17, "x.CAR"), ("b", 18, 23, "x.CAR")]
    assert _triples(b, text) == reference(b, text)
