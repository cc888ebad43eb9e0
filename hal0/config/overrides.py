"""``slots/<name>.env``: the runtime model override that ``swap`` writes."""

from __future__ import annotations

from hal0.atomic import atomic_write
from hal0.paths import Paths

__all__ = ["read_override", "write_override"]

KEY = "HAL0_MODEL"


def read_override(paths: Paths, slot: str) -> str | None:
    file = paths.slot_env(slot)
    if not file.exists():
        return None
    for line in file.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == KEY and value.strip():
            return value.strip()
    return None


def write_override(paths: Paths, slot: str, model: str | None) -> None:
    """Set (or with None, clear) the override, keeping any other lines."""
    file = paths.slot_env(slot)
    lines = [ln for ln in (file.read_text().splitlines() if file.exists() else [])
             if ln.partition("=")[0].strip() != KEY]
    if model is not None:
        lines.append(f"{KEY}={model}")
    atomic_write(file, "".join(f"{ln}\n" for ln in lines))
