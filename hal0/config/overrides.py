"""``slots/<name>.env``: the runtime model override that ``swap`` writes."""

from __future__ import annotations

from pathlib import Path

from hal0.atomic import atomic_write
from hal0.errors import ConfigInvalid
from hal0.paths import Paths

__all__ = ["read_override", "write_override"]

KEY = "HAL0_MODEL"


def _lines(file: Path) -> list[str]:
    """The file's lines ([] if it does not exist); raises ConfigInvalid for bytes that are not UTF-8."""
    try:
        return file.read_bytes().decode().splitlines()
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as e:
        raise ConfigInvalid(str(file), "", f"not UTF-8 text (byte {e.start}: {e.reason}); "
                            f"fix or remove the file") from None
    except OSError as e:
        raise ConfigInvalid(str(file), "", f"cannot be read ({e.strerror})") from None


def read_override(paths: Paths, slot: str) -> str | None:
    """The slot's model override, if any. Raises ConfigInvalid."""
    for line in _lines(paths.slot_env(slot)):
        key, sep, value = line.partition("=")
        if sep and key.strip() == KEY and value.strip():
            return value.strip()
    return None


def write_override(paths: Paths, slot: str, model: str | None) -> None:
    """Set (or with None, clear) the override, keeping any other lines."""
    file = paths.slot_env(slot)
    lines = [ln for ln in _lines(file) if ln.partition("=")[0].strip() != KEY]
    if model is not None:
        lines.append(f"{KEY}={model}")
    atomic_write(file, "".join(f"{ln}\n" for ln in lines))
