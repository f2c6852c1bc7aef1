"""A field's own automaton (``CompiledField.hits(text, alone=True)``): a text that
one field reads alone (a condition, a MeSH term, a summary's first 600
characters, a summary sentence read for origin words) is read with that field's
keys and anchors only, unless the shared pass over it is at hand. The fast path
must give exactly the hits of the shared pass — and both those of the field's
plain alternation (``CompiledField.regex`` by the matching rule, the reference of
tests/test_engine_index.py) — on real and on generated texts; ``may_hit`` reads
the same own pass."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celltrials.taxonomy import engine
from celltrials.taxonomy.engine import CompiledField, Entry
from celltrials.taxonomy.loader import build_taxonomy, default_taxonomy
from tests.test_engine_index import _fields, _mangled, _shared_texts, reference

_Triple = tuple[str, int, int, str]


def _forget() -> None:
    """No kept pass: the next read of a text makes one (shared or own)."""
    engine._INDEX.cache.clear()
    engine._INDEX.old.clear()
    engine._INDEX.own_cache.clear()


def _alone(fld: CompiledField, text: str) -> list[_Triple]:
    _forget()  # (else the shared pass kept from another read would answer)
    got = [(h.entry.name, h.start, h.end, h.text) for h in fld.hits(text, alone=True)]
    assert fld.search(text, alone=True) == bool(got)
    return got


def _shared(fld: CompiledField, text: str) -> list[_Triple]:
    _forget()
    return [(h.entry.name, h.start, h.end, h.text) for h in fld.hits(text)]


@pytest.mark.unit
def test_own_pass_lists_what_the_shared_pass_lists_for_the_field() -> None:
    # the same candidates in the same order, and the anchors of the field's clusters
    tax = default_taxonomy()
    text = (
        "Anti-CD19 CAR-T cells (tisagenlecleucel) after lymphodepletion in relapsed "
        "B-cell acute lymphoblastic leukaemia and Th1/Th17 counts; 2 x 10^6 cells/kg"
    )
    for fld in _fields(tax):
        _forget()
        own = engine._INDEX.own_scan(fld._fid, fld._anchor_mask, text)
        _forget()
        shared = engine._INDEX.scan(text)
        lo, hi = fld._code_lo, fld._code_hi
        mine = [c for c in shared.codes if lo <= c < hi]
        if fld._private:  # (not shared: the shared pass lists none of its keys)
            assert mine == []
        else:
            assert [c for c in own.codes if lo <= c < hi] == mine
        assert own.present() & fld._anchor_mask == shared.present() & fld._anchor_mask
        assert all(c < 0 or lo <= c < hi for c in own.codes)  # nothing of other fields
    # the fields classify reads on their own texts mostly are not shared
    assert tax.indications._private and tax.indications_unlimited._private
    assert not tax.cell_type._private and not tax.indications_priority._private
    own = engine._INDEX.own_scan(tax.indications._fid, tax.indications._anchor_mask, text)
    assert any(tax.indications._code_lo <= c < tax.indications._code_hi for c in own.codes)


@pytest.mark.unit
def test_a_field_that_is_not_shared_reads_its_own_pass() -> None:
    # even when the shared pass over the text is at hand
    tax = default_taxonomy()
    text = "Relapsed acute lymphoblastic leukaemia and multiple myeloma after CAR-T"
    _forget()
    engine._INDEX.scan(text)  # (the shared pass, kept)
    got = [(h.entry.name, h.start, h.end, h.text) for h in tax.indications.hits(text)]
    assert got == reference(tax.indications, text)
    assert got  # (the text names indications)
    assert tax.indications.search(text)


@pytest.mark.unit
def test_a_kept_shared_pass_answers_an_alone_read() -> None:
    tax = default_taxonomy()
    text = "Umbilical cord MSC in knee osteoarthritis"
    _forget()
    shared = engine._INDEX.scan(text)
    assert engine._INDEX.own_scan(tax.origin._fid, tax.origin._anchor_mask, text) is shared


@pytest.mark.timeout(1200)
def test_alone_equals_shared_and_the_plain_regex_on_every_shared_text() -> None:
    # the fields classify reads alone, on every distinct text of ../shared/data
    tax = default_taxonomy()
    flds = [
        tax.indications,
        tax.indications_unlimited,
        tax.indications_priority,
        tax.origin,
        tax.cell_type,  # (clusters with anchors: leading class repeats, γδ)
        tax.doses,  # (the DIGIT anchor)
    ]
    texts = _shared_texts()
    assert len(texts) > 20_000
    # (the shared pass equals the plain regex on every one of these texts:
    # test_engine_index.test_every_field_equals_its_plain_regex_on_every_shared_text;
    # so the alone pass equals it too, without this test running the regex again)
    for text in texts:
        for fld in flds:
            got = _alone(fld, text)
            assert got == _shared(fld, text), (fld.entries[0].name, text)


@pytest.mark.unit
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_mangled())
def test_generated_texts_alone_equal_the_plain_regex(text: str) -> None:
    for fld in _fields(default_taxonomy()):
        assert _alone(fld, text) == reference(fld, text), (fld.entries[0].name, text)


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(
        st.sampled_from(
            ["autologous", "allogeneic", "MSC", "cells", "donor", "the", "patient's", "own"]
        ),
        max_size=12,
    ),
    seps=st.lists(st.sampled_from([" ", ". ", ", ", "; ", "\n", "-"]), max_size=12),
)
def test_may_hit_on_the_own_pass_never_misses_a_sentence_hit(
    words: list[str], seps: list[str]
) -> None:
    origin = default_taxonomy().origin
    text = "".join(w + (seps[i] if i < len(seps) else " ") for i, w in enumerate(words))
    for sm in re.finditer(r"[^.!?\n]+(?:[.!?]+|$)", text):
        _forget()
        if not origin.may_hit(text, sm.start(), sm.end()):
            assert origin.hits(sm.group()) == []


@pytest.mark.unit
def test_a_field_without_keys_reads_alone_as_empty() -> None:
    fld = CompiledField([Entry("x", {"x": ("x",)})], [[]])
    assert fld.hits("anything at all", alone=True) == []
    assert not fld.search("anything at all", alone=True)


@pytest.mark.unit
def test_each_field_of_the_taxonomy_is_compiled_once() -> None:
    # every compiled field joins the shared index and every text's pass lists its
    # candidates: the loader must not compile a field it then replaces (products
    # were compiled twice, without and with the code names)
    tax = default_taxonomy()
    before = engine._INDEX.n_fields
    again = build_taxonomy(tax.raw, tax.path)
    assert engine._INDEX.n_fields - before == len(_fields(again))
    assert len(again.products.entries) == len(tax.products.entries)
