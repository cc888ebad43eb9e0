"""The one way hal0 writes a file: temp file, fsync, ``os.replace``, fsync the directory.

A crash at any point leaves either the previous file or the new one, never a mix.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "install_file"]


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically, creating parent folders.

    ``mode`` is applied before the file becomes visible, so a secret is never
    readable by others even for an instant. Blocks on fsync; raises OSError (a full disk:
    ENOSPC or EDQUOT with the folder as its ``filename``, the old file untouched).
    """
    if isinstance(data, str):
        data = data.encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        _raise_named(e, path.parent)
        raise
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            _raise_named(e, path.parent)
        raise
    _fsync_dir(path.parent)


def _raise_named(err: OSError, folder: Path) -> None:
    """A full disk's error, raised again naming the folder (a write's own error names nothing)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        raise OSError(err.errno, os.strerror(err.errno), str(folder)) from None


def install_file(src: Path, path: Path) -> None:
    """Move a finished file written elsewhere in the same folder (a download's ``.partial``) to
    ``path`` atomically: fsync it, ``os.replace``, fsync the directory. Raises OSError."""
    fd = os.open(src, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(src, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
