"""The elements of a large top-level JSON array, found without parsing it.

:func:`element_spans` reads the file in blocks and finds, with a few
vectorised passes per block (numpy), the byte range of each element: the
text between the array's ``[``, its top-level commas and its ``]``. A byte
is structural only outside strings: a string starts and ends at a ``"``
that an odd run of backslashes does not escape. Nothing is parsed here, so
this costs a few nanoseconds a byte (a full JSON parse only to split the
array cost ~130 µs per study); the elements are parsed later (in worker
processes for a large file), each on its own with orjson.

It is exact for a valid array, and it accepts nothing invalid: the pieces
it cuts, joined by commas inside ``[`` and ``]``, are the whole file (only
a byte-order mark and whitespace may come before the ``[``, only
whitespace after the ``]``), so the file is valid JSON if and only if every
piece is a valid JSON value — which the parser checks for each element
(:func:`read_texts`'s callers raise :class:`DataFileError` for one that is
not). Memory: one block and the offsets of a batch, whatever the file's size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson
import pyarrow as pa

from celltrials.errors import DataFileError

#: bytes scanned at a time
BLOCK = 8 << 20
_WS = b" \t\r\n"

#: (starts, ends) absolute byte offsets of a batch of elements, end exclusive;
#: within a batch each end is the offset of the comma before the next start
Spans = tuple[np.ndarray, np.ndarray]


def _truncated(path: Path, why: str) -> DataFileError:
    return DataFileError(f"malformed or truncated JSON ({why})", path=str(path))


def element_spans(path: Path, batch: int, max_element: int) -> Iterator[Spans]:
    """The byte ranges of the elements of the JSON array in ``path``, ``batch``
    at a time. Raises :class:`DataFileError` (after the batches before it)
    for a file that is not one array, ends inside it, or has an element of
    more than ``max_element`` bytes."""
    with path.open("rb") as fh:
        yield from _spans(fh, path, batch, max_element)


def _spans(fh: BinaryIO, path: Path, batch: int, max_element: int) -> Iterator[Spans]:
    read = fh.read
    head = read(BLOCK)
    while True:  # up to the first byte that is not a byte-order mark or whitespace
        body = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
        more = b"" if len(head) >= 3 and body.lstrip(_WS) else read(BLOCK)
        if not more:
            break
        head += more
    lead = len(head) - len(body) + len(body) - len(body.lstrip(_WS))
    if head[lead : lead + 1] != b"[":
        raise _truncated(path, "the file does not start with a JSON array")
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    pending = 0
    start = lead + 1  # the current element's first byte
    depth = 1
    in_string = False
    escaped_first = False  # the block's first byte follows an odd run of backslashes
    base = 0  # the block's offset in the file
    block = head
    n_seen = 0
    while block:
        a = np.frombuffer(block, dtype=np.uint8)
        lo = start - base if base <= start else 0  # scan from the array's first byte
        # escaped bytes: each one after an odd run of backslashes
        bs = np.flatnonzero(a == 92)
        escaped = np.empty(0, dtype=np.int64)
        carry_escape = False
        if bs.size or escaped_first:
            if bs.size:
                brk = np.flatnonzero(np.diff(bs) != 1) + 1
                run_first = np.concatenate(([0], brk))
                run_end = np.concatenate((brk, [bs.size]))
                lens = run_end - run_first
                if escaped_first and bs[0] == 0:
                    lens[0] -= 1  # the first backslash is itself escaped
                escaped = bs[run_end[lens % 2 == 1] - 1] + 1
            if escaped_first and not (bs.size and bs[0] == 0):
                escaped = np.concatenate(([0], escaped))
            if escaped.size and escaped[-1] == a.size:
                carry_escape = True
                escaped = escaped[:-1]
        quotes = np.flatnonzero(a == 34)
        if escaped.size:
            quotes = quotes[~np.isin(quotes, escaped, assume_unique=True)]
        folded = a | 32  # "[" -> "{", "]" -> "}"
        struct = np.flatnonzero((a == 44) | (folded == 123) | (folded == 125))
        del folded
        if lo:
            struct = struct[struct >= lo]
            quotes_before_lo = int(np.searchsorted(quotes, lo))
        else:
            quotes_before_lo = 0
        # outside a string: an even number of unescaped quotes since the block's start
        parity = (np.searchsorted(quotes, struct) - quotes_before_lo + int(in_string)) & 1
        struct = struct[parity == 0]
        chars = a[struct]
        step = np.where(chars == 44, 0, np.where((chars | 32) == 123, 1, -1))
        level = np.cumsum(step) + depth  # the depth after each structural byte
        closed = np.flatnonzero(level == 0)
        stop = int(closed[0]) if closed.size else struct.size
        seps = struct[:stop][(chars[:stop] == 44) & (level[:stop] == 1)] + base
        if closed.size:
            seps = np.concatenate((seps, [struct[stop] + base]))
        if seps.size:
            s = np.concatenate(([start], seps[:-1] + 1))
            big = np.flatnonzero(seps - s > max_element)
            if big.size:
                k = int(big[0])
                starts.append(s[:k])
                ends.append(seps[:k])
                yield from _batches(starts, ends, batch)
                n = n_seen + pending + k + 1
                raise _truncated(path, f"array element {n} is larger than {max_element:,} bytes")
            if (
                closed.size
                and n_seen + pending == 0
                and seps.size == 1
                and not _read_at(fh, int(s[0]), int(seps[0] - s[0])).strip(_WS)
            ):
                s, seps = s[:0], seps[:0]  # "[ ]": an empty array
            starts.append(s)
            ends.append(seps)
            pending += s.size
            if seps.size:
                start = int(seps[-1]) + 1
        if closed.size:
            rest = block[int(struct[stop]) + 1 :]
            yield from _batches(starts, ends, batch)
            while True:
                if rest.strip(_WS):
                    raise _truncated(path, "text after the array's closing bracket")
                rest = read(BLOCK)
                if not rest:
                    return
        if base + a.size - start > max_element:
            n = n_seen + pending + 1
            yield from _batches(starts, ends, batch)
            raise _truncated(path, f"array element {n} is larger than {max_element:,} bytes")
        while pending >= batch:
            out = _take(starts, ends, batch)
            pending -= batch
            n_seen += batch
            yield out
        depth = int(level[-1]) if level.size else depth
        in_string = bool((quotes.size - quotes_before_lo + int(in_string)) & 1)
        escaped_first = carry_escape
        base += a.size
        block = read(BLOCK)
    yield from _batches(starts, ends, batch)
    raise _truncated(path, "the file ends inside the array")


def _read_at(fh: BinaryIO, offset: int, size: int) -> bytes:
    return os.pread(fh.fileno(), size, offset)


def _take(starts: list[np.ndarray], ends: list[np.ndarray], n: int) -> Spans:
    s, e = np.concatenate(starts), np.concatenate(ends)
    starts[:] = [s[n:]] if s.size > n else []
    ends[:] = [e[n:]] if e.size > n else []
    return s[:n], e[:n]


def _batches(starts: list[np.ndarray], ends: list[np.ndarray], batch: int) -> Iterator[Spans]:
    while starts:
        s, e = _take(starts, ends, batch)
        if s.size:
            yield s, e


def read_texts(fd: int, spans: Spans) -> tuple[bytearray, np.ndarray]:
    """The texts of a batch of elements, read from the file: one buffer
    (the commas between them blanked) and ``n + 1`` offsets into it."""
    starts, ends = spans
    first = int(starts[0])
    size = int(ends[-1]) - first
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.preadv(fd, [view[got:]], first + got)
        if n <= 0:
            raise OSError(f"the file shrank while it was read (at byte {first + got})")
        got += n
    sep = ends[:-1] - first
    if sep.size:
        np.frombuffer(buf, dtype=np.uint8)[sep] = 32  # the commas between elements
    offsets = np.concatenate((starts - first, [size])).astype(np.int64)
    return buf, offsets


def texts_array(fd: int, spans: Spans) -> pa.Array:
    """:func:`read_texts` as an Arrow binary array (no copy of the texts)."""
    buf, offsets = read_texts(fd, spans)
    return pa.Array.from_buffers(
        pa.large_binary(), offsets.size - 1, [None, pa.py_buffer(offsets), pa.py_buffer(buf)]
    )


def load_element(text: bytes | memoryview, path: str, position: int) -> object:
    """One element parsed; a malformed one makes the whole file unreadable,
    as a malformed file parsed whole does."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        reason = (
            "invalid UTF-8"
            if "utf-8" in str(exc).lower()
            else f"malformed or truncated JSON (array element {position}: {exc})"
        )
        raise DataFileError(reason, path=path) from None


__all__ = ["BLOCK", "Spans", "element_spans", "load_element", "read_texts", "texts_array"]
