"""Classifier round 2 (issue 10): the error classes of immune-cell trials, each on
real records of ../shared/data, with the labels TAXONOMY.md prescribes (the
expected values are those of ../shared/gold/immune_dev.csv where a record is in
it, read from that file, never from the classifier's output)."""

from __future__ import annotations

import copy
import csv
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import celltrials
from celltrials.classify import (
    TrialText,
    classify,
)
from celltrials.cli import cli
from celltrials.errors import TaxonomyError
from celltrials.evaluate import evaluate, evaluate_many
from celltrials.labelling import evaluate_store_many, unknown_products
from celltrials.models import ParsedRecord
from celltrials.sources import parse_file
from celltrials.taxonomy.code_names import COLUMNS, load_code_names, name_pattern
from celltrials.taxonomy.loader import DEFAULT_PATH, build_taxonomy, default_taxonomy
from tests.conftest import CAR2_JSON, CAR_JSON, GOLD, MSC_CSV
from tests.conftest_report import classified_store_path

CODE_NAMES = DEFAULT_PATH.with_name("code_names.csv")


@lru_cache(maxsize=1)
def _records() -> dict[str, ParsedRecord]:
    out: dict[str, ParsedRecord] = {}
    for path in (CAR_JSON, CAR2_JSON, MSC_CSV):
        for item in parse_file(path):
            if isinstance(item, ParsedRecord):
                out.setdefault(item.record_id, item)
    return out


@lru_cache(maxsize=1)
def _gold() -> dict[str, dict[str, str]]:
    with (GOLD / "immune_dev.csv").open(encoding="utf-8", newline="") as fh:
        return {r["registry_id"]: r for r in csv.DictReader(fh)}


def _labels(rid: str) -> dict[str, str]:
    return classify(TrialText.from_record(_records()[rid])).to_row()


def _assert_gold(rid: str, *fields: str) -> None:
    row, gold = _labels(rid), _gold()[rid]
    for f in fields:
        assert row[f] == gold[f], (rid, f, row[f], gold[f], gold["note"])


# ------------------------------------------------------------------ CAR on another cell


@pytest.mark.parametrize("rid", ["NCT06816823", "NCT07551349", "NCT07500220", "NCT07502287"])
def test_car_nk_is_not_also_nk(rid: str) -> None:
    # "CAR-NK Cells (CL-NK-001)" with "NK" alone elsewhere in the record
    _assert_gold(rid, "is_cell_therapy", "cell_type")
    assert _labels(rid)["cell_type"] == "car_nk"


@pytest.mark.parametrize(
    ("rid", "what"),
    [
        ("NCT01109095", "HER.CAR CMV-specific CTLs: CAR on virus-specific T cells"),
        ("NCT00889954", "TGFBeta resistant HER2/EBV-CTLs: CAR on EBV-specific T cells"),
        ("NCT05302037", "NKG2DL-targeting CAR gamma-delta T cells"),
        ("NCT07167537", "OL-CD19-GDT: CD19-directed gamma-delta T cells"),
        ("NCT03294954", "GD2-CAR NKT cells expressing IL-15"),
        ("NCT05631912", "CD19-STAR-T (TCR-based CAR)"),
        ("NCT02650414", "CD22 redirected autologous T cells"),
        ("NCT05432635", "anti-CD19-CAR CMV-specific T lymphocytes"),
    ],
)
def test_car_on_another_t_cell_is_car_t(rid: str, what: str) -> None:
    _assert_gold(rid, "is_cell_therapy", "cell_type")
    assert _labels(rid)["cell_type"] == "car_t", what


