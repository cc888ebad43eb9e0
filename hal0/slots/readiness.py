"""Is the backend up? Readiness while it starts, liveness while it serves.

Both use the provider's one ``probe()``. Neither owns the process: they watch
``proc.exited`` and return or raise; the slot's owner decides what follows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hal0.errors import SlotStartFailed
from hal0.providers import Readiness
from hal0.slots.process import BackendProcess, LogRing

__all__ = ["UNRESPONSIVE", "wait_ready", "watch"]

Probe = Callable[[], Awaitable[Readiness]]
UNRESPONSIVE = "backend stopped answering its health check"


async def wait_ready(probe: Probe, proc: BackendProcess, log: LogRing, *, slot: str, grace_s: float,
                     backoff_s: float, backoff_max_s: float) -> None:
    """Probe with jittered backoff, and at once whenever the backend prints a line, until ready.

    Raises SlotStartFailed when the backend exits meanwhile (exit code and last lines) or
    ``grace_s`` runs out (the caller kills it). Cancellable at every await.
    """
    deadline = time.monotonic() + grace_s
    delay = backoff_s
    while True:
        if await probe() is Readiness.READY:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SlotStartFailed(f"{slot} did not become ready within {grace_s:g}s; the backend was killed",
                                  slot=slot, log=log.tail(20))
        proc.output.clear()
        printed = asyncio.ensure_future(proc.output.wait())
        either: set[asyncio.Future[Any]] = {proc.exited, printed}
        try:
            await asyncio.wait(either, timeout=min(delay * random.uniform(0.8, 1.2), remaining),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            printed.cancel()
        if proc.exited.done():
            lines = log.tail(20)
            code = proc.exited.result()
            raise SlotStartFailed(f"backend exited with code {code} while loading: " + " | ".join(lines[-5:]),
                                  slot=slot, exit_code=code, log=lines)
        delay = min(delay * 2, backoff_max_s)


async def watch(probe: Probe, proc: BackendProcess, *, interval_s: float, failures: int) -> str:
    """Block while the backend lives and answers; return why it no longer does.

    Every ``interval_s`` one probe, itself limited to ``interval_s``; ``failures`` misses in a
    row (a timeout or a refused connection; a backend that says it is loading answered) end
    the watch. ``interval_s`` 0 watches only for the exit.
    """
    misses = 0
    while True:
        done, _ = await asyncio.wait({proc.exited}, timeout=interval_s or None)
        if done:
            return f"backend exited unexpectedly with code {proc.exited.result()}"
        try:
            async with asyncio.timeout(interval_s):
                alive = await probe() is not Readiness.DOWN
        except TimeoutError:
            alive = False
        if proc.exited.done():
            continue  # the exit is the better reason
        misses = 0 if alive else misses + 1
        if misses >= failures:
            return f"{UNRESPONSIVE} ({misses} probes {interval_s:g}s apart failed)"
