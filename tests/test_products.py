"""The approved-product catalog, its validator and the alias matcher, on real data."""

from __future__ import annotations

import csv
import itertools
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from celltrials.errors import TaxonomyError
from celltrials.products import (
    COLUMNS,
    DEFAULT_CATALOG,
    ProductMatcher,
    check_catalog,
    check_file,
    load_catalog,
    load_meta,
    normalize,
    substances,
)

pytestmark = pytest.mark.unit

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
PROCHYMAL_CSV = DATA / "ctgov-classic-csv" / "msc_prochymal.csv"
MSC_CSV = DATA / "ctgov-classic-csv" / "msc_mesenchymal_stem_or_stromal.csv"
REFERENCE = SHARED / "reference" / "approved_cell_therapy_products.csv"
META = DEFAULT_CATALOG.with_name("products.meta.yaml")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def matcher() -> ProductMatcher:
    return ProductMatcher.from_catalog()


# ----------------------------------------------------------------------------- catalog


def test_shipped_catalog_is_valid_and_versioned() -> None:
    df = load_catalog()
    assert list(df.columns) == list(COLUMNS)
    assert check_catalog(df) == []
    assert check_file() == []
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", df.attrs["compiled"])
    assert df.attrs["version"]
    # every row keeps a source and a verification flag
    assert df["source_url"].str.match(r"^https?://").all()
    assert set(df["verification"]) == {"verified", "unverified"}


@pytest.mark.data
def test_catalog_keeps_every_reference_row() -> None:
    ref = read_rows(REFERENCE)
    df = load_catalog()
    assert len(df) == len(ref) == 120
    # same regulators and cell types row by row, and the same source URL except
    # where a row was re-sourced (its old URL is then cited in notes)
    for ref_row, (_, row) in zip(ref, df.iterrows(), strict=True):
        assert row["regulator"] == ref_row["regulator"]
        assert row["cell_type"] == ref_row["cell_type"]
        assert row["source_url"] == ref_row["source_url"] or "reference row" in row["notes"]


def test_spot_checked_facts() -> None:
    df = load_catalog().set_index(["product", "regulator"])
    assert df.loc[("Ryoncil", "FDA"), "approval_date"] == "2024-12-18"
    assert df.loc[("Alofisel", "EMA/European Commission"), "status"] == "withdrawn"
    ruibo = df.loc[("Ruibosheng", "NMPA")]
    assert (ruibo["approval_type"], ruibo["approval_date"], ruibo["msc_source"]) == (
        "conditional",
        "2025-01-02",
        "umbilical_cord",
    )
    # gene-modified HSC products carry the flag
    hsc_gm = df[df["notes"].str.startswith("Gene-modified HSC")]
    assert len(hsc_gm) >= 12 and (hsc_gm["gene_modified"] == "yes").all()
    # rows whose reference notes flag something unverified and that were not re-checked stay unverified
    assert df.loc[("Queencell", "MFDS"), "verification"] == "unverified"


def _taxonomy_values(field: str) -> set[str]:
    text = (SHARED / "TAXONOMY.md").read_text(encoding="utf-8")
    if field == "cell_type":
        section = text.split("### `cell_type` values", 1)[1].split("\n## ", 1)[0]
        return set(re.findall(r"^- `([a-z_]+)` —", section, flags=re.M))
    row = next(line for line in text.splitlines() if line.startswith(f"| `{field}` |"))
    return set(re.findall(r"`([a-z_]+)`", row.split("|")[2]))


@pytest.mark.data
@pytest.mark.parametrize("field", ["cell_type", "msc_source", "origin"])
def test_allowed_values_follow_taxonomy_md(field: str) -> None:
    expected = _taxonomy_values(field)
    assert len(expected) >= 4
    assert set(load_meta().allowed[field]) == expected


