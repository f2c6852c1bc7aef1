"""Do two source trees parse every study identically? (old code vs new code)

    git archive <old-commit> src | tar -x -C /tmp/old
    .venv/bin/python benchmarks/parse_equal.py --old-src /tmp/old/src [--new-src src] [--n 10000]

Runs the same deterministic workload under each tree (a subprocess with that
tree's ``src`` first on ``sys.path``) and compares, item by item, a SHA-256
of the outcome:

* every file in ../shared/data and ../shared/data-extra through
  :func:`celltrials.sources.parse_file` (every format: API v2 JSON, classic
  and website CSV, legacy XML, API v1, ICTRP CSV/XML/XLSX): each record's
  full ``repr`` (every field of the ParsedRecord, the raw object included),
  its stored raw bytes and content hash (:func:`celltrials.store.raw_and_digest`),
  or the RecordError (message, position, id, path);
* benchmarks/scale.py's ``complete`` and ``mix`` corpora (``--n`` each)
  through :func:`celltrials.sources.ctgov_json.parse_study`;
* hostile variants of every real API v2 study: text fields with control
  characters, padding, NBSP, bidi marks, Excel escapes, HTML, mojibake,
  full-width and non-Latin digits, lone surrogates inserted; values of the
  wrong JSON type; keys deleted (records and errors compared);
* the text normalisers called directly on real and random hostile strings.

Exit status 1 when anything differs (the first differences are listed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DIRS = [SHARED / "data", SHARED / "data-extra"]

# fmt: off
HOSTILE = [
    "\t", "  ", "   ", "\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x00", "\x07",
    "\x85", "\xa0", "\u2028", "\u2029", "\u3000", "\u200b", "\u200e", "\u200f", "\u202a",
    "\u202e", "\u2066", "\ufeff", "_x000D_", "_x000d_", "_x00E9_", "_xZZZZ_", "<br>", "<BR />",
    "< br/>", "<b>", "&amp;", "&lt;", "&#233;", "&#x2019;", "&nbsp;", "&bogus;", "&", "<",
    "Ã©", "Ã¼ber", "CafÃ©", "â€™", "â€œquotedâ€\x9d", "H√¥pitaux", "Universit√§t", "√",
    "¬", "Œ", "ƒ", "≈", "Ã", "\x80", "\x9d", "ﬁ", "é", "e\u0301", "ü", "中文", "😀", "Ｎ",
    "ＮＣＴ０４３１５９８７", "٠٤٣", "१२३", "\u2013", "\u2212", "-", "1e3", "NCT01234567",
    "2020-001162-12", "EUCTR2020-001162-12-FR", "ChiCTR2000029580", "ISRCTN12345678",
    "\ud800", "\udfff", "x", "A", " ", "",
]
TYPE_VALUES: list[Any] = [
    None, 0, 1, -5, 1.5, 2.0, 1e20, True, False, "x", "", "1e3", "-3", [], {}, ["a"], [1],
    [None], {"a": 1}, {"date": 5}, [{"name": 1}], 2**40,
]
# fmt: on


# ------------------------------------------------------------------ workload (run in each tree)
def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))


def _set(obj: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> None:
    for p in path[:-1]:
        obj = obj[p]
    if delete:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


def hostile_text(rnd: random.Random, base: str = "") -> str:
    parts = [rnd.choice(HOSTILE) for _ in range(rnd.randint(1, 4))]
    if not base or rnd.random() < 0.2:
        return "".join(parts)
    out = base
    for p in parts:
        at = rnd.choice([0, len(out), rnd.randint(0, len(out))])
        out = out[:at] + p + out[at:]
    return out


def mutants(studies: list[Any], per_study: int) -> Iterator[tuple[str, Any]]:
    import copy

    for si, study in enumerate(studies):
        rnd = random.Random(si)
        nodes = [(p, v) for p, v in _leaves(study) if p]
        texts = [(p, v) for p, v in nodes if isinstance(v, str)]
        for k in range(per_study):
            s = copy.deepcopy(study)
            kind = k % 4
            if kind <= 1 and texts:  # text damage in 1-6 string values
                for p, v in rnd.sample(texts, min(len(texts), rnd.randint(1, 6))):
                    _set(s, p, hostile_text(rnd, v))
            elif kind == 2:  # a value of another JSON type
                p, _ = rnd.choice(nodes)
                _set(s, p, copy.deepcopy(rnd.choice(TYPE_VALUES)))
            else:  # a key or list item deleted
                p, _ = rnd.choice(nodes)
                _set(s, p, None, delete=True)
            yield f"mutant:{si}:{k}", s


def _digest(obj: Any) -> str:
    return hashlib.sha256(repr(obj).encode("utf-8", "backslashreplace")).hexdigest()[:32]


def _outcome(call: Callable[[], Any]) -> str:
    try:
        return _digest(call())
    except Exception as exc:
        return "EXC " + _digest(
            (type(exc).__name__, str(exc), vars(exc) if hasattr(exc, "__dict__") else None)
        )


def _record_outcome(item: Any) -> str:
    from celltrials.errors import RecordError
    from celltrials.store import raw_and_digest

    if isinstance(item, RecordError):
        return "ERR " + _digest((str(item), item.position, item.record_id, item.path))
    rec_repr = _digest(item)
    return rec_repr + " " + _outcome(lambda: raw_and_digest(item)) + " " + _digest(item)


def workload(n: int, per_study: int) -> Iterator[tuple[str, str]]:
    import orjson

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scale import COMPLETE_SOURCES, RECONSTRUCTED_SOURCES, Corpus, _studies

    from celltrials import normalize as nz
    from celltrials import registry_ids as ri
    from celltrials.errors import CelltrialsError, RecordError
    from celltrials.sources import parse_file
    from celltrials.sources.ctgov_json import parse_study

    def one_study(study: Any, pos: int) -> str:
        try:
            return _record_outcome(parse_study(study, position=pos))
        except RecordError as exc:
            return _record_outcome(exc)

    # 1. every shared file, every format
    for d in DIRS:
        for f in sorted(p for p in d.rglob("*") if p.is_file()):
            label = f"file:{f.relative_to(SHARED)}"
            try:
                for i, item in enumerate(parse_file(f)):
                    yield f"{label}:{i}", _record_outcome(item)
            except CelltrialsError as exc:
                yield f"{label}:fault", "FAULT " + _digest((type(exc).__name__, str(exc)))
    # 2. the scale corpora
    for kind in ("complete", "mix"):
        corpus = Corpus(kind)
        for i in range(n):
            yield f"{kind}:{i}", one_study(orjson.loads(corpus.study(i)), i + 1)
    # 3. hostile variants of every real study
    real = _studies([*COMPLETE_SOURCES, *RECONSTRUCTED_SOURCES])
    for label, s in mutants(real, per_study):
        yield label, one_study(s, 7)
    # 4. the normalisers on real and hostile strings
    strings: list[str] = []
    for study in real:
        strings += [v for _, v in _leaves(study) if isinstance(v, str) and len(v) < 400]
    strings = list(dict.fromkeys(strings))
    rnd = random.Random(1)
    strings += [hostile_text(rnd, rnd.choice(strings)) for _ in range(20_000)]
    strings += [hostile_text(rnd) for _ in range(5_000)]
    funcs: list[tuple[str, Callable[[str], Any]]] = [
        ("clean_text", nz.clean_text),
        ("repair_text", nz.repair_text),
        ("repair_text_ml", lambda s: nz.repair_text(s, single_line=False)),
        ("fold", nz.fold),
        ("sponsor_key", nz.sponsor_key),
        ("sponsor_class", lambda s: nz.normalize_sponsor_class(s[:12], s)),
        ("phase", nz.normalize_phase),
        ("status", nz.normalize_status),
        ("study_type", nz.study_type_lookup),
        ("date", nz.parse_date),
        ("enrollment", lambda s: nz.normalize_enrollment(s, s[:9])),
        ("resolve_places", nz.resolve_places),
        ("country", nz.normalize_country),
        ("canonical_id", ri.canonical_id),
        ("find_ids", ri.find_ids),
        ("fold_id", ri.fold_id),
    ]
    for name, fn in funcs:
        for i, s in enumerate(strings):
            yield f"fn:{name}:{i}", _outcome(lambda fn=fn, s=s: fn(s))  # type: ignore[misc]


def dump(out: Path, n: int, per_study: int) -> None:
    with out.open("w", encoding="utf-8") as fh:
        for label, outcome in workload(n, per_study):
            fh.write(f"{label}\t{outcome}\n")


# ------------------------------------------------------------------ driver
def run_tree(src: Path, out: Path, n: int, per_study: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "PYTHONHASHSEED": "0"}
    t = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--dump",
            str(out),
            "--n",
            str(n),
            "--per-study",
            str(per_study),
        ],
        env=env,
        check=True,
    )
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-src", type=Path)
    ap.add_argument("--new-src", type=Path, default=ROOT / "src")
    ap.add_argument("--n", type=int, default=10_000, help="studies per scale corpus")
    ap.add_argument("--per-study", type=int, default=40, help="hostile variants per real study")
    ap.add_argument("--work", type=Path, default=Path("/tmp/parse_equal"))
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dump:
        dump(args.dump, args.n, args.per_study)
        return 0
    if not args.old_src:
        ap.error("--old-src is required")
    args.work.mkdir(parents=True, exist_ok=True)
    outs = {}
    for name, src in (("old", args.old_src), ("new", args.new_src)):
        outs[name] = args.work / f"{name}.tsv"
        dt = run_tree(src, outs[name], args.n, args.per_study)
        print(f"{name}: {src} ({dt:.0f} s)")
    old = outs["old"].read_text("utf-8").splitlines()
    new = outs["new"].read_text("utf-8").splitlines()
    diffs = [(a, b) for a, b in zip(old, new, strict=False) if a != b]
    sections: dict[str, int] = {}
    for line in old:
        key = line.split(":", 1)[0]
        sections[key] = sections.get(key, 0) + 1
    print("items compared: " + ", ".join(f"{k} {v:,}" for k, v in sections.items()))
    n_err = sum("\tERR " in x or "\tEXC " in x for x in old)
    print(f"errors/exceptions among them: {n_err:,}")
    if len(old) != len(new):
        print(f"DIFFERENT: {len(old):,} items (old) vs {len(new):,} (new)")
        return 1
    for a, b in diffs[:20]:
        print(f"DIFFERENT\n  old {a}\n  new {b}")
    print(f"{len(old):,} items, {len(diffs):,} different")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
