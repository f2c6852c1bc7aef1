"""The labelling steps of :meth:`Classifier.classify`, one at a time.

Each test runs the steps up to the one it is about on a small :class:`TrialText`
whose texts are copied verbatim from a real record of ../shared/data (cited by
id; only the segments the steps read are kept, long summaries cut after their
first sentences), and checks what that step
decides against the rule of ../shared/TAXONOMY.md the step implements (and
../shared/gold where the record is labelled there). The texts are inline, so
these tests run without ../shared (``pytest -m "not data"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celltrials.classify import (
    CONDITION,
    INTERVENTION,
    KEYWORD,
    SUMMARY,
    TITLE,
    Classifier,
    Segment,
    TrialContext,
    TrialText,
    _Masks,
)

pytestmark = pytest.mark.unit

CLF = Classifier()

#: the steps of Classifier.classify, in its order (the last five run only when a
#: cell type is left); test_the_steps_in_order_are_classify holds them to it
STEPS = (
    "find_mentions",
    "study_subject_gate",
    "summary_mentions",
    "generic_mentions",
    "in_vivo_car",
    "collect_cell_types",
    "label_indication",
    "car_word_on_other_cells",
    "drop_catch_all_types",
    "cell_type_evidence",
    "label_msc_source",
    "label_origin",
    "label_product_form",
    "label_descriptors",
)
PRODUCT_STEPS = STEPS[STEPS.index("cell_type_evidence") :]


def trial(rid: str, *segs: tuple[str, str, str] | tuple[str, str, str, bool]) -> TrialText:
    return TrialText(rid, [Segment(*s) for s in segs])


def run(t: TrialText, until: str) -> TrialContext:
    """The context after the steps up to and including ``until``."""
    ctx = CLF.context(t)
    for name in STEPS[: STEPS.index(until) + 1]:
        getattr(CLF, name)(ctx)
    return ctx


def texts(mentions: Iterable[Any]) -> list[str]:
    """The matched texts of cell mentions (``ctx.found`` / ``ctx.background``)."""
    return [m.hit.text for m in mentions]


# Texts of real records (ClinicalTrials.gov API JSON / classic CSV, ICTRP).
ALLO_CAR_T_AFTER_HSCT = trial(
    "NCT04516551",
    ("title", TITLE, "Anti-CD19 Allo-CAR-T Cells for Relapsed B Cell Malignancies After HSCT"),
    ("interventions[0].name", INTERVENTION, "anti-CD19 allo-CAR-T cells"),
    ("conditions[0]", CONDITION, "Relapsed Adult ALL"),
    ("conditions[1]", CONDITION, "B Cell Leukemia"),
)
MSC_WITH_BMT_PROCEDURE = trial(
    "NCT00957931",
    (
        "title",
        TITLE,
        "Allo-HCT MUD for Non-malignant Red Blood Cell (RBC) Disorders: Sickle Cell, Thal, and DBA: Reduced Intensity Conditioning, Co-tx MSCs",
    ),
    ("interventions[0].name", INTERVENTION, "Bone marrow transplantation", True),
    ("interventions[1].name", INTERVENTION, "Mesenchymal Stromal Cells"),
    ("conditions[0]", CONDITION, "Sickle Cell Disease"),
    ("conditions[1]", CONDITION, "Thalassemia"),
    ("conditions[2]", CONDITION, "Diamond-Blackfan Anemia"),
)
QUALITY_OF_LIFE_AFTER_CAR_T = trial(
    "NCT05199961",
    (
        "title",
        TITLE,
        "Quality of Life of Adults With Diffuse Large B-cell Lymphoma Treated With Tisagenlecleucel",
    ),
    ("interventions[0].name", INTERVENTION, "Digital Health Coaching"),
    ("conditions[0]", CONDITION, "Lymphoma, Large B-Cell, Diffuse"),
    (
        "brief_summary",
        SUMMARY,
        "The aim of this non-interventional multi-center study is to evaluate quality of life (QOL) and other patient reported outcomes (PROs) among adults with diffuse large b-cell lymphoma (DLBCL) following Chimeric Antigen Receptor (CAR) T-cell therapy with tisagenlecleucel (Kymriah).",
    ),
)
CODE_NAMED_CAR_T = trial(
    "NCT04966143",
    ("title", TITLE, "Clinical Study of LY011 in the Treatment of Advanced Pancreatic Cancer"),
    ("interventions[0].name", INTERVENTION, "LY011"),
    ("conditions[0]", CONDITION, "Pancreatic Cancer"),
    (
        "brief_summary",
        SUMMARY,
        "CLDN 18.2 chimeric antigen receptor T cells Clinical research plan for the treatment of recurrent or refractory pancreatic cancer.",
    ),
)
# Drug trials in gastrointestinal stromal tumours (GIST), from the API v1 MSC
# archive (../shared/data-extra/ctgov-v1-studyfields): the tumour is
# "mesenchymal", the product a kinase inhibitor
PONATINIB_IN_GIST = trial(
    "NCT01874665",
    (
        "title",
        TITLE,
        "A Phase 2 Trial of Ponatinib in Participants With Metastatic and/or Unresectable Gastrointestinal Stromal Tumor",
    ),
    ("interventions[0].name", INTERVENTION, "Ponatinib"),
    ("interventions[0].description", INTERVENTION, "Ponatinib 45 mg, tablets, orally, once-daily."),
    ("keywords[1]", KEYWORD, "Gastrointestinal stromal tumor"),
    ("keywords[2]", KEYWORD, "mesenchymal tumor"),
    (
        "brief_summary",
        SUMMARY,
        "The purpose of this study is to evaluate the efficacy and safety of ponatinib in participants with metastatic and/or unresectable gastrointestinal stromal tumor (GIST) following failure of prior tyrosine kinase inhibitor (TKI) therapy.",
    ),
)
SELUMETINIB_IN_NF1_GIST = trial(
    "NCT03109301",
    (
        "title",
        TITLE,
        "Mitogen Activated Protein Kinase Kinase (MEK1/2) Inhibitor Selumetinib (AZD6244 Hydrogen Sulfate) in People With Neurofibromatosis Type 1 (NF1) Mutated Gastrointestinal Stromal Tumors (GIST)",
    ),
    ("interventions[0].name", INTERVENTION, "Selumetinib (AZD6244 hyd sulfate) 50mg/dose"),
    ("keywords[0]", KEYWORD, "Mesenchymal Neoplasm"),
    ("conditions[0]", CONDITION, "Neoplasms, Nerve Tissue"),
    (
        "detailed_description",
        SUMMARY,
        "BACKGROUND:\n\nGastrointestinal stromal tumor (GIST) is the most common mesenchymal neoplasm of the gastrointestinal tract, and traditional cytotoxic chemotherapy is not effective.",
    ),
)
#: a urine test in kidney transplant recipients (v1 MSC archive): the biopsies
#: show an epithelial-to-mesenchymal transition, a tissue change
URINE_MRNA_AFTER_KIDNEY_TRANSPLANT = trial(
    "NCT01380847",
    (
        "official_title",
        TITLE,
        "Early Prediction of Chronic Allograft Nephropathy by Non Invasive Monitoring of Urinary Cell mRNAs",
    ),
    ("interventions[0].name", INTERVENTION, "mRNAs encoding genes"),
    ("conditions[0]", CONDITION, "Kidney Transplantation"),
    (
        "brief_summary",
        SUMMARY,
        "The investigators have shown that epithelial-to-mesenchymal transition (EMT) markers in early protocol biopsies of the renal allograft predicts the progression of fibrosis during the first year post-transplantation.",
    ),
)
# Drugs given after cell therapy: the title names the cells in a background
# clause ("Post ..."), the summary names them as what the patients had (two of
# its paragraphs, verbatim)
SELINEXOR_AFTER_CAR_T = trial(
    "NCT07200102",
    ("title", TITLE, "Selinexor Maintenance Post CAR-T Cell Therapy for Multiple Myeloma"),
    ("interventions[0].name", INTERVENTION, "Selinexor"),
    (
        "brief_summary",
        SUMMARY,
        "The outcomes in patients with relapsed multiple myeloma refractory to triple-therapy (anti-CD38, immunomodulatory drugs (IMiD) and proteasome inhibitors (PI)) remain poor. These patients are eligible for chimeric antigen receptor T-cells (CAR-T), which rely on redirecting autologous T-cells to clear myeloma cells by targeting B-cell maturation antigen (BCMA).",
    ),
)
GLOFITAMAB_AROUND_ASCT = trial(
    "NCT07387848",
    (
        "title",
        TITLE,
        "Glofitamab as a Bridge to and/or Consolidation Post Autologous Stem Cell Transplant in Patients With Relapsed B Cell Lymphomas",
    ),
    ("interventions[0].name", INTERVENTION, "Glofitamab"),
    (
        "brief_summary",
        SUMMARY,
        "Autologous stem cell transplantation is a commonly used treatment in this situation and involves high-dose chemotherapy followed by infusion of your own stem cells, which are collected from your blood several weeks before the transplant.\n\nIn recent years, newer immune-based treatments such as CAR-T cell therapy have shown benefit for patients whose lymphoma does not respond to or returns after chemotherapy.",
    ),
)
#: a code-named drug given after CAR-T: the title names the cells in a
#: background clause, the summary describes them
NKTR_255_AFTER_CAR_T = trial(
    "NCT05664217",
    (
        "title",
        TITLE,
        "NKTR-255 vs Placebo Following CD19-directed CAR-T Therapy in Patients With Relapsed/Refractory Large B-cell Lymphoma",
    ),
    ("interventions[0].name", INTERVENTION, "NKTR-255 at 1.5 µg/kg"),
    (
        "brief_summary",
        SUMMARY,
        "NKTR-255 is an investigational IL-15 receptor agonist designed to boost the immune system's natural ability to fight cancer. T cells are infection fighting blood cells that can kill tumor cells. Chimeric antigen (CAR)-T cell product consists of genetically engineered T-cells, modified to recognize CD19, a protein on the surface of cancer cells.",
    ),
)
BELANTAMAB_AFTER_CAR_T = trial(
    "NCT05117008",
    (
        "title",
        TITLE,
        "Maintenance Belantamab Mafodotin (Blenrep®) After B-cell Maturation Antigen-Directed Chimeric Antigen Receptor T-cell Therapy in Patients With Relapsed and/or Refractory Multiple Myeloma",
    ),
    ("interventions[0].name", INTERVENTION, "Belantamab mafodotin"),
    (
        "brief_summary",
        SUMMARY,
        "This is a multicenter phase II, open-label study evaluating the efficacy and safety of belantamab mafodotin maintenance in participants with relapsed and/or refractory multiple myeloma (RRMM) who have received commercially available anti-BCMA CAR-T-cell therapy. Subjects will be enrolled 60-130 days after chimeric antigen receptor T-cell therapy (CAR-T) and receive belantamab mafodotin as maintenance therapy.",
    ),
)
COGNITION_AFTER_CAR_T = trial(
    "NCT05416554",
    (
        "title",
        TITLE,
        "Long-term Cognitive, Neuropsychiatric and Functional Outcomes in Adults Who Have Received Chimeric Antigen-Receptor T-Cell (CAR-T) Therapy for Aggressive Lymphoma at Stanford",
    ),
    ("interventions[0].name", INTERVENTION, "Neuropsychological testing"),
    (
        "brief_summary",
        SUMMARY,
        "This study aims to assess the feasibility of performing neuropsychological testing to measure the cognitive performance of individuals following Axicabtagene ciloleucel CAR-T therapy at Stanford.",
    ),
)
INFLUENZA_VACCINES = trial(
    "NCT07485855",
    ("title", TITLE, "Influenza Vaccination Strategy for Patients With Hematologic Malignancy"),
    (
        "interventions[0].name",
        INTERVENTION,
        "High-dose trivalent inactivated influenza vaccine (HD-IIV3)",
    ),
    (
        "interventions[1].name",
        INTERVENTION,
        "MF59-adjuvanted quadrivalent inactivated influenza vaccine (aIIV4)",
    ),
    (
        "brief_summary",
        SUMMARY,
        "The study population consists of patients with hematologic malignancies, including those undergoing autologous stem cell transplantation or CAR-T cell therapy. The primary goal is to identify which vaccine strategy elicits the most robust antibody and T cell-mediated immune responses in this severely immunocompromised population",
    ),
)
PALLIATIVE_CARE_IN_CELL_THERAPY = trial(
    "NCT05190653",
    ("title", TITLE, "Early Integration of Palliative and Supportive Care in Cellular Therapy"),
    ("interventions[0].name", INTERVENTION, "Early palliative and supportive care"),
    (
        "brief_summary",
        SUMMARY,
        "PALS\\_CT will compare early palliative care to standard care for patients and their family caregivers undergoing HSCT or CAR T-cell therapy for blood cancers.",
    ),
)
MSC_COUNTS_IN_MARROW_ASPIRATES = trial(
    "NCT03014037",
    (
        "title",
        TITLE,
        "Comparing Mesenchymal Stem Cell Counts in Unilateral vs. Bilateral Posterior Superior Iliac Spine Bone Marrow Aspiration",
    ),
    ("interventions[0].name", INTERVENTION, "Unilateral Bone Marrow Procurement", True),
    ("interventions[1].name", INTERVENTION, "Bilateral Bone Marrow Procurement", True),
)
CELLS_FOR_XENOGRAFT_STUDIES = trial(
    "NCT02331134",
    (
        "title",
        TITLE,
        "Tissue and Hematopoietic/Mesenchymal Stem Cell for Humanized Xenograft Studies in Melanoma and Squamous Head and Neck Cancer",
    ),
    ("interventions[0].name", INTERVENTION, "Filgrastim"),
)
CANNABIS_WITHDRAWAL_AROUND_BMT_OR_CAR_T = trial(
    "NCT07594496",
    (
        "title",
        TITLE,
        "Prevalence and Clinical Manifestations of Cannabis Withdrawal in Hospitalized Patients With Hematological Malignancies Undergoing Bone Marrow Transplant (BMT) or Chimeric Antigen Receptor T-Cell (CAR-T) Therapy",
    ),
    ("interventions[0].name", INTERVENTION, "Non-Interventional Study"),
)
ENDOTHELIAL_DYSFUNCTION_PROJECT = trial(
    "NCT05502887",
    (
        "title",
        TITLE,
        "The Endothelial Cell Dysfunction and Outcome Project for Hematological Neoplasms",
    ),
    (
        "interventions[0].name",
        INTERVENTION,
        "Sublingual in vivo microscopy with the Glycocheck microscope",
    ),
)
BOOST_CELLS = trial(
    "NCT04623606",
    (
        "title",
        TITLE,
        "Boost to Brittle Bones - Stem Cell Transplantation for Treatment of Brittle Bones",
    ),
    ("acronym", TITLE, "BOOST2B"),
    ("interventions[0].name", INTERVENTION, "BOOST cells"),
    ("conditions[0]", CONDITION, "Osteogenesis Imperfecta"),
)
IN_VIVO_CAR_T_IN_SUMMARY = trial(
    "NCT07322159",
    ("title", TITLE, "IASO206 in Patients With Relapsed/Refractory Multiple Myeloma"),
    ("interventions[0].name", INTERVENTION, "IASO206 injection"),
    ("conditions[0]", CONDITION, "Relapsed/Refractory Multiple Myeloma (RRMM)"),
    (
        "brief_summary",
        SUMMARY,
        "This study is an open-label, single-arm early exploratory clinical study, aiming to evaluate the safety, tolerability and preliminary efficacy of IASO206 Injection(In Vivo CAR-T) in Patients with Relapsed/Refractory Multiple Myeloma",
    ),
)
IN_VIVO_CAR_T_IN_TITLE = trial(
    "NCT07586709",
    (
        "title",
        TITLE,
        "In Vivo BCMA/GPRC5D Tandem Dual CAR-T Therapy for Relapsed/Refractory Plasma Cell Neoplasms",
    ),
    ("interventions[0].name", INTERVENTION, "In vivo BCMA/GPRC5D Tandem Dual CAR-T cell"),
    ("conditions[0]", CONDITION, "Plasma Cell Neoplasms"),
)
MSC_FOR_GVHD = trial(
    "NCT04692376",
    ("title", TITLE, "MSC for Treatment of cGVHD After Allo-HSCT"),
    ("interventions[0].name", INTERVENTION, "Mesenchymal stem cells"),
    ("interventions[1].name", INTERVENTION, "Glucocorticoids"),
    ("interventions[2].name", INTERVENTION, "cyclosporine"),
    ("conditions[0]", CONDITION, "Chronic Graft-versus-host Disease"),
)
ALLO_CAR_T_FOLLOW_UP = trial(
    "NCT06925685",
    (
        "title",
        TITLE,
        "Follow-Up for Study Participants Treated With an Allogeneic CAR T-Cell Product",
    ),
    ("conditions[0]", CONDITION, "Hematologic Malignancies"),
    ("conditions[1]", CONDITION, "Solid Tumors"),
)
CAR_NK_WITH_BARE_CAR = trial(
    "NCT05645601",
    ("title", TITLE, "CAR-NK Targeted CD19 for r/r B-cell Malignancies"),
    ("interventions[0].name", INTERVENTION, "CD19-CAR-NK"),
    ("conditions[0]", CONDITION, "Adult Relapsed/Refractory B-cell Hematologic Malignancies"),
    (
        "brief_summary",
        SUMMARY,
        "This is a single-centre, single-arm and open-label study to investigate the safety and efficacy of JD010 in adult patients with relapsed or refractory B cell hematologic malignancies. JD010 injection is a CD19-targeted chimeric antigen receptor modified natural killer cells (CAR-NK) derived from a healthy donor",
    ),
)
SARS_COV_2_SPECIFIC_T = trial(
    "NCT04351659",
    (
        "title",
        TITLE,
        "Novel Adoptive Cellular Therapy With SARS-CoV-2 Specific T Cells in Patients With Severe COVID-19",
    ),
    ("interventions[0].name", INTERVENTION, "Blood donation from convalescent donor"),
    ("conditions[0]", CONDITION, "COVID-19"),
)
AUTOLOGOUS_MSC_WITH_HAPLO_HCT = trial(
    "NCT03298399",
    (
        "title",
        TITLE,
        "Mesenchymal Stromal Cells for Haplo Hematopoietic Cell Transplantation for Sickle Cell Disease",
    ),
    ("interventions[0].name", INTERVENTION, "Autologous MSCs"),
    ("conditions[0]", CONDITION, "Sickle Cell Disease"),
)
PNEUMOSTEM = trial(
    "NCT02890953",
    ("title", TITLE, "Efficacy and Safety of Pneumostem® for IVH in Premature Infants (Phase 2a)"),
    ("interventions[0].name", INTERVENTION, "Pneumostem"),
    ("conditions[0]", CONDITION, "Cell Transplantation"),
)
UC_MSC_AND_CONDITIONED_MEDIUM = trial(
    "NCT05008588",
    (
        "title",
        TITLE,
        "Combination of Conditioned Medium and Umbilical Cord-Mesenchymal Stem Cells Therapy for Acute Stroke Infarct",
    ),
    ("interventions[0].name", INTERVENTION, "Conditioned Medium"),
    ("interventions[1].name", INTERVENTION, "Umbilical Cord Mesenchymal Stem Cells"),
    ("interventions[2].name", INTERVENTION, "Neurologic and Neutrophic Drugs", True),
    ("conditions[0]", CONDITION, "Ischemic Stroke"),
)
POSEIDON = trial(
    "NCT01087996",
    (
        "title",
        TITLE,
        "The Percutaneous Stem Cell Injection Delivery Effects on Neomyogenesis Pilot Study (The POSEIDON-Pilot Study)",
    ),
    ("interventions[0].name", INTERVENTION, "Auto-hMSCs"),
    ("interventions[1].name", INTERVENTION, "Allo-hMSCs"),
    ("conditions[0]", CONDITION, "Stem Cell Transplantation"),
)
CAR_T_AFTER_ASCT = trial(
    "NCT07034755",
    (
        "title",
        TITLE,
        "Phase II Clinical Study on the Safety and Efficacy of Combined CAR-T Therapy Following Autologous Stem Cell Transplantation in Multiple Myeloma",
    ),
    (
        "interventions[0].name",
        INTERVENTION,
        "autologous hematopoietic stem cell transplantation (ASCT) followed by CAR-T therapy",
    ),
    ("conditions[0]", CONDITION, "Multiple Myeloma (MM)"),
)
ENGINEERED_AUTOLOGOUS_LYMPHOCYTES = trial(
    "NCT00621452",
    (
        "title",
        TITLE,
        "Genetically Engineered Lymphocytes, Cyclophosphamide, and Aldesleukin in Treating Patients With Relapsed or Refractory Mantle Cell Lymphoma or Indolent B-Cell Non-Hodgkin Lymphoma",
    ),
    ("interventions[0].name", INTERVENTION, "aldesleukin"),
    ("interventions[2].name", INTERVENTION, "cyclophosphamide"),
    ("interventions[10].name", INTERVENTION, "therapeutic autologous lymphocytes"),
    ("conditions[5]", CONDITION, "Recurrent Mantle Cell Lymphoma"),
)
CORD_BLOOD_MONONUCLEAR = trial(
    "ChiCTR2000029572",
    (
        "title",
        TITLE,
        "Safety and efficacy of umbilical cord blood mononuclear cells in the treatment of severe and critically novel coronavirus pneumonia(COVID-19): a randomized controlled clinical trial",
    ),
    (
        "interventions[1].name",
        INTERVENTION,
        "conventional treatment combined with umbilical cord blood mononuclear cells group",
    ),
    ("conditions[0]", CONDITION, "novel coronavirus pneumonia (COVID-19)"),
)
MSC_EXOSOMES_INHALED = trial(
    "NCT04276987",
    (
        "title",
        TITLE,
        "A Pilot Clinical Study on Inhalation of Mesenchymal Stem Cells Exosomes Treating Severe Novel Coronavirus Pneumonia",
    ),
    ("interventions[0].name", INTERVENTION, "MSCs-derived exosomes"),
    ("conditions[0]", CONDITION, "Coronavirus"),
)
GD2_CAR_T_WITH_SWITCH = trial(
    "NCT02107963",
    (
        "title",
        TITLE,
        "A Phase I Trial of T Cells Expressing an Anti-GD2 Chimeric Antigen Receptor in Children and Young Adults With GD2+ Solid Tumors",
    ),
    ("interventions[0].name", INTERVENTION, "AP1903"),
    ("interventions[1].name", INTERVENTION, "Anti-GD2-CAR engineered T cells"),
    ("interventions[2].name", INTERVENTION, "Cyclophosphamide"),
    ("conditions[2]", CONDITION, "Neuroblastoma"),
)
MSC_DOSES = trial(
    "ChiCTR2000030835",
    (
        "title",
        TITLE,
        "Clinical study for the efficacy of Mesenchymal stem cells (MSC) in the treatment of severe novel coronavirus pneumonia (COVID-19)",
    ),
    ("interventions[0].name", INTERVENTION, "routine treatment + MSc (2 x10^6 / kg / time)"),
    ("interventions[1].name", INTERVENTION, "routine treatment + MSc (1x10^6 / kg / time)"),
    ("conditions[0]", CONDITION, "Novel Coronavirus Pneumonia (COVID-19)"),
)
RUXOLITINIB_WITH_MSC = trial(
    "ChiCTR2000029580",
    (
        "title",
        TITLE,
        "Severe novel coronavirus pneumonia (COVID-19) patients treated with ruxolitinib in combination with mesenchymal stem cells: a prospective, single blind, randomized controlled clinical trial",
    ),
    ("interventions[0].name", INTERVENTION, "Ruxolitinib combined with mesenchymal stem cell"),
    ("conditions[0]", CONDITION, "novel coronavirus pneumonia (COVID-19)"),
)

IMAGING_AFTER_UC_MSC = trial(
    "NCT03336996",
    (
        "title",
        TITLE,
        "Assessement the Reconstruction of Motor Circuits in Nerve Fiber Injuries After the Treatment of Umbilical Cord Mesenchymal Stem Cells With Blood Oxygen Level-dependent Drived Diffusion Tensor Imaging",
    ),
    ("interventions[0].name", INTERVENTION, "stem cell transplantation"),
    ("interventions[1].name", INTERVENTION, "BOLD-fMRI drived DTI scanning"),
    ("conditions[0]", CONDITION, "Characterize and Evaluate Functional After Transplantation"),
)
MUSCLE_STEM_CELLS_IN_SEPSIS = trial(
    "NCT02789995",
    ("title", TITLE, "Dysfunctions of Human Muscle Stem Cells in Sepsis"),
    ("acronym", TITLE, "DISCUSS"),
    ("interventions[0].name", INTERVENTION, "Human biological samples"),
    ("conditions[0]", CONDITION, "Sepsis"),
)
ORAL_MUCOSA_FOR_LSCD = trial(
    "NCT03226015",
    ("title", TITLE, "Autologous Oral Mucosa Transplantation for Limbal Stem Cell Deficiency"),
)

ALL = [v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, TrialText)]


@pytest.mark.parametrize("t", ALL, ids=[t.trial_id for t in ALL])
def test_the_steps_in_order_are_classify(t: TrialText) -> None:
    ctx = CLF.context(t)
    for name in STEPS:
        if name in PRODUCT_STEPS and not ctx.cell_types:
            break
        getattr(CLF, name)(ctx)
    assert CLF.labels(ctx).to_dict() == CLF.classify(t).to_dict()


# ------------------------------------------------------------ which cells are the product


def test_find_mentions_sets_a_background_transplant_apart() -> None:
    # "a CAR-T trial whose patients previously had HSCT is not an HSC trial"
    ctx = run(ALLO_CAR_T_AFTER_HSCT, "find_mentions")
    assert texts(ctx.found) == ["Allo-CAR-T", "allo-CAR-T"]
    assert {v for m in ctx.found for v in m.values["cell_type"]} == {"car_t"}
    assert texts(ctx.background) == ["HSCT"]


def test_find_mentions_skips_a_transplant_listed_as_a_procedure() -> None:
    # the bone-marrow transplantation is a registry PROCEDURE: background, not the product
    ctx = run(MSC_WITH_BMT_PROCEDURE, "find_mentions")
    assert "Bone marrow transplantation" not in texts(ctx.found)
    assert all(not m.seg.procedure for m in ctx.found)
    assert "Mesenchymal Stromal Cells" in texts(ctx.found)


def test_study_subject_gate_cells_received_before_a_quality_of_life_study() -> None:
    # the CAR-T (tisagenlecleucel) is what the patients had; the study is of their quality of life
    ctx = run(QUALITY_OF_LIFE_AFTER_CAR_T, "find_mentions")
    assert texts(ctx.found) == ["Tisagenlecleucel"]
    CLF.study_subject_gate(ctx)
    assert ctx.subject_study and ctx.found == []
    assert texts(ctx.background) == ["Tisagenlecleucel"]
    # nor does the summary's "CAR T-cell therapy with tisagenlecleucel" make it the product
    for name in STEPS[STEPS.index("summary_mentions") : STEPS.index("collect_cell_types") + 1]:
        getattr(CLF, name)(ctx)
    assert ctx.cell_types == set()
    assert not CLF.classify(QUALITY_OF_LIFE_AFTER_CAR_T).is_cell_therapy


def test_study_subject_gate_stays_open_when_an_intervention_gives_cells() -> None:
    # an imaging study of UC-MSC treatment whose intervention is "stem cell
    # transplantation": the cells are given in the study, so the title's MSC is the
    # product (not set aside, and not the generic fallback's other_stem)
    ctx = run(IMAGING_AFTER_UC_MSC, "study_subject_gate")
    assert not ctx.subject_study
    assert texts(ctx.found) == ["Mesenchymal Stem Cells"]
    assert CLF.classify(IMAGING_AFTER_UC_MSC).cell_type == ["msc"]


@pytest.mark.parametrize(
    ("t", "why"),
    [
        (MUSCLE_STEM_CELLS_IN_SEPSIS, "the dysfunction of patients' own cells, studied in samples"),
        (
            ORAL_MUCOSA_FOR_LSCD,
            "limbal stem cell deficiency is the disease, a tissue graft the treatment",
        ),
        (MSC_COUNTS_IN_MARROW_ASPIRATES, "a cell count is a laboratory measure of an aspirate"),
        (CELLS_FOR_XENOGRAFT_STUDIES, "cells collected for laboratory (xenograft) studies"),
        (ENDOTHELIAL_DYSFUNCTION_PROJECT, "the patients' own cells' dysfunction, observed"),
    ],
    ids=lambda v: v.trial_id if isinstance(v, TrialText) else "",
)
def test_cells_named_by_the_condition_are_not_the_product(t: TrialText, why: str) -> None:
    labels = CLF.classify(t)
    assert not labels.is_cell_therapy, why
    assert labels.cell_type == []


@pytest.mark.parametrize(
    "t",
    [PONATINIB_IN_GIST, SELUMETINIB_IN_NF1_GIST, URINE_MRNA_AFTER_KIDNEY_TRANSPLANT],
    ids=lambda t: t.trial_id,
)
def test_a_mesenchymal_tumour_or_transition_is_a_condition_not_cells(t: TrialText) -> None:
    # the code names (AZD6244, "Ponatinib 45") and "Urinary Cell" open the
    # summaries, where the tumour's tissue ("mesenchymal neoplasm") or a tissue
    # change ("epithelial-to-mesenchymal transition") is no MSC product
    ctx = run(t, "summary_mentions")
    assert ctx.found == []
    labels = CLF.classify(t)
    assert not labels.is_cell_therapy
    assert labels.cell_type == []


@pytest.mark.parametrize(
    "t", [SELINEXOR_AFTER_CAR_T, GLOFITAMAB_AROUND_ASCT], ids=lambda t: t.trial_id
)
def test_cells_named_in_a_background_clause_do_not_open_the_summaries(t: TrialText) -> None:
    # TAXONOMY.md "Which product counts": a drug given after a transplant or
    # CAR-T is not a cell-therapy trial; "Post ... Cell" in the title is no cue
    # that the product is cells, so the summary's cells are not read
    ctx = run(t, "summary_mentions")
    assert ctx.found == []
    assert not CLF.classify(t).is_cell_therapy


def test_a_code_name_in_a_setting_of_cells_names_a_drug() -> None:
    # the title's CAR-T cells are background ("Following ..."): they are the
    # setting, and "NKTR-255" the drug given in it, so its summary's description
    # of CAR-T cells is not read as the product (CODE_NAMED_CAR_T, whose
    # texts name no cells, still reads it)
    ctx = run(NKTR_255_AFTER_CAR_T, "study_subject_gate")
    assert texts(ctx.background) == ["CAR-T"]
    CLF.summary_mentions(ctx)
    assert ctx.found == []
    assert not CLF.classify(NKTR_255_AFTER_CAR_T).is_cell_therapy


def test_an_abbreviation_or_a_conjunct_of_a_background_mention_is_background() -> None:
    # "after chimeric antigen receptor T-cell therapy (CAR-T)": the abbreviation
    # names the same background cells; "undergoing autologous stem cell
    # transplantation or CAR-T cell therapy": the conjunct shares the cue
    for t, role, bg in (
        (BELANTAMAB_AFTER_CAR_T, SUMMARY, ["CAR-T-cell", "chimeric antigen receptor T", "CAR-T"]),
        (INFLUENZA_VACCINES, SUMMARY, ["autologous stem cell transplantation", "CAR-T cell"]),
        # the first mention's own abbreviation may stand between: "(BMT) or"
        (
            CANNABIS_WITHDRAWAL_AROUND_BMT_OR_CAR_T,
            TITLE,
            ["Bone Marrow Transplant", "Chimeric Antigen Receptor T", "CAR-T"],
        ),
    ):
        segs = [s for s in t.segments if s.role == role]
        found, background = CLF._cell_mentions(segs, _Masks(CLF.tax.exclusions))
        assert texts(found) == [], t.trial_id
        assert texts(background) == bg, t.trial_id
        assert not CLF.classify(t).is_cell_therapy


@pytest.mark.parametrize(
    "t", [BELANTAMAB_AFTER_CAR_T, COGNITION_AFTER_CAR_T], ids=lambda t: t.trial_id
)
def test_the_cell_word_of_a_background_mention_opens_no_summary(t: TrialText) -> None:
    # "Who Have Received Chimeric Antigen-Receptor T-Cell (CAR-T) Therapy": the
    # "Cell" of the background CAR-T cells is no generic cue that the product is
    # cells, so the summary (which names CAR-T cells given before) is not read
    ctx = run(t, "study_subject_gate")
    assert ctx.found == []
    assert ctx.background
    CLF.summary_mentions(ctx)
    assert ctx.found == []
    assert not CLF.classify(t).is_cell_therapy


def test_palliative_care_of_cell_therapy_recipients_is_a_study_subject() -> None:
    ctx = run(PALLIATIVE_CARE_IN_CELL_THERAPY, "study_subject_gate")
    assert ctx.subject_study
    assert not CLF.classify(PALLIATIVE_CARE_IN_CELL_THERAPY).is_cell_therapy


def test_summary_says_what_a_code_named_product_is() -> None:
    ctx = run(CODE_NAMED_CAR_T, "study_subject_gate")
    assert ctx.found == []  # "LY011" alone names no cell
    CLF.summary_mentions(ctx)
    assert [(m.seg.source, m.hit.text) for m in ctx.found] == [
        ("brief_summary", "chimeric antigen receptor T")
    ]
    CLF.collect_cell_types(ctx)
    assert ctx.cell_types == {"car_t"}


def test_generic_stem_cell_words_fall_back_to_other_stem() -> None:
    # "BOOST cells" (fetal MSC, not named so in the record): TAXONOMY.md other_stem
    ctx = run(BOOST_CELLS, "summary_mentions")
    assert ctx.found == []
    CLF.generic_mentions(ctx)
    assert texts(ctx.found) == ["Stem Cell Transplantation"]
    assert ctx.found[0].values["cell_type"] == ("other_stem",)


@pytest.mark.parametrize(
    ("t", "cue_source"),
    [(IN_VIVO_CAR_T_IN_SUMMARY, "brief_summary"), (IN_VIVO_CAR_T_IN_TITLE, "title")],
    ids=["summary", "title"],
)
def test_in_vivo_car_gives_no_cells(t: TrialText, cue_source: str) -> None:
    # "In vivo CAR ... is gene therapy, not cell therapy: is_cell_therapy = no"
    ctx = run(t, "generic_mentions")
    assert {v for m in ctx.found for v in m.values["cell_type"]} == {"car_t"}
    CLF.in_vivo_car(ctx)
    assert ctx.found == []
    cue = [e for e in ctx.evidence if e.field == "in_vivo_car"]
    assert [e.source_field for e in cue] == [cue_source]
    assert "in vivo" in cue[0].text.lower()
    assert not CLF.classify(t).is_cell_therapy


# ------------------------------------------------------------ indication


def test_indication_from_the_condition() -> None:
    # gold (dev.csv has the trial's pair as TAXONOMY.md's "GvHD" example): immune_mediated
    ctx = run(MSC_FOR_GVHD, "label_indication")
    assert (ctx.group, ctx.areas) == ("immune_mediated", ["gvhd_transplant"])
    assert [(e.field, e.source_field) for e in ctx.evidence] == [
        ("indication_group", "conditions[0]"),
        ("therapeutic_area", "conditions[0]"),
    ]


def test_conditions_naming_blood_and_solid_cancers_give_both_areas() -> None:
    ctx = run(ALLO_CAR_T_FOLLOW_UP, "label_indication")
    assert ctx.group == "oncology"
    assert ctx.areas == ["hematologic_malignancy", "solid_tumor"]


# ------------------------------------------------------------ one cell type per product


def test_a_bare_car_word_belongs_to_the_car_nk_product() -> None:
    # "CAR-NK is car_nk (not also nk)"; "CD19-CAR" names no cell (gold immune_dev: car_nk)
    ctx = run(CAR_NK_WITH_BARE_CAR, "label_indication")
    assert ctx.cell_types == {"car_t", "car_nk"}
    CLF.car_word_on_other_cells(ctx)
    assert ctx.cell_types == {"car_nk"}
    assert texts(ctx.background) == ["CD19-CAR"]


def test_a_catch_all_type_gives_way_to_the_specific_product() -> None:
    # "Adoptive Cellular Therapy With SARS-CoV-2 Specific T Cells" is one product
    ctx = run(SARS_COV_2_SPECIFIC_T, "car_word_on_other_cells")
    assert ctx.cell_types == {"other_immune", "virus_specific_t"}
    CLF.drop_catch_all_types(ctx)
    assert ctx.cell_types == {"virus_specific_t"}
    assert [s.source for s in ctx.catchall] == ["title"]  # its words still describe the product


def test_a_transplant_beside_msc_in_a_blood_disease_is_background() -> None:
    # MSC co-transplanted with a haplo HCT for sickle cell disease: the MSC is the product
    ctx = run(AUTOLOGOUS_MSC_WITH_HAPLO_HCT, "car_word_on_other_cells")
    assert ctx.cell_types == {"msc", "hsc"}
    CLF.drop_catch_all_types(ctx)
    assert ctx.cell_types == {"msc"}
    assert texts(ctx.background) == ["Haplo Hematopoietic Cell Transplantation"]
    assert ctx.catchall == []


# ------------------------------------------------------------ the product's fields


def test_msc_source_from_product_knowledge() -> None:
    # "Pneumostem is umbilical-cord-blood MSC" (TAXONOMY.md; gold dev: cord_blood, allogeneic)
    ctx = run(PNEUMOSTEM, "label_msc_source")
    assert ctx.msc_source == ["cord_blood"]
    CLF.label_origin(ctx)
    assert ctx.origin == "allogeneic"


def test_msc_source_from_source_words_and_not_without_msc() -> None:
    ctx = run(UC_MSC_AND_CONDITIONED_MEDIUM, "label_msc_source")
    assert ctx.msc_source == ["umbilical_cord"]  # gold dev: umbilical_cord
    ctx = run(CAR_NK_WITH_BARE_CAR, "label_msc_source")
    assert ctx.msc_source == []  # "only when cell_type includes msc"


@pytest.mark.parametrize(
    ("t", "origin", "why"),
    [
        (POSEIDON, "both", "Auto-hMSCs and Allo-hMSCs: two origins tested (gold dev: both)"),
        (
            CAR_T_AFTER_ASCT,
            "unspecified",
            "'autologous' is about the ASCT before the CAR-T (gold immune_dev: unspecified)",
        ),
        (
            ENGINEERED_AUTOLOGOUS_LYMPHOCYTES,
            "autologous",
            "stated on the catch-all name 'therapeutic autologous lymphocytes' (gold: autologous)",
        ),
        (CAR_NK_WITH_BARE_CAR, "allogeneic", "summary: 'derived from a healthy donor'"),
        (
            CORD_BLOOD_MONONUCLEAR,
            "allogeneic",
            "implied: cells from cord blood are allogeneic (gold dev: allogeneic)",
        ),
        (ALLO_CAR_T_AFTER_HSCT, "allogeneic", "'Allo-CAR-T': stated words win"),
    ],
    ids=lambda x: x.trial_id if isinstance(x, TrialText) else None,
)
def test_label_origin(t: TrialText, origin: str, why: str) -> None:
    ctx = run(t, "label_msc_source")
    n = len(ctx.evidence)
    CLF.label_origin(ctx)
    assert ctx.origin == origin, why
    new = ctx.evidence[n:]
    assert all(e.field == "origin" and e.value in (origin, "autologous", "allogeneic") for e in new)
    assert bool(new) == (origin != "unspecified")


def test_origin_stated_on_the_catch_all_name_of_the_product() -> None:
    ctx = run(ENGINEERED_AUTOLOGOUS_LYMPHOCYTES, "label_origin")
    assert [s.source for s in ctx.catchall] == ["interventions[10].name"]
    assert [(e.value, e.source_field, e.text) for e in ctx.evidence if e.field == "origin"] == [
        ("autologous", "interventions[10].name", "autologous")
    ]


def test_label_origin_summary_evidence_points_at_the_sentence() -> None:
    ctx = run(CAR_NK_WITH_BARE_CAR, "label_origin")
    (e,) = [e for e in ctx.evidence if e.field == "origin"]
    summary = CAR_NK_WITH_BARE_CAR.text_of("brief_summary")
    assert (e.source_field, summary[e.start : e.end]) == ("brief_summary", e.text)
    assert e.text == "healthy donor"


@pytest.mark.parametrize(
    ("t", "forms", "why"),
    [
        (
            MSC_EXOSOMES_INHALED,
            {"extracellular_vesicles"},
            "MSC-derived exosomes: made from cells, not cells (gold dev)",
        ),
        (
            UC_MSC_AND_CONDITIONED_MEDIUM,
            {"cells", "secretome"},
            "an MSC arm and a conditioned-medium arm (gold dev: cells;secretome)",
        ),
        (
            GD2_CAR_T_WITH_SWITCH,
            {"gene_modified"},
            "AP1903 activates an iCasp9 suicide switch: engineered beyond the CAR",
        ),
        (ALLO_CAR_T_AFTER_HSCT, {"cells"}, "a plain CAR is not enough for gene_modified"),
    ],
    ids=lambda x: x.trial_id if isinstance(x, TrialText) else None,
)
def test_label_product_form(t: TrialText, forms: set[str], why: str) -> None:
    ctx = run(t, "label_product_form")
    assert ctx.forms == forms, why


def test_engineering_edit_evidence() -> None:
    ctx = run(GD2_CAR_T_WITH_SWITCH, "label_product_form")
    edits = [(e.value, e.text) for e in ctx.evidence if e.field == "engineering"]
    assert ("edit:switch", "AP1903") in edits


def test_descriptors_targets_doses_routes_combinations() -> None:
    ctx = run(ALLO_CAR_T_AFTER_HSCT, "label_descriptors")
    assert ctx.targets == ["CD19"]
    ctx = run(MSC_DOSES, "label_descriptors")
    assert ctx.doses == [
        "2 x10^6 / kg",
        "1x10^6 / kg",
    ]  # "MSc (2 x10^6 / kg / time)", "(1x10^6 ..."
    ctx = run(MSC_EXOSOMES_INHALED, "label_descriptors")
    assert "inhaled" in ctx.route  # "Inhalation of ... Exosomes"
    ctx = run(RUXOLITINIB_WITH_MSC, "label_descriptors")
    assert "targeted_therapy" in ctx.combinations  # ruxolitinib, a JAK inhibitor
    assert ctx.targets == []  # targets only for CAR/TCR/γδ/macrophage products


def test_label_origin_reads_a_summary_line_without_final_punctuation() -> None:
    # the same record with its summary's sentences on separate lines and no
    # full stop (registry summaries are often lists): each line is a sentence
    summary = (
        CAR_NK_WITH_BARE_CAR.text_of("brief_summary").replace(
            "malignancies. JD010", "malignancies\nJD010"
        )
        + "\nPatients are followed for two years"
    )
    t = trial(
        "NCT05645601",
        *[
            (s.source, s.role, summary if s.source == "brief_summary" else s.text)
            for s in CAR_NK_WITH_BARE_CAR.segments
        ],
    )
    ctx = run(t, "label_origin")
    assert ctx.origin == "allogeneic"
    (e,) = [e for e in ctx.evidence if e.field == "origin"]
    assert (summary[e.start : e.end], e.text) == ("healthy donor", "healthy donor")


_FIELDS = st.tuples(st.text(max_size=8), st.text(max_size=8), st.text(max_size=20), st.booleans())


@given(_FIELDS, _FIELDS)
def test_a_segment_is_a_value_of_its_four_fields(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    """Segment compares, hashes and prints as the frozen dataclass it replaced:
    by its fields, in order (source, role, text, procedure)."""
    sa, sb = Segment(*a), Segment(*b)
    assert (sa == sb) == (a == b) and (sa != sb) == (a != b)
    assert hash(sa) == hash(a)
    assert (sa.source, sa.role, sa.text, sa.procedure) == a
    names = ("source", "role", "text", "procedure")
    assert (
        repr(sa)
        == "Segment(" + ", ".join(f"{n}={v!r}" for n, v in zip(names, a, strict=True)) + ")"
    )
    assert sa != a  # not a tuple
    assert Segment(*a[:3]).procedure is False