def _write_catalog(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "products.csv"
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    shutil.copy(META, tmp_path / "products.meta.yaml")
    return path


def _good_rows() -> list[dict[str, str]]:
    df = load_catalog()
    return [{str(k): str(v) for k, v in r.items()} for r in df.head(4).to_dict("records")]


def test_small_good_catalog_loads(tmp_path: Path) -> None:
    path = _write_catalog(tmp_path, _good_rows())
    assert len(load_catalog(path)) == 4


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("cell_type", "msc;mesenchymal", "not in the taxonomy"),
        ("cell_type", "msc;stem", "not in the taxonomy"),
        ("msc_source", "", "is empty for an MSC product"),
        ("msc_source", "wharton_jelly", "not one of"),
        ("origin", "donor", "not one of"),
        ("gene_modified", "maybe", "not one of"),
        ("approval_type", "accelerated", "not one of"),
        ("approval_date", "2024-13-01", "not a valid date"),
        ("approval_date", "2024-02-30", "not a valid date"),
        ("approval_date", "18/12/2024", "not a valid date"),
        ("approval_date", "2024", "not a valid date"),
        ("status", "marketed", "not one of"),
        ("source_url", "", "is empty"),
        ("source_url", "ftp://example.org/x", "not an http(s) URL"),
        ("source_url", "www.fda.gov/ryoncil", "not an http(s) URL"),
        ("aliases", "", "is empty"),
        ("aliases", " ; ", "no non-empty alias"),
        ("aliases", "Ryoncil;;Prochymal", "empty entry"),
        ("verification", "checked", "not one of"),
    ],
)
def test_broken_row_is_reported(tmp_path: Path, column: str, value: str, needle: str) -> None:
    rows = _good_rows()
    rows[2][column] = value  # row index 2 = CSV line 4 (Prochymal / Medsafe: an MSC row)
    path = _write_catalog(tmp_path, rows)
    findings = check_file(path)
    assert [(f.line, f.column) for f in findings] == [(4, column)], findings
    assert needle in findings[0].problem
    with pytest.raises(TaxonomyError) as err:
        load_catalog(path)
    assert str(path) in err.value.message and "line 4" in err.value.message


