"""``/health``, ``/api/status`` and ``/api/events``."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from hal0 import __version__
from hal0.config import BUILTIN_SLOTS
from hal0.server.access import public
from hal0.server.keys import CAPABILITIES, CONFIG, DISPATCHER, EVENTS, PATHS, SLOTS, STARTED_AT, WYOMING
from hal0.server.sse import format_event, relay_events
from hal0.slots import Slot
from hal0.web.http import json_response

__all__ = ["routes", "slot_json"]

routes = web.RouteTableDef()


@routes.get("/health")
@public
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


def slot_json(slot: Slot) -> dict[str, Any]:
    """A slot as the API shows it: live state, running model and configured model side by side."""
    return {**slot.snapshot().to_json(), "builtin": slot.name in BUILTIN_SLOTS,
            "model_default": slot.config.model.default or None}


def status_body(app: web.Application) -> dict[str, Any]:
    paths, cfg = app[PATHS], app[CONFIG]
    slots = [slot_json(s) for s in app[SLOTS]]
    return {
        "version": __version__,
        "uptime_s": round(time.monotonic() - app[STARTED_AT], 3),
        "paths": {"mode": paths.mode, "config_dir": str(paths.config_dir),
                  "state_dir": str(paths.state_dir)},
        "api": {"host": cfg.api.host, "port": cfg.api.port, "auth": cfg.api.auth},
        "slots": slots,
        "capabilities": app[CAPABILITIES].cards(),
        "wyoming": app[WYOMING].status(),
        "memory": app[SLOTS].memory(),
        "upstreams": [up.to_json() for up in app[DISPATCHER].upstreams.by_name.values()],
    }


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    return json_response(status_body(request.app))


@routes.get("/api/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events until the client leaves or the server shuts down."""
    return await relay_events(request, request.app[EVENTS],
                              lambda e: format_event(e.kind, {"ts": e.ts, **e.data}, e.id), b": hal0 events\n\n")
