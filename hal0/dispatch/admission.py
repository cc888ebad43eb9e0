"""Per-slot admission: an in-flight cap and a bounded FIFO queue in front of it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hal0.errors import SlotBusy

__all__ = ["Admission"]


class Admission:
    """At most ``max_inflight`` holders; up to ``max_queue`` more wait in order; beyond: SlotBusy."""

    def __init__(self, slot: str, max_inflight: int, max_queue: int) -> None:
        self._slot, self._max_inflight, self._max_queue = slot, max_inflight, max_queue
        self._inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def enter(self) -> None:
        """Take a place, waiting in order; raises SlotBusy (429) at once when the queue is full.
        Every successful enter() must be paired with leave()."""
        if self._inflight < self._max_inflight and not self._waiters:
            self._inflight += 1  # the common case: no allocation, no await
            return
        if len(self._waiters) >= self._max_queue:
            raise SlotBusy(f"slot {self._slot} is busy: {self._inflight} requests in flight and "
                           f"{len(self._waiters)} queued", retry_after=1, slot=self._slot,
                           inflight=self._inflight, queued=len(self._waiters))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the place is handed over by the holder that leaves
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.leave()  # we were handed a place but are gone: pass it on
            else:
                self._waiters.remove(fut)
            raise

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """``enter()`` ... ``leave()`` as a context manager."""
        await self.enter()
        try:
            yield
        finally:
            self.leave()

    def leave(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._inflight -= 1
