#!/usr/bin/env python
"""Regenerate the numbered blocks of README.md from the code.

README.md marks every block of numbers with a pair of comments::

    <!-- numbers:funnel -->
    ...generated markdown, never edited by hand...
    <!-- /numbers -->

Each block name is a function registered below with ``@block("name")``: it
takes the :class:`Reference` (the reference run: every file of
``../shared/data`` ingested, classified and linked to the product catalog)
and returns markdown. To add a block, write such a function here and put the
two comments in README.md.

    scripts/readme_numbers.py            # rewrite README.md in place
    scripts/readme_numbers.py --check    # exit 1 (with a diff) if README.md is stale
    scripts/readme_numbers.py --db celltrials.duckdb   # reuse a reference store

``--db`` must be a store built from all of ``../shared/data`` by ``celltrials
run`` (ingested, classified, products linked); without it the reference run
is built in a temporary folder (about a minute). ``tests/test_readme_numbers.py``
runs ``--check``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
GOLD = SHARED / "gold"

MARKER = re.compile(
    r"(?P<open><!-- numbers:(?P<name>[A-Za-z0-9_-]+) -->)(?P<body>.*?)(?P<close><!-- /numbers -->)",
    re.S,
)


class Reference:
    """The reference run, computed once and shared by all blocks."""

    def __init__(self, db: Path | None = None, data: Path = DATA) -> None:
        self.data = data
        self._db = db
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @cached_property
    def store(self) -> Any:
        import celltrials

        if self._db is not None:
            return celltrials.open(self._db, read_only=True)
        from celltrials.ingest import ingest_paths
        from celltrials.labelling import classify_store
        from celltrials.products import link_products

        self._tmp = tempfile.TemporaryDirectory(prefix="readme-numbers-")
        store = celltrials.open(Path(self._tmp.name) / "reference.duckdb")
        report = ingest_paths(store, [self.data])
        if not report.clean:
            raise SystemExit(
                "the reference ingest reported findings: " + "; ".join(map(str, report.findings))
            )
        classify_store(store)
        link_products(store)
        return store

    def one(self, sql: str) -> Any:
        return self.store.con.execute(sql).fetchall()[0]

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()


Block = Callable[[Reference], str]
#: block name -> function returning its markdown (the one place blocks are registered)
BLOCKS: dict[str, Block] = {}


def block(name: str) -> Callable[[Block], Block]:
    def register(fn: Block) -> Block:
        if name in BLOCKS:
            raise ValueError(f"README block {name!r} registered twice")
        BLOCKS[name] = fn
        return fn

    return register


def _n(v: Any) -> str:
    return f"{int(v):,}"


# ---------------------------------------------------------------------------- blocks


@block("reference-run")
def reference_run(ref: Reference) -> str:
    files = ref.one("SELECT count(DISTINCT source) FROM ingests")[0]
    versions, current = ref.one("SELECT count(*), count(*) FILTER (WHERE is_current) FROM records")
    trials = ref.one("SELECT count(*) FROM trials")[0]
    merged, lo, hi = ref.one(
        "SELECT count(DISTINCT trial_id), min(n_records), max(n_records) FROM trial_records WHERE n_records > 1"
    )
    return (
        f"Reference run on `../shared/data` (all {_n(files)} files): {_n(versions)} record versions,\n"
        f"{_n(current)} current records, {_n(trials)} trials; {_n(merged)} trials merge {lo}–{hi} records"
    )


@block("catalog")
def catalog(ref: Reference) -> str:
    from celltrials.products import load_catalog

    cat = load_catalog()
    unverified = int((cat["verification"] == "unverified").sum())
    return (
        f"Catalog version {cat.attrs['version']}: {_n(len(cat))} approvals (rows) of "
        f"{_n(cat['product'].nunique())} product names, {_n(cat['substance'].nunique())} products "
        f"(active substances); {_n(unverified)} of {_n(len(cat))} rows are `unverified`."
    )


@block("accuracy")
def accuracy(ref: Reference) -> str:
    from celltrials.evaluate import accuracy_markdown
    from celltrials.labelling import evaluate_store_many

    golds = [GOLD / "dev.csv", GOLD / "immune_dev.csv"]
    many = evaluate_store_many(ref.store, golds)
    met = sum(c["met"] for c in many["targets"])
    return (
        "Accuracy per field (macro-F1 in brackets; n = rows scored) on each gold file of\n"
        "`../shared/gold` and on both together, all of `../shared/data` ingested:\n\n"
        + accuracy_markdown(many)
        + f"\n\n{met} of {len(many['targets'])} targets met on both files together."
    )


@block("third-party")
def third_party(ref: Reference) -> str:
    from celltrials.labelling import third_party_agreement

    tp = third_party_agreement(
        ref.store, DATA / "ctgov-v2-json" / "reconstructed" / "third_party_labels.csv"
    )
    o, t, iv = tp["origin"], tp["target"], tp["in_vivo"]
    return (
        f"Agreement with the third-party labels of the {_n(tp['rows'])} reconstructed CAR trials\n"
        "(`../shared/data/ctgov-v2-json/reconstructed/third_party_labels.csv`, a\n"
        "second opinion, not gold; `celltrials.labelling.third_party_agreement`):\n\n"
        f"* **origin**: {o['where_both_state']:.3f} where both name autologous or allogeneic "
        f"({_n(o['where_both_state_n'])} trials); {o['exact']:.3f} exact over the {_n(o['n'])} trials "
        "both call cell therapy.\n"
        f'* **in vivo CAR**: {iv["not_cell_therapy"]} of their {iv["n"]} "In vivo" trials are not cell therapy here.\n'
        f"* **target**: {t['overlap']:.3f} share a target and {t['exact']:.3f} name the same set, "
        f"over the {_n(t['n'])} trials where both name one."
    )


#: groups the README's funnel table shows: those with a catalog product or 100+ trials
FUNNEL_MIN_TRIALS = 100


@block("funnel")
def funnel(ref: Reference) -> str:
    from celltrials.analysis.funnel import funnel as funnel_of
    from celltrials.analysis.landscape import label

    fr = funnel_of(ref.store)
    fr = fr[(fr["catalog_products"] > 0) | (fr["registered"] >= FUNNEL_MIN_TRIALS)]
    fr = fr.sort_values(
        ["registered", "family", "msc_source"], ascending=[False, True, True], kind="stable"
    )
    lines = [
        "| cell type · MSC source | trials | phase 2 | phase 3 | approved products with trials | "
        "approved, no trial here | median years to approval (n) | approved before first trial |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    r: Any
    for r in fr.itertuples(index=False):
        group = label(r.family) + (f" · {label(r.msc_source)}" if r.msc_source else "")
        med = float(r.median_years_to_approval)
        years = f"{med:.1f} ({r.n_with_years})" if med == med else "–"
        lines.append(
            f"| {group} | {_n(r.registered)} | {_n(r.reached_phase2)} | {_n(r.reached_phase3)} | "
            f"{_n(r.approved_products)} | {_n(r.approved_no_trials)} | {years} | {_n(r.approved_before_first_trial)} |"
        )
    total = ref.one("SELECT count(DISTINCT trial_id) FROM product_links")[0]
    return "\n".join(lines) + (
        f"\n\n{_n(total)} trials of the store name an approved product "
        f"(`product_links`). Groups shown: those with a catalog product or at least "
        f"{FUNNEL_MIN_TRIALS} trials; all in the report's `tables/funnel.csv`."
    )


@block("coverage")
def coverage(ref: Reference) -> str:
    from celltrials.analysis import coverage as C
    from celltrials.analysis import landscape as L
    from celltrials.report.sections import year_coverage

    con = ref.store.con
    sel = L.select_trials(con, L.Filters())
    marks, sources = year_coverage(sel, L.data_date(con), C.source_windows(con))
    chart = "start_year_by_family"
    lines = C.describe(marks[marks["chart"] == chart], sources[sources["chart"] == chart], L.label)
    return "\n".join(f"* {line}." for line in lines)


@block("preset-recall")
def preset_recall(ref: Reference) -> str:
    from celltrials.models import ParsedRecord
    from celltrials.sources import parse_file, sniff
    from celltrials.sync import get_preset
    from celltrials.sync import preset_recall as recall

    preset = get_preset("cell-therapy")
    d = ref.data
    sets = [
        (
            'MSC classic CSV ("mesenchymal stem OR mesenchymal stromal")',
            [d / "ctgov-classic-csv" / "msc_mesenchymal_stem_or_stromal.csv"],
        ),
        (
            "CAR-T/NK/M trials (reconstructed API v2 objects)",
            sorted((d / "ctgov-v2-json" / "reconstructed").glob("car_cell_therapy*.json")),
        ),
        (
            "AML CAR-T full API v2 records (`data-extra`)",
            [d.parent / "data-extra" / "aml-cart-v2-json" / "raw_trials.json"],
        ),
        (
            "50 general 2023 studies (a check that it does not match everything)",
            [d / "ctgov-v2-json" / "ctg-studies-50-general.json"],
        ),
    ]
    lines = ["| set | trials hit | recall |", "|---|---|---|"]
    for name, paths in sets:
        recs = [r for p in paths for r in parse_file(p, sniff(p)) if isinstance(r, ParsedRecord)]
        if not recs:
            raise SystemExit(f"preset-recall: no records for {name!r} (looked at {paths})")
        res = recall(preset, recs)
        lines.append(
            f"| {name} | {_n(res['hits'])} / {_n(res['n'])} | {100 * res['recall']:.1f} % |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- driver


def render(text: str, ref: Reference, blocks: dict[str, Block] | None = None) -> str:
    """``text`` with every marked block regenerated. Raises SystemExit naming
    a block that is not registered."""
    blocks = BLOCKS if blocks is None else blocks
    unknown = sorted({m.group("name") for m in MARKER.finditer(text)} - set(blocks))
    if unknown:
        raise SystemExit(
            f"README names unknown number block(s) {unknown}; registered: {sorted(blocks)}"
        )
    cache: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in cache:
            cache[name] = blocks[name](ref).strip()
        return f"{m.group('open')}\n{cache[name]}\n{m.group('close')}"

    return MARKER.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--check", action="store_true", help="exit 1 with a diff if README.md is not up to date"
    )
    ap.add_argument(
        "--readme", type=Path, default=README, help="the README to update (default: README.md)"
    )
    ap.add_argument(
        "--db",
        type=Path,
        default=None,
        help="an existing reference store (see the module docstring)",
    )
    ap.add_argument(
        "--data", type=Path, default=DATA, help="the reference data (default: ../shared/data)"
    )
    ap.add_argument(
        "--only", action="append", default=[], help="regenerate only this block (repeatable)"
    )
    args = ap.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    blocks = BLOCKS
    if args.only:
        missing = sorted(set(args.only) - set(BLOCKS))
        if missing:
            raise SystemExit(f"no such block(s) {missing}; registered: {sorted(BLOCKS)}")
        blocks = {k: (v if k in args.only else _keep) for k, v in BLOCKS.items()}
    ref = Reference(args.db, args.data)
    try:
        new = render(text, ref, blocks) if args.only else render(text, ref)
    finally:
        ref.close()
    if args.only:  # blocks left alone keep their text
        new = _restore(text, new, set(BLOCKS) - set(args.only))
    if args.check:
        if new != text:
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    f"{args.readme} (committed)",
                    f"{args.readme} (from the code)",
                )
            )
            print(f"\n{args.readme} is stale: run scripts/readme_numbers.py", file=sys.stderr)
            return 1
        print(f"{args.readme}: {len(MARKER.findall(text))} number blocks up to date")
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
        print(f"{args.readme}: number blocks regenerated")
    else:
        print(f"{args.readme}: already up to date")
    return 0


def _keep(ref: Reference) -> str:
    return ""


def _restore(old: str, new: str, names: set[str]) -> str:
    bodies = {m.group("name"): m.group(0) for m in MARKER.finditer(old)}
    return MARKER.sub(
        lambda m: bodies[m.group("name")] if m.group("name") in names else m.group(0), new
    )


if __name__ == "__main__":
    sys.exit(main())
