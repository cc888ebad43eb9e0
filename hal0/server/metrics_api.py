"""``GET /metrics``: Prometheus text format, for an admin or metrics token (docs/api.md)."""

from __future__ import annotations

from aiohttp import web

from hal0.errors import RouteNotFound
from hal0.metrics import CONTENT_TYPE
from hal0.server import access
from hal0.server.keys import HTTP, METRICS

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/metrics")
@access.metrics
async def metrics(request: web.Request) -> web.Response:
    service = request.app.get(METRICS)
    if service is None:
        raise RouteNotFound("metrics are turned off here ([metrics] enabled = false in hal0.toml)")
    body = await service.render(request.app[HTTP])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
