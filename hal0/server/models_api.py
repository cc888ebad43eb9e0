"""``/api/models``: the registry (listing and registering files already on disk)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from hal0.errors import ModelNotFound, RequestInvalid
from hal0.server.keys import REGISTRY
from hal0.web.http import json_response, read_json

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/api/models")
async def list_models(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    await asyncio.to_thread(registry.check)  # a broken registry.toml is config.invalid, never an empty list
    entries = registry.entries().values()
    return json_response({"models": [e.__dict__ | {"capabilities": list(e.capabilities)} for e in entries]})


@routes.get("/api/models/{id}")
async def show_model(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    await asyncio.to_thread(registry.check)
    entry = registry.get(request.match_info["id"])
    if entry is None:
        raise ModelNotFound(f"model {request.match_info['id']!r} is not in the registry")
    return json_response(entry.__dict__ | {"capabilities": list(entry.capabilities)})


@routes.post("/api/models")
async def register_model(request: web.Request) -> web.Response:
    body = await read_json(request)
    mid, path, caps = body.get("id"), body.get("path"), body.get("capabilities", [])
    outside = body.get("allow_outside_roots", False)
    if not isinstance(outside, bool):
        raise RequestInvalid("`allow_outside_roots` must be true or false", param="allow_outside_roots")
    if not isinstance(mid, str) or not isinstance(path, str) or not path.startswith("/"):
        raise RequestInvalid("`id` (string) and `path` (absolute path) are required")
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise RequestInvalid("`capabilities` must be a list of strings", param="capabilities")
    entry = await asyncio.to_thread(request.app[REGISTRY].register, mid, Path(path), tuple(caps),
                                    outside_roots=outside)  # reads the file's head, fsyncs
    return json_response(entry.__dict__ | {"capabilities": list(entry.capabilities)}, status=201)
