"""The maintained `cell-therapy` preset: valid data, short URLs, and its
recall measured offline on the shared real records (so it stays measured).

Recall here = the fraction of distinct trials in a set whose titles,
acronym, keywords, conditions, interventions (names, other names,
descriptions), brief summary or detailed description contain at least one
preset phrase (case-insensitive, whole words, punctuation = space). It is a
lower bound for the live API, whose query.term also searches fields these
files lack (e.g. the classic CSV has no summaries).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from celltrials.errors import TaxonomyError
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file, sniff
from celltrials.sync import (
    DEFAULT_BASE_URL,
    MAX_URL_BYTES,
    PhraseMatcher,
    Preset,
    essie_or,
    get_preset,
    load_presets,
    preset_recall,
    request_url,
)

pytestmark = pytest.mark.unit

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
MSC_CSV = DATA / "ctgov-classic-csv" / "msc_mesenchymal_stem_or_stromal.csv"
CAR_JSON = sorted((DATA / "ctgov-v2-json" / "reconstructed").glob("car_cell_therapy*.json"))
GENERAL_JSON = DATA / "ctgov-v2-json" / "ctg-studies-50-general.json"
AML_JSON = SHARED / "data-extra" / "aml-cart-v2-json" / "raw_trials.json"


def records(*paths: Path) -> list[ParsedRecord]:
    return [r for p in paths for r in parse_file(p, sniff(p)) if isinstance(r, ParsedRecord)]


@pytest.fixture(scope="module")
def preset() -> Preset:
    return get_preset("cell-therapy")


def test_preset_file_is_valid_and_versioned(preset: Preset) -> None:
    assert preset.version and preset.description
    assert [q.name for q in preset.queries] == [
        "car-engineered",
        "immune",
        "msc",
        "stem-derived",
        "vesicles",
    ]
    phrases = [p.casefold() for p in preset.phrases()]
    assert len(phrases) > 500
    for q in preset.queries:
        assert q.param == "query.term"
        url = request_url(DEFAULT_BASE_URL, {q.param: q.expression()}, "x" * 64)
        assert len(url.encode()) < MAX_URL_BYTES, q.name
        assert q.expression().startswith('"') and '" OR "' in q.expression()


def test_preset_names_every_promised_cell_type(preset: Preset) -> None:
    m = PhraseMatcher(preset.phrases())
    promised = [
        "anti-CD19 CAR-T cells",
        "CAR-NK cells",
        "TCR-T cell therapy",
        "tumor-infiltrating lymphocytes (TIL)",
        "natural killer cells",
        "cytokine-induced killer (CIK) cells",
        "dendritic cell vaccine",
        "regulatory T cells (Treg)",
        "virus-specific T cells",
        "mesenchymal stem cells",
        "mesenchymal stromal cells",
        "Wharton's jelly MSCs",
        "umbilical cord-derived stromal cells",
        "adipose-derived stromal cells",
        "bone marrow-derived stromal cells",
        "ADSCs",
        "stromal vascular fraction (SVF)",
        "haematopoietic stem cell transplantation",
        "iPSC-derived cardiomyocytes",
        "embryonic stem cell-derived RPE",
        "MSC-derived exosomes",
        "extracellular vesicles",
        "MSC secretome",
    ]
    for text in promised:
        assert m.hits(text), text


def test_phrase_matching_is_case_insensitive_whole_words() -> None:
    m = PhraseMatcher(["CAR-T", "Wharton's jelly", "MSC"])
    assert m.matches("Anti-CD19 car t cells") == ["CAR-T"]
    assert m.hits("WHARTON'S JELLY derived cells") and m.hits("Wharton s jelly")
    assert not m.hits("cartilage repair") and not m.hits("MSCT imaging") and not m.hits("a car")
    assert essie_or(["a b", 'c"d']) == '"a b" OR "cd"'


def test_bad_preset_data_is_rejected() -> None:
    with pytest.raises(TaxonomyError, match="version"):
        load_presets("presets: {}")
    long = "\n".join(f"          - phrase number {i}" for i in range(600))
    with pytest.raises(TaxonomyError, match="split it"):
        load_presets(
            f'version: "1"\npresets:\n  x:\n    queries:\n      - name: q\n        phrases:\n{long}\n'
        )
    with pytest.raises(TaxonomyError, match="known param"):
        load_presets(
            'version: "1"\npresets:\n  x:\n    queries:\n      - name: q\n        param: query.foo\n        phrases: [a]\n'
        )


# Floors a little under the measured values (2026-11-24): MSC 1,358/1,389 = 97.8 %,
# CAR 2,400/2,587 = 92.8 %, AML 90/90 = 100 %; general 5/50 = 10 % (not a match-all net).
@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "paths", "n", "floor"),
    [
        ("msc_classic_csv", [MSC_CSV], 1389, 0.97),
        ("car_reconstructed", CAR_JSON, 2587, 0.92),
        ("aml_cart_full_json", [AML_JSON], 90, 0.99),
    ],
)
def test_preset_recall_on_shared_sets(
    preset: Preset, name: str, paths: list[Path], n: int, floor: float
) -> None:
    res = preset_recall(preset, records(*paths))
    assert res["n"] == n
    assert res["recall"] >= floor, (name, res["recall"], res["missed"][:20])
    assert res["hits"] + len(res["missed"]) == n


@pytest.mark.data
def test_preset_is_not_a_match_all(preset: Preset) -> None:
    res = preset_recall(preset, records(GENERAL_JSON))
    assert res["n"] == 50 and res["recall"] <= 0.2
