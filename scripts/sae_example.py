"""The README's worked example: pooled risk of serious adverse events, MSC arms vs control.

    python scripts/sae_example.py [../shared/data-extra/ctgov-v1-studyfields] [--out DIR] [--write-readme]

Ingests the API v1 MSC archive into a fresh store, classifies it, runs
``celltrials meta --from-store --outcome "serious adverse events"`` with
Mantel–Haenszel and Peto odds ratios over the trials labelled MSC, and prints
the Markdown that the README shows (numbers, trials and arms used);
``--write-readme`` puts it between the README's ``<!-- sae-example … -->``
markers. Nothing in the README's example is typed by hand.
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import celltrials
from celltrials.analysis.landscape import make_filters
from celltrials.analysis.meta_store import meta_from_store
from celltrials.ingest import ingest_paths
from celltrials.labelling import classify_store

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / ".." / "shared" / "data-extra" / "ctgov-v1-studyfields"


def run(archive: Path, out: Path) -> dict[str, Any]:
    db = out / "msc_v1.duckdb"
    if db.exists():
        db.unlink()
    with celltrials.open(db) as store:
        ingest_paths(store, [archive])
        classify_store(store)
        filters = make_filters(cell_type=["msc"])
        results = {}
        for method in ("MH", "PETO"):
            results[method] = meta_from_store(
                store,
                "serious adverse events",
                "OR",
                method=method,
                out_dir=out / method.lower(),
                filters=filters,
            )
    return results


def fmt_ci(r: dict[str, Any]) -> str:
    bt = r["back_transformed"]
    return (
        f"{bt['estimate']:.2f} (95% CI {bt['ci_low']:.2f} to {bt['ci_high']:.2f}), p = {r['p']:.3f}"
    )


def markdown(results: dict[str, Any]) -> str:
    mh, peto = results["MH"], results["PETO"]
    fs = mh["from_store"]
    used = [c for c in fs["choices"] if c.get("used")]
    lines = [
        f"Trials labelled MSC with posted results: {fs['trials_with_results']}; "
        f"with an MSC arm and a control arm: {fs['rows']} (k = {mh['k']}).",
        "",
        f"* Mantel–Haenszel OR {fmt_ci(mh)}; I² = {mh['i2']:.1f} % (Q({mh['q_df']}) = {mh['q']:.2f}, "
        f"{len(mh['dropped_00'])} trials without any serious adverse event left out of Q), "
        f"Tarone's test p = {mh['tarone_p']:.3f}.",
        f"* Peto OR {fmt_ci(peto)}; I² = {peto['i2']:.1f} %.",
        "",
        "| trial | MSC arm(s): SAE / at risk | control arm(s): SAE / at risk |",
        "|---|---|---|",
    ]
    rows = {s["study"]: s for s in mh["studies"]}
    import csv

    with open(fs["studies_csv"], encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            assert rec["trial_id"] in rows
            exp, ctl = (
                rec[k].replace(" | ", "; ").replace("|", "/")
                for k in ("experimental_arm", "control_arm")
            )
            lines.append(
                f"| {rec['trial_id']} | {exp}: {rec['ai']}/{rec['n1i']} | {ctl}: {rec['ci']}/{rec['n2i']} |"
            )
    left = [c for c in fs["choices"] if not c.get("used")]
    reasons: dict[str, int] = {}
    for c in left:
        reasons[c["reason"]] = reasons.get(c["reason"], 0) + 1
    lines += [
        "",
        "Left out: "
        + "; ".join(f"{n} × {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1]))
        + ".",
    ]
    assert len(used) == fs["rows"] and math.isfinite(mh["estimate"])
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archive", nargs="?", default=str(DEFAULT))
    ap.add_argument(
        "--out", default=None, help="keep the store and outputs here (default: a temporary folder)"
    )
    ap.add_argument("--write-readme", action="store_true", help="replace the example in README.md")
    args = ap.parse_args()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        text = markdown(run(Path(args.archive), out))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            text = markdown(run(Path(args.archive), Path(tmp)))
    print(text)
    if args.write_readme:
        readme = ROOT / "README.md"
        old = readme.read_text(encoding="utf-8")
        pattern = re.compile(r"(<!-- sae-example[^>]*-->\n).*?(\n<!-- /sae-example -->)", re.S)
        if not pattern.search(old):
            raise SystemExit("README.md has no <!-- sae-example --> block")
        readme.write_text(
            pattern.sub(lambda m: m.group(1) + text + m.group(2), old, count=1), encoding="utf-8"
        )


if __name__ == "__main__":
    main()
