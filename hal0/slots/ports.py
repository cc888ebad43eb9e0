"""The one port allocator for slots, and the bind test run before every spawn."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from hal0.errors import SlotPortInUse

__all__ = ["allocate_port", "port_is_free"]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound right now (the test a backend's own bind would pass)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def allocate_port(used: Iterable[int], lo: int, hi: int, *, start: int | None = None,
                  avoid: Iterable[int] = ()) -> int:
    """The first port from ``start`` (default ``lo``) to ``hi`` that no slot uses and is free.

    Raises SlotPortInUse when the range is exhausted.
    """
    taken = set(used) | set(avoid)
    for port in range(max(lo, start or lo), hi + 1):
        if port not in taken and port_is_free(port):
            return port
    raise SlotPortInUse(f"no free port left in the slot range {lo}-{hi}; widen [slots].port_range",
                        range=[lo, hi])
