"""The one way hal0 writes a file: temp file, fsync, ``os.replace``, fsync the directory.

A crash at any point leaves either the previous file or the new one, never a mix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "install_file"]


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically, creating parent folders.

    ``mode`` is applied before the file becomes visible, so a secret is never
    readable by others even for an instant. Blocks on fsync; raises OSError.
    """
    if isinstance(data, str):
        data = data.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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
