"""``/api/capabilities``: the cards, and changing one child (the service does the work)."""

from __future__ import annotations

from aiohttp import web

from hal0.server.keys import CAPABILITIES
from hal0.web.http import json_response, read_json

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/api/capabilities")
async def list_cards(request: web.Request) -> web.Response:
    return json_response({"cards": request.app[CAPABILITIES].cards()})


@routes.post("/api/capabilities/{card}/{child}")
async def change_child(request: web.Request) -> web.Response:
    """Body: any of ``{"enabled": bool, "model": str, "backend": str}``, applied all or none."""
    body = await read_json(request)
    return json_response(await request.app[CAPABILITIES].change(request.match_info["card"],
                                                                request.match_info["child"], body))