@pytest.mark.parametrize(
    ("rid", "expected", "what"),
    [
        ("NCT05645601", ["car_nk"], "'CAR-NK Targeted CD19' with a bare 'CD19-CAR' intervention"),
        (
            "NCT04796688",
            ["car_nk"],
            "universal chimeric antigen receptor-modified AT19 cells; intervention 'CAR-NK'",
        ),
        (
            "NCT05922930",
            ["car_nk"],
            "TROP2 CAR engineered IL15-transduced cord blood-derived NK cells",
        ),
        ("NCT06254807", ["macrophage"], "CAR-monocytes (CT-0525)"),
        ("NCT01430390", ["car_t"], "EBV-CTLs genetically targeted to the CD19 antigen"),
        (
            "NCT02414269",
            ["car_t"],
            "autologous T cells genetically engineered to target mesothelin",
        ),
        ("NCT05487651", ["car_t"], "allogeneic NK T-cells expressing a CD19-specific CAR"),
        ("NCT05976906", ["car_t"], "chimeric natural killer receptor modified T cells"),
        ("NCT07095075", ["car_nk"], "LUCAR-DKS1 NK cells"),
        (
            "NCT04264078",
            ["car_t"],
            "U-CAR-T for T/NK cell malignancies (the disease is not a product)",
        ),
    ],
)
def test_receptor_placed_on_its_cell(rid: str, expected: list[str], what: str) -> None:
    assert classify(TrialText.from_record(_records()[rid])).cell_type == expected, what


def test_car_dc_is_dc_and_car_treg_is_car_t_and_treg() -> None:
    _assert_gold("NCT05631886", "cell_type", "product_form")  # TP53-EphA-2-CAR-DC vaccine
    assert _labels("NCT05631886")["cell_type"] == "dc"
    _assert_gold("NCT05993611", "cell_type")  # CD6-CAR Tregs
    assert _labels("NCT05993611")["cell_type"] == "car_t;treg"


def test_nkg2d_car_t_code_names_are_car_t_not_nk() -> None:
    # NKR-2 (autologous NKG2D-CAR T) and CYAD-101 (allogeneic, with a TCR-inhibitory molecule)
    nkr2 = classify(
        TrialText.from_record(_records()["NCT03370198"])
    )  # "Hepatic ... Administrations of NKR-2"
    assert nkr2.cell_type == ["car_t"] and "NKG2D" in nkr2.targets
    cyad = classify(
        TrialText.from_record(_records()["NCT04991948"])
    )  # "Pembrolizumab ... After CYAD-101"
    assert (
        cyad.cell_type == ["car_t"]
        and cyad.origin == "allogeneic"
        and cyad.product_form == ["gene_modified"]
    )


# ------------------------------------------------------------------ code names


@pytest.mark.parametrize(
    "rid", ["NCT05379647", "NCT05665075", "NCT06958939", "NCT04524962", "NCT05507827"]
)
def test_products_named_only_by_a_code(rid: str) -> None:
    # QN-019a / QN-023a (CAR-NK), S103 (BCMA CAR-T, title code read from the summary),
    # Descartes-30 (mRNA-engineered allogeneic MSC), Orca-T (Treg + CD34+ HSPC graft)
    _assert_gold(rid, "is_cell_therapy", "cell_type", "origin", "product_form")


