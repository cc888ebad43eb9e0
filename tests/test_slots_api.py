"""/api/slots against a real server with fake backends behind it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hal0.bootstrap import init_tree
from hal0.config import load_config, load_slots
from hal0.paths import Paths
from hal0.server.app import build_app
from hal0.slots.state import SlotState
from tests.helpers.env import free_port
from tests.helpers.slots import FAST, fake_bin

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def api(paths: Paths, tmp_path: Path, aiohttp_client: Any) -> Client:
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    init_tree(paths, {"primary": str(model)})
    lo = free_port(span=41)
    paths.hal0_toml.write_text(
        f'[api]\nauth = "off"\n[slots]\nport_range = [{lo}, {lo + 40}]\n'
        f'[providers.llama-server]\nbin = "{fake_bin(tmp_path).bin}"\n')
    text = paths.slot_toml("primary").read_text().replace("port = 8081", f"port = {free_port()}")
    paths.slot_toml("primary").write_text(text)
    app = build_app(paths, load_config(paths), load_slots(paths), autostart=False, supervision=FAST)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def call(api: Client, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    r = await api.request(method, path, json=body)
    return r.status, await r.json()


async def test_list_shows_builtins_in_order(api: Client) -> None:
    status, body = await call(api, "GET", "/api/slots")
    assert status == 200
    assert [s["name"] for s in body["slots"]] == ["primary", "embed", "stt", "tts", "img"]
    assert {s["state"] for s in body["slots"]} == {"offline"}


async def test_load_show_logs_unload(api: Client, paths: Paths) -> None:
    status, slot = await call(api, "POST", "/api/slots/primary/load")
    assert (status, slot["state"], slot["model"]) == (200, "ready", "fake")
    _, shown = await call(api, "GET", "/api/slots/primary")
    assert any("fake backend listening" in line for line in shown["log_tail"])
    _, logs = await call(api, "GET", "/api/slots/primary/logs?lines=2")
    assert len(logs["lines"]) == 2
    state = json.loads((paths.slot_state_dir("primary") / "state.json").read_text())
    assert state["state"] in {s.value for s in SlotState} and state["pid"] == slot["pid"]
    status, slot = await call(api, "POST", "/api/slots/primary/unload")
    assert (status, slot["state"], slot["pid"]) == (200, "offline", None)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"name": "Bad Name"}, 400, "slot.invalid_name"),
    ({"name": "primary"}, 400, "slot.invalid_name"),
    ({"name": "embed-rerank"}, 400, "slot.invalid_name"),
    ({"name": "ok", "enabled": "yes"}, 400, "request.invalid"),
    ({"name": "ok", "provider": "vllm"}, 400, "request.invalid"),
])
async def test_create_rejects_bad_input(api: Client, body: dict[str, Any], status: int, code: str) -> None:
    got, err = await call(api, "POST", "/api/slots", body)
    assert (got, err["error"]["code"]) == (status, code)


async def test_create_allocates_a_port_and_delete_removes_everything(api: Client, paths: Paths) -> None:
    status, slot = await call(api, "POST", "/api/slots", {"name": "fast", "model": "/x.gguf"})
    lo = load_config(paths).slots.port_range[0]
    assert status == 201 and slot["port"] >= lo and slot["builtin"] is False
    assert paths.slot_toml("fast").exists()
    status, err = await call(api, "POST", "/api/slots", {"name": "fast"})
    assert (status, err["error"]["code"]) == (409, "slot.exists")
    status, err = await call(api, "POST", "/api/slots", {"name": "other", "port": slot["port"]})
    assert (status, err["error"]["code"]) == (409, "slot.port_in_use")
    assert (await call(api, "DELETE", "/api/slots/fast"))[0] == 200
    assert not paths.slot_toml("fast").exists()
    status, err = await call(api, "GET", "/api/slots/fast")
    assert (status, err["error"]["code"]) == (404, "slot.not_found")


async def test_builtins_cannot_be_deleted(api: Client, paths: Paths) -> None:
    status, err = await call(api, "DELETE", "/api/slots/embed")
    assert (status, err["error"]["code"]) == (409, "slot.builtin")
    assert paths.slot_toml("embed").exists()


async def test_bad_swaps_leave_the_slot_untouched(api: Client, paths: Paths) -> None:
    _, before = await call(api, "POST", "/api/slots/primary/load")
    status, err = await call(api, "POST", "/api/slots/primary/swap", {})
    assert (status, err["error"]["code"]) == (400, "request.invalid")
    status, err = await call(api, "POST", "/api/slots/primary/swap", {"model": "no-such-model"})
    assert (status, err["error"]["code"]) == (404, "model.not_found")
    status, err = await call(api, "POST", "/api/slots/primary/swap", {"model": "../etc/passwd"})
    assert (status, err["error"]["code"]) == (400, "model.invalid")
    _, after = await call(api, "GET", "/api/slots/primary")
    assert (after["state"], after["pid"]) == ("ready", before["pid"])
    assert not paths.slot_env("primary").exists()


async def test_disable_stops_and_refuses_then_enable(api: Client, paths: Paths) -> None:
    await call(api, "POST", "/api/slots/primary/load")
    status, slot = await call(api, "POST", "/api/slots/primary/disable")
    assert (status, slot["state"], slot["enabled"]) == (200, "offline", False)
    assert "enabled = false" in paths.slot_toml("primary").read_text()
    status, err = await call(api, "POST", "/api/slots/primary/load")
    assert (status, err["error"]["code"]) == (503, "slot.disabled")
    await call(api, "POST", "/api/slots/primary/enable")
    status, slot = await call(api, "POST", "/api/slots/primary/load")
    assert (status, slot["state"]) == (200, "ready")


async def test_registered_models_resolve_by_id(api: Client, tmp_path: Path) -> None:
    status, entry = await call(api, "POST", "/api/models",
                               {"id": "fake-b", "path": str(tmp_path / "fake.gguf"), "capabilities": ["chat"],
                                "allow_outside_roots": True})
    assert status == 201 and entry["size"] == 4
    status, slot = await call(api, "POST", "/api/slots/primary/swap", {"model": "fake-b"})
    assert (status, slot["model"]) == (200, "fake-b")


async def test_a_corrupt_registry_is_never_overwritten(api: Client, paths: Paths, tmp_path: Path) -> None:
    """Regression: with registry.toml corrupted, a read answered 500 and a register within the next
    second rewrote the file with only the new entry (two entries became one)."""
    models = paths.models_dir
    models.mkdir(parents=True, exist_ok=True)
    for name in ("a", "b", "c"):
        (models / f"{name}.gguf").write_bytes(b"GGUF")
    for name in ("a", "b"):
        status, _ = await call(api, "POST", "/api/models", {"id": name, "path": str(models / f"{name}.gguf")})
        assert status == 201
    broken = paths.registry_toml.read_text().replace("[models.b]", "[models.b")
    paths.registry_toml.write_text(broken)
    status, err = await call(api, "GET", "/api/models")
    assert (status, err["error"]["code"]) == (500, "config.invalid")
    assert str(paths.registry_toml) in err["error"]["message"]
    status, err = await call(api, "POST", "/api/models", {"id": "c", "path": str(models / "c.gguf")})
    assert (status, err["error"]["code"]) == (500, "config.invalid")
    assert paths.registry_toml.read_text() == broken  # untouched until someone fixes it
    paths.registry_toml.write_text(broken.replace("[models.b", "[models.b]"))
    status, _ = await call(api, "POST", "/api/models", {"id": "c", "path": str(models / "c.gguf")})
    assert status == 201
    status, listed = await call(api, "GET", "/api/models")
    assert sorted(m["id"] for m in listed["models"]) == ["a", "b", "c"]


async def test_only_model_files_inside_the_model_folders_are_registered(api: Client, paths: Paths,
                                                                       tmp_path: Path) -> None:
    """Regression: /etc/shadow and /etc were accepted as models."""
    for path, code in (("/etc/shadow", "model.invalid"), ("/etc", "model.invalid"),
                       (str(tmp_path / "nothing.gguf"), "model.files_missing")):
        status, err = await call(api, "POST", "/api/models", {"id": "x", "path": path, "allow_outside_roots": True})
        assert (status, err["error"]["code"]) == ({"model.invalid": 400, "model.files_missing": 409}[code], code)
    outside = tmp_path / "fake.gguf"  # a real GGUF head, but not in a model folder
    status, err = await call(api, "POST", "/api/models", {"id": "x", "path": str(outside)})
    assert (status, err["error"]["code"]) == (400, "model.invalid") and "--outside-roots" in err["error"]["message"]
    status, err = await call(api, "POST", "/api/models", {"id": "x", "path": str(outside),
                                                          "allow_outside_roots": "yes"})
    assert (status, err["error"]["param"]) == (400, "allow_outside_roots")
    assert not paths.registry_toml.exists()
