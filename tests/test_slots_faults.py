"""Lifecycle faults, injected with the fake backend (tests/fake_backend.py)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from hal0.errors import SlotNoModel, SlotStartFailed, SlotStateError
from hal0.paths import Paths
from hal0.slots import SlotState, Supervision
from hal0.slots.commands import Autostart
from tests.helpers.env import alive
from tests.helpers.slots import FAST, fake_bin, next_move, slot_config, slot_manager

S = SlotState




async def test_crash_while_warming_fails_the_start_with_code_and_output(paths: Paths, tmp_path: Path,
                                                                         fake_gguf: str) -> None:
    cfg = slot_config("f", fake_gguf, env={"FAKE_CRASH_ON_START": "3"})
    async with slot_manager(paths, [cfg], fake_bin(tmp_path)) as (mgr, _):
        slot = mgr.get("f")
        with pytest.raises(SlotStartFailed) as e:
            await slot.ensure_ready()
        assert "exited with code 3" in e.value.message
        assert "simulated crash while loading" in e.value.message
        assert slot.state is S.ERROR
        with pytest.raises(SlotStateError):  # a request does not retry a broken slot
            await slot.ensure_ready()


async def test_crash_while_ready_restarts_with_backoff(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    starts = tmp_path / "starts"
    cfg = slot_config("f", fake_gguf, env={"FAKE_STARTS": str(starts)})
    async with slot_manager(paths, [cfg], fake_bin(tmp_path)) as (mgr, events):
        slot = mgr.get("f")
        await slot.ensure_ready()
        with events.subscribe() as sub:
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.ClientError):
                    await http.get(slot.base_url + "/fake/exit")
            seen = []
            while len(seen) < 4:
                e = await sub.get()
                assert e is not None
                seen.append((e.data["state"], e.data["message"]))
        assert [state for state, _ in seen] == ["error", "starting", "warming", "ready"]
        assert "exited unexpectedly with code 7" in seen[0][1]
        assert "simulated crash" in seen[0][1]
        assert len(starts.read_text().split()) == 2


async def test_repeated_crashes_leave_the_slot_in_error(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    starts = tmp_path / "starts"
    cfg = slot_config("f", fake_gguf, env={"FAKE_EXIT_AFTER": "0", "FAKE_STARTS": str(starts),
                                       "FAKE_EXIT_SKIP": "1"})
    sup = Supervision(backoff_s=0.01, backoff_max_s=0.05, max_failures=3, probe_backoff_s=0.05)
    async with slot_manager(paths, [cfg], fake_bin(tmp_path), supervision=sup) as (mgr, events):
        slot = mgr.get("f")
        await slot.ensure_ready()
        with events.subscribe() as sub:
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.ClientError):
                    await http.get(slot.base_url + "/fake/exit")
            while not ((e := await next_move(sub)) and e.data["state"] == "error" and "not restarting" in
                       e.data["message"]):
                pass
        assert len(starts.read_text().split()) == 3
        assert "3 failures" in slot.snapshot().message
        with pytest.raises(SlotStartFailed):  # an operator can always try again
            await slot.restart()
        assert len(starts.read_text().split()) == 4


async def test_sigterm_ignored_gets_sigkill_after_the_grace(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    cfg = slot_config("f", fake_gguf, env={"FAKE_IGNORE_SIGTERM": "1"})
    async with slot_manager(paths, [cfg], fake_bin(tmp_path), stop_grace_s=0.3) as (mgr, _):
        slot = mgr.get("f")
        pid = (await slot.ensure_ready()).pid
        assert pid is not None
        snap = await slot.unload()
        assert snap.state is S.OFFLINE and not alive(pid)
        assert any("SIGKILL" in line for line in slot.log.tail(10))


async def test_slow_start_beyond_the_grace_is_killed(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    starts = tmp_path / "starts"
    cfg = slot_config("f", fake_gguf, env={"FAKE_READY_AFTER": "600", "FAKE_STARTS": str(starts)})
    async with slot_manager(paths, [cfg], fake_bin(tmp_path), health_grace_s=0.5) as (mgr, _):
        slot = mgr.get("f")
        with pytest.raises(SlotStartFailed) as e:
            await slot.ensure_ready()
        assert "did not become ready within 0.5s" in e.value.message
        assert slot.state is S.ERROR
        assert not alive(int(starts.read_text().split()[0]))


async def test_grandchildren_die_with_the_group(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    pidfile = tmp_path / "grandchild"
    cfg = slot_config("f", fake_gguf, env={"FAKE_GRANDCHILD": str(pidfile)})
    async with slot_manager(paths, [cfg], fake_bin(tmp_path)) as (mgr, _):
        slot = mgr.get("f")
        await slot.ensure_ready()
        grandchild = int(pidfile.read_text())
        assert alive(grandchild)
        await slot.unload()
    assert not alive(grandchild)


async def test_unload_cancels_a_load_in_progress(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    starts = tmp_path / "starts"
    cfg = slot_config("f", fake_gguf, env={"FAKE_READY_AFTER": "600", "FAKE_STARTS": str(starts)})
    async with slot_manager(paths, [cfg], fake_bin(tmp_path)) as (mgr, events):
        slot = mgr.get("f")
        with events.subscribe() as sub:
            slot.send_nowait(Autostart())
            while (e := await next_move(sub)) and e.data["state"] != "warming":
                pass
        pid = e.data["pid"]
        assert alive(pid)
        snap = await slot.unload()
        assert snap.state is S.OFFLINE and snap.message == "start cancelled"
        assert not alive(pid)


async def test_a_slot_without_a_model_says_how_to_set_one(paths: Paths, tmp_path: Path) -> None:
    cfg = slot_config("f", "")
    async with slot_manager(paths, [cfg], fake_bin(tmp_path)) as (mgr, _):
        with pytest.raises(SlotNoModel) as e:
            await mgr.get("f").ensure_ready()
        assert "hal0 slot swap f --model" in e.value.message


async def test_shutdown_stops_every_backend(paths: Paths, tmp_path: Path, fake_gguf: str) -> None:
    cfgs = [slot_config(n, fake_gguf) for n in ("a", "b", "c")]
    async with slot_manager(paths, cfgs, fake_bin(tmp_path), autostart=True) as (mgr, _):
        pids = []
        for name in ("a", "b", "c"):
            await mgr.get(name).wait_state(S.READY, timeout=30)
            pids.append(mgr.get(name).snapshot().pid)
    assert not any(alive(p) for p in pids if p)
    assert FAST.backoff_s < 1
