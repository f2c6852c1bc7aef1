"""engine.LiteralGate: a necessary condition for the background cues (checked
before the cue regex for each cell mention, issues 10 and 15, speed). It may let
a text through that the regex does not match, never the reverse: a text the
gate stops has no match of the taxonomy's ``background_cue`` — on the windows
before every mention in the shared registry exports and on generated texts."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celltrials.classify import _is_background
from celltrials.taxonomy.engine import LiteralGate
from celltrials.taxonomy.loader import default_taxonomy
from tests.test_engine_index import _shared_texts


@pytest.mark.unit
def test_gate_keys() -> None:
    gate = LiteralGate(
        ["prior", "previous(?:ly)?", "relaps\\w* after", "(?:in)?eligible for"], True
    )
    # a literal that starts a cue is read at a word start ("\x01" stands for any
    # non-word character and the text's start); one inside a cue anywhere
    assert gate.keys == ("\x01previous", "\x01prior", "\x01relaps", "eligible\x01for")
    assert gate.may_match("was PREVIOUSLY treated")
    assert gate.may_match("ineligible for")
    assert gate.may_match("prior")
    assert not gate.may_match("apriori unknown")  # "prior" not at a word start
    assert not gate.may_match("nothing to see")
    assert LiteralGate(["\\w+", "prior"]).keys is None  # no literal: all pass
    assert LiteralGate(["\\d+x?"]).keys is None  # a digit is no key
    assert LiteralGate([]).may_match("anything")  # (an empty alternation matches)


def _windows(text: str) -> list[str]:
    """The windows _is_background reads: up to 80 characters before each word."""
    return [text[max(0, m.start() - 80) : m.start()] for m in re.finditer(r"\b\w", text)]


@pytest.mark.timeout(600)
def test_gate_never_stops_a_cue_on_shared_texts() -> None:
    tax = default_taxonomy()
    gate, cue = tax.background_gate, tax.background_cue
    assert gate is not None and gate.keys
    stopped = matched = 0
    for text in _shared_texts()[::4]:
        for w in _windows(text):
            if cue.search(w) is not None:
                matched += 1
                assert gate.may_match(w), w
            elif not gate.may_match(w):
                stopped += 1
    assert matched > 1_000 and stopped > 10 * matched  # (the gate is worth having)


_VOCAB = [
    "prior",
    "Previously",
    "received",
    "have",
    "had",
    "who",
    "relapsed",
    "after",
    "ineligible",
    "for",
    "no",
    "non",
    "NOT",
    "ſuch",  # LONG S
    "İn",  # dotted capital I
    "KELVIN",  # with K (KELVIN SIGN)
    "the",
    "setting",
    "of",
    "CAR-T",
    "cells",
    "stem",
    "transplant",
    "post",
    "mobilization",
    "consolidation",
    "with",
    "apriori",
    "innovative",
]


@pytest.mark.unit
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=10),
    seps=st.lists(
        st.sampled_from([" ", "-", "", ", ", "(", "/", "\n", "\u00a0", "_"]), max_size=10
    ),
)
def test_gate_never_stops_a_cue_on_generated_texts(words: list[str], seps: list[str]) -> None:
    tax = default_taxonomy()
    text = "".join(w + (seps[i] if i < len(seps) else " ") for i, w in enumerate(words))
    text += "cells"
    if tax.background_cue.search(text[:-5]) is not None:
        assert tax.background_gate is not None and tax.background_gate.may_match(text[:-5])
    # and _is_background (with the gate) agrees with the regex alone
    start = len(text) - 5
    lo = max(0, start - 80)
    m = re.compile(r".*[.;:,\[\]\n|]", re.S).match(text, lo, start)
    window = text[lo if m is None else m.end() : start]
    plain = bool(window.strip()) and tax.background_cue.search(window) is not None
    assert _is_background(tax, text, start) == plain
