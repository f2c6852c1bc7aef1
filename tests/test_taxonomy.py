"""The taxonomy YAML: vocabulary equal to TAXONOMY.md, validation, real phrasings per value."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from celltrials.classify import Classifier, TrialText, classify
from celltrials.errors import TaxonomyError
from celltrials.models import Intervention, ParsedRecord
from celltrials.sources import parse_file
from celltrials.taxonomy.loader import (
    DEFAULT_PATH,
    TAXONOMY_VALUES,
    build_taxonomy,
    default_taxonomy,
    default_taxonomy_version,
    load_taxonomy,
)
from tests.conftest import CAR2_JSON, CAR_JSON, GENERAL_JSON, ICTRP_CSV, MSC_CSV, SHARED

RAW = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _records() -> dict[str, list[ParsedRecord]]:
    out: dict[str, list[ParsedRecord]] = {}
    for path in (MSC_CSV, ICTRP_CSV, CAR_JSON, CAR2_JSON, GENERAL_JSON):
        for item in parse_file(path):
            if isinstance(item, ParsedRecord):
                out.setdefault(item.record_id, []).append(item)
    return out


def _text_of(recs: list[ParsedRecord]) -> str:
    parts: list[str] = []
    for r in recs:
        parts += [r.title, r.official_title, *r.conditions]
        for iv in r.interventions:
            parts += [iv.name, iv.description, *iv.other_names]
    return "\n".join(parts)


def _write(tmp_path: Path, raw: Any) -> Path:
    p = tmp_path / "taxonomy.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return p


# ---------------------------------------------------------------- vocabulary


@pytest.mark.unit
def test_default_taxonomy_loads_with_version() -> None:
    tax = default_taxonomy()
    assert re.fullmatch(r"\d{4}\.\d{1,2}\.\d+", tax.version)
    assert tax.version == RAW["version"]


@pytest.mark.unit
def test_default_taxonomy_version_is_read_without_compiling() -> None:
    """``classify_store`` hands classifying to workers without compiling the taxonomy
    itself: in a fresh process the version comes from the file alone, and it is
    the compiled taxonomy's version."""
    script = (
        "from celltrials.taxonomy.loader import _cached, default_taxonomy_version\n"
        "v = default_taxonomy_version()\n"
        "assert _cached.cache_info().currsize == 0\n"
        "print(v)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == default_taxonomy().version == default_taxonomy_version()


def test_vocabulary_is_that_of_taxonomy_md() -> None:
    md = (SHARED / "TAXONOMY.md").read_text(encoding="utf-8")
    backticked = set(re.findall(r"`([a-z_]+)`", md))
    for field, values in TAXONOMY_VALUES.items():
        assert field in backticked
        for v in values:
            if field != "is_cell_therapy":
                assert v in backticked, (field, v)
    # every cell_type of the guide's list is in the loader's vocabulary
    listed = set(re.findall(r"^- `([a-z_]+)` —", md, flags=re.M))
    assert listed - set(TAXONOMY_VALUES["indication_group"]) == set(TAXONOMY_VALUES["cell_type"])


@pytest.mark.unit
def test_every_cell_type_has_an_entry() -> None:
    tax = default_taxonomy()
    assert {e.value for e in tax.cell_type.entries} == set(TAXONOMY_VALUES["cell_type"])


# ---------------------------------------------------------------- validation


@pytest.mark.unit
def test_rejects_unknown_value(tmp_path: Path) -> None:
    raw = copy.deepcopy(RAW)
    raw["cell_type"][0]["value"] = "stem_cells"
    with pytest.raises(
        TaxonomyError, match=r"cell_type\[0\].*unknown cell_type value 'stem_cells'"
    ) as ei:
        load_taxonomy(_write(tmp_path, raw))
    assert str(tmp_path) in str(ei.value)


@pytest.mark.unit
def test_rejects_bad_regex_naming_the_entry(tmp_path: Path) -> None:
    raw = copy.deepcopy(RAW)
    raw["msc_source"][1]["patterns"].append("umbilical (cord")
    with pytest.raises(
        TaxonomyError, match=r"msc_source\[1\] \(umbilical_cord\).*does not compile"
    ):
        load_taxonomy(_write(tmp_path, raw))


@pytest.mark.unit
def test_rejects_unknown_key(tmp_path: Path) -> None:
    raw = copy.deepcopy(RAW)
    raw["products"][0]["synonyms"] = ["x"]
    with pytest.raises(TaxonomyError, match=r"products\[0\].*unknown key\(s\) synonyms"):
        load_taxonomy(_write(tmp_path, raw))
    raw = copy.deepcopy(RAW)
    raw["cell_types"] = []
    with pytest.raises(TaxonomyError, match=r"top level.*unknown key\(s\) cell_types"):
        load_taxonomy(_write(tmp_path, raw))


@pytest.mark.unit
def test_rejects_named_groups_and_empty_matches() -> None:
    raw = copy.deepcopy(RAW)
    raw["origin"][1]["patterns"].append("(?P<x>donor)")
    with pytest.raises(TaxonomyError, match="named groups"):
        build_taxonomy(raw)
    raw = copy.deepcopy(RAW)
    raw["origin"][1]["patterns"].append("x?")
    with pytest.raises(TaxonomyError, match="empty string"):
        build_taxonomy(raw)


@pytest.mark.unit
def test_rejects_values_list_differing_from_guide_and_bad_version() -> None:
    raw = copy.deepcopy(RAW)
    raw["values"]["origin"] = ["autologous", "allogeneic"]
    with pytest.raises(TaxonomyError, match=r"values\.origin"):
        build_taxonomy(raw)
    raw = copy.deepcopy(RAW)
    raw["version"] = 3
    with pytest.raises(TaxonomyError, match="version"):
        build_taxonomy(raw)


@pytest.mark.unit
def test_rejects_unknown_indication_area_and_product_target() -> None:
    raw = copy.deepcopy(RAW)
    raw["indications"][0]["therapeutic_area"] = "gvhd"
    with pytest.raises(
        TaxonomyError, match=r"indications\[0\].*unknown therapeutic_area value 'gvhd'"
    ):
        build_taxonomy(raw)
    raw = copy.deepcopy(RAW)
    raw["products"][0]["targets"] = "CD999"
    with pytest.raises(TaxonomyError, match="unknown target 'CD999'"):
        build_taxonomy(raw)


@pytest.mark.unit
def test_rejects_invalid_yaml(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("version: '2026.1.1'\ncell_type: [\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="not valid YAML"):
        load_taxonomy(p)


@pytest.mark.unit
def test_a_synonym_is_added_in_yaml_only() -> None:
    # NCT04390139 (classic CSV) names its product only by the code XCEL-UMC-BETA;
    # a taxonomy without that synonym cannot label the intervention.
    rec = ParsedRecord(
        channel="ctgov",
        source_format="t",
        record_id="NCT04390139",
        registry="ctgov",
        raw={},
        title="Efficacy of the investigational product in COVID-19",
        interventions=[Intervention(type="DRUG", name="XCEL-UMC-BETA")],
    )
    raw = copy.deepcopy(RAW)
    for p in raw["products"]:
        p["patterns"] = [x for x in p.get("patterns", []) if "XCEL" not in x]
    assert not Classifier(build_taxonomy(raw)).classify(TrialText.from_record(rec)).is_cell_therapy
    lab = classify(rec)
    assert lab.is_cell_therapy and lab.cell_type == ["msc"] and lab.msc_source == ["umbilical_cord"]


# ---------------------------------------------------------------- each value, a real phrasing

REAL = [
    # (field, value, record id, phrase as it stands in the shared file)
    ("cell_type", "car_t", "NCT03101709", "CART-19"),
    ("cell_type", "car_nk", "NCT02892695", "CAR-NK cells"),
    ("cell_type", "tcr_t", "NCT00621452", "Engineered Lymphocytes"),
    ("cell_type", "til", "NCT07307053", "TIL"),
    ("cell_type", "nk", "ChiCTR2000030509", "NK Cells"),
    ("cell_type", "cik", "NCT05268172", "CIK cells"),
    ("cell_type", "dc", "NCT05207995", "Dendritic Cells"),
    ("cell_type", "treg", "NCT03460795", "Regulatory T Cells"),
    ("cell_type", "virus_specific_t", "NCT00085930", "EBV Specific CTLs"),
    ("cell_type", "gamma_delta_t", "NCT07204496", "γδ-T Cell Injection"),
    ("cell_type", "macrophage", "NCT06224738", "Macrophages Therapy"),
    ("cell_type", "other_immune", "NCT00790413", "Donor Lymphocyte Infusion"),
    ("cell_type", "msc", "NCT04447833", "Mesenchymal Stromal Cell"),
    ("cell_type", "hsc", "NCT01092026", "Umbilical Cord Blood Transplantation"),
    ("cell_type", "ipsc_derived", "NCT06367673", "iPSC"),
    ("cell_type", "esc_derived", "NCT04610359", "Human Embryonic Stem Cell"),
    ("cell_type", "mononuclear_cells", "NCT03164083", "Stromal Vascular Fraction"),
    ("cell_type", "neural_stem", "NCT02688049", "neural stem cells"),
    ("cell_type", "other_stem", "NCT04484402", "limbal stem cells"),
    # TAXONOMY.md: menstrual-blood stem cells not called MSC are other_stem
    ("cell_type", "other_stem", "ChiCTR2000029606", "Human Menstrual Blood-Derived Stem Cells"),
    ("cell_type", "somatic_other", "NCT02384018", "Islet"),
    ("msc_source", "umbilical_cord", "NCT03765957", "Human Umbilical Cord-derived"),
    ("msc_source", "bone_marrow", "NCT03509870", "Bone Marrow Derived"),
    ("msc_source", "adipose", "NCT03268603", "Adipose-derived"),
    ("msc_source", "placenta", "NCT02398370", "Placental Matrix-Derived"),
    ("msc_source", "amnion", "NCT04318600", "Amniotic"),
    ("msc_source", "dental_pulp", "NCT04302519", "Dental Pulp"),
    (
        "msc_source",
        "endometrium_menstrual",
        "NCT01483248",
        "Human Menstrual Blood-derived Mesenchymal Stem Cells",
    ),
    ("msc_source", "cord_blood", "NCT01763099", "Cord Blood"),
    ("msc_source", "other", "NCT03130374", "Olfactory"),
    ("msc_source", "unspecified", "NCT04447833", "Mesenchymal Stromal Cell"),
    ("origin", "autologous", "NCT02824393", "Autologous"),
    ("origin", "allogeneic", "NCT04467047", "Allogenic MSC"),
    ("origin", "both", "NCT04876326", "Autologous and Allogeneic"),
    ("origin", "unspecified", "NCT04447833", "Mesenchymal Stromal Cell"),
    ("product_form", "cells", "NCT04447833", "Mesenchymal Stromal Cell"),
    ("product_form", "extracellular_vesicles", "NCT04276987", "MSCs-derived exosomes"),
    ("product_form", "secretome", "NCT05008588", "Conditioned Medium"),
    ("product_form", "gene_modified", "NCT02079324", "Genetically Modified"),
    ("product_form", "composite", "NCT03102879", "Encapsulated Mesenchymal Stem Cells"),
    (
        "indication_group",
        "oncology",
        "NCT03233074",
        "Myelodysplastic Syndromes",
    ),  # gold dev: oncology
    ("indication_group", "degenerative", "NCT03558334", "Bronchopulmonary Dysplasia"),
    ("indication_group", "immune_mediated", "NCT04447833", "ARDS"),
    ("indication_group", "other", "NCT02247973", "Aplastic Anemia"),
    ("therapeutic_area", "hematologic_malignancy", "NCT03233074", "Myelodysplastic Syndromes"),
    ("therapeutic_area", "solid_tumor", "NCT03608631", "Metastatic"),
    ("therapeutic_area", "musculoskeletal", "NCT02172885", "Osteogenesis Imperfecta"),
    ("therapeutic_area", "neurological", "NCT02482194", "Spinal Cord Injury"),
    ("therapeutic_area", "cardiovascular", "NCT01219452", "Dilated Cardiomyopathy"),
    ("therapeutic_area", "respiratory", "NCT04447833", "ARDS"),
    ("therapeutic_area", "hepatic", "NCT03863002", "Liver Failure"),
    ("therapeutic_area", "renal", "NCT02166489", "Renal Failure"),
    ("therapeutic_area", "metabolic_endocrine", "NCT02302599", "Type 2 Diabetes"),
    ("therapeutic_area", "autoimmune_inflammatory", "NCT05018858", "Lupus"),
    # type 1 diabetes is immune-mediated but its area is the endocrine system (immune_dev.csv NCT05207995)
    ("therapeutic_area", "metabolic_endocrine", "NCT01219465", "Diabetes Mellitus, Type 1"),
    ("therapeutic_area", "autoimmune_inflammatory", "NCT03765957", "Psoriasis"),
    ("therapeutic_area", "gvhd_transplant", "NCT02387151", "Rejection"),
    ("therapeutic_area", "skin_wound", "NCT02323789", "Epidermolysis Bullosa"),
    ("therapeutic_area", "ophthalmic", "NCT03878628", "Dry Eye"),
    ("therapeutic_area", "reproductive", "NCT02344849", "Erectile"),
    ("therapeutic_area", "infectious", "NCT02421484", "Septic"),
    ("therapeutic_area", "hematologic_nonmalignant", "NCT02247973", "Aplastic Anemia"),
    ("therapeutic_area", "other", "NCT04446897", "Periodontitis"),
]


@pytest.mark.unit
def test_real_phrasings_cover_every_value() -> None:
    covered = {(f, v) for f, v, _, _ in REAL}
    for field in (
        "cell_type",
        "msc_source",
        "origin",
        "product_form",
        "indication_group",
        "therapeutic_area",
    ):
        for v in TAXONOMY_VALUES[field]:
            assert (field, v) in covered, (field, v)


@pytest.mark.parametrize(
    ("field", "value", "record_id", "phrase"), REAL, ids=[f"{f}={v}-{r}" for f, v, r, _ in REAL]
)
def test_value_from_a_real_phrasing(field: str, value: str, record_id: str, phrase: str) -> None:
    recs = _records()[record_id]
    assert phrase.lower() in _text_of(recs).lower(), "the phrase must be the record's own words"
    lab = classify(TrialText.from_records(recs, record_id))
    row = lab.to_row()
    assert value in row[field].split(";"), (row, [e for e in lab.evidence if e.field == field])
    if value not in ("unspecified", "cells"):
        texts = [e.text.lower() for e in lab.evidence if e.field == field and e.value == value]
        assert any(t in phrase.lower() or phrase.lower() in t for t in texts), texts


@pytest.mark.unit
def test_case_sensitive_abbreviations_stay_case_sensitive() -> None:
    # NCT05844332 (general JSON) summary: "... in all patients ..." is not ALL (acute lymphoblastic leukaemia);
    # the loader matches a pattern listed under case_sensitive_patterns only case-sensitively.
    tax = default_taxonomy()
    assert [h.text for h in tax.indications.hits("treated in all patients")] == []
    assert [h.text for h in tax.indications.hits("relapsed ALL")] == ["ALL"]
    assert [h.text for h in tax.cell_type.hits("Polyvalent Immunoglobulin (ICAR) and OSCAR")] == []


def test_gvhd_in_a_title_outranks_leukaemia_conditions() -> None:
    # NCT00504803 (classic CSV): MSC to prevent GvHD in haematological malignancies
    r = classify(TrialText.from_records(_records()["NCT00504803"], "NCT00504803"))
    assert (r.indication_group, r.therapeutic_area) == ("immune_mediated", ["gvhd_transplant"])
