"""state.json: every move is written, per-request serving/ready flips at most once per interval."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

import hal0.slots.persist as persist_module
from hal0.paths import Paths
from hal0.slots import SlotState
from hal0.slots.persist import StateWriter
from tests.helpers.slots import fake_bin, slot_config, slot_manager


async def test_a_steady_stream_of_requests_writes_state_json_about_once_per_interval(
        paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    writes: list[str] = []
    spans: list[tuple[float, float]] = []
    real = persist_module.atomic_write

    def counting(path: Path, data: str, **kw: Any) -> None:  # the real write, recorded with its span
        start = time.monotonic()
        writes.append(json.loads(data)["state"])
        real(path, data, **kw)
        spans.append((start, time.monotonic()))
    monkeypatch.setattr(persist_module, "atomic_write", counting)
    monkeypatch.setattr(persist_module, "HOT_PERSIST_S", 0.25)
    async with slot_manager(paths, [slot_config("f", str(model))], fake_bin(tmp_path)) as (mgr, _):
        slot = mgr.get("f")
        await slot.ensure_ready()
        loop = asyncio.get_running_loop()
        before, flips, deadline = len(spans), 0, loop.time() + 30
        while len(spans) < before + 4 and loop.time() < deadline:  # requests back to back, as at c=1
            async with slot.admit():
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            flips += 2
        assert len(spans) >= before + 4, "state.json was not written while requests kept flipping the slot"
        rests = [nxt[0] - end for (_, end), nxt in zip(spans[before:], spans[before + 1:], strict=False)]
        assert min(rests) >= 0.2, rests  # each write waits out the interval after the last one
        assert flips > 100
        await slot.unload()  # moves that are not flips are written at once
        assert slot.state is SlotState.OFFLINE
    assert writes[-1] == "offline"  # the owner has ended: every write is done
    assert json.loads((paths.slot_state_dir("f") / "state.json").read_text())["state"] == "offline"


async def test_a_move_during_a_hot_wait_is_written_at_once(tmp_path: Path) -> None:
    """With the clock in the test's hand: flips wait for it, any other move does not."""
    clock = asyncio.Event()
    written: list[str] = []
    wrote = asyncio.Event()
    state = {"state": "serving"}
    loop = asyncio.get_running_loop()

    def write(_: Path, text: str) -> None:  # runs in a worker thread, as the disk write does
        written.append(json.loads(text)["state"])
        loop.call_soon_threadsafe(wrote.set)

    async def sleep(_: float) -> None:
        await clock.wait()  # the hot delay lasts until the test says so

    writer = StateWriter(tmp_path / "state.json", lambda: dict(state), sleep=sleep, write=write)
    async with asyncio.TaskGroup() as tg:
        writer.bind(tg)
        writer.mark(hot=True)
        for _ in range(5):
            await asyncio.sleep(0)
        assert written == []  # a flip waits out the delay
        state["state"] = "unloading"
        writer.mark()  # a real move: the wait is cut short
        await asyncio.wait_for(wrote.wait(), 5)
        assert written == ["unloading"]
        writer.mark(hot=True)
        clock.set()  # the delay ends: the flip goes out
    assert written == ["unloading", "unloading"]
