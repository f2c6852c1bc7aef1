"""The fast paths of the per-study parse give the general paths' answers.

* ``parse_date`` reads API v2's ``2020-06-17`` / ``2020-06`` without
  regexes and remembers dates; ``canonical_id`` reads ``NCT`` + 8 digits
  without the combined registry pattern; phase, status, study type and
  sponsor key are cached per spelling; ``finish_record`` resolves each
  distinct country value once: each compared with its general path (or the
  rule written out here) on real and generated values;

* ``clean_text`` decides "is there padding to collapse" with substring
  tests instead of a regex search: compared with the rule written out here
  (strip, then every run of padding → one space);
* ``repair_text`` skips ftfy and the Mac Roman round trip for text that has
  no C1 control, surrogate, ``Ã Â Œ œ`` or two non-ASCII characters in a
  row: ftfy itself (as configured) and the round trip are run on such text
  and must leave it unchanged, and the whole of ``repair_text`` is compared
  with its general path (the fast path switched off).

Texts are real registry values (../shared/data) and hypothesis-generated
text mixing arbitrary code points (controls, NBSP, bidi marks, lone
surrogates) with mojibake, entities and Excel escapes.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import ftfy
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celltrials import classify as classify_module
from celltrials import normalize, registry_ids
from celltrials.classify import TrialText, same_text_key
from celltrials.models import ParsedRecord, PartialDate, Place, RegistryId
from celltrials.normalize import (
    clean_text,
    finish_record,
    fold,
    normalize_country,
    normalize_phase,
    normalize_status,
    normalize_study_type,
    parse_date,
    phase_lookup,
    repair_text,
    resolve_places,
    sponsor_key,
    status_lookup,
    study_type_lookup,
)
from celltrials.registry_ids import canonical_id
from celltrials.sources import parse_file
from tests.conftest import AACT_DIR, CAR_JSON, GENERAL_JSON, ICTRP_CSV, ICTRP_XML, MSC_CSV

pytestmark = pytest.mark.unit

PROPS = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# fmt: off
FRAGMENTS = [
    "\t", "  ", "\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x00", "\x85", "\xa0",
    "\u2028", "\u3000", "\u200b", "\u200e", "\u200f", "\u202e", "\u2066", "\ufeff", "_x000D_",
    "_x00E9_", "<br>", "<BR />", "&amp;", "&#233;", "&#x2019;", "&nbsp;", "&bogus;", "Ã©",
    "Ã¼ber", "â€™", "â€œ", "H√¥pitaux", "Universit√§t", "√", "¬", "Œ", "œ", "ƒ", "≈", "Ã",
    "Â", "\x80", "\x9d", "ﬁ", "é", "e\u0301", "ü", "≥", "±", "µ", "–", "’", "中文", "😀",
    "ＮＣＴ", "٠٤٣", "В", "Ђ", "β€", "×²", "Ø", "à²", " ", "a", "Z", ".",
]
# fmt: on
_pieces = st.one_of(
    st.characters(exclude_categories=()),
    st.integers(0xD800, 0xDFFF).map(chr),  # lone surrogates
    st.integers(0x80, 0x24F).map(chr),
    st.integers(0x2000, 0x22FF).map(chr),
    st.sampled_from(FRAGMENTS),
)
hostile_text = st.lists(_pieces, max_size=40).map("".join)
#: text the fast path skips: single non-ASCII characters (none of Ã Â Œ œ, C1
#: controls or surrogates) between runs of ASCII, often from the blocks
#: mojibake is made of
_lone = st.one_of(
    st.characters(min_codepoint=0xA0, max_codepoint=0x24F, exclude_characters="ÃÂŒœ"),
    st.characters(min_codepoint=0x2000, max_codepoint=0x22FF),
    st.characters(min_codepoint=0xA0, exclude_categories=("Cs",), exclude_characters="ÃÂŒœ"),
)
skippable_text = st.lists(
    st.tuples(st.text(st.characters(max_codepoint=0x7F), min_size=1, max_size=4), _lone),
    max_size=30,
).map(lambda parts: "".join(a + b for a, b in parts))


def real_texts() -> list[str]:
    studies: list[Any] = orjson.loads(GENERAL_JSON.read_bytes())
    studies += [orjson.loads(p.read_bytes()) for p in sorted(AACT_DIR.glob("*.json"))]
    studies += orjson.loads(CAR_JSON.read_bytes())
    out: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(studies)
    return list(dict.fromkeys(out))


REAL = real_texts()


# ------------------------------------------------------------------ clean_text
def reference_clean(value: object) -> str:
    """Trim (str.strip: every Unicode space), then each run of padding
    (space, tab, CR, FF, VT) that is two long or holds a non-space → one space."""
    if value is None:
        return ""
    text = str(value).strip()
    return re.sub(r"[ \t\r\f\v]{2,}|[\t\r\f\v]", " ", text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ""),
        ("", ""),
        ("   ", ""),
        ("plain", "plain"),
        ("  two  spaces  ", "two spaces"),
        ("tab\there", "tab here"),
        ("cr\rhere", "cr here"),
        ("ff\fvt\vend", "ff vt end"),
        ("line\nbreak kept", "line\nbreak kept"),
        ("mixed \t\r run", "mixed run"),
        ("nbsp\xa0\xa0kept", "nbsp\xa0\xa0kept"),  # not padding: only trimmed at the ends
        ("\xa0edge\u3000", "edge"),
        ("ideographic\u3000\u3000kept", "ideographic\u3000\u3000kept"),
        ("bidi\u200f  mark", "bidi\u200f mark"),
        (12, "12"),
    ],
)
def test_clean_text_table(raw: object, expected: str) -> None:
    assert clean_text(raw) == expected == reference_clean(raw)


def test_clean_text_on_every_real_value() -> None:
    assert len(REAL) > 10_000
    assert [clean_text(t) for t in REAL] == [reference_clean(t) for t in REAL]


@PROPS
@given(hostile_text)
def test_clean_text_agrees_with_the_rule(text: str) -> None:
    assert clean_text(text) == reference_clean(text)


# ------------------------------------------------------------------ repair_text
def _general(text: str, single_line: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as m:
        m.setattr(normalize, "_SKIP_FTFY", False)
        return repair_text(text, single_line=single_line)


def test_fast_path_is_on_for_the_installed_ftfy() -> None:
    # the skip was derived from this ftfy's heuristic; a different one turns it off
    assert normalize._SKIP_FTFY is ftfy.__version__.startswith("6.")


@pytest.mark.parametrize(
    ("raw", "expected", "kinds"),
    [
        (
            "Assistance Publique - H√¥pitaux de Paris",
            "Assistance Publique - Hôpitaux de Paris",
            ("mojibake",),
        ),
        ("CafÃ© au lait", "Café au lait", ("mojibake",)),
        ("Universit√§t Z√ºrich", "Universität Zürich", ("mojibake",)),
        ("donâ€™t", "don’t", ("mojibake",)),
        ("Age ≥ 18 years, µg/kg ± 2", "Age ≥ 18 years, µg/kg ± 2", ()),
        ("Sjögren’s syndrome – Müller", "Sjögren’s syndrome – Müller", ()),
        ("Œdème", "Œdème", ()),  # ftfy is asked (Œ) and keeps it
        ("a_x000D_b", "a b", ("excel_escape",)),
        ("x &amp; y", "x & y", ("html",)),
    ],
)
def test_repair_text_table(
    raw: str, expected: str, kinds: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert repair_text(raw) == (expected if kinds else raw, kinds)
    assert repair_text(raw) == _general(raw, True, monkeypatch)


def test_repair_text_on_every_real_value(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [repair_text(t, single_line=len(t) < 200) for t in REAL]
    with monkeypatch.context() as m:
        m.setattr(normalize, "_SKIP_FTFY", False)
        general = [repair_text(t, single_line=len(t) < 200) for t in REAL]
    assert fast == general
    skipped = [t for t in REAL if not t.isascii() and normalize._MOJIBAKE_CHARS.search(t)]
    skipped = [t for t in skipped if not normalize._MAYBE_MOJIBAKE.search(t)]
    assert len(skipped) > 100  # the fast path is really taken on registry text


@PROPS
@given(st.one_of(hostile_text, skippable_text), st.booleans())
def test_repair_text_agrees_with_its_general_path(text: str, single_line: bool) -> None:
    with pytest.MonkeyPatch.context() as m:
        fast = repair_text(text, single_line=single_line)
        m.setattr(normalize, "_SKIP_FTFY", False)
        assert fast == repair_text(text, single_line=single_line)


@PROPS
@given(st.one_of(hostile_text, skippable_text))
def test_text_the_fast_path_skips_is_left_alone_by_ftfy(text: str) -> None:
    if normalize._MAYBE_MOJIBAKE.search(text):
        return
    assert ftfy.fix_text(text, normalize._ftfy_config()) == text
    assert normalize._MAC_ROMAN.sub(normalize._mac_roman_pair, text) == text


# ------------------------------------------------------------------ dates
def _outcome(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # the error (type and message) is part of the answer
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2020-06-17", PartialDate(date(2020, 6, 17), "day")),
        ("1999-12-31", PartialDate(date(1999, 12, 31), "day")),
        ("2020-06", PartialDate(date(2020, 6, 1), "month")),
        (
            "2020-02-30",
            ("DateError", "impossible date '2020-02-30': day is out of range for month"),
        ),
        ("2020-13", ("DateError", "impossible date '2020-13': month must be in 1..12")),
        ("0000-01-01", ("DateError", "impossible date '0000-01-01': year 0 is out of range")),
        ("2020-6-7", PartialDate(date(2020, 6, 7), "day")),  # not the fast path's shape
        (" 2020-06-17 ", PartialDate(date(2020, 6, 17), "day")),
        ("2020-06-17.", PartialDate(date(2020, 6, 17), "day")),
        ("٢٠٢٠-٠٦-١٧", PartialDate(date(2020, 6, 17), "day")),  # Arabic-Indic digits
        ("2020/06/17", PartialDate(date(2020, 6, 17), "day")),
        ("June 2020", PartialDate(date(2020, 6, 1), "month")),
    ],
)
def test_parse_date_table(raw: str, expected: Any) -> None:
    assert _outcome(lambda: parse_date(raw)) == expected
    assert _outcome(lambda: normalize._parse_date(raw)) == expected  # the general path


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from("0123456789"), min_size=n, max_size=n)


date_like = st.one_of(
    st.builds(lambda y, m, d: f"{y}-{m}-{d}", _digits(4), _digits(2), _digits(2)),
    st.builds(lambda y, m: f"{y}-{m}", _digits(4), _digits(2)),
    st.builds(
        lambda y, m, d, sep: f"{y}{sep}{m}{sep}{d}",
        _digits(4),
        _digits(2),
        _digits(2),
        st.sampled_from(["/", "-", "_", "–", " ", ""]),
    ),
    st.builds(lambda y, rest: y + rest, _digits(4), hostile_text),
    hostile_text,
)


@PROPS
@given(date_like)
def test_parse_date_agrees_with_its_general_path(raw: str) -> None:
    assert _outcome(lambda: parse_date(raw)) == _outcome(lambda: normalize._parse_date(raw))
    # asked again (cached): the same answer
    assert _outcome(lambda: parse_date(raw)) == _outcome(lambda: normalize._parse_date(raw))


# ------------------------------------------------------------------ NCT ids
def reference_canonical_id(raw: str, is_primary: bool) -> RegistryId | None:
    """canonical_id's general path: the combined registry pattern on folded text."""
    m = registry_ids._COMBINED.fullmatch(registry_ids.fold_id(raw.strip()))
    return registry_ids._make(m, is_primary) if m else None


