"""Two of the classifier's steps, done without their first tools, give the same answers.

* The background rule's clause window. ``classify._is_background(tax, text,
  start)`` reads the (at most) 80 characters before a mention, cut after the
  last clause break (``. ; : , [ ]``, a newline or ``|``), and says whether a
  background cue ("after", "prior", "previously treated with"…) occurs there
  (TAXONOMY.md "Which product counts"). It finds the last break with one
  ``rfind`` per break character; the rule as first written cut it with the
  regex ``.*[.;:,\\[\\]\\n|]`` (DOTALL) matched from the window's start. Both are
  compared at every word start of the texts of real registry records and of
  generated texts dense in breaks and cues; the reference also skips the
  literal gate, so the gate's soundness is checked in passing.
* Masking. ``classify._mask(text, exclusions)`` blanks the exclusion matches
  (platelet-rich plasma, lab counts, lymphoma…) out of a text, keeping its
  offsets, by slicing the text between them; as first written it made the
  text a list of characters and assigned blanks to the matches' spans. Both
  are compared on the same texts, read as a title and as a summary (alone).
"""

from __future__ import annotations

import re
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celltrials.classify import TrialText, _is_background, _mask
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file
from celltrials.taxonomy.loader import Taxonomy, default_taxonomy
from tests.conftest import CAR_JSON, GENERAL_JSON, ICTRP_CSV, MSC_CSV

pytestmark = pytest.mark.unit

_UP_TO_LAST_BREAK = re.compile(r".*[.;:,\[\]\n|]", re.S)
_WORD_START = re.compile(r"(?<!\w)\S")


def reference(tax: Taxonomy, text: str, start: int) -> bool:
    lo = max(0, start - 80)
    m = _UP_TO_LAST_BREAK.match(text, lo, start)
    window = text[lo if m is None else m.end() : start]
    if not window.strip():
        return False
    return tax.background_cue.search(window) is not None


@lru_cache(maxsize=1)
def _real_texts() -> list[str]:
    texts: list[str] = []
    for path in (MSC_CSV, CAR_JSON, GENERAL_JSON, ICTRP_CSV):
        for i, rec in enumerate(parse_file(path)):
            if i >= 300:
                break
            if isinstance(rec, ParsedRecord):
                texts.extend(s.text for s in TrialText.from_record(rec).segments)
    return texts


def test_window_of_every_word_start_in_real_texts() -> None:
    tax = default_taxonomy()
    n = background = 0
    for text in _real_texts():
        for m in _WORD_START.finditer(text):
            got = _is_background(tax, text, m.start())
            assert got is reference(tax, text, m.start()), (text, m.start())
            n += 1
            background += got
    # (enough cases of both answers for the comparison to mean something)
    assert n > 50_000
    assert background > 1_000


_PIECES = [
    "after",
    "prior",
    "previously treated with",
    "following",
    "post-",
    "underwent",
    "CAR-T",
    "autologous stem cell transplant",
    "cells",
    "and",
    "x" * 30,
    ".",
    ";",
    ":",
    ",",
    "[",
    "]",
    "\n",
    "|",
    "(",
    ")",
    " ",
    "  ",
    "\u00a0",
    "é",
]


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _joined(pieces: list[str], max_size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), min_size=1, max_size=max_size).map("".join)


@PROPS
@given(_joined(_PIECES, 40))
def test_window_of_every_position_in_generated_texts(text: str) -> None:
    tax = default_taxonomy()
    for start in range(len(text) + 1):
        assert _is_background(tax, text, start) is reference(tax, text, start), (text, start)


def reference_mask(text: str, alone: bool) -> str:
    out = None
    for h in default_taxonomy().exclusions.hits(text, alone=alone):
        if out is None:
            out = list(text)
        out[h.start : h.end] = " " * (h.end - h.start)
    return text if out is None else "".join(out)


@pytest.mark.parametrize("alone", [False, True])
def test_mask_of_real_texts(alone: bool) -> None:
    exclusions = default_taxonomy().exclusions
    masked = 0
    for text in _real_texts():
        got = _mask(text, exclusions, alone)
        assert got == reference_mask(text, alone), text
        assert len(got) == len(text)
        if got is not text:
            masked += 1
    assert masked > 100  # (texts with exclusion matches: the path under test)


_MASK_PIECES = [
    "platelet-rich plasma",
    "PRP",
    "lymphoma",
    "CD34+ cell count",
    "stem cells",
    "CAR-T",
    "bone marrow aspirate",
    " ",
    ", ",
    ".",
    "(",
    ")",
    "é",
]


@PROPS
@given(_joined(_MASK_PIECES, 30))
def test_mask_of_generated_texts(text: str) -> None:
    exclusions = default_taxonomy().exclusions
    for alone in (False, True):
        assert _mask(text, exclusions, alone) == reference_mask(text, alone), (text, alone)
