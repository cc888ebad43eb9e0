from __future__ import annotations

import asyncio

from hal0.events import EventBus


async def test_overflow_drops_oldest_and_sends_resync() -> None:
    bus = EventBus()
    with bus.subscribe(maxsize=3) as sub:
        for i in range(5):
            bus.publish("tick", {"i": i})
        first = await sub.get()
        assert first is not None and (first.kind, first.data) == ("resync", {"dropped": 2})
        rest = [await sub.get() for _ in range(3)]
        assert [e.data["i"] for e in rest if e] == [2, 3, 4]
    assert bus.subscriber_count == 0


async def test_close_wakes_a_waiting_subscriber() -> None:
    bus = EventBus()
    with bus.subscribe() as sub:
        waiter = asyncio.ensure_future(sub.get())
        await asyncio.sleep(0)  # let the waiter block; no timing depends on it
        bus.close()
        assert await waiter is None


async def test_publish_never_blocks_on_a_slow_subscriber() -> None:
    bus = EventBus()
    with bus.subscribe(maxsize=1):
        for i in range(10_000):
            bus.publish("tick", {"i": i})  # would deadlock or grow without bound otherwise
