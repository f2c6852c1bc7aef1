"""Finding input files: folders walked and globs expanded without ever looping.

``os.walk``/``glob('**')`` follow symbolic links to folders; a link that
points back up the tree (``data/loop -> ..``) makes them grow without end.
:func:`walk_files` follows links but enters each real folder (device, inode)
once, and :func:`expand_glob` matches ``**`` patterns over that same walk.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from pathlib import Path


def walk_files(root: str | os.PathLike[str]) -> Iterator[Path]:
    """Every file under ``root`` (links followed, each real folder once), sorted
    per folder; unreadable folders are skipped."""
    seen: set[tuple[int, int]] = set()
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir():  # follows links; the inode check above stops cycles
                    subdirs.append(Path(entry.path))
                elif entry.is_file():
                    yield Path(entry.path)
            except OSError:
                continue
        stack.extend(reversed(subdirs))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob pattern with ``**`` (any folders, zero or more)."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def expand_glob(pattern: str) -> list[str]:
    """Paths matching ``pattern``, sorted; ``**`` walks folders cycle-safely."""
    if "**" not in pattern:
        return sorted(glob.glob(pattern))
    parts = pattern.replace(os.sep, "/").split("/")
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    root = "/".join(fixed) or "."
    if pattern.startswith("/") and not fixed[1:]:
        root = "/"
    rest = pattern.replace(os.sep, "/")[len("/".join(fixed)) :].lstrip("/") if fixed else pattern
    rx = _glob_regex(rest)
    base = Path(root)
    out = []
    if rx.match(""):
        out.append(str(base))
    for f in walk_files(base):
        rel = f.relative_to(base).as_posix()
        if rx.match(rel) and not any(
            p.startswith(".") for p in rel.split("/") if not rest.startswith(".")
        ):
            out.append(str(f))
    return sorted(out)


__all__ = ["expand_glob", "walk_files"]
