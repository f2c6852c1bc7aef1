"""Ingest throughput per format: real records replicated with new ids.

    .venv/bin/python benchmarks/ingest.py [--n 100000] [--formats json,classic_csv,...]

For each format, the real records of ../shared/data in that format are
repeated (each copy gets fresh registry ids, so nothing merges or
deduplicates away) up to N records, written as one file, and ingested into
an empty store with ``celltrials.ingest.ingest_paths``. Parse + normalise +
store + merge are all timed; file generation is not.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import re
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import openpyxl

import celltrials
from celltrials.ingest import ingest_paths

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _json(n: int, out: Path) -> Path:
    studies = []
    for name in (
        "ctgov-v2-json/ctg-studies-50-general.json",
        "ctgov-v2-json/reconstructed/car_cell_therapy_2026-08-22.json",
        "ctgov-v2-json/reconstructed/car_cell_therapy_part2_2026-08-22.json",
    ):
        studies += json.loads((DATA / name).read_text())
    text = [json.dumps(s) for s in studies]
    parts = []
    for i in range(n):
        parts.append(
            re.sub(
                r'"nctId": "NCT\d{8}"',
                f'"nctId": "NCT{90000000 + i:08d}"',
                text[i % len(text)],
                count=1,
            )
        )
        # drop secondary ids so copies do not merge through them
        parts[-1] = re.sub(
            r'"secondaryIdInfos": \[.*?\]', '"secondaryIdInfos": []', parts[-1], count=1
        )
    path = out / "bench.json"
    path.write_text("[" + ",".join(parts) + "]")
    return path


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _classic_csv(n: int, out: Path) -> Path:
    header, rows = _csv_rows(DATA / "ctgov-classic-csv/msc_mesenchymal_stem_or_stromal.csv")
    idx, other = header.index("NCT Number"), header.index("Other IDs")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for i in range(n):
        row = list(rows[i % len(rows)])
        row[idx] = f"NCT{90000000 + i:08d}"
        row[other] = ""
        w.writerow(row)
    path = out / "bench_classic.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _ictrp_rows(n: int) -> tuple[list[str], list[list[str]]]:
    header, rows = _csv_rows(DATA / "ictrp/ictrp_covid19_1135_trials.csv")
    out = []
    for i in range(n):
        row = list(rows[i % len(rows)])
        row[0] = f"ChiCTR{2900000000 + i:010d}"
        out.append(row)
    return header, out


def _ictrp_csv(n: int, out: Path) -> Path:
    header, rows = _ictrp_rows(n)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path = out / "bench_ictrp.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _ictrp_xml(n: int, out: Path) -> Path:
    header, rows = _ictrp_rows(n)
    root = ET.Element("Trials_downloaded_from_ICTRP")
    tags = [re.sub(r"[^A-Za-z0-9]+", "_", h).strip("_") for h in header]
    for row in rows:
        t = ET.SubElement(root, "Trial")
        for tag, v in zip(tags, row, strict=True):
            ET.SubElement(t, tag).text = v
    path = out / "bench_ictrp.xml"
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def _ictrp_xlsx(n: int, out: Path) -> Path:
    header, rows = _ictrp_rows(n)
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("trials")
    ws.append(header)
    for row in rows:
        ws.append([re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", v) for v in row])
    path = out / "bench_ictrp.xlsx"
    wb.save(path)
    return path


MAKERS = {
    "json": _json,
    "classic_csv": _classic_csv,
    "ictrp_csv": _ictrp_csv,
    "ictrp_xml": _ictrp_xml,
    "ictrp_xlsx": _ictrp_xlsx,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--formats", default=",".join(MAKERS))
    args = ap.parse_args()
    print(
        f"celltrials {celltrials.__version__} · Python {platform.python_version()} · {platform.machine()} · {args.n:,} records per format"
    )
    print(f"{'format':<12} {'records':>9} {'seconds':>8} {'records/s':>10}")
    for fmt in args.formats.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            path = MAKERS[fmt](args.n, Path(tmp))
            with celltrials.open(Path(tmp) / "bench.duckdb") as store:
                t0 = time.perf_counter()
                report = ingest_paths(store, [path])
                dt = time.perf_counter() - t0
                n_trials = store.con.execute("SELECT count(*) FROM trials").fetchone()[0]  # type: ignore[index]
            assert report.clean and report.n_new == args.n == n_trials, (report.n_new, n_trials)
            print(f"{fmt:<12} {args.n:>9,} {dt:>8.2f} {args.n / dt:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
