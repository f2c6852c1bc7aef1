"""The dashboard's in-memory facet and word index over one snapshot.

At whole-registry scale (500,000 trials) every filter, facet count and
search in SQL scans the precomputed table ``st`` (:mod:`celltrials.serve.queries`)
once per facet; with 8 concurrent clients on 2 cores that is seconds per
page. This index is built once per snapshot from ``st`` (its rows numbered
``0..N-1`` by ``rowid``, which is ``trial_id`` order) and answers with numpy:

* a single-valued field (registry, status, phase, …) is an array of integer
  codes (``-1`` for NULL) and its vocabulary; a multi-valued one (cell types,
  countries, targets, …) is a pair of arrays (row, value code): the rows of
  ``SELECT rowid, unnest(col)``;
* a filter is a boolean mask over the rows: the codes whose (DuckDB-lowered
  or -uppercased, as in the SQL) value is chosen, looked up per row or per
  (row, value) pair;
* a facet's counts are ``np.bincount`` of the codes under the mask of every
  *other* active filter, as :func:`celltrials.serve.queries.facets` counts;
* the search ``q``: every word ``w`` of ``q`` must be a substring of the
  trial's lower-cased search text. ``w`` holds no whitespace, so ``w`` occurs
  in the text exactly when it occurs inside one of the text's
  whitespace-separated tokens. The index keeps the distinct tokens (one
  newline-separated string) and, per token, the sorted rows holding it:
  a word is a substring scan of the token vocabulary (a few MB, not the
  texts' hundreds) and a union of the matching tokens' rows. Same matches
  as ``contains(search, w)``; a word found in very many tokens (one letter)
  is answered by that SQL scan instead.
* sort orders are permutations of the rows computed by DuckDB with the SQL
  ``ORDER BY`` of each sort; a page is the first rows of the permutation
  inside the mask;
* the columns a trial list shows are kept as an Arrow table; a page is
  ``take`` of its row numbers.

Tests compare every path with the SQL it replaces on many filter combinations.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from celltrials.analysis import landscape as ls

Mask = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int32]

#: a word found in more tokens than this, or whose tokens hold more rows, is
#: answered by a scan of the search texts (one-letter words and the like)
MAX_WORD_TOKENS = 200_000
MAX_WORD_POSTINGS = 20_000_000


@dataclass
class Single:
    """A single-valued column: one code per row (-1 = NULL) and the values."""

    codes: IntArray
    vocab: list[str]
    lower: list[str]
    upper: list[str]

    def codes_of(self, chosen: set[str], case: str = "") -> IntArray:
        names = self.lower if case == "lower" else self.upper if case == "upper" else self.vocab
        return np.array([i for i, v in enumerate(names) if v in chosen], dtype=np.int32)

    def mask(self, chosen: set[str], case: str = "") -> Mask:
        ok = np.zeros(len(self.vocab) + 1, dtype=bool)  # the last slot: NULL (code -1)
        ok[self.codes_of(chosen, case)] = True
        return ok[self.codes]


@dataclass
class Multi:
    """A list column: the (row, value code) pairs of its unnested values."""

    rows: IntArray
    codes: IntArray
    vocab: list[str]
    lower: list[str]
    n: int

    def mask(self, chosen: set[str], case: str = "") -> Mask:
        names = self.lower if case == "lower" else self.vocab
        ok = np.zeros(len(self.vocab), dtype=bool)
        ok[[i for i, v in enumerate(names) if v in chosen]] = True
        out = np.zeros(self.n, dtype=bool)
        out[self.rows[ok[self.codes]]] = True
        return out

    def empty(self) -> Mask:
        out: Mask = np.bincount(self.rows, minlength=self.n) == 0
        return out

    def counts(self, mask: Mask | None) -> npt.NDArray[np.int64]:
        sel = self.codes if mask is None else self.codes[mask[self.rows]]
        return np.bincount(sel, minlength=len(self.vocab))


#: single-valued columns of st (NULL stays NULL)
SINGLE_COLUMNS = (
    "registry",
    "status",
    "phase",
    "study_type",
    "origin",
    "indication_group",
    "sponsor_class",
    "enrollment_type",
)
#: list columns of st
MULTI_COLUMNS = (
    "cell_type",
    "msc_source_f",
    "product_form",
    "therapeutic_area",
    "targets",
    "countries",
    "products",
    "families",
)


class FacetIndex:
    """See the module doc. Built by :meth:`build`; read-only afterwards, so
    any number of threads may use one index at once."""

    table: str
    data_date: date | None
    cell_therapy: Mask
    year_ok: Mask
    year: IntArray
    start_ok: Mask
    start_days: IntArray
    enroll_ok: Mask
    enrollment: npt.NDArray[np.int64]
    n_records: IntArray
    ta_empty: Mask
    orders: dict[str, IntArray]
    list_columns: tuple[str, ...]
    rows: pa.Table
    row_of: dict[str, int]
    postings: IntArray
    post_off: npt.NDArray[np.int64]
    vocab_text: str
    tok_start: npt.NDArray[np.int64]
    n_tokens: int
    words: list[str]
    tri_keys: npt.NDArray[np.int64]
    tri_off: npt.NDArray[np.int64]
    tri_tok: IntArray
    facet_slots: dict[str, tuple[bool, int, list[str]]]
    s_stack: IntArray
    s_size: int
    m_rows: IntArray
    m_codes: IntArray
    m_row_off: npt.NDArray[np.int64]
    m_size: int
    facts: dict[str, bool]
    ranges: dict[str, npt.NDArray[np.int64]]
    changes: pa.Table | None
    ch_neg_days: npt.NDArray[np.int64]
    ch_row: IntArray
    ch_kind: Single

    def __init__(self) -> None:
        self.n = 0
        self.single: dict[str, Single] = {}
        self.multi: dict[str, Multi] = {}
        self.build_seconds = 0.0
        self.facts = {}
        self.ranges = {}
        self.changes = None

    # ------------------------------------------------------------- build
    @classmethod
    def build(
        cls,
        con: duckdb.DuckDBPyConnection,
        table: str,
        *,
        list_columns: tuple[str, ...],
        sorts: dict[str, str],
        facets: dict[str, tuple[str, bool]],
        data_date: date | None,
    ) -> FacetIndex:
        t0 = time.perf_counter()
        self = cls()
        self.table = table
        self.data_date = data_date
        row = con.execute(f"SELECT count(*), max(rowid) FROM {table}").fetchall()[0]
        self.n = int(row[0])
        if self.n and int(row[1]) != self.n - 1:
            raise ValueError(f"{table}: rowids are not 0..N-1")
        base = _arrow(
            con,
            (
                f"""SELECT coalesce(is_cell_therapy, false) AS ct, start_year::INTEGER AS y,
                       (start_date - DATE '1970-01-01')::INTEGER AS sd, enrollment::BIGINT AS en,
                       coalesce(n_records, 0)::INTEGER AS nr, coalesce(status, 'UNKNOWN') AS status_u,
                       {", ".join(SINGLE_COLUMNS)}
                FROM {table} ORDER BY rowid"""
            ),
        )
        self.cell_therapy = _np(base.column("ct"), bool, False)
        self.year_ok = _valid(base.column("y"))
        self.year = _np(base.column("y"), np.int32, 0)
        self.start_ok = _valid(base.column("sd"))
        self.start_days = _np(base.column("sd"), np.int32, 0)
        self.enroll_ok = _valid(base.column("en"))
        self.enrollment = _np(base.column("en"), np.int64, 0)
        self.n_records = _np(base.column("nr"), np.int32, 0)
        for c in (*SINGLE_COLUMNS, "status_u"):
            self.single[c] = _single(con, base.column(c))
        del base
        for c in MULTI_COLUMNS:
            pairs = _arrow(
                con,
                f"SELECT r::INTEGER AS r, v FROM (SELECT rowid AS r, unnest({c}) AS v FROM {table}) "
                "WHERE v IS NOT NULL ORDER BY r",
            )
            enc = pc.dictionary_encode(pairs.column("v")).combine_chunks()
            vocab = [str(v) for v in enc.dictionary.to_pylist()]
            self.multi[c] = Multi(
                rows=_np(pairs.column("r"), np.int32, 0),
                codes=np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int32),
                vocab=vocab,
                lower=_case(con, vocab, "lower"),
                n=self.n,
            )
        self.ta_empty = self.multi["therapeutic_area"].empty()
        self._stack_facets(facets)
        # sort orders, as DuckDB sorts
        self.orders = {}
        for name, order_by in sorts.items():
            self.orders[name] = _np(
                _arrow(con, f"SELECT rowid::INTEGER AS r FROM {table} ORDER BY {order_by}").column(
                    "r"
                ),
                np.int32,
                0,
            )
        # what a trial list shows
        self.list_columns = list_columns
        self.rows = _arrow(
            con, f"SELECT {', '.join(list_columns)} FROM {table} ORDER BY rowid"
        ).combine_chunks()
        ids = self.rows.column("trial_id").to_pylist()
        self.row_of = {str(t): i for i, t in enumerate(ids)}
        self._build_words(con, table)
        self.build_seconds = time.perf_counter() - t0
        return self

    def _build_words(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        # RE2's \s is [\t\n\f\r ]: every one of them is whitespace to Python's
        # re.split(r"\s+") that makes the query's words, so no word spans two tokens
        tok = _arrow(
            con,
            (
                f"""SELECT w, list(r ORDER BY r) AS rs FROM (
                        SELECT DISTINCT rowid::INTEGER AS r, unnest(string_split_regex(search, '\\s+')) AS w
                        FROM {table}) WHERE w <> '' GROUP BY w ORDER BY w"""
            ),
        )
        words = [str(w) for w in tok.column("w").to_pylist()]
        lists = tok.column("rs").combine_chunks()
        self.postings = np.asarray(lists.flatten().to_numpy(zero_copy_only=False), dtype=np.int32)
        off = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        self.post_off = off - off[0]
        # "\n" never occurs inside a token (it is whitespace), so no match spans two tokens
        self.vocab_text = "\n".join(words) + "\n"
        lens = np.fromiter((len(w) + 1 for w in words), dtype=np.int64, count=len(words))
        self.tok_start = (
            np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(words) else np.zeros(0, np.int64)
        )
        self.n_tokens = len(words)
        self.words = words
        self._build_trigrams()

    def _build_trigrams(self) -> None:
        """Trigram → tokens holding it (CSR), for words of 3+ characters."""
        cps = np.frombuffer(self.vocab_text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        nl = ord("\n")
        if len(cps) < 3:
            self.tri_keys = np.zeros(0, np.int64)
            self.tri_off = np.zeros(1, np.int64)
            self.tri_tok = np.zeros(0, np.int32)
            return
        tri = _trigrams(cps)
        pos = np.flatnonzero((cps[:-2] != nl) & (cps[1:-1] != nl) & (cps[2:] != nl))
        tok = np.searchsorted(self.tok_start, pos, side="right") - 1
        key = tri[pos]
        del tri, cps
        order = np.lexsort((tok, key))
        key, tok = key[order], tok[order]
        keep = np.ones(len(key), dtype=bool)
        keep[1:] = (key[1:] != key[:-1]) | (tok[1:] != tok[:-1])
        key, tok = key[keep], tok[keep]
        self.tri_keys, first = np.unique(key, return_index=True)
        self.tri_off = np.append(first, len(key)).astype(np.int64)
        self.tri_tok = tok.astype(np.int32)

    def _tokens_with(self, word: str) -> IntArray | None:
        """The tokens containing ``word`` (3+ characters) by their trigrams, or
        None when the word is too short or too common for the trigram route."""
        if len(word) < 3:
            return None
        tris = np.unique(
            _trigrams(np.frombuffer(word.encode("utf-32-le"), np.uint32).astype(np.int64))
        )
        i = np.searchsorted(self.tri_keys, tris)
        if np.any(i >= len(self.tri_keys)) or np.any(
            self.tri_keys[np.minimum(i, len(self.tri_keys) - 1)] != tris
        ):
            return np.zeros(0, dtype=np.int32)  # a trigram of the word is in no token
        lens = self.tri_off[i + 1] - self.tri_off[i]
        by_size = np.argsort(lens)
        j = i[by_size[0]]
        cand = self.tri_tok[self.tri_off[j] : self.tri_off[j + 1]]
        for j in i[by_size[1:4]]:  # the rarest few trigrams; the rest is checked below
            cand = np.intersect1d(
                cand, self.tri_tok[self.tri_off[j] : self.tri_off[j + 1]], assume_unique=True
            )
        if len(cand) > 50_000:
            return None
        words = self.words
        return np.array([t for t in cand.tolist() if word in words[t]], dtype=np.int32)

    def _stack_facets(self, facets: dict[str, tuple[str, bool]]) -> None:
        """All facets' codes in one code space: single-valued ones as one
        (rows × facets) matrix, multi-valued ones as (row, code) pairs sorted
        by row with each row's start, so one ``bincount`` counts every facet."""
        g = 0
        cols: list[IntArray] = []
        self.facet_slots = {}
        for name, (col, multi) in facets.items():
            if multi:
                continue
            s = self.single[col]
            cols.append(np.where(s.codes >= 0, s.codes + g, -1).astype(np.int32))
            self.facet_slots[name] = (False, g, s.vocab)
            g += len(s.vocab)
        stack = np.stack(cols, axis=1) if cols else np.zeros((self.n, 0), np.int32)
        stack[stack < 0] = g  # NULL: one slot past the values, never reported
        self.s_stack = np.ascontiguousarray(stack)
        self.s_size = g + 1
        g = 0
        rows: list[IntArray] = []
        codes: list[IntArray] = []
        for name, (col, multi) in facets.items():
            if not multi:
                continue
            mu = self.multi[col]
            rows.append(mu.rows)
            codes.append(mu.codes + g)
            self.facet_slots[name] = (True, g, mu.vocab)
            g += len(mu.vocab)
        r = np.concatenate(rows) if rows else np.zeros(0, np.int32)
        order = np.argsort(r, kind="stable")
        self.m_rows = r[order].astype(np.int32)
        self.m_codes = (np.concatenate(codes) if codes else np.zeros(0, np.int32))[order].astype(
            np.int32
        )
        self.m_row_off = np.searchsorted(self.m_rows, np.arange(self.n + 1)).astype(np.int64)
        self.m_size = g
        self._all_counts = self._count_all(None)

    def _count_all(self, m: Mask | None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        if m is None:
            return (
                np.bincount(self.s_stack.ravel(), minlength=self.s_size),
                np.bincount(self.m_codes, minlength=self.m_size),
            )
        k = int(np.count_nonzero(m))
        if k * 4 < self.n:  # few rows: gather them
            sel = np.flatnonzero(m)
            sc = np.bincount(self.s_stack[sel].ravel(), minlength=self.s_size)
            starts = self.m_row_off[sel]
            lens = self.m_row_off[sel + 1] - starts
            mc = np.bincount(self.m_codes[_ranges(starts, lens)], minlength=self.m_size)
            return sc, mc
        return (
            np.bincount(self.s_stack[m].ravel(), minlength=self.s_size),
            np.bincount(self.m_codes[m[self.m_rows]], minlength=self.m_size),
        )

    def facet_counts(
        self, every: Mask | None, own: dict[str, Mask | None]
    ) -> dict[str, list[tuple[str, int]]]:
        """(value, count) per facet with a count > 0: under ``every`` for a
        facet, or under ``own[facet]`` when the facet has its own mask."""
        done: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}

        def counts(m: Mask | None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
            if m is None:
                return self._all_counts
            if id(m) not in done:
                done[id(m)] = self._count_all(m)
            return done[id(m)]

        out: dict[str, list[tuple[str, int]]] = {}
        for name, (multi, start, vocab) in self.facet_slots.items():
            sc, mc = counts(own.get(name, every))
            c = (mc if multi else sc)[start : start + len(vocab)]
            out[name] = [(vocab[i], int(c[i])) for i in np.flatnonzero(c)]
        return out

    def add_ranges(self, con: duckdb.DuckDBPyConnection, tables: dict[str, str]) -> None:
        """For each table sorted by ``trial_id``: where each trial's rows are
        (``rowid`` from ``ranges[name][row]`` to ``ranges[name][row + 1]``)."""
        t0 = time.perf_counter()
        ids = self.rows.column("trial_id")
        for name, table in tables.items():
            tid = _arrow(con, f"SELECT trial_id FROM {table} ORDER BY rowid").column("trial_id")
            at = pc.index_in(tid, value_set=ids)
            rows = np.asarray(pc.fill_null(at, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
            if len(rows) and (np.any(rows < 0) or np.any(np.diff(rows) < 0)):
                continue  # not sorted like the trials (or rows of no trial): no ranges
            self.ranges[name] = np.searchsorted(rows, np.arange(self.n + 1)).astype(np.int64)
        self.build_seconds += time.perf_counter() - t0

    # ----------------------------------------------------------- changes
    def add_changes(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        """The snapshot's changes (:func:`celltrials.changes.all_changes_sql`)
        in the order they are listed (newest first), each with the row of its
        trial; dates as day numbers, negated so they ascend."""
        t0 = time.perf_counter()
        tbl = _arrow(
            con,
            f"""SELECT c.d, c.kind, c.trial_id, c.record_id, c.registry, c.title, c.old, c.new, c.prev_d,
                       coalesce(s.rowid, -1)::INTEGER AS rn
                FROM {table} c LEFT JOIN {self.table} s USING (trial_id)
                ORDER BY c.d DESC NULLS LAST, c.kind, c.trial_id, c.record_id, c.old, c.new, c.prev_d,
                         c.registry, c.title""",
        ).combine_chunks()
        days = pc.days_between(pa.scalar(date(1970, 1, 1)), tbl.column("d"))
        neg = -np.asarray(
            pc.fill_null(days, -(2**40)).to_numpy(zero_copy_only=False), dtype=np.int64
        )
        self.ch_neg_days = neg  # a NULL date sorts last and never matches
        self.ch_row = _np(tbl.column("rn"), np.int32, -1)
        self.ch_kind = _single(con, tbl.column("kind"))
        self.changes = tbl.drop_columns(["rn"])
        self.build_seconds += time.perf_counter() - t0

    def changes_in(
        self, mask: Mask | None, lo: date, hi: date | None, limit: int | None
    ) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Counts per kind and the first ``limit`` changes (newest first) dated
        ``lo`` ≤ d ≤ ``hi`` of the trials in ``mask``."""
        assert self.changes is not None
        epoch = date(1970, 1, 1)
        end = int(np.searchsorted(self.ch_neg_days, -(lo - epoch).days, side="right"))
        start = (
            0
            if hi is None
            else int(np.searchsorted(self.ch_neg_days, -(hi - epoch).days, side="left"))
        )
        rows = self.ch_row[start:end]
        keep = rows >= 0
        if mask is not None:
            keep &= mask[np.maximum(rows, 0)]
        k = self.ch_kind
        codes = k.codes[start:end][keep]
        counts = np.bincount(codes[codes >= 0], minlength=len(k.vocab))
        out = {k.vocab[i]: int(counts[i]) for i in np.flatnonzero(counts)}
        pos = np.flatnonzero(keep) + start
        if limit is not None:
            pos = pos[: max(limit, 0)]
        listed = self.changes.take(pa.array(pos, type=pa.int64())).to_pylist()
        return out, listed

    # ------------------------------------------------------------ search
    def word_rows(self, word: str) -> IntArray | None:
        """Rows whose search text contains ``word`` (no whitespace in it), or
        None when a text scan is cheaper (the word is in too many tokens)."""
        if not word or self.n_tokens == 0:
            return np.zeros(0, dtype=np.int32)
        toks = self._tokens_with(word)
        if toks is None:  # a short or common word: scan the token vocabulary
            if self.vocab_text.count(word) > MAX_WORD_TOKENS:
                return None
            pos = np.fromiter(
                (m.start() for m in re.finditer(re.escape(word), self.vocab_text)), dtype=np.int64
            )
            toks = np.unique(np.searchsorted(self.tok_start, pos, side="right") - 1)
        if len(toks) == 0:
            return np.zeros(0, dtype=np.int32)
        starts = self.post_off[toks]
        lens = self.post_off[toks + 1] - starts
        total = int(lens.sum())
        if total > MAX_WORD_POSTINGS:
            return None
        return self.postings[_ranges(starts, lens)]

    # ------------------------------------------------------------- masks
    def rows_mask(self, rows: npt.NDArray[Any]) -> Mask:
        out = np.zeros(self.n, dtype=bool)
        out[rows] = True
        return out

    def page(self, mask: Mask | None, sort: str, offset: int, limit: int) -> tuple[int, IntArray]:
        """(count, row numbers of the page) of the rows in ``mask`` in ``sort`` order."""
        order = self.orders[sort]
        if mask is None:
            return self.n, order[offset : offset + limit]
        n = int(np.count_nonzero(mask))
        if offset >= n:
            return n, order[:0]
        if offset + limit <= 4096:  # the first pages: stop at the page's end
            out: list[IntArray] = []
            got = 0
            step = 65536
            for s in range(0, self.n, step):
                chunk = order[s : s + step]
                chunk = chunk[mask[chunk]]
                out.append(chunk)
                got += len(chunk)
                if got >= offset + limit:
                    break
            sel = np.concatenate(out) if out else order[:0]
        else:
            sel = order[mask[order]]
        return n, sel[offset : offset + limit]

    def list_rows(self, rows: IntArray) -> list[dict[str, Any]]:
        """The list columns of ``rows`` (in that order) as Python values."""
        return self.rows.take(pa.array(rows, type=pa.int32())).to_pylist()  # type: ignore[no-any-return]

    # ---------------------------------------------------------- overview
    def overview_counts(self, mask: Mask | None, data_date: date | None) -> dict[str, Any]:
        """The numbers of :func:`celltrials.serve.queries._overview_counts`."""
        m = np.ones(self.n, dtype=bool) if mask is None else mask
        cutoff = (data_date - date(1970, 1, 1)).days if data_date else None
        fam = self.multi["families"]
        ct = self.multi["cell_type"]
        rows: list[tuple[str, str, str | None, int]] = []

        def add(name: str, vocab: list[str], counts: npt.NDArray[np.int64]) -> None:
            for i in np.flatnonzero(counts):
                rows.append((name, vocab[i], None, int(counts[i])))

        def by_family(name: str, keys: IntArray, vocab: list[str], ok: Mask) -> None:
            sel = ok[fam.rows]
            k = keys[fam.rows[sel]]
            f = fam.codes[sel]
            good = k >= 0
            nf = len(fam.vocab)
            counts = np.bincount(k[good].astype(np.int64) * nf + f[good], minlength=len(vocab) * nf)
            for i in np.flatnonzero(counts):
                rows.append((name, vocab[i // nf], fam.vocab[i % nf], int(counts[i])))

        immune = set(ls.IMMUNE)
        cts = ct.counts(m)
        for i in np.flatnonzero(cts):
            if ct.vocab[i] in immune:
                rows.append(("immune_by_cell_type", ct.vocab[i], None, int(cts[i])))
        stem = self._has(fam, "stem_stromal") & m
        ig = self.single["indication_group"]
        igc = np.bincount(ig.codes[stem] + 1, minlength=len(ig.vocab) + 1)
        if igc[0]:
            rows.append(("stem_by_indication", "not_classified", None, int(igc[0])))
        for i in np.flatnonzero(igc[1:]):
            rows.append(("stem_by_indication", ig.vocab[i], None, int(igc[i + 1])))
        msc = self._has(ct, "msc") & m
        ms = self.multi["msc_source_f"]
        add("msc_by_source", ms.vocab, ms.counts(msc))
        started = self.start_ok & m
        if cutoff is not None:
            started &= self.start_days <= cutoff
        years = np.unique(self.year[started & self.year_ok])
        ycode = np.full(self.n, -1, dtype=np.int32)
        ycode[started & self.year_ok] = np.searchsorted(years, self.year[started & self.year_ok])
        by_family("start_year_by_family", ycode, [str(int(y)) for y in years], m)
        ph = self.single["phase"]
        by_family("phase_by_family", ph.codes, ph.vocab, m)
        su = self.single["status_u"]
        by_family("status_by_family", su.codes, su.vocab, m)
        co = self.multi["countries"]
        add("countries", co.vocab, co.counts(m))
        sc = self.single["sponsor_class"]
        scc = np.bincount(sc.codes[m & (sc.codes >= 0)], minlength=len(sc.vocab))
        add("sponsor_classes", sc.vocab, scc)

        n = int(np.count_nonzero(m))
        en = self.enrollment[m & self.enroll_ok]
        et = self.single["enrollment_type"]

        def enrolled(kind: str) -> int:
            code = et.codes_of({kind})
            if len(code) == 0:
                return 0
            return int(self.enrollment[m & self.enroll_ok & (et.codes == code[0])].sum())

        reg = self.single["registry"]
        ys = self.year[started & self.year_ok]
        headline = {
            "trials": n,
            "patients_total": int(en.sum()),
            "patients_actual": enrolled("ACTUAL"),
            "patients_anticipated": enrolled("ESTIMATED"),
            "patients_type_not_stated": enrolled("UNKNOWN"),
            "trials_without_enrollment": int(np.count_nonzero(m & ~self.enroll_ok)),
            "registries": len(np.unique(reg.codes[m & (reg.codes >= 0)])),
            "first_start_year": int(ys.min()) if len(ys) else None,
            "last_start_year": int(ys.max()) if len(ys) else None,
            "start_date_missing": int(np.count_nonzero(m & ~self.start_ok)),
            "start_after_data_date": (
                int(np.count_nonzero(m & self.start_ok & (self.start_days > cutoff)))
                if cutoff is not None
                else 0
            ),
            "merged_trials": int(np.count_nonzero(m & (self.n_records > 1))),
        }
        merged: dict[tuple[str, str, str | None], int] = {}
        for name, key, f, k in rows:  # NULL and a stored "not_classified" are one bar, as in SQL
            merged[(name, key, f)] = merged.get((name, key, f), 0) + k
        return {"headline": headline, "rows": [(*k, v) for k, v in merged.items()]}

    def _has(self, col: Multi, value: str) -> Mask:
        return col.mask({value})

    def memory_bytes(self) -> int:
        total = 0
        for v in vars(self).values():
            if isinstance(v, np.ndarray):
                total += v.nbytes
        for s in self.single.values():
            total += s.codes.nbytes
        for mu in self.multi.values():
            total += mu.rows.nbytes + mu.codes.nbytes
        for o in self.orders.values():
            total += o.nbytes
        total += int(self.rows.nbytes) + len(self.vocab_text) + sum(len(w) + 49 for w in self.words)
        return int(total)


# ------------------------------------------------------------------ helpers
def _arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    return con.sql(sql).to_arrow_table()


def _ranges(starts: npt.NDArray[np.int64], lens: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The indices of the ranges ``[start, start + len)``, concatenated (no Python loop)."""
    total = int(lens.sum())
    shift = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    out: npt.NDArray[np.int64] = np.arange(total, dtype=np.int64) + shift
    return out


def _trigrams(cps: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Each window of 3 code points as one integer (code points are < 2**21)."""
    return (cps[:-2] << 42) | (cps[1:-1] << 21) | cps[2:]


def _valid(col: pa.ChunkedArray) -> Mask:
    return np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=bool)


def _np(col: pa.ChunkedArray, dtype: Any, fill: Any) -> Any:
    return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False), dtype=dtype)


def _case(con: duckdb.DuckDBPyConnection, vocab: list[str], how: str) -> list[str]:
    """DuckDB's lower()/upper() of each value (what the SQL compares)."""
    if not vocab:
        return []
    rows = con.execute(
        f"SELECT list_transform(?::VARCHAR[], lambda x: {how}(x))", [vocab]
    ).fetchall()
    return [str(v) for v in rows[0][0]]


def _single(con: duckdb.DuckDBPyConnection, col: pa.ChunkedArray) -> Single:
    enc = pc.dictionary_encode(col).combine_chunks()
    vocab = [str(v) for v in enc.dictionary.to_pylist()]
    codes = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int32)
    return Single(
        codes=codes, vocab=vocab, lower=_case(con, vocab, "lower"), upper=_case(con, vocab, "upper")
    )


__all__ = ["FacetIndex"]
