"""The slot boundary in-process: typed commands, liveness, idle unload and wake, over real
(fake-backend) processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hal0.errors import InternalError
from hal0.paths import Paths
from hal0.slots import SlotState
from hal0.slots.commands import Command
from hal0.slots.readiness import UNRESPONSIVE
from tests.helpers.env import alive
from tests.helpers.slots import fake_bin, next_move, slot_config, slot_manager

S = SlotState



@dataclass(frozen=True)
class Bogus(Command):
    """A command no slot knows."""


async def test_an_unknown_command_fails_its_sender_and_no_slot(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    """Regression: commands were strings looked up with getattr before the owner's try; a typo
    raised into the TaskGroup and ended every slot."""
    cfgs = [slot_config("a", fake_gguf), slot_config("b", fake_gguf)]
    async with slot_manager(paths, cfgs, fake_bin(tmp_path)) as (mgr, _):
        a, b = mgr.get("a"), mgr.get("b")
        await b.ensure_ready()
        with pytest.raises(InternalError, match="does not know the command"):
            await a.send(Bogus(), object)
        with pytest.raises(TypeError):
            a.send_nowait("autostart")  # type: ignore[arg-type]
        assert (await a.ensure_ready()).state is S.READY  # the owner of a lives on
        assert b.state is S.READY and (await b.restart()).state is S.READY


async def test_a_stopped_backend_is_found_killed_and_restarted(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    """SIGSTOP (a hang) while ready: liveness misses its probes, kills the group, and the
    usual restart brings the slot back with the reason kept in ``last_error``."""
    async with slot_manager(paths, [slot_config("f", fake_gguf)], fake_bin(tmp_path),
                            liveness_interval_s=0.2, liveness_failures=2) as (mgr, events):
        slot = mgr.get("f")
        pid = (await slot.ensure_ready()).pid
        assert pid is not None
        with events.subscribe() as sub:
            os.kill(pid, signal.SIGSTOP)
            moves = []
            while (e := await next_move(sub)) and not (e.data["state"] == "ready" and e.data["pid"] != pid):
                moves.append(e.data["state"])
        assert moves[0] == "error" and moves[-2:] == ["starting", "warming"]
        assert not alive(pid)
        snap = slot.snapshot()
        assert snap.last_error.startswith(UNRESPONSIVE) and snap.starts == 2
        async with slot.admit():  # and it serves
            assert slot.state is S.SERVING


async def test_idle_unload_then_one_wake_for_many_requests(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    starts = tmp_path / "starts"
    cfg = slot_config("f", fake_gguf, idle_timeout_s=0.2, unload_after_s=0.2, env={"FAKE_STARTS": str(starts)})
    async with slot_manager(paths, [cfg], fake_bin(tmp_path)) as (mgr, _):
        slot = mgr.get("f")
        await slot.ensure_ready()
        assert await slot.wait_state(S.OFFLINE, timeout=30) is S.OFFLINE  # ready -> idle -> offline
        woken = asyncio.Event()

        async def request() -> SlotState:
            async with slot.admit():
                await woken.wait()  # all ten are in flight together
                return slot.state

        tasks = [asyncio.ensure_future(request()) for _ in range(10)]
        await slot.wait_state(S.SERVING, timeout=30)
        woken.set()
        assert await asyncio.gather(*tasks) == [S.SERVING] * 10
        assert len(starts.read_text().split()) == 2 and slot.snapshot().starts == 2


async def test_keep_alive_replaces_the_idle_timers_until_the_backend_stops(paths: Paths, tmp_path: Path,
                                                                           fake_gguf: str) -> None:
    """KeepAlive (Ollama's keep_alive): 0 waits for the request in flight, then unloads; a duration
    unloads that long after the last request with no idle step; a negative one never; a new start
    is back on the configured timers."""
    cfg = slot_config("f", fake_gguf, idle_timeout_s=3600, unload_after_s=0)
    async with slot_manager(paths, [cfg], fake_bin(tmp_path)) as (mgr, _):
        slot = mgr.get("f")
        await slot.ensure_ready()
        assert slot.snapshot().expires_at is None  # unload_after_s = 0: never
        async with slot.admit():
            snap = await slot.keep_alive(0)
            assert snap.state is S.SERVING  # the request in flight is not cut off
        assert await slot.wait_state(S.OFFLINE, timeout=30) is S.OFFLINE
        assert slot.snapshot().expires_at is None
        await slot.ensure_ready()
        snap = await slot.keep_alive(-1)
        assert snap.state is S.READY and snap.expires_at is None
        snap = await slot.keep_alive(3600)
        assert snap.expires_at is not None and time.time() + 3500 < snap.expires_at < time.time() + 3700
        moves: list[SlotState] = []
        unsubscribe = mgr.changes.subscribe(lambda c: moves.append(c.snapshot.state) if c.snapshot else None)
        await slot.keep_alive(0.2)
        assert await slot.wait_state(S.OFFLINE, timeout=30) is S.OFFLINE
        unsubscribe()
        assert S.IDLE not in moves
        assert (await slot.keep_alive(5)).state is S.OFFLINE  # nothing runs: nothing to keep
        await slot.ensure_ready()
        assert slot.snapshot().expires_at is None  # the new backend is on the configured timers
