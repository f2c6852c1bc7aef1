"""Properties that must hold for every input, checked with hypothesis:
registry-id canonicalisation, the union-find merge of records into trials,
and the normalisers' closed vocabularies."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celltrials.dedup import group_records
from celltrials.normalize import PHASES, STATUSES, normalize_phase, normalize_status
from celltrials.registry_ids import canonical_id, find_ids, trial_id_for

pytestmark = pytest.mark.unit

FULLWIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}
ARABIC_INDIC = {str(d): chr(0x0660 + d) for d in range(10)}
DEVANAGARI = {str(d): chr(0x0966 + d) for d in range(10)}

eight_digits = st.text("0123456789", min_size=8, max_size=8)


@given(eight_digits, st.sampled_from([{}, FULLWIDTH, ARABIC_INDIC, DEVANAGARI]), st.booleans())
def test_nct_ids_in_any_digits_and_case_have_one_key(
    digits: str, script: dict[str, str], lower: bool
) -> None:
    raw = ("nct" if lower else "NCT") + "".join(script.get(d, d) for d in digits)
    rid = canonical_id(raw)
    assert rid is not None and rid.registry == "ctgov" and rid.key == f"NCT{digits}"


@given(
    st.text("0123456789", min_size=4, max_size=4),
    st.text("0123456789", min_size=6, max_size=6),
    st.text("0123456789", min_size=2, max_size=2),
    st.sampled_from(["", "-FR", "-DE", "-3RD"]),
    st.sampled_from(["EUCTR", "", "EudraCT "]),
)
def test_eudract_numbers_share_a_key_across_member_states(
    year: str, serial: str, check: str, state: str, prefix: str
) -> None:
    rid = canonical_id(f"{prefix}{year}-{serial}-{check}{state}")
    assert rid is not None and rid.key == f"EU:{year}-{serial}-{check}"


@given(
    eight_digits,
    st.text(st.sampled_from(" ,;:/()[]\n\tabcXYZ"), max_size=20),
    st.text(st.sampled_from(" ,;:/()[]\n\tabcXYZ"), max_size=20),
)
def test_an_id_is_found_in_surrounding_text(digits: str, before: str, after: str) -> None:
    # a letter or digit touching the id would make it another token; separators do not
    text = f"{before} NCT{digits} {after}"
    assert f"NCT{digits}" in [r.key for r in find_ids(text)]


@given(eight_digits, eight_digits)
def test_trial_ids_drop_the_member_state_only(serial: str, other: str) -> None:
    eu = f"EUCTR{serial[:4]}-{serial[2:8]}-{serial[6:8]}"
    for state in ("FR", "DE", "3RD"):
        assert trial_id_for(f"{eu}-{state}") == eu
    assert trial_id_for(f"NCT{other}") == f"NCT{other}"


@given(st.text(max_size=40))
def test_canonical_id_is_a_fixed_point(raw: str) -> None:
    rid = canonical_id(raw)
    if rid is not None:
        again = canonical_id(rid.raw)
        assert again is not None and again.key == rid.key


# ------------------------------------------------------------------ merging
def _components(keys: list[str], links: list[tuple[str, str]]) -> list[set[str]]:
    """Connected components of records linked through shared ids, by breadth-first search."""
    by_id: dict[str, set[str]] = defaultdict(set)
    ids_of: dict[str, set[str]] = defaultdict(set)
    for k, i in links:
        by_id[i].add(k)
        ids_of[k].add(i)
    seen: set[str] = set()
    out = []
    for start in keys:
        if start in seen:
            continue
        comp, todo = set(), [start]
        while todo:
            k = todo.pop()
            if k in comp:
                continue
            comp.add(k)
            for i in ids_of[k]:
                todo.extend(by_id[i] - comp)
        seen |= comp
        out.append(comp)
    return out


records_and_links = st.integers(1, 30).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 12)), max_size=3 * n),
        st.lists(st.sampled_from(["ctgov", "ictrp"]), min_size=n, max_size=n),
        st.lists(st.dates(date(2000, 1, 1), date(2026, 1, 1)), min_size=n, max_size=n),
    )
)


@settings(max_examples=200)
@given(records_and_links)
def test_merge_groups_are_the_connected_components(
    data: tuple[int, list[tuple[int, int]], list[str], list[date]],
) -> None:
    n, pairs, channels, updates = data
    keys = [f"k{i}" for i in range(n)]
    records = [
        (keys[i], channels[i], f"NCT{i:08d}", "ctgov", "fmt", updates[i], datetime(2026, 1, 1))
        for i in range(n)
    ]
    links = [(keys[r], f"NCT{9000 + i:08d}") for r, i in pairs]
    rows = group_records(records, links)
    assert sorted(r[1] for r in rows) == sorted(keys)  # every record in exactly one trial
    got: dict[str, set[str]] = defaultdict(set)
    for trial_id, key, _is_primary, _n, _reason in rows:
        got[trial_id].add(key)
    assert sorted(map(sorted, got.values())) == sorted(map(sorted, _components(keys, links)))
    for trial_id, members in got.items():
        trial_rows = [r for r in rows if r[0] == trial_id]
        assert sum(r[2] for r in trial_rows) == 1  # one primary record
        assert {r[3] for r in trial_rows} == {len(members)}
        assert all(bool(r[4]) == (len(members) > 1) for r in trial_rows)  # merged trials say why


# -------------------------------------------------------------- normalisers
@given(st.text(max_size=60))
def test_phase_and_status_stay_in_their_vocabularies(raw: str) -> None:
    assert normalize_phase(raw) in PHASES
    assert normalize_status(raw) in STATUSES
