"""Is a report built by this tree the same as one built by another source tree?

    .venv/bin/python benchmarks/report_identity.py STORE.duckdb --base-src DIR [--scope all] [--keep DIR]

Builds the report of STORE (opened read-only) twice, each in a fresh
subprocess: with this tree's ``src/`` and with ``--base-src`` (e.g. main's
``src/`` unpacked with ``git archive``). Then compares the two folders:

* ``report.html`` byte for byte, after replacing each build's generation stamp
  (read from its workbook's ``about`` sheet) with a placeholder;
* ``report-lists.js`` (the lists side file, when written) byte for byte;
* every ``tables/*.csv`` byte for byte (and the same set of files);
* ``report.xlsx``: every cell value of every sheet (the ``generated`` row of
  ``about`` excepted), the same sheets in the same order;
* every ``figures/*.svg`` byte for byte (and the same set of figures); the
  PNG files are compared too and reported separately.

Prints one line per difference and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_store import run  # noqa: E402  (the same subprocess build, timed)


def build(src: Path, db: str, out: Path, scope: str) -> None:
    run(src, db, scope, out)


def workbook_cells(path: Path) -> tuple[list[str], dict[str, list[tuple[object, ...]]], str]:
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True)
    sheets: dict[str, list[tuple[object, ...]]] = {}
    generated = ""
    for ws in wb.worksheets:
        rows = [tuple(r) for r in ws.iter_rows(values_only=True)]
        if ws.title == "about":
            for i, r in enumerate(rows):
                if r and r[0] == "generated":
                    generated = str(r[1])
                    rows[i] = (r[0], "<generated>")
        sheets[ws.title] = rows
    names = list(wb.sheetnames)
    wb.close()
    return names, sheets, generated


def compare(a: Path, b: Path) -> list[str]:
    """The differences between report folders ``a`` (this tree) and ``b`` (base)."""
    diffs: list[str] = []
    names_a, cells_a, gen_a = workbook_cells(a / "report.xlsx")
    names_b, cells_b, gen_b = workbook_cells(b / "report.xlsx")
    if names_a != names_b:
        diffs.append(f"report.xlsx: sheets {names_a} != {names_b}")
    for name in names_a:
        if cells_a.get(name) != cells_b.get(name):
            diffs.append(f"report.xlsx: sheet {name!r} differs")

    html_a = (a / "report.html").read_bytes().replace(gen_a.encode(), b"<generated>")
    html_b = (b / "report.html").read_bytes().replace(gen_b.encode(), b"<generated>")
    if not gen_a or not gen_b:
        diffs.append("report.xlsx: no generation stamp in the about sheet")
    if html_a != html_b:
        diffs.append("report.html differs (generation stamp masked)")

    for rel in ["report-lists.js"]:
        pa_, pb = a / rel, b / rel
        if pa_.exists() != pb.exists():
            diffs.append(f"{rel}: written by one build only")
        elif pa_.exists() and pa_.read_bytes() != pb.read_bytes():
            diffs.append(f"{rel} differs")

    for folder, exts in (("tables", (".csv",)), ("figures", (".svg", ".png"))):
        fa = sorted(p.name for p in (a / folder).iterdir() if p.suffix in exts)
        fb = sorted(p.name for p in (b / folder).iterdir() if p.suffix in exts)
        if fa != fb:
            diffs.append(f"{folder}/: files {sorted(set(fa) ^ set(fb))} in one build only")
        for name in sorted(set(fa) & set(fb)):
            if (a / folder / name).read_bytes() != (b / folder / name).read_bytes():
                diffs.append(f"{folder}/{name} differs")
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="a classified store (opened read-only)")
    ap.add_argument(
        "--base-src", type=Path, required=True, help="the src/ directory to compare with"
    )
    ap.add_argument("--scope", default="all", choices=["all", "cell_therapy"])
    ap.add_argument(
        "--keep", type=Path, help="build into this folder (kept) instead of a temporary one"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-identity-") as tmp:
        root = args.keep or Path(tmp)
        new, base = root / "new", root / "base"
        build(SRC, args.store, new, args.scope)
        build(args.base_src.resolve(), args.store, base, args.scope)
        diffs = compare(new, base)
        n_csv = len(list((new / "tables").glob("*.csv")))
        n_svg = len(list((new / "figures").glob("*.svg")))
        side = (new / "report-lists.js").exists()
    for d in diffs:
        print("DIFF", d)
    print(
        f"{args.store} (scope {args.scope}): {'IDENTICAL' if not diffs else f'{len(diffs)} differences'}"
        f" — report.html, {'report-lists.js, ' if side else ''}{n_csv} CSV files, report.xlsx cell values,"
        f" {n_svg} SVG + {n_svg} PNG figures"
    )
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