nct_like = st.one_of(
    st.builds(
        lambda p, d, pad: pad + p + d + pad,
        st.sampled_from(["NCT", "nct", "Nct", "NcT", "NCT-", "NTC", "ＮＣＴ", "NCT "]),
        st.text(st.sampled_from("0123456789٣x"), min_size=6, max_size=10),
        st.sampled_from(["", " ", "\t", "\xa0"]),
    ),
    hostile_text,
)


@PROPS
@given(nct_like, st.booleans())
def test_canonical_id_agrees_with_its_general_path(raw: str, is_primary: bool) -> None:
    assert canonical_id(raw, is_primary=is_primary) == reference_canonical_id(raw, is_primary)


def test_canonical_id_of_every_real_nct_id() -> None:
    ids = [t for t in REAL if t[:3].upper() == "NCT"]
    assert len(ids) > 1000
    for raw in ids:
        assert canonical_id(raw, is_primary=True) == reference_canonical_id(raw, True)


# ------------------------------------------------------------------ cached vocabularies
@PROPS
@given(st.one_of(hostile_text, st.sampled_from(REAL[:5000])))
def test_cached_normalisers_agree_with_their_lookups(raw: str) -> None:
    for _ in range(2):  # the first call fills the cache, the second reads it
        assert normalize_status(raw) == (status_lookup(raw) or "UNKNOWN")
        assert normalize_phase(raw) == (phase_lookup(raw) or "UNKNOWN")
        assert normalize_study_type(raw) == (study_type_lookup(raw) or "unknown")
        assert sponsor_key(raw) == fold(raw)
        assert _outcome(lambda: finish_places([raw, raw])) == _outcome(
            lambda: reference_places([raw, raw])
        )