def test_code_name_list_is_cited_and_validates() -> None:
    with CODE_NAMES.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 150
    assert all(r["source_url"].startswith(("https://", "http://")) for r in rows)
    assert {r["verified"] for r in rows} == {"yes", "no"}
    loaded = load_code_names(CODE_NAMES, {e.value for e in default_taxonomy().targets.entries})
    assert [c.code_name for c in loaded] == [r["code_name"] for r in rows]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("cell_type", "car_x", "unknown cell_type 'car_x'"),
        ("source_url", "", "missing source_url"),
        ("source_url", "pipeline page", "not an http(s) URL"),
        ("verified", "maybe", "verified must be yes or no"),
        ("code_name", "T4", "too short"),
        ("targets", "CD999", "unknown target 'CD999'"),
        ("msc_source", "adipose", "msc_source given for a product that is not msc"),
    ],
)
def test_code_name_list_rejects_bad_rows(
    tmp_path: Path, column: str, value: str, message: str
) -> None:
    with CODE_NAMES.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    bad = dict(rows[0])
    bad[column] = value
    out = tmp_path / "code_names.csv"
    with out.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows([bad, *rows[1:3]])
    (tmp_path / "code_names.meta.yaml").write_text(
        CODE_NAMES.with_name("code_names.meta.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with pytest.raises(TaxonomyError) as exc:
        load_code_names(
            out, {"CD19", "BCMA"} | {t for r in rows[:3] for t in r["targets"].split(";") if t}
        )
    assert message in str(exc.value) and "line 2" in str(exc.value) and str(out) in str(exc.value)


def test_duplicate_code_names_are_rejected(tmp_path: Path) -> None:
    with CODE_NAMES.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    dup = dict(rows[1], code_name=rows[0]["code_name"].replace("-", " "))
    out = tmp_path / "code_names.csv"
    with out.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows([rows[0], dup])
    (tmp_path / "code_names.meta.yaml").write_text("version: '2026.11.1'\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="already used on line 2"):
        load_code_names(out)


def test_code_name_spellings_match() -> None:
    import re

    rx = re.compile(name_pattern("QN-019a"), re.I)
    for s in ("QN-019a", "QN019a", "qn 019A"):
        assert rx.fullmatch(s), s
    assert not rx.fullmatch("QN-0191")


# ------------------------------------------------------------------ engineering beyond the receptor


@pytest.mark.parametrize(
    ("rid", "what"),
    [
        (
            "NCT07211737",
            "i15.NKG2D.zeta NK cells (IL-15 armour) and C7R.GD2.CARTs (constitutive IL-7R)",
        ),
        ("NCT00889954", "TGF-beta resistant (dominant-negative receptor)"),
        ("NCT03294954", "interleukin-15 expressing NKT cells"),
        ("NCT05631912", "TRAC locus-inserted STAR-T"),
        ("NCT07031011", "PD-1-M1-NK cells"),
    ],
)
def test_extra_edits_make_gene_modified(rid: str, what: str) -> None:
    _assert_gold(rid, "cell_type", "product_form")
    assert _labels(rid)["product_form"] == "gene_modified", what


def test_plain_car_is_not_gene_modified() -> None:
    _assert_gold("NCT04660929", "cell_type", "product_form")  # CT-0508 HER2 CAR-macrophages
    assert _labels("NCT04660929")["product_form"] == "cells"


def test_suicide_switch_makes_gene_modified() -> None:
    # NCT02107963: GD2 CAR-T given with AP1903 (activates the iCasp9 suicide switch)
    lab = classify(TrialText.from_record(_records()["NCT02107963"]))
    assert lab.cell_type == ["car_t"] and lab.product_form == ["gene_modified"]
    assert any(e.field == "engineering" and e.value == "edit:switch" for e in lab.evidence)


# ------------------------------------------------------------------ not the investigational product


@pytest.mark.parametrize(
    ("rid", "what"),
    [
        ("NCT07620314", "KSVCBD: in vivo CAR-T, vector injected"),
        ("NCT07620275", "KSVCBD in myeloma"),
        ("NCT07592754", "KSVCBD in NMOSD"),
        ("NCT07774572", "in vivo circular-RNA CAR-T"),
        ("NCT07646873", "PET-enabled dual-energy CT imaging before/after CAR-T"),
        ("NCT07724535", "18F PET tracer for immunotherapy monitoring"),
        ("NCT07679958", "virtual-reality exercise for HSCT/CAR-T recipients"),
        ("NCT05626322", "maplirpacept / tafasitamab / lenalidomide"),
        ("NCT05097443", "orelabrutinib + R-chemo"),
    ],
)
def test_gold_negatives_are_not_cell_therapy(rid: str, what: str) -> None:
    assert _gold()[rid]["is_cell_therapy"] == "no"
    _assert_gold(rid, "is_cell_therapy", "cell_type")


@pytest.mark.parametrize(
    ("rid", "what"),
    [
        ("NCT07322159", "'IASO206 Injection (In Vivo CAR-T)' in the summary"),
        ("NCT07413341", "lipid nanoparticles encapsulating circular RNA encoding the CD19 CAR"),
        ("NCT07586709", "title: In Vivo BCMA/GPRC5D Tandem Dual CAR-T Therapy"),
        ("NCT06539338", "INT2104 'is a gene therapy delivering a transgene for a CAR'"),
        ("NCT05176275", "title: PET / CT imaging in patients treated with CD19 CAR-T cells"),
    ],
)
def test_in_vivo_car_and_cells_as_study_subject(rid: str, what: str) -> None:
    lab = classify(TrialText.from_record(_records()[rid]))
    assert not lab.is_cell_therapy, (what, lab.cell_type)


@pytest.mark.parametrize(
    ("rid", "what"),
    [
        (
            "NCT05665725",
            "Siltuximab for the Prevention of CAR T Cell Related Cytokine Release Syndrome",
        ),
        ("NCT03954106", "Defibrotide in the Prevention of CAR-T-cell-associated Neurotoxicity"),
        ("NCT04975555", "Siltuximab in Treatment of CRS and ICANS Related to CAR-T Cell Therapy"),
        (
            "NCT05936229",
            "Interferon-Beta-1a to Prevent Toxicities After CD19-Directed CAR T-Cell Therapy",
        ),
        (
            "NCT07616271",
            "Diammonium Glycyrrhizinate in Attenuating Toxicity ... of CAR-T Cell Therapy",
        ),
        ("NCT07763210", "Lazarus: IT Therapy for ICANS"),
    ],
)
def test_toxicity_management_of_car_t_recipients_is_not_cell_therapy(rid: str, what: str) -> None:
    # TAXONOMY.md "Which product counts": the drug is the investigational product;
    # the CAR-T cells the patients get as standard care are background
    rec = _records()[rid]
    # no intervention gives cells ("Echocardiography" and "Bone Marrow Aspiration" do not)
    assert not any(re.search(r"(?i)\bCAR\b|\bcells?\b|leucel", i.name) for i in rec.interventions)
    lab = classify(TrialText.from_record(rec))
    assert not lab.is_cell_therapy, (what, lab.cell_type)


def test_toxicity_trial_that_lists_the_car_t_product_keeps_it() -> None:
    # NCT04150913 (anakinra for CAR-T neurotoxicity) lists axicabtagene ciloleucel
    # among its interventions: the study-subject gate applies only when no
    # intervention or arm names cells, so the named product still counts
    rec = _records()["NCT04150913"]
    assert any(i.name == "Axicabtagene Ciloleucel" for i in rec.interventions)
    assert classify(TrialText.from_record(rec)).cell_type == ["car_t"]


def test_drug_after_autologous_transplant_is_not_hsc() -> None:
    # NCT05827016 (in the MSC export? no: CAR export) "Iberdomide Maintenance ... Following Autologous Stem Cell Transplant"
    recs = _records()
    rid = "NCT05827016"
    if rid not in recs:  # the record is in ctg-studies-50-general.json
        from tests.conftest import GENERAL_JSON

        recs = {r.record_id: r for r in parse_file(GENERAL_JSON) if isinstance(r, ParsedRecord)}
    assert not classify(TrialText.from_record(recs[rid])).is_cell_therapy


def test_autologous_word_about_background_transplant_is_not_the_car_t_origin() -> None:
    # "autologous hematopoietic stem cell transplantation (ASCT) followed by CAR-T therapy"
    _assert_gold("NCT07034755", "cell_type", "origin")


def test_origin_stated_on_a_catch_all_name_of_the_product() -> None:
    # NCT00621452: title "Genetically Engineered Lymphocytes", intervention "therapeutic autologous lymphocytes"
    _assert_gold("NCT00621452", "origin")


def test_autoimmune_indications_take_the_organ_system() -> None:
    for rid in ("NCT07224373", "NCT06958939", "NCT05207995", "NCT07592754"):  # MS, MG, T1D, NMOSD
        _assert_gold(rid, "indication_group", "therapeutic_area")


# ------------------------------------------------------------------ taxonomy validation of the new sections


def _raw() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r["engineering"]["cell_types"].append(
                {"receptor": "car", "base": "b_cell", "cell_type": "car_t"}
            ),
            "unknown base cell 'b_cell'",
        ),
        (
            lambda r: r["engineering"]["cell_types"].append(
                {"receptor": "bite", "base": "t", "cell_type": "car_t"}
            ),
            "unknown receptor 'bite'",
        ),
        (
            lambda r: r["engineering"]["cell_types"].__setitem__(
                0, {"receptor": "car", "base": "t", "cell_type": "car_b"}
            ),
            "unknown cell_type value 'car_b'",
        ),
        (lambda r: r["engineering"].__setitem__("window", 0), "engineering.window"),
        (
            lambda r: r["engineering"]["edits"][0].__setitem__("colour", "red"),
            "unknown key(s) colour",
        ),
        (
            lambda r: r["in_vivo_car"].__setitem__("cell_types", ["car_q"]),
            "unknown cell_type value 'car_q'",
        ),
        (lambda r: r.__setitem__("study_subject_cues", ["(unclosed"]), "does not compile"),
    ],
)
def test_new_sections_are_validated(mutate: Any, message: str) -> None:
    raw = copy.deepcopy(_raw())
    mutate(raw)
    with pytest.raises(TaxonomyError) as exc:
        build_taxonomy(raw, source=str(DEFAULT_PATH))
    assert message in str(exc.value)


