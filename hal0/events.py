"""The event bus: the publisher never blocks, each subscriber has a bounded queue.

On overflow a subscriber loses its oldest events and its next ``get()`` returns a
``resync`` event first, so a dashboard knows to re-read the full state.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventBus", "Subscription"]


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]
    ts: float = field(default_factory=time.time)


class Subscription:
    """One subscriber's bounded queue. Use as a context manager to unsubscribe."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: deque[Event] = deque()
        self._maxsize = maxsize
        self._wake = asyncio.Event()
        self._dropped = 0
        self.closed = False

    def _push(self, event: Event) -> None:
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(event)
        self._wake.set()

    def _close(self) -> None:
        self.closed = True
        self._wake.set()

    async def get(self) -> Event | None:
        """The next event; a ``resync`` marker after an overflow; None once the bus closed."""
        while not self._queue and not self.closed:
            self._wake.clear()
            await self._wake.wait()
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            return Event(0, "resync", {"dropped": dropped})
        if not self._queue:
            return None
        return self._queue.popleft()

    def get_nowait(self) -> Event | None:
        """The next queued event, or None when none is queued."""
        return self._queue.popleft() if self._queue else None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bus._subscribers.discard(self)


class EventBus:
    """Fan-out of events to subscribers; ``publish`` is synchronous and never waits."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._ids = itertools.count(1)
        self._closed = asyncio.Event()

    def publish(self, kind: str, data: dict[str, Any]) -> Event:
        event = Event(next(self._ids), kind, data)
        for sub in self._subscribers:
            sub._push(event)
        return event

    def subscribe(self, maxsize: int = 256) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subscribers.add(sub)
        return sub

    def close(self) -> None:
        """End every subscription (at shutdown, so SSE handlers return)."""
        for sub in self._subscribers:
            sub._close()
        self._closed.set()

    async def wait_closed(self) -> None:
        """Block until ``close()``: other streams (log following) end with the event streams."""
        await self._closed.wait()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
