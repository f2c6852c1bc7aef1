"""Rules added after reading misclassified real records: laboratory studies of cells,
antigen-targeted T cells (TAXONOMY.md: cells used only as a laboratory tool are not labelled)."""

from __future__ import annotations

from functools import cache

import pytest

from celltrials.classify import classify
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file
from tests.conftest import MSC_CSV


@cache
def msc_records() -> dict[str, ParsedRecord]:
    """The classic MSC CSV's records by id (read on first use, not at collection)."""
    return {r.record_id: r for r in parse_file(MSC_CSV) if isinstance(r, ParsedRecord)}


@pytest.mark.parametrize(
    "nct",
    [
        "NCT02375568",  # Large-scale Expansion and Characterization of Mesenchymal Stem Cells for Clinical Application
        "NCT01668576",  # Properties of Mesenchymal Stem Cells in Lung Transplant
        "NCT01213953",  # Isolation and Authentication of Mesenchymal Stem Cell-like Progenitor Cells From the Degenerated Intervertebral Disc
        "NCT02941666",  # Human Mesenchymal Stem Cells in the Synovial Fluid of the Hip
        "NCT01323894",  # Osteogenic Effects in Human Mesenchymal Stem Cells Enhanced by Wnt Signaling
        "NCT04713436",  # The Effects of Antibiotic Combinations on Stem Cells
        "NCT05187936",  # Pre-clinical Models for Mesenchymal Stem Cell Therapy in Hemophilic Arthropathy
        "NCT01366911",  # Stem Cells Predicting Orthopedic Outcomes
        "NCT05167188",  # Evaluation of GvHD Damage on Medullary Mesenchymal Stem Cells
        "NCT04397471",  # A Study to Collect Bone Marrow for Process Development and Production of BM-MSC ...
        "NCT04281797",  # Intestinal Microbiome Dynamics in Solid Organ and Stem Cell Transplant Recipients
    ],
)
def test_laboratory_studies_of_cells_are_not_cell_therapy(nct: str) -> None:
    assert classify(msc_records()[nct]).is_cell_therapy is False


def test_cell_preparation_inside_a_therapy_still_labels() -> None:
    # NCT02330978: intervention "Culture and isolation of autologous bone-marrow mesenchymal stem cells"
    labels = classify(msc_records()["NCT02330978"])
    assert labels.is_cell_therapy
    assert "msc" in labels.cell_type and "bone_marrow" in labels.msc_source
    assert labels.origin == "autologous"


def test_antigen_targeted_t_cells_are_car_t() -> None:
    import json

    from tests.conftest import CAR_JSON

    study = next(
        s
        for s in json.loads(CAR_JSON.read_text())
        if s["protocolSection"]["identificationModule"]["nctId"] == "NCT05651178"
    )
    from celltrials.sources.ctgov_json import parse_study

    labels = classify(
        parse_study(study)
    )  # "Human CD19-CD22 Targeted T Cells Injection for ... CNS Leukemia/Lymphoma"
    assert labels.is_cell_therapy and list(labels.cell_type) == ["car_t"]
    assert {"CD19", "CD22"} <= set(labels.targets)
