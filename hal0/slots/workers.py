"""Can a slot reach its llama.cpp RPC workers (``rpc = ["host:port", ...]``)?

A worker is reached when a TCP connection to it opens; nothing is sent. That is harmless to a
``hal0 worker``, whose gate connects to ``rpc-server`` only once a client sends its first
byte (a bare ``rpc-server`` serves one client at a time and would queue the probe behind
llama-server's own connection). The slot's owner calls these; they never change a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from hal0.config.load import split_hostport

__all__ = ["UP", "check", "down_message", "reach"]

UP = "up"


async def reach(addr: str, timeout: float) -> str:
    """``UP`` when a TCP connection to ``addr`` opens within ``timeout`` s, else why not."""
    host, port = split_hostport(addr)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except OSError as e:
        return e.strerror or str(e)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return UP


async def check(addrs: Sequence[str], timeout: float) -> dict[str, str]:
    """Every worker's state: ``UP`` or why it cannot be reached; probed in parallel."""
    states = await asyncio.gather(*(reach(a, timeout) for a in addrs))
    return dict(zip(addrs, states, strict=True))


def down_message(states: dict[str, str]) -> str | None:
    """One line naming every unreachable worker, or None when all are up."""
    down = [f"{addr} ({why})" for addr, why in states.items() if why != UP]
    if not down:
        return None
    return f"rpc worker{'s' if len(down) > 1 else ''} {', '.join(down)} unreachable"
