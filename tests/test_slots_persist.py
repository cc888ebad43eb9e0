"""state.json: every move is written, per-request serving/ready flips at most once per interval."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

import hal0.slots.slot as slot_module
from hal0.paths import Paths
from hal0.slots import SlotState
from tests.helpers.slots import fake_bin, slot_config, slot_manager


async def test_a_steady_stream_of_requests_writes_state_json_about_once_per_interval(
        paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    writes: list[str] = []
    started: list[float] = []
    real = slot_module.atomic_write

    def counting(path: Path, data: str, **kw: Any) -> None:  # the real write, counted and timed
        started.append(time.monotonic())
        writes.append(json.loads(data)["state"])
        real(path, data, **kw)
    monkeypatch.setattr(slot_module, "atomic_write", counting)
    monkeypatch.setattr(slot_module, "HOT_PERSIST_S", 0.25)
    async with slot_manager(paths, [slot_config("f", str(model))], fake_bin(tmp_path)) as (mgr, _):
        slot = mgr.get("f")
        await slot.ensure_ready()
        loop = asyncio.get_running_loop()
        before, flips, end = len(writes), 0, loop.time() + 1.0
        while loop.time() < end:  # requests back to back, as at concurrency 1
            assert slot.acquire_nowait()
            await asyncio.sleep(0)
            slot.release_nowait()
            await asyncio.sleep(0)
            flips += 2
        assert flips > 100, flips
        assert len(writes) - before <= 1.0 / 0.25 + 2
        gaps = [b - a for a, b in zip(started[before:], started[before + 1:], strict=False)]
        assert gaps and min(gaps) >= 0.2  # not back to back for as long as requests come
        await slot.unload()  # moves that are not flips are written at once
        assert slot.state is SlotState.OFFLINE
    assert writes[-1] == "offline"  # the owner has ended: every write is done
    assert json.loads((paths.slot_state_dir("f") / "state.json").read_text())["state"] == "offline"
