"""The entries of ``GET /v1/models`` (and of the model status APIs built on them), from memory:
slot names first (built-ins, then custom), then the models they run, then remote ids (an
upstream's; a peer's with ``peer`` and ``owned_by`` naming it; ``state`` "down" when its health
check failed).

Each local entry carries what UIs look for: ``slot``, ``state``, ``modality``, ``capabilities``
(from the slot's kind, plus what the registry says of its model, such as vision) and
``context_length`` (the slot's context size, capped by what the model's GGUF was trained for)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from hal0.errors import Hal0Error
from hal0.models.gguf import read_gguf
from hal0.roles import CAPABILITIES, Modality
from hal0.server.keys import DISPATCHER, REGISTRY, SLOTS, STARTED_WALL
from hal0.slots import Slot

__all__ = ["learn_contexts", "model_list", "slot_entry"]


_TRAINED: dict[tuple[str, int], int | None] = {}  # (GGUF path, mtime) -> context it was trained for
_TRAINED_MAX = 256


def _gguf_key(slot: Slot) -> tuple[str, int] | None:
    model = slot.model
    if model is None or model.path.suffix != ".gguf":
        return None
    try:
        return str(model.path), model.path.stat().st_mtime_ns
    except OSError:
        return None


def _read_trained(path: str) -> int | None:
    try:
        return read_gguf(Path(path)).context_length
    except (Hal0Error, OSError):
        return None


async def learn_contexts(slots: Iterable[Slot]) -> None:
    """Read the headers of GGUFs not seen yet, in a thread (a large vocabulary takes ~0.2 s)."""
    for key in {k for k in map(_gguf_key, slots) if k is not None and k not in _TRAINED}:
        if len(_TRAINED) >= _TRAINED_MAX:
            _TRAINED.clear()
        _TRAINED[key] = await asyncio.to_thread(_read_trained, key[0])


def _context_length(slot: Slot) -> int | None:
    size = slot.config.model.context_size or None
    key = _gguf_key(slot)
    trained = _TRAINED.get(key) if key else None
    if trained is None:
        return size
    return min(size, trained) if size else trained


def _capabilities(slot: Slot, registry_caps: dict[str, tuple[str, ...]]) -> list[str]:
    caps = list(CAPABILITIES.get(Modality(slot.kind), ()))
    model = slot.model
    for extra in registry_caps.get(model.id, ()) if model else ():
        if extra == "vision" and "chat" in caps and extra not in caps:
            caps.append(extra)
    return caps


def slot_entry(slot: Slot, registry_caps: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """hal0's metadata for a slot's entries."""
    snap = slot.snapshot()
    return {"slot": snap.name, "state": str(snap.state), "modality": snap.kind,
            "capabilities": _capabilities(slot, registry_caps), "context_length": _context_length(slot)}


async def model_list(app: web.Application) -> list[dict[str, Any]]:
    """Every entry, never asking a backend (a GGUF header is read once per file and kept)."""
    created = int(app[STARTED_WALL])
    registry_caps = {mid: e.capabilities for mid, e in app[REGISTRY].entries().items()}
    slots = {s.name: s for s in app[SLOTS]}
    await learn_contexts(slots.values())
    snaps = app[SLOTS].snapshots()
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(mid: str, **meta: Any) -> None:
        if mid not in seen:
            seen.add(mid)
            entries.append({"id": mid, "object": "model", "created": created, "owned_by": "hal0", **meta})

    metas = {snap.name: slot_entry(slots[snap.name], registry_caps) for snap in snaps if snap.name in slots}
    for snap in snaps:
        if snap.name in metas:
            add(snap.name, **metas[snap.name])
    for snap in snaps:
        if snap.model and snap.pid and snap.name in metas:
            add(snap.model, **metas[snap.name])
    upstreams = app[DISPATCHER].upstreams
    for mid, name in upstreams.model_map().items():
        up = upstreams.by_name[name]
        state = "remote" if up.up else "down"  # "down": its health check failed (503 at once)
        if up.kind == "peer":  # another hal0: owned by it, named for it
            add(mid, owned_by=name, peer=name, upstream=name, state=state, modality="remote")
        else:
            add(mid, upstream=name, state=state, modality="remote")
    return entries
