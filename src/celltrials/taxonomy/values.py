"""The label vocabulary of TAXONOMY.md: every field's allowed values.

The schema both the taxonomy YAML (:mod:`celltrials.taxonomy.loader`) and the
code-name list (:mod:`celltrials.taxonomy.code_names`) are checked against; it
sits below both so that each imports it at module level.
"""

from __future__ import annotations

__all__ = ["TAXONOMY_VALUES"]

#: The label vocabulary of TAXONOMY.md (the schema; synonyms live in YAML).
TAXONOMY_VALUES: dict[str, tuple[str, ...]] = {
    "is_cell_therapy": ("yes", "no"),
    "cell_type": (
        "car_t",
        "car_nk",
        "tcr_t",
        "til",
        "nk",
        "cik",
        "dc",
        "treg",
        "virus_specific_t",
        "gamma_delta_t",
        "macrophage",
        "other_immune",
        "msc",
        "hsc",
        "ipsc_derived",
        "esc_derived",
        "mononuclear_cells",
        "neural_stem",
        "other_stem",
        "somatic_other",
    ),
    "msc_source": (
        "umbilical_cord",
        "bone_marrow",
        "adipose",
        "placenta",
        "amnion",
        "dental_pulp",
        "endometrium_menstrual",
        "cord_blood",
        "other",
        "unspecified",
    ),
    "origin": ("autologous", "allogeneic", "both", "unspecified"),
    "product_form": ("cells", "extracellular_vesicles", "secretome", "gene_modified", "composite"),
    "indication_group": ("oncology", "degenerative", "immune_mediated", "other"),
    "therapeutic_area": (
        "hematologic_malignancy",
        "solid_tumor",
        "musculoskeletal",
        "neurological",
        "cardiovascular",
        "respiratory",
        "hepatic",
        "renal",
        "metabolic_endocrine",
        "autoimmune_inflammatory",
        "gvhd_transplant",
        "skin_wound",
        "ophthalmic",
        "reproductive",
        "infectious",
        "hematologic_nonmalignant",
        "other",
    ),
}