# ------------------------------------------------------------------ places of a record
def reference_places(values: list[str]) -> tuple[Any, ...]:
    """Every value resolved on its own, in order; countries and regions are
    the names of the places, first occurrence first."""
    places: list[tuple[str, Place]] = []
    for value in values:
        resolved = resolve_places(value)
        if resolved is None:
            places.append((value, Place("unmapped", normalize_country(value) or "")))
        else:
            places += [(value, p) for p in resolved]
    countries = [p.name for _, p in places if p.kind != "region" and p.name]
    regions = [p.name for _, p in places if p.kind == "region"]
    return places, list(dict.fromkeys(countries)), list(dict.fromkeys(regions))


def finish_places(values: list[str]) -> tuple[Any, ...]:
    rec = ParsedRecord("x", "x", "x", "x", raw={}, countries_raw=list(values))
    finish_record(rec)
    return rec.places, rec.countries, rec.regions


def test_places_of_shared_records() -> None:
    # ICTRP's country fields hold lists, regions and placeholders; API v2 one country per site
    n = 0
    for f in (ICTRP_CSV, ICTRP_XML, MSC_CSV, GENERAL_JSON, CAR_JSON):
        for item in parse_file(f):
            if isinstance(item, ParsedRecord):
                n += 1
                assert (item.places, item.countries, item.regions) == reference_places(
                    item.countries_raw
                ), item.record_id
    assert n > 3000