def test_engineering_map_is_data() -> None:
    # a curator maps CAR on NK cells elsewhere without touching Python
    raw = copy.deepcopy(_raw())
    for m in raw["engineering"]["cell_types"]:
        if (m["receptor"], m["base"]) == ("car", "virus_specific_t"):
            m["cell_type"] = ["car_t", "virus_specific_t"]
    tax = build_taxonomy(raw, source=str(DEFAULT_PATH))
    lab = classify(TrialText.from_record(_records()["NCT01109095"]), taxonomy=tax)
    assert lab.cell_type == ["car_t", "virus_specific_t"]


# ------------------------------------------------------------------ evaluation on both gold files, CLI


def _gold_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def round2_db(full_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full store classified by classify_store (built once per run)."""
    return classified_store_path(tmp_path_factory, full_store_path)


def test_evaluate_many_equals_evaluate_on_the_concatenated_file(tmp_path: Path) -> None:
    golds = [GOLD / "dev.csv", GOLD / "immune_dev.csv"]
    rows = [row for g in golds for row in _gold_rows(g)]
    both = tmp_path / "both.csv"
    with both.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    labels = [{k: v for k, v in r.items() if k != "note"} for r in rows]
    many = evaluate_many(labels, golds)
    assert many["combined"]["accuracy"] == evaluate(labels, both)["accuracy"]
    assert all(c["value"] == 1.0 for c in many["targets"])


def test_cli_several_gold_files_and_unknown_products_json_equal_library(round2_db: Path) -> None:
    runner = CliRunner()
    args = [
        "--db",
        str(round2_db),
        "evaluate",
        "--gold",
        str(GOLD / "dev.csv"),
        "--gold",
        str(GOLD / "immune_dev.csv"),
    ]
    res = runner.invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    with celltrials.open(round2_db, read_only=True) as store:
        lib = evaluate_store_many(store, [GOLD / "dev.csv", GOLD / "immune_dev.csv"])
        unknown = unknown_products(store)
    assert json.loads(res.output) == json.loads(json.dumps(lib, default=str))
    res = runner.invoke(cli, args)
    assert res.exit_code == 0 and "Quality targets" in res.output and "immune_dev.csv" in res.output
    res = runner.invoke(cli, ["--db", str(round2_db), "classify", "--unknown-products", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == unknown
    names = {r["name"].lower() for r in unknown}
    # a listed name matches no code name; known code names are never listed
    assert "qn-019a" not in names and "nkr-2 cells" not in names
    assert all(r["trials"] >= 1 and r["example_ids"] for r in unknown)


def test_covid_indication_conventions(round2_db: Path) -> None:
    """TAXONOMY.md: lung fibrosis left after COVID-19 is degenerative + respiratory; a
    study of its psychological/social effects is other + other; a product calming
    the host response is immune_mediated + respiratory (the last two read from dev.csv)."""
    dev = {r["registry_id"]: r for r in _gold_rows(GOLD / "dev.csv")}
    with celltrials.open(round2_db, read_only=True) as store:

        def ind(rid: str) -> tuple[str, str]:
            row = store.con.execute(
                "SELECT indication_group, therapeutic_area FROM labels WHERE trial_id = ?",
                [store.resolve(rid)],
            ).fetchone()
            assert row is not None, rid
            return row[0], ";".join(row[1])  # therapeutic_area: a list

        # "human umbilical cord mesenchymal stem cells in the treatment of ... (COVID-19) induced pulmonary fibrosis"
        assert ind("ChiCTR2000031430") == ("degenerative", "respiratory")
        for rid in (
            "NCT04331106",
            "ChiCTR2000029580",
        ):  # survey; MSC + ruxolitinib for COVID-19 pneumonia
            assert ind(rid) == (dev[rid]["indication_group"], dev[rid]["therapeutic_area"]), rid
