"""A slot's admission gate: places, a bounded FIFO queue in front of them, and who is active.

``max_inflight`` requests hold a place; up to ``max_queue`` more wait for one in order;
beyond that ``SlotBusy`` (429 with Retry-After) before any byte was sent. A holder becomes
*active* once the slot is dispatchable and it is being forwarded: the slot is ``serving``
while anyone is active. Everything here is synchronous on the event loop except waiting for
a place, so the counts can never disagree.
"""

from __future__ import annotations

import asyncio
from collections import deque

from hal0.errors import SlotBusy

__all__ = ["Gate"]


class Gate:
    def __init__(self, slot: str, max_inflight: int, max_queue: int) -> None:
        self._slot, self._max_inflight, self._max_queue = slot, max_inflight, max_queue
        self._places = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.active = 0
        self.drained = asyncio.Event()  # set while nobody is active (unload waits on it)
        self.drained.set()
        # Set while nobody holds or waits for a place: not even a request waiting for the slot to
        # load (an eviction waits on it, so a slot is not taken from requests that came for it).
        self.vacant = asyncio.Event()
        self.vacant.set()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def enter(self) -> None:
        """Take a place, waiting in order; raises SlotBusy at once when the queue is full.
        Every successful ``enter()`` is paired with ``leave()``."""
        if self._places < self._max_inflight and not self._waiters:
            self._places += 1  # the common case: no allocation, no await
            self.vacant.clear()
            return
        if len(self._waiters) >= self._max_queue:
            raise SlotBusy(f"slot {self._slot} is busy: {self._places} requests in flight and "
                           f"{len(self._waiters)} queued", retry_after=1, slot=self._slot,
                           inflight=self._places, queued=len(self._waiters))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.vacant.clear()
        try:
            await fut  # the place is handed over by the holder that leaves
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.leave()  # we were handed a place but are gone: pass it on
            else:
                self._waiters.remove(fut)
                if not self._places and not self._waiters:
                    self.vacant.set()
            raise

    def leave(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._places -= 1
        if not self._places:
            self.vacant.set()

    def begin(self) -> bool:
        """One holder starts forwarding; True when it is the first (the slot starts serving)."""
        self.active += 1
        if self.active == 1:
            self.drained.clear()
            return True
        return False

    def end(self) -> bool:
        """One holder is done; True when it was the last (the slot stops serving)."""
        self.active -= 1
        if self.active == 0:
            self.drained.set()
            return True
        return False
