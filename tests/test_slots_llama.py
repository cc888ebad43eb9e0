"""Slots over the real llama-server and the tiny models."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hal0.config.overrides import read_override
from hal0.config.schema import MemoryConfig
from hal0.dispatch.h1 import H1Pool
from hal0.errors import ModelTooLarge, SlotSwapFailed
from hal0.paths import Paths
from hal0.providers.llama_server import family_template
from hal0.slots import SlotState
from tests.helpers.env import manifest
from tests.helpers.serve import sdk, serving, setup_home
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


def test_a_swap_under_streaming_traffic_truncates_nothing(tmp_path: Path) -> None:
    """50 streams to primary while it swaps, embeddings meanwhile: every stream runs whole on one
    model (the old one, or the new one once it is ready), and embed never fails."""
    m = manifest()
    new = tmp_path / "tiny-chat-b.gguf"
    shutil.copyfile(m["models"]["tiny-chat"], new)
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"], also={"embed": m["models"]["tiny-embed"]})
    token = (tmp_path / "etc/admin.token").read_text().strip()
    first_chunk, stop_embed = threading.Event(), threading.Event()
    with serving(tmp_path) as s, sdk(s, token) as client:
        s.load("primary", token)
        s.load("embed", token)

        def stream(_: int) -> tuple[set[str], str | None, int]:
            models, finish, used = set(), None, 0
            for c in client.chat.completions.create(
                    model="primary", messages=[{"role": "user", "content": "hi"}], max_tokens=64, stream=True,
                    stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
                first_chunk.set()
                models.add(c.model)
                if c.choices and c.choices[0].finish_reason:
                    finish = c.choices[0].finish_reason
                if c.usage:
                    used = c.usage.completion_tokens
            return models, finish, used

        def embed() -> int:
            n = 0
            while not stop_embed.is_set():
                assert len(client.embeddings.create(model="embed", input="hello").data[0].embedding) > 0
                n += 1
            return n

        with ThreadPoolExecutor(51) as pool:
            embeds = pool.submit(embed)
            try:
                streams = [pool.submit(stream, i) for i in range(50)]
                first_chunk.wait(60)
                status, swapped = s.post("/api/slots/primary/swap", token, {"model": str(new)})
                results = [f.result(timeout=300) for f in streams]
            finally:  # a stream that failed raises above: the embed loop must end too, or the pool waits forever
                stop_embed.set()
            assert embeds.result(timeout=60) > 0
        assert s.stop() == 0
    assert status == 200 and swapped["model"] == "tiny-chat-b", swapped
    assert all(len(models) == 1 and finish == "length" and used == 64 for models, finish, used in results)
    seen = {next(iter(models)) for models, _, _ in results}
    assert seen == {"tiny-chat", "tiny-chat-b"}  # traffic on both sides of the swap


async def test_a_streamed_answers_connection_is_sent_on_again_at_once(paths: Paths) -> None:
    """llama-server closes the connection after each streamed answer although its head says
    keep-alive; hal0 pools it before it reads that close (in the same turn of the loop), so the
    next request goes out on a closed connection and must be sent again on a new one, never fail
    (what the swap test's streams met under load)."""
    cfg = slot_config("chat", models()["tiny-chat"])
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}).encode()
    pool = H1Pool()
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, _):
        await mgr.get("chat").ensure_ready()
        try:
            async with asyncio.timeout(60):
                for _ in range(3):
                    r = await pool.request(cfg.port, "POST", "/v1/chat/completions",
                                           [("Content-Type", "application/json")], body)
                    data = await r.read()
                    r.release()
                    assert r.status == 200 and data.rstrip().endswith(b"data: [DONE]"), data[-200:]
        finally:
            pool.close()


def test_a_base_gguf_without_a_template_gets_its_familys() -> None:
    assert family_template(Path(models()["gemma3-270m"]), ()) == "gemma"
    assert family_template(Path(models()["gemma3-270m"]), ("--chat-template", "chatml")) is None  # the slot's own
    assert family_template(Path(models()["tiny-chat"]), ()) is None  # it carries ChatML itself


