"""The admission gate of a slot: places, the bounded queue, and who is active."""

from __future__ import annotations

import asyncio

import pytest

from hal0.errors import SlotBusy
from hal0.slots.gate import Gate


async def test_gate_queues_in_order_and_rejects_beyond_the_queue() -> None:
    gate = Gate("s", max_inflight=1, max_queue=1)
    order: list[str] = []
    await gate.enter()

    async def second() -> None:
        await gate.enter()
        order.append("second")
        gate.leave()

    task = asyncio.ensure_future(second())
    await asyncio.sleep(0)  # one loop turn: it queues
    assert gate.queued == 1
    with pytest.raises(SlotBusy) as e:
        await gate.enter()
    assert e.value.status == 429 and e.value.headers() == {"Retry-After": "1"}
    gate.leave()
    await task
    assert order == ["second"] and gate.queued == 0


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    gate = Gate("s", max_inflight=1, max_queue=2)
    await gate.enter()
    waiter = asyncio.ensure_future(gate.enter())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.queued == 0
    gate.leave()
    await asyncio.wait_for(gate.enter(), 1)  # the place is free again
    gate.leave()


def test_active_counts_flip_serving_once_and_drain() -> None:
    gate = Gate("s", max_inflight=4, max_queue=4)
    assert gate.begin() is True and gate.begin() is False  # only the first starts serving
    assert not gate.drained.is_set()
    assert gate.end() is False and gate.end() is True  # only the last stops it
    assert gate.drained.is_set() and gate.active == 0
