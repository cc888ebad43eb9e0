"""The server skeleton against a real aiohttp server (pytest-aiohttp's client)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hal0.auth import create_token, revoke_token
from hal0.bootstrap import init_tree
from hal0.config import load_config, load_slots
from hal0.paths import Paths
from hal0.server.app import build_app
from hal0.server.keys import EVENTS
from hal0.web.http import json_response, read_json

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


async def _echo(request: web.Request) -> web.Response:
    return json_response(await read_json(request))


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internals")


@pytest.fixture
def admin(paths: Paths) -> str:
    init_tree(paths)
    return paths.admin_token.read_text().strip()


@pytest.fixture
async def client(paths: Paths, admin: str, aiohttp_client: Any) -> Client:
    app = build_app(paths, load_config(paths), load_slots(paths))
    app.router.add_post("/api/echo", _echo)  # inline handlers to reach the shared helpers
    app.router.add_get("/api/boom", _boom)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_health_is_open(client: Client) -> None:
    r = await client.get("/health")
    assert r.status == 200
    assert (await r.json())["status"] == "ok"
    assert len(r.headers["X-Request-Id"]) == 16


async def test_status_lists_the_five_builtin_slots(client: Client, admin: str, paths: Paths) -> None:
    r = await client.get("/api/status", headers=bearer(admin))
    body = await r.json()
    assert r.status == 200
    assert [s["name"] for s in body["slots"]] == ["primary", "embed", "stt", "tts", "img"]
    assert body["paths"] == {"mode": "home", "config_dir": str(paths.config_dir),
                             "state_dir": str(paths.state_dir)}
    assert all(s["builtin"] for s in body["slots"])
    assert list(body["capabilities"]["voice"]) == ["stt", "tts"]
    assert body["capabilities"]["voice"]["stt"]["provider"] == "moonshine"
    assert body["capabilities"]["embed"]["rerank"] == {
        "slot": "embed-rerank", "exists": False, "enabled": False, "state": "offline", "provider": None,
        "backend": None, "model": None}


async def test_request_id_is_echoed_when_sane(client: Client) -> None:
    r = await client.get("/health", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    r = await client.get("/health", headers={"X-Request-Id": "bad id\u00e9"})
    assert r.headers["X-Request-Id"] != "bad id\u00e9"


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({}, 401, "auth.missing"),
    ({"Authorization": "Bearer nope"}, 401, "auth.invalid"),
    ({"Authorization": "Bearer hal0_00000000_x"}, 401, "auth.invalid"),
    ({"Authorization": "Basic abc"}, 401, "auth.missing"),
])
async def test_api_needs_a_valid_token(client: Client, headers: dict[str, str], status: int,
                                       code: str) -> None:
    r = await client.get("/api/status", headers=headers)
    body = await r.json()
    assert (r.status, body["error"]["code"]) == (status, code)
    assert body["error"]["type"] == "authentication_error"
    assert set(body["error"]) == {"message", "type", "code", "param", "details"}


async def test_inference_token_is_forbidden_on_api(client: Client, paths: Paths) -> None:
    _, token = create_token(paths.tokens_toml, "app", "inference")
    r = await client.get("/api/status", headers=bearer(token))
    assert (r.status, (await r.json())["error"]["code"]) == (403, "auth.forbidden")


async def test_x_api_key_works_and_revocation_applies_to_a_running_server(
        client: Client, paths: Paths) -> None:
    rec, token = create_token(paths.tokens_toml, "ops", "admin")
    assert (await client.get("/api/status", headers={"x-api-key": token})).status == 200
    assert revoke_token(paths.tokens_toml, rec.id)
    r = await client.get("/api/status", headers={"x-api-key": token})
    assert (r.status, (await r.json())["error"]["code"]) == (401, "auth.invalid")


async def test_tokens_file_holds_only_hashes(paths: Paths, admin: str) -> None:
    text = paths.tokens_toml.read_text()
    assert admin.split("_", 2)[2] not in text
    assert oct(paths.tokens_toml.stat().st_mode & 0o777) == "0o600"
    assert oct(paths.admin_token.stat().st_mode & 0o777) == "0o600"


async def test_auth_off_lets_everything_through(paths: Paths, aiohttp_client: Any) -> None:
    init_tree(paths)
    paths.hal0_toml.write_text('[api]\nauth = "off"\n')
    client = await aiohttp_client(build_app(paths, load_config(paths), load_slots(paths)))
    assert (await client.get("/api/status")).status == 200


async def test_unknown_route_and_method_use_the_envelope(client: Client, admin: str) -> None:
    r = await client.get("/api/nothing-here", headers=bearer(admin))
    assert (r.status, (await r.json())["error"]["code"]) == (404, "request.not_found")
    r = await client.delete("/api/status", headers=bearer(admin))
    assert (r.status, (await r.json())["error"]["code"]) == (405, "request.method_not_allowed")


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", "request.malformed_json"),
    (b"", "request.invalid"),
    (b"[1, 2]", "request.invalid"),
    (b"\xff\xfe", "request.malformed_json"),
])
async def test_bad_json_bodies_are_400(client: Client, admin: str, body: bytes, code: str) -> None:
    r = await client.post("/api/echo", data=body, headers=bearer(admin))
    assert (r.status, (await r.json())["error"]["code"]) == (400, code)


async def test_oversized_body_is_413(paths: Paths, aiohttp_client: Any) -> None:
    init_tree(paths)
    paths.hal0_toml.write_text('[api]\nauth = "off"\nmax_body_mb = 1\n')
    app = build_app(paths, load_config(paths), load_slots(paths))
    app.router.add_post("/api/echo", _echo)
    client = await aiohttp_client(app)
    r = await client.post("/api/echo", data=io.BytesIO(json.dumps({"x": "a" * 2_000_000}).encode()))
    assert (r.status, (await r.json())["error"]["code"]) == (413, "request.too_large")


async def test_unexpected_exception_is_a_500_without_traceback(client: Client, admin: str) -> None:
    r = await client.get("/api/boom", headers=bearer(admin))
    text = await r.text()
    assert r.status == 500
    assert json.loads(text)["error"]["code"] == "system.internal"
    assert "secret internals" not in text and "Traceback" not in text


async def test_events_stream_delivers_published_events(client: Client, admin: str) -> None:
    async with client.get("/api/events", headers=bearer(admin)) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert await r.content.readline() == b": hal0 events\n"
        await r.content.readline()
        client.app[EVENTS].publish("slot.state", {"slot": "primary", "state": "ready"})
        lines = [await r.content.readline() for _ in range(3)]
        assert lines[1] == b"event: slot.state\n"
        data = json.loads(lines[2].removeprefix(b"data: "))
        assert (data["slot"], data["state"]) == ("primary", "ready")


async def test_events_stream_ends_when_the_bus_closes(client: Client, admin: str) -> None:
    async with client.get("/api/events", headers=bearer(admin)) as r:
        await r.content.readline()
        client.app[EVENTS].close()
        rest = await asyncio.wait_for(r.content.read(), 5)
        assert rest == b"\n"
