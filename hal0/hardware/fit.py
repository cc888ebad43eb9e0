"""Will a model fit this box? The fit estimate (``hal0.models.fit``) against what ``hardware.json``
says a backend has. Blocks on small reads: call it off the event loop."""

from __future__ import annotations

import json
from pathlib import Path

from hal0.errors import Hal0Error
from hal0.hardware.seeding import memory_for
from hal0.models.fit import estimate
from hal0.models.gguf import read_gguf

__all__ = ["too_large"]


def too_large(path: Path, context_size: int, backend: str, hardware_json: Path) -> dict[str, int] | None:
    """The estimate and the memory ``backend`` has, when a GGUF will not fit; None when it fits or
    nothing can be said (not a GGUF, an unreadable header, no hardware.json)."""
    if path.suffix.lower() != ".gguf" or not hardware_json.is_file():
        return None
    try:
        available = memory_for(json.loads(hardware_json.read_text()), backend)
        need = estimate(read_gguf(path), context_size)
    except (Hal0Error, OSError, ValueError, KeyError, TypeError):
        return None  # the start itself will tell what is wrong with the file
    if available is None or need.total_bytes <= available:
        return None
    return {"needed": need.total_bytes, "available": available, "weights": need.weights_bytes, "kv": need.kv_bytes,
            "overhead": need.overhead_bytes}
