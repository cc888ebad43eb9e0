"""``/api/gpu/release``: step aside for a game or a render (unload every idle, unpinned slot)."""

from __future__ import annotations

from aiohttp import web

from hal0.server.keys import SLOTS
from hal0.web.http import json_response

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.post("/api/gpu/release")
async def release(request: web.Request) -> web.Response:
    """``{"released": [slot...], "kept": [{"slot", "reason": "pinned"|"busy"|...}]}``."""
    return json_response(await request.app[SLOTS].release())
