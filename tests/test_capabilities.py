"""Capability cards: the rerank child synthesised on first enable, routing to it, and errors."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hal0.capabilities import CapabilityService
from hal0.config import Hal0Config, load_slot, render_slot_toml
from hal0.errors import Hal0Error, SlotSwapFailed
from hal0.models.registry import Registry
from hal0.paths import Paths, resolve_paths
from hal0.slots import SlotManager, SlotState
from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.serve import Served, sdk, serving
from tests.helpers.slots import llama_bin, slot_config, slot_manager

pytestmark = [pytest.mark.backends, pytest.mark.slow]


def call(s: Served, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(s.url + path, None if body is None else json.dumps(body).encode(), method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_enable_rerank_creates_one_slot_routes_to_it_and_disable_stops_it(tmp_path: Path) -> None:
    m = manifest()
    subprocess.run([*HAL0, "init", "--provider-bin", f"llama-server={m['llama_server']['bin']}",
                    "--slot-model", f"embed={m['models']['tiny-embed']}"], env=hal0_env(tmp_path), check=True,
                   capture_output=True)
    for name in ("primary", "stt", "tts", "img"):
        toml = tmp_path / f"etc/slots/{name}.toml"
        toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
    embed = tmp_path / "etc/slots/embed.toml"
    embed.write_text(embed.read_text().replace("port = 8082", f"port = {free_port()}"))
    token = (tmp_path / "etc/admin.token").read_text().strip()
    with socket.socket() as taken, serving(tmp_path) as s:
        taken.bind(("127.0.0.1", 8086))  # the default rerank port is busy: the next free one is used
        status, err = call(s, token, "POST", "/api/capabilities/nope/rerank", {"enabled": True})
        assert (status, err["error"]["code"]) == (404, "capability.not_found")
        status, err = call(s, token, "POST", "/api/capabilities/voice/stt", {"backend": "rocm"})
        assert (status, err["error"]["code"]) == (400, "capability.illegal_backend_model_pair")
        status, child = call(s, token, "POST", "/api/capabilities/embed/rerank",
                             {"enabled": True, "model": m["models"]["tiny-rerank"]})
        assert status == 200, child
        assert (child["slot"], child["enabled"], child["state"]) == ("embed-rerank", True, "ready")
        rerank_toml = (tmp_path / "etc/slots/embed-rerank.toml").read_text()
        assert 'extra_args = [\n    "--reranking",\n]' in rerank_toml and "port = 8086" not in rerank_toml
        with sdk(s, token) as client:
            out = client.post("/rerank", body={"query": "hi", "documents": ["a", "b"]}, cast_to=object)
        assert sorted(r["index"] for r in out["results"]) == [0, 1]  # type: ignore[index]
        status, child = call(s, token, "POST", "/api/capabilities/embed/rerank", {"enabled": True})
        assert status == 200  # enabling again makes no second slot
        assert [x["name"] for x in call(s, token, "GET", "/api/slots")[1]["slots"]].count("embed-rerank") == 1
        status, child = call(s, token, "POST", "/api/capabilities/embed/rerank", {"enabled": False})
        assert (child["enabled"], child["state"]) == (False, "offline")
        listed = subprocess.run([*HAL0, "capability", "list"], env=hal0_env(tmp_path, HAL0_URL=s.url),
                                capture_output=True, text=True, check=True).stdout
        assert any(line.split()[:2] == ["embed", "rerank"] and " no " in line for line in listed.splitlines())
        assert "rerank" in (tmp_path / "etc/capabilities.toml").read_text()
        assert s.stop() == 0


async def test_the_rerank_slot_takes_8086_on_a_default_box(tmp_path: Path) -> None:
    paths = resolve_paths({"HAL0_HOME": str(tmp_path)})
    embed = slot_config("embed", manifest()["models"]["tiny-embed"])
    async with slot_manager(paths, [embed], llama_bin(), port_range=(8081, 8099)) as (mgr, _):
        slot = await mgr.create({"name": "embed-rerank", "model": "x", "server": {"extra_args": ["--reranking"]}},
                                internal=True)
        assert slot.config.port == 8086 and slot.config.server.extra_args == ("--reranking",)


def service(paths: Paths, mgr: SlotManager) -> CapabilityService:
    return CapabilityService(paths, Hal0Config(), Registry(paths), mgr)


async def test_a_bad_request_changes_nothing(tmp_path: Path) -> None:
    """Regression: ``{"enabled": "yes"}`` answered 400 after embed-rerank had been created."""
    paths = resolve_paths({"HAL0_HOME": str(tmp_path)})
    embed = slot_config("embed", manifest()["models"]["tiny-embed"])
    async with slot_manager(paths, [embed], llama_bin()) as (mgr, _):
        caps = service(paths, mgr)
        for body in ({"enabled": "yes"}, {"enabled": True, "model": ""}, {"colour": "red"}, {},
                     {"enabled": True, "backend": "npu"}, {"enabled": True, "model": "no-such-model"}):
            with pytest.raises(Hal0Error) as e:
                await caps.change("embed", "rerank", body)
            assert e.value.status in (400, 404), body
        assert [s.name for s in mgr.snapshots()] == ["embed"]
        assert not paths.slot_toml("embed-rerank").exists() and not paths.capabilities_toml.exists()


async def test_a_failing_step_undoes_the_steps_before_it(tmp_path: Path) -> None:
    """Enable, change the backend, then a swap that cannot load: the slot is as it was."""
    paths = resolve_paths({"HAL0_HOME": str(tmp_path)})
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\0" * 64)
    embed = slot_config("embed", manifest()["models"]["tiny-embed"], enabled=False)
    async with slot_manager(paths, [embed], llama_bin()) as (mgr, _):
        await asyncio.to_thread(paths.slot_toml("embed").write_text, render_slot_toml(embed))
        with pytest.raises(SlotSwapFailed):
            await service(paths, mgr).change("embed", "embed", {"enabled": True, "backend": "vulkan",
                                                                "model": str(corrupt)})
        snap = mgr.get("embed").snapshot()
        assert (snap.enabled, snap.backend, snap.state) == (False, "cpu", SlotState.OFFLINE)
        assert load_slot(paths.slot_toml("embed")) == embed  # the TOML too
        assert not paths.capabilities_toml.exists()
