"""The entries of ``GET /v1/models`` (and of the model status APIs built on them), from memory:
slot names first (built-ins, then custom), then the models they run, then remote ids.

Each local entry carries what UIs look for: ``slot``, ``state``, ``modality``, ``capabilities``
(from the slot's kind, plus what the registry says of its model, such as vision) and
``context_length`` (the slot's context size, capped by what the model's GGUF was trained for)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web

from hal0.errors import Hal0Error
from hal0.models.gguf import read_gguf
from hal0.roles import CAPABILITIES, Modality
from hal0.server.keys import DISPATCHER, REGISTRY, SLOTS, STARTED_WALL
from hal0.slots import Slot

__all__ = ["model_list", "slot_entry"]


@lru_cache(maxsize=64)
def _trained_context(path: str, mtime_ns: int) -> int | None:
    try:
        return read_gguf(Path(path)).context_length
    except (Hal0Error, OSError):
        return None


def _context_length(slot: Slot) -> int | None:
    size = slot.config.model.context_size or None
    model = slot.model
    if model is None or model.path.suffix != ".gguf":
        return size
    try:
        trained = _trained_context(str(model.path), model.path.stat().st_mtime_ns)
    except OSError:
        return size
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


def model_list(app: web.Application) -> list[dict[str, Any]]:
    """Every entry, never asking a backend (a GGUF header is read once per file and kept)."""
    created = int(app[STARTED_WALL])
    registry_caps = {mid: e.capabilities for mid, e in app[REGISTRY].entries().items()}
    slots = {s.name: s for s in app[SLOTS]}
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
    for mid, name in app[DISPATCHER].upstreams.model_map().items():
        add(mid, upstream=name, state="remote", modality="remote")
    return entries
