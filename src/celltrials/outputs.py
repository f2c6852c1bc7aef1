"""Writing output files: one error path for every fault, nothing half-written.

Every command that writes a file (export, labels, results export, report,
meta plots) goes through :func:`check_output_file` / :func:`ensure_dir` and
:func:`write_atomic`, so an unwritable location (a read-only folder, a file
in place of a folder, ``/proc/…``, a full disk) is one
:class:`~celltrials.errors.OutputError` with a hint, and a failed write
leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from celltrials.errors import OutputError

_REASONS = {
    errno.ENOSPC: (
        "no space left on the device",
        "Free some disk space or write elsewhere with --out.",
    ),
    errno.EDQUOT: ("disk quota exceeded", "Free some space or write elsewhere with --out."),
    errno.EACCES: ("permission denied", "Choose a folder you can write to."),
    errno.EPERM: ("operation not permitted", "Choose a folder you can write to."),
    errno.EROFS: ("the file system is read-only", "Choose a folder on a writable disk."),
    errno.ENOENT: ("the folder does not exist", "Create the folder first or choose another path."),
    errno.ENOTDIR: (
        "a file is in the way of a folder in that path",
        "Choose a path whose folders are folders.",
    ),
    errno.EISDIR: ("it is a folder", "Give a file name, not a folder."),
    errno.ENAMETOOLONG: ("the name is too long", "Choose a shorter path."),
    errno.EEXIST: ("a file of that name is in the way", "Choose another path."),
}


def output_error(exc: OSError, path: str | os.PathLike[str]) -> OutputError:
    """An :class:`OutputError` naming ``path`` and the reason for an OS error."""
    reason, hint = _REASONS.get(
        exc.errno or 0, (exc.strerror or str(exc), "Choose a writable location with --out.")
    )
    return OutputError(f"cannot write {path}: {reason}", path=str(path), hint=hint)


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create folder ``path`` (and parents) or raise a clear :class:`OutputError`."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(
            f"cannot write into {p}: it is a file, not a folder",
            path=str(p),
            hint="Choose a folder name that is not an existing file.",
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, p) from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write into {p}: permission denied",
            path=str(p),
            hint="Choose a folder you can write to.",
        )
    return p


def check_output_file(path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Refuse to overwrite an existing file unless ``force``; create a
    missing parent folder; refuse a folder in place of the file."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(
            f"cannot write {p}: it is a folder", path=str(p), hint="Give a file name, not a folder."
        )
    if p.exists() and not force:
        raise OutputError(
            f"{p} already exists; not overwritten",
            path=str(p),
            hint="Pass --force to overwrite it, or choose another output name.",
        )
    ensure_dir(p.parent if str(p.parent) else Path("."))
    return p


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it
    into place: readers never see half a file and a failed write leaves none.

    A path that exists and is not a regular file (``/dev/null``, a pipe) is
    written directly, since renaming over it would replace the device.
    """
    p = Path(path)
    if p.exists() and not p.is_file():
        try:
            write(p)
        except OSError as exc:
            raise output_error(exc, p) from None
        return p
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{p.name}.", suffix=".tmp" + p.suffix, dir=p.parent if str(p.parent) else "."
        )
    except OSError as exc:
        raise output_error(exc, p) from None
    os.close(fd)
    tmp = Path(tmp_name)
    with contextlib.suppress(OSError):  # mkstemp makes 0600; give the file the usual permissions
        os.chmod(tmp, 0o666 & ~_umask())
    try:
        write(tmp)
        os.replace(tmp, p)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise output_error(exc, p) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return p


__all__ = ["check_output_file", "ensure_dir", "output_error", "write_atomic"]
