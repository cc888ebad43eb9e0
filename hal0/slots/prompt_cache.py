"""llama-server's prompt cache kept across unloads: each server slot's KV cache is saved
(``POST /slots/<id>?action=save``) into ``slots/<name>/prompt-cache/`` before the backend stops,
and restored (``?action=restore``) when the same model loads again, so a long system prompt is not
processed again. The backend runs with ``--slot-save-path`` on that folder.

Bounded: after a save the oldest files of every slot are removed until the total fits; a model's
files are removed with the model. Saving or restoring never fails a stop or a start: a backend
that refuses just loses its cache.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import aiohttp

__all__ = ["FOLDER", "files_of", "forget", "prune", "restore", "save"]

log = logging.getLogger("hal0.slots")
FOLDER = "prompt-cache"
TIMEOUT = aiohttp.ClientTimeout(total=30)  # a hung backend must not hold an unload for long


def _stem(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", model_id)[:120]


def files_of(folder: Path, model_id: str) -> list[Path]:
    """The saved caches of ``model_id`` in ``folder`` (one per server slot)."""
    return sorted(folder.glob(f"{_stem(model_id)}.slot*.bin"))


async def _server_slots(session: aiohttp.ClientSession, base_url: str) -> list[int]:
    async with session.get(base_url + "/slots", timeout=TIMEOUT) as r:
        if r.status != 200:
            return [0]
        return [int(s["id"]) for s in await r.json() if isinstance(s, dict) and "id" in s]


async def save(session: aiohttp.ClientSession, base_url: str, folder: Path, model_id: str) -> int:
    """Save every server slot's cache of ``model_id``; returns the tokens saved (0 on failure)."""
    saved = 0
    try:
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        for old in files_of(folder, model_id):  # a slot that is empty now must not restore an old cache
            old.unlink(missing_ok=True)
        for i in await _server_slots(session, base_url):
            name = f"{_stem(model_id)}.slot{i}.bin"
            async with session.post(f"{base_url}/slots/{i}?action=save", json={"filename": name},
                                    timeout=TIMEOUT) as r:
                body = await r.json() if r.status == 200 else {}
            n = int(body.get("n_saved", 0) or 0)
            if n == 0:
                (folder / name).unlink(missing_ok=True)
            saved += n
    except (aiohttp.ClientError, OSError, ValueError, TypeError, TimeoutError) as e:
        log.warning("saving the prompt cache of %s failed: %s", model_id, e)
    return saved


async def restore(session: aiohttp.ClientSession, base_url: str, folder: Path, model_id: str) -> int:
    """Restore the saved caches of ``model_id`` into the server's slots; returns the tokens restored."""
    restored = 0
    files = await asyncio.to_thread(files_of, folder, model_id)
    if not files:
        return 0
    try:
        ids = await _server_slots(session, base_url)
        for i, file in zip(ids, files, strict=False):
            async with session.post(f"{base_url}/slots/{i}?action=restore", json={"filename": file.name},
                                    timeout=TIMEOUT) as r:
                body = await r.json() if r.status == 200 else {}
            restored += int(body.get("n_restored", 0) or 0)
    except (aiohttp.ClientError, OSError, ValueError, TypeError, TimeoutError) as e:
        log.warning("restoring the prompt cache of %s failed: %s", model_id, e)
    return restored


def prune(slots_state: Path, max_bytes: int) -> list[Path]:
    """Remove the oldest saved caches under ``slots_state/*/prompt-cache/`` until they total at most
    ``max_bytes``; returns what was removed. Blocks (call it off the loop)."""
    files = []
    for f in slots_state.glob(f"*/{FOLDER}/*.bin"):
        try:
            st = f.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, f))
    files.sort()
    total = sum(size for _, size, _ in files)
    removed = []
    for _, size, f in files:
        if total <= max_bytes:
            break
        f.unlink(missing_ok=True)
        total -= size
        removed.append(f)
    return removed


def forget(slots_state: Path, model_id: str) -> None:
    """Remove every slot's saved cache of ``model_id`` (the model was removed). Blocks."""
    for folder in slots_state.glob(f"*/{FOLDER}"):
        for f in files_of(folder, model_id):
            f.unlink(missing_ok=True)