async def test_gemma_base_is_prompted_in_gemma_turns_not_chatml(paths: Paths) -> None:
    """Regression: the dev default, Gemma 3 270M (a base GGUF without a template), ran with
    llama-server's ChatML fallback and answered "Hello!" with `<|im_end|>user...`."""
    cfg = slot_config("chat", models()["gemma3-270m"])
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, _):
        await mgr.get("chat").ensure_ready()

        def apply() -> str:
            req = urllib.request.Request(f"http://127.0.0.1:{cfg.port}/apply-template",
                                         json.dumps({"messages": [{"role": "user", "content": "Hello!"}]}).encode())
            with urllib.request.urlopen(req, timeout=30) as r:
                return str(json.loads(r.read())["prompt"])
        prompt = await asyncio.to_thread(apply)
    assert "<start_of_turn>user\nHello!" in prompt and "<|im_start|>" not in prompt


async def test_a_model_too_large_for_the_memory_is_refused_unless_forced(paths: Paths) -> None:
    """Gemma 3 270M needs about 0.5 GiB at this context (weights, KV cache, compute buffers); the
    box says it has 300 MiB: the swap is refused with the numbers and the old model keeps serving."""
    paths.hardware_json.parent.mkdir(parents=True, exist_ok=True)
    paths.hardware_json.write_text(json.dumps({"memory": {"total_bytes": 300 * 2**20, "cgroup_limit_bytes": None}}))
    cfg = slot_config("chat", models()["tiny-chat"])
    no_budget = MemoryConfig(ram_budget="off")  # the fit check alone (tests/test_memory.py tests the budget)
    async with slot_manager(paths, [cfg], llama_bin(), memory=no_budget) as (mgr, _):
        slot = mgr.get("chat")
        pid = (await slot.ensure_ready()).pid
        with pytest.raises(ModelTooLarge) as e:
            await slot.swap(models()["gemma3-270m"])
        est = e.value.details["estimate"]
        assert est["available"] == 300 * 2**20 < est["needed"] == est["weights"] + est["kv"] + est["overhead"]
        assert "--force" in e.value.message and e.value.status == 409
        snap = slot.snapshot()
        assert (snap.state, snap.model, snap.pid) == (S.READY, "tiny-chat", pid)  # untouched
        snap = await slot.swap(models()["gemma3-270m"], force=True)
        assert (snap.state, snap.model) == (S.READY, "gemma-3-270m-q4_k_m")


async def test_a_gpu_slot_whose_llama_server_lists_no_gpu_is_an_error_not_a_cpu_fallback(paths: Paths) -> None:
    """The recorded H100 box with this machine's llama-server, which lists no GPU here: a slot on the
    vulkan backend would quietly run on the CPU, so its start fails naming what to install, before
    any backend runs; on the cpu backend the same binary serves."""
    import dataclasses

    from hal0.errors import SlotStartFailed
    from hal0.hardware import probe

    paths.hardware_json.parent.mkdir(parents=True, exist_ok=True)
    paths.hardware_json.write_text(json.dumps(probe(Path(__file__).parent / "fixtures/hw/h100")))
    cfg = dataclasses.replace(slot_config("chat", models()["tiny-chat"]), backend="vulkan")
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, _):
        slot = mgr.get("chat")
        with pytest.raises(SlotStartFailed) as e:
            await slot.ensure_ready()
        assert "lists no GPU although the probe found the NVIDIA H100 80GB HBM3 at 0000:00:06.0" in e.value.message
        assert "apt-get install" in e.value.message and "hal0 doctor" in e.value.message
        snap = slot.snapshot()
        assert (snap.state, snap.pid) == (S.ERROR, None)
        assert not (paths.slot_state_dir("chat") / "backend.log").exists()  # nothing was started
        await slot.set_backend("cpu")
        assert (await slot.ensure_ready()).state is S.READY
