"""The image cache behind ``response_format: url``: ``<state>/images/<id>.png``.

Names are 128 random bits (URL-safe base64), so a URL is a capability: it can be fetched
without a token (a browser showing the image has none), and nobody can guess another's. The
cache is bounded by count and by bytes and forgets the least recently used image first; it
is rebuilt from the folder at start, oldest first.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import OrderedDict
from pathlib import Path

from hal0.atomic import atomic_write

__all__ = ["NAME_RE", "ImageCache"]

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{22}\.png$")


class ImageCache:
    def __init__(self, folder: Path, max_files: int, max_bytes: int) -> None:
        self.folder, self.max_files, self.max_bytes = folder, max_files, max_bytes
        self._sizes: OrderedDict[str, int] = OrderedDict()  # name -> bytes, least recently used first
        self._bytes = 0
        found = []
        if folder.is_dir():
            for f in folder.iterdir():
                if NAME_RE.match(f.name):
                    st = f.stat()
                    found.append((st.st_mtime_ns, f.name, st.st_size))
        for _, name, size in sorted(found):
            self._sizes[name] = size
            self._bytes += size
        self._evict()

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes

    async def put(self, data: bytes) -> str:
        """Store one PNG; returns its file name."""
        name = secrets.token_urlsafe(16) + ".png"
        await asyncio.to_thread(atomic_write, self.folder / name, data, mode=0o600)
        self._sizes[name] = len(data)
        self._bytes += len(data)
        self._evict()
        return name

    def path(self, name: str) -> Path | None:
        """The file for ``name`` (touched as recently used), or None if it is not (or no longer) here."""
        if not NAME_RE.match(name) or name not in self._sizes:
            return None
        self._sizes.move_to_end(name)
        return self.folder / name

    def _evict(self) -> None:
        while self._sizes and (len(self._sizes) > self.max_files or self._bytes > self.max_bytes):
            name, size = self._sizes.popitem(last=False)
            self._bytes -= size
            (self.folder / name).unlink(missing_ok=True)
