"""Slots over the real llama-server and the tiny models."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from hal0.errors import SlotSwapFailed
from hal0.paths import Paths
from hal0.slots import SlotState
from hal0.slots.overrides import read_override
from tests.helpers.env import manifest
from tests.helpers.slots import llama_bin, next_move, slot_config, slot_manager

pytestmark = [pytest.mark.backends, pytest.mark.slow]
S = SlotState


def models() -> dict[str, str]:
    return manifest()["models"]  # type: ignore[no-any-return]


async def backend_model(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
            return str(json.loads(r.read())["data"][0]["id"])
    return await asyncio.to_thread(get)


async def complete(port: int) -> dict[str, object]:
    def post() -> dict[str, object]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                     json.dumps({"prompt": "hello", "max_tokens": 3, "ignore_eos": True}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]
    return await asyncio.to_thread(post)


async def test_load_ready_request_idle(paths: Paths) -> None:
    cfg = slot_config("chat", models()["tiny-chat"], idle_timeout_s=0.3)
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, _):
        slot = mgr.get("chat")
        snap = await slot.ensure_ready()
        assert (snap.state, snap.model) == (S.READY, "tiny-chat")
        assert await backend_model(cfg.port) == "tiny-chat"  # --alias carries the id
        async with slot.admit():
            assert slot.state is S.SERVING
            out = await complete(cfg.port)
        assert out["usage"]["completion_tokens"] == 3  # type: ignore[index]
        assert slot.state is S.READY
        assert await slot.wait_state(S.IDLE, timeout=10) is S.IDLE
        async with slot.admit():
            assert slot.state is S.SERVING  # idle still serves
        state = json.loads((paths.slot_state_dir("chat") / "state.json").read_text())
        assert state["pid"] == slot.snapshot().pid and state["model_id"] == "tiny-chat"


async def test_swap_between_models_keeps_the_toml_and_writes_the_override(paths: Paths) -> None:
    cfg = slot_config("chat", models()["tiny-chat"])
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, events):
        slot = mgr.get("chat")
        await slot.ensure_ready()
        with events.subscribe() as sub:
            snap = await slot.swap(models()["tiny-embed"])
            seen = []
            while (e := await next_move(sub)) and e.data["state"] != "ready":
                seen.append(e.data["state"])
        assert seen == ["unloading", "offline", "starting", "warming"]
        assert snap.model == "tiny-embed" and await backend_model(cfg.port) == "tiny-embed"
        assert read_override(paths, "chat") == models()["tiny-embed"]
        assert slot.config.model.default == models()["tiny-chat"]


async def test_swap_to_a_corrupt_gguf_rolls_back(paths: Paths, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x00" * 64)
    cfg = slot_config("chat", models()["tiny-chat"])
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, _):
        slot = mgr.get("chat")
        await slot.ensure_ready()
        with pytest.raises(SlotSwapFailed) as e:
            await slot.swap(str(corrupt))
        assert e.value.details["rolled_back"] is True
        assert "exited with code" in e.value.message
        snap = slot.snapshot()
        assert (snap.state, snap.model) == (S.READY, "tiny-chat")
        assert (await complete(cfg.port))["object"] == "text_completion"
        assert read_override(paths, "chat") is None  # the override was restored


async def test_restart_keeps_the_override(paths: Paths) -> None:
    cfg = slot_config("chat", models()["tiny-chat"])
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, _):
        slot = mgr.get("chat")
        await slot.swap(models()["tiny-embed"])
        pid = slot.snapshot().pid
        snap = await slot.restart()
        assert snap.model == "tiny-embed" and snap.pid != pid


async def test_a_hundred_concurrent_callers_share_one_start(paths: Paths) -> None:
    cfg = slot_config("chat", models()["tiny-chat"])
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, events):
        slot = mgr.get("chat")
        with events.subscribe(maxsize=10_000) as sub:
            snaps = await asyncio.gather(*(slot.ensure_ready() for _ in range(100)))
            events.publish("end", {"state": "-"})
            starts = 0
            while (e := await sub.get()) and e.kind != "end":
                starts += e.data["state"] == "starting"
        assert starts == 1
        assert {s.pid for s in snaps} == {slot.snapshot().pid}
        assert sum(line.startswith("[hal0] started pid") for line in slot.log.tail(500)) == 1