def test_msc_source_on_non_msc_row_and_duplicates(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[1]["cell_type"] = "car_t"  # keeps msc_source=bone_marrow -> finding
    rows[3] = dict(rows[0])  # duplicate Ryoncil x FDA
    findings = check_file(_write_catalog(tmp_path, rows))
    got = {(f.line, f.column) for f in findings}
    assert got == {(3, "msc_source"), (5, "regulator")}
    dup = next(f for f in findings if f.column == "regulator")
    assert "first on line 2" in dup.problem and dup.product == "Ryoncil"


def test_findings_are_collected_not_thrown(tmp_path: Path) -> None:
    rows = _good_rows()
    rows[0]["approval_date"] = "2024-99"
    rows[1]["source_url"] = "not a url"
    rows[2]["status"] = "gone"
    findings = check_catalog(pd.DataFrame(rows))
    assert [(f.line, f.column) for f in findings] == [
        (2, "approval_date"),
        (3, "source_url"),
        (4, "status"),
    ]
    with pytest.raises(TaxonomyError, match="3 problem"):
        load_catalog(_write_catalog(tmp_path, rows))


def test_missing_column_and_bad_meta(tmp_path: Path) -> None:
    df = pd.DataFrame(_good_rows()).drop(columns=["verification"])
    assert [(f.line, f.column) for f in check_catalog(df)] == [(None, "verification")]
    path = _write_catalog(tmp_path, _good_rows())
    meta = tmp_path / "products.meta.yaml"
    meta.write_text(
        meta.read_text(encoding="utf-8").replace('version: "', 'old_version: "'), encoding="utf-8"
    )
    with pytest.raises(TaxonomyError, match="version"):
        load_catalog(path)
    assert "version" in check_file(path)[0].problem


def test_substance_key_makes_one_product_of_its_approvals() -> None:
    rows = read_rows(DEFAULT_CATALOG)
    by_sub: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        assert r["substance"].strip(), r["product"]
        by_sub.setdefault(r["substance"], []).append(r)
    got = substances().set_index("substance")
    assert sorted(got.index) == sorted(by_sub)
    # remestemcel-L: Prochymal (Health Canada, Medsafe) and Ryoncil (FDA) are one product
    rem = got.loc["remestemcel-L"]
    assert set(rem["products"].split("; ")) == {"Prochymal", "Ryoncil"}
    assert set(rem["regulators"].split("; ")) == {"FDA", "Health Canada", "Medsafe"}
    assert rem["n_approvals"] == 3 and rem["first_approval"] == "2012-05-17"
    for sub, rs in by_sub.items():
        assert got.loc[sub, "n_approvals"] == len(rs)
        dates = sorted(r["approval_date"] for r in rs if r["approval_date"])
        assert got.loc[sub, "first_approval"] == (dates[0] if dates else "")
        # one cell type and MSC source per substance (its funnel group)
        assert len({(r["cell_type"], r["msc_source"]) for r in rs}) == 1, sub
    # one INN across brands and regulators
    assert got.loc["axicabtagene ciloleucel", "products"] == "Yescarta; Yikaida"
    assert got.loc["atidarsagene autotemcel", "products"] == "Libmeldy; Lenmeldy"
    assert len(got) < len({r["product"] for r in rows}) < len(rows)


def test_substance_rows_must_agree(tmp_path: Path) -> None:
    rows = _good_rows()  # Ryoncil/FDA, Prochymal/Health Canada, Prochymal/Medsafe, Temcell
    rows[2]["substance"] = "prochymal"  # the same product under another substance
    rows[3]["substance"] = "remestemcel-L"  # Temcell joined to remestemcel-L ...
    rows[3]["origin"] = "allogeneic"
    findings = check_file(_write_catalog(tmp_path, rows))
    assert [(f.line, f.column) for f in findings] == [(4, "substance")], findings
    assert "same product" in findings[0].problem
    rows = _good_rows()
    rows[1]["msc_source"] = "adipose"  # remestemcel-L in two funnel groups
    rows[3]["substance"] = ""
    findings = check_file(_write_catalog(tmp_path, rows))
    assert [(f.line, f.column) for f in findings] == [(5, "substance"), (3, "msc_source")], findings
    assert "same substance 'remestemcel-L'" in findings[1].problem


# ----------------------------------------------------------------------------- matching


def _mentions_prochymal(text: str) -> bool:
    """Independent reference: word tokens, 'prochymal' or 'remestemcel' + 'l'."""
    toks = re.findall(r"[a-z0-9]+", text.lower())
    pairs = set(itertools.pairwise(toks))
    return "prochymal" in toks or ("remestemcel", "l") in pairs


@pytest.mark.data
def test_finds_every_prochymal_trial(matcher: ProductMatcher) -> None:
    rows = read_rows(PROCHYMAL_CSV)
    assert len(rows) == 14
    expected = {
        r["NCT Number"]
        for r in rows
        if "prochymal" in (r["Title"] + r["Interventions"]).lower()
        or "remestemcel" in (r["Title"] + r["Interventions"]).lower()
    }
    found = {
        r["NCT Number"]
        for r in rows
        if any(
            link.product == "Prochymal"
            for link in matcher.match_trial(
                {"title": r["Title"], "interventions": r["Interventions"]}
            )
        )
    }
    assert found == expected
    assert len(found) == 14
    # both approved names of remestemcel-L are linked, each with its evidence
    links = matcher.match_trial(
        {"title": rows[0]["Title"], "interventions": rows[0]["Interventions"]}
    )
    assert {(lk.product, lk.field, lk.alias) for lk in links} == {
        ("Prochymal", "title", "Prochymal"),
        ("Ryoncil", "title", "Prochymal"),
        ("Prochymal", "interventions", "Prochymal"),
        ("Ryoncil", "interventions", "Prochymal"),
    }
    assert all("Prochymal™" in lk.snippet for lk in links)


@pytest.mark.data
def test_prochymal_in_the_big_msc_export(matcher: ProductMatcher) -> None:
    rows = read_rows(MSC_CSV)
    assert len(rows) == 1389
    expected = {
        r["NCT Number"]
        for r in rows
        if _mentions_prochymal(r["Title"] + " | " + r["Interventions"])
    }
    found = {
        r["NCT Number"]
        for r in rows
        if any(
            m.product == "Ryoncil"
            for m in matcher.find(r["Title"]) + matcher.find(r["Interventions"])
        )
    }
    assert found == expected
    assert len(found) >= 15


@pytest.mark.data
def test_every_match_is_a_whole_word_alias(matcher: ProductMatcher) -> None:
    rows = read_rows(MSC_CSV)
    n = 0
    for r in rows:
        for field in ("Title", "Interventions", "Sponsor/Collaborators", "Conditions"):
            text = r[field]
            for m in matcher.find(text):
                n += 1
                assert normalize(text[m.start : m.end]) == normalize(m.alias)
                assert m.start == 0 or not text[m.start - 1].isalnum()
                assert m.end == len(text) or not text[m.end].isalnum()
    assert n > 30


@pytest.mark.parametrize(
    "text",
    [
        "TemcellX",
        "Prochymalic acid",
        "preProchymal",
        "MPC-free culture",
        "compact bone",
        "Cartistemic",
        "xKymriah",
        "Polski Bank Komorek Macierzystych JSC (PBKM)",  # real sponsor: 'maci' inside a word
        "Formacion de hueso",
        "human mesenchymal stem cells",  # generic: never an alias
        "allogeneic bone marrow-derived mesenchymal stem cells",
        "HPC, Cord Blood",
        "Mesenchymal precursor cells (MPC) for back pain",
        "expanded adipose-derived stem cells (eASC)",
        "ALLO-ASC-EB-101",  # real secondary id of another sponsor's product
        "Journal JACC 2019",
        "tk",
    ],
)
def test_no_match_on_look_alikes_and_generic_text(matcher: ProductMatcher, text: str) -> None:
    assert matcher.find(text) == []


@pytest.mark.data
def test_real_titles_without_products_do_not_match(matcher: ProductMatcher) -> None:
    rows = read_rows(MSC_CSV)
    names = {normalize(a) for a in matcher.aliases}
    padded = [(r["Title"], f" {normalize(r['Title'])} ") for r in rows]  # (normalized once)
    plain = [t for t, p in padded if not any(f" {a} " in p for a in names)]
    assert len(plain) > 1300
    assert [t for t in plain if matcher.find(t)] == []


def _has_words(text: str, norm_alias: str) -> bool:
    return f" {norm_alias} " in f" {normalize(text)} "


@pytest.mark.parametrize(
    ("text", "product", "matched"),
    [
        ("Prochymal™ adult human MSC", "Prochymal", "Prochymal"),
        ("PROCHYMAL® (Human Adult Stem Cells)", "Ryoncil", "PROCHYMAL"),
        ("Drug: Remestemcel L", "Ryoncil", "Remestemcel L"),
        ("remestemcel-l infusion", "Ryoncil", "remestemcel-l"),
        ("remestemcel\u2010L (Unicode hyphen)", "Ryoncil", "remestemcel\u2010L"),
        ("Ryoncil (remestemcel-L-rknd)", "Ryoncil", "Ryoncil"),
        ("TEMCELL HS Inj.", "Temcell HS Inj.", "TEMCELL HS Inj"),
        ("a trial of tisa-cel (CTL019)", "Kymriah", "tisa-cel"),
        ("Biological: Stempeucel(R)", "Stempeucel", "Stempeucel"),
        ("艾米迈托赛注射液治疗aGVHD", "Ruibosheng", "艾米迈托赛注射液"),
        ("Amimestrocel injection", "Ruibosheng", "Amimestrocel injection"),
    ],
)
def test_variants_match(matcher: ProductMatcher, text: str, product: str, matched: str) -> None:
    hits = [m for m in matcher.find(text) if m.product == product]
    assert hits, matcher.find(text)
    assert text[hits[0].start : hits[0].end] == matched


def test_generic_and_ambiguous_aliases_are_dropped(matcher: ProductMatcher) -> None:
    dropped = {(p, a): why for p, a, why in matcher.dropped}
    assert dropped[
        ("Temcell HS Inj.", "human (allogeneic) bone marrow-derived mesenchymal stem cells")
    ] == ("only generic words")
    assert dropped[("Zalmoxis", "TK")].startswith("shorter than")
    assert dropped[("Zynteglo", "LentiGlobin")] == "in the stop-list"
    assert all(len(a.replace(" ", "")) >= 2 for a in matcher.aliases)
    assert "mpc" not in matcher.aliases
    # every usable alias lives in one compiled pattern
    assert isinstance(matcher.pattern, re.Pattern)
    assert len(matcher.aliases) > 200


_MATCHER = ProductMatcher.from_catalog()
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.,;:()/™®é"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=_LETTERS, max_size=200))
def test_random_text_without_alias_has_no_match(text: str) -> None:
    m = _MATCHER
    assume(not any(_has_words(text, a) for a in m.aliases))
    assert m.find(text) == []


@settings(max_examples=200)
@given(
    st.text(alphabet=_LETTERS, max_size=40),
    st.sampled_from(sorted(_MATCHER.aliases)),
    st.text(alphabet=_LETTERS, max_size=40),
    st.sampled_from([" ", "(", ": ", "|", "/"]),
)
def test_alias_between_separators_is_found(before: str, alias: str, after: str, sep: str) -> None:
    text = before + sep + alias + sep + after
    start = len(before) + len(sep)
    hits = [mt for mt in _MATCHER.find(text) if mt.start == start]
    assert hits
    end = max(h.end for h in hits)
    assert end >= start + len(alias)  # a longer alias may continue into `after`
    if end == start + len(alias):
        assert {h.product for h in hits} == {p for p, _ in _MATCHER.aliases[alias]}


# ----------------------------------------------------------------------------- store + CLI


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import celltrials
    from celltrials.ingest import ingest_paths

    path = tmp_path_factory.mktemp("store") / "products.duckdb"
    store = celltrials.open(str(path))
    ingest_paths(store, [PROCHYMAL_CSV, MSC_CSV])
    store.close()
    return path


@pytest.mark.data
def test_link_products_writes_evidence(store_path: Path) -> None:
    import celltrials
    from celltrials.products import link_products, stored_links

    with celltrials.open(str(store_path)) as store:
        assert store.schema_version() >= 4
        links = link_products(store)
        again = stored_links(store)
    assert len(again) == len(links) > 0
    assert set(again.columns) >= {"trial_id", "product", "regulators", "field", "alias", "snippet"}
    rows = read_rows(PROCHYMAL_CSV) + read_rows(MSC_CSV)
    expected = {
        r["NCT Number"]
        for r in rows
        if _mentions_prochymal(r["Title"] + " | " + r["Interventions"])
    }
    got = set(links.loc[links["product"] == "Ryoncil", "trial_id"])
    assert expected <= got  # the store also searches official titles and other names
    for rec in links.to_dict("records"):
        assert normalize(str(rec["alias"])) in normalize(str(rec["snippet"]))
    assert links.loc[links["product"] == "Ryoncil", "regulators"].eq("FDA").all()


@pytest.mark.data
def test_cli_products_json_equals_library(store_path: Path) -> None:
    import json

    from click.testing import CliRunner

    import celltrials
    from celltrials.cli import cli
    from celltrials.products import json_records, product_detail, products_table

    runner = CliRunner()
    res = runner.invoke(cli, ["--db", str(store_path), "products", "--json"])
    assert res.exit_code == 0, res.output
    with celltrials.open(str(store_path)) as store:
        lib = json_records(products_table(store))
        detail = product_detail(store, "Prochymal™")
    assert json.loads(res.output) == lib
    counts = {r["product"]: r["n_trials"] for r in lib}
    assert counts["Ryoncil"] == counts["Prochymal"] >= 15 and counts["Cartistem"] >= 1

    res = runner.invoke(cli, ["--db", str(store_path), "products", "show", "Prochymal™", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == detail
    assert detail["product"] == "Prochymal" and len(detail["trials"]) == counts["Prochymal"]
    assert sum(detail["by_phase"].values()) == len(detail["trials"])

    res = runner.invoke(cli, ["--db", str(store_path), "products", "show", "Cx601"])
    assert res.exit_code == 0 and res.output.startswith("Alofisel")
    res = runner.invoke(cli, ["--db", str(store_path), "products", "show", "NoSuchCell"])
    assert res.exit_code != 0


def test_cli_products_check(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from celltrials.cli import cli

    runner = CliRunner()
    ok = runner.invoke(cli, ["products", "--check"])
    assert ok.exit_code == 0 and "0 finding" in ok.output
    rows = _good_rows()
    rows[1]["approval_date"] = "2012-5-17"
    bad = runner.invoke(
        cli, ["products", "--check", "--catalog", str(_write_catalog(tmp_path, rows))]
    )
    assert bad.exit_code == 1
    assert "line 3 (Prochymal) [approval_date]" in bad.output
