"""Recent OpenAI Responses on disk, per token, so ``previous_response_id`` continues a
conversation: ``<state>/responses/<token id>/<response id>.json``, written through
``hal0.atomic``. Each token keeps at most ``max_count`` responses and ``max_bytes`` bytes, the
oldest going first. A token reads only its own: another token's id is simply not found.

Methods block on the disk; callers run them in a thread."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hal0.atomic import atomic_write

__all__ = ["MAX_BYTES", "MAX_COUNT", "ResponseStore"]

MAX_COUNT = 200
MAX_BYTES = 64 << 20
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class ResponseStore:
    def __init__(self, root: Path, max_count: int = MAX_COUNT, max_bytes: int = MAX_BYTES) -> None:
        self.root, self.max_count, self.max_bytes = root, max_count, max_bytes

    def _file(self, owner: str, rid: str) -> Path | None:
        if not _ID.match(owner) or not _ID.match(rid):
            return None  # never a path outside the store
        return self.root / owner / f"{rid}.json"

    def put(self, owner: str, response: dict[str, Any], conversation: list[Any]) -> None:
        """Keep ``response`` and the whole conversation that led to it (inputs, then its output)."""
        file = self._file(owner, str(response.get("id", "")))
        if file is None:
            return
        atomic_write(file, json.dumps({"response": response, "conversation": conversation}), mode=0o600)
        self._prune(file.parent)

    def get(self, owner: str, rid: str) -> dict[str, Any] | None:
        """The stored record (``response``, ``conversation``), or None."""
        file = self._file(owner, rid)
        if file is None:
            return None
        try:
            record: dict[str, Any] = json.loads(file.read_bytes())
        except (OSError, ValueError):
            return None
        return record

    def delete(self, owner: str, rid: str) -> bool:
        file = self._file(owner, rid)
        if file is None or not file.is_file():
            return False
        file.unlink(missing_ok=True)
        return True

    def _prune(self, folder: Path) -> None:
        files = []
        for f in folder.glob("*.json"):
            try:
                st = f.stat()
            except OSError:
                continue
            files.append((st.st_mtime_ns, st.st_size, f))
        files.sort(reverse=True)  # newest first
        total = 0
        for i, (_, size, f) in enumerate(files):
            total += size
            if i >= self.max_count or (total > self.max_bytes and i > 0):
                f.unlink(missing_ok=True)
