"""``/health``, ``/api/status`` and ``/api/events``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from hal0 import __version__
from hal0.config import BUILTIN_SLOTS
from hal0.events import Event
from hal0.server.http import json_response
from hal0.server.keys import CONFIG, EVENTS, PATHS, SLOT_CONFIGS, STARTED_AT

__all__ = ["HEARTBEAT_S", "routes"]

routes = web.RouteTableDef()
HEARTBEAT_S = 15.0


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


def status_body(app: web.Application) -> dict[str, Any]:
    paths, cfg = app[PATHS], app[CONFIG]
    slots = [
        {"name": s.name, "provider": s.provider, "backend": s.backend, "port": s.port,
         "enabled": s.enabled, "builtin": s.name in BUILTIN_SLOTS, "model_default": s.model.default}
        for s in app[SLOT_CONFIGS].values()
    ]
    return {
        "version": __version__,
        "uptime_s": round(time.monotonic() - app[STARTED_AT], 3),
        "paths": {"mode": paths.mode, "config_dir": str(paths.config_dir),
                  "state_dir": str(paths.state_dir)},
        "api": {"host": cfg.api.host, "port": cfg.api.port, "auth": cfg.api.auth},
        "slots": slots,
    }


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    return json_response(status_body(request.app))


def _sse(event: Event) -> bytes:
    payload = json.dumps({"ts": event.ts, **event.data})
    return f"id: {event.id}\nevent: {event.kind}\ndata: {payload}\n\n".encode()


@routes.get("/api/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events until the client leaves or the server shuts down."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    with request.app[EVENTS].subscribe() as sub:
        await resp.prepare(request)
        await resp.write(b": hal0 events\n\n")
        try:
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), HEARTBEAT_S)
                except TimeoutError:
                    await resp.write(b": ping\n\n")
                    continue
                if event is None:
                    break
                await resp.write(_sse(event))
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
    return resp