@PROPS
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "China",
                    "Japan,North America,Europe",
                    "Korea, Republic of",
                    "??",
                    "Asia",
                    "United States",
                    "france",
                    "Atlantis",
                    "",
                    " ",
                    "Europe",
                ]
            ),
            hostile_text,
        ),
        max_size=12,
    )
)
def test_places_agree_with_resolving_each_value(values: list[str]) -> None:
    assert _outcome(lambda: finish_places(values)) == _outcome(lambda: reference_places(values))


# -- TrialText.from_records: a text repeated across merged records is read once


_SPACES = st.sampled_from([" ", "\t", "\n", "\u00a0", "\u2003", "\x1c", "\u3000", "\u0085"])
_WORDISH = st.text(alphabet=st.sampled_from("aAbB\u0130\u03a3\u00df-1"), min_size=0, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_WORDISH, _SPACES), max_size=8),
    st.lists(st.one_of(_WORDISH, _SPACES), max_size=8),
)
def test_merged_titles_count_once_up_to_case_and_white_space(a: list[str], b: list[str]) -> None:
    ta, tb = "".join(a), "".join(b)
    recs = [
        ParsedRecord(channel="c", source_format="f", record_id=r, registry="x", raw={}, title=t)
        for r, t in (("A", ta), ("B", tb))
    ]
    titles = [s.text for s in TrialText.from_records(recs, "T").segments if s.role == "title"]
    # the rule, computed independently: case and runs of white space do not count
    key = [re.sub(r"\s+", " ", t.strip().lower()) for t in (ta, tb)]
    expected = [t for t, k in zip((ta, tb), key, strict=True) if k]
    if key[0] and key[0] == key[1]:
        expected = [ta]
    assert titles == expected


# -- same_text_key: the key that makes two texts one, without splitting ASCII text


def _key_rule(text: str) -> str:
    """The rule written with ``re`` alone: case and runs of white space do not count."""
    return re.sub(r"\s+", " ", text.strip().lower())


_ASCII_TEXT = st.text(st.characters(max_codepoint=0x7F), max_size=60)


def test_same_text_key_on_every_real_value() -> None:
    for text in REAL:
        assert same_text_key(text) == _key_rule(text), repr(text)


@PROPS
@given(st.one_of(_ASCII_TEXT, hostile_text, st.lists(st.sampled_from(FRAGMENTS)).map("".join)))
def test_same_text_key_agrees_with_the_rule(text: str) -> None:
    assert same_text_key(text) == _key_rule(text)


def test_same_text_key_of_short_texts_is_kept_and_stays_right() -> None:
    """Short texts' keys are kept (a dictionary, cleared when full): asked again, and
    after the dictionary has been cleared, a text still gets the rule's key; so do
    texts on either side of the length limit."""
    limit, most = classify_module._SHORT_KEY_LEN, classify_module._SHORT_KEYS_MAX
    texts = [
        "  Acute  Myeloid\tLeukemia ",
        "ACUTE MYELOID LEUKEMIA",
        "x" * (limit - 1) + " Y",
        "x" * limit,
        " " * (limit - 1) + "Ab",
        "Ab  " + "c" * limit,
        *[t for t in REAL if limit - 3 <= len(t) <= limit + 3][:50],
    ]
    first = [same_text_key(t) for t in texts]
    assert first == [_key_rule(t) for t in texts]
    assert [same_text_key(t) for t in texts] == first
    assert first[0] == first[1]
    # more distinct short texts than are kept: the dictionary is cleared and refilled
    for k in range(most + 10):
        assert same_text_key(f"Term {k}  ") == f"term {k}"
    assert len(classify_module._SHORT_KEYS) <= most
    assert [same_text_key(t) for t in texts] == first


def test_same_text_key_on_every_ascii_character() -> None:
    for o in range(128):
        c = chr(o)
        for text in (c, f"a{c}b", f"{c}{c}x  {c}", f"Ab{c}{c}{c}\t\n{c}C"):
            assert same_text_key(text) == _key_rule(text), repr(text)
