"""Sizes in configuration: bytes, or a string such as "12GiB" (pure)."""

from __future__ import annotations

import re

__all__ = ["parse_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.I)
_FACTORS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KI": 1024, "KIB": 1024, "M": 10**6, "MB": 10**6,
            "MI": 1 << 20, "MIB": 1 << 20, "G": 10**9, "GB": 10**9, "GI": 1 << 30, "GIB": 1 << 30,
            "T": 10**12, "TB": 10**12, "TI": 1 << 40, "TIB": 1 << 40}


def parse_size(value: int | str) -> int:
    """Bytes from ``12884901888``, ``"12GiB"``, ``"512 MiB"`` or ``"1.5GB"``; raises ValueError."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a size such as 12GiB, 512MiB or a number of bytes")
    return int(float(m.group(1)) * _FACTORS[(m.group(2) or "").upper()])
