"""``GET /api/hardware`` (hardware.json, probing first if it is missing) and
``POST /api/hardware/probe`` (probe again and store the result)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from hal0.atomic import atomic_write
from hal0.hardware import probe
from hal0.server.keys import PATHS
from hal0.web.http import json_response

__all__ = ["routes"]

routes = web.RouteTableDef()


async def _probe_and_store(app: web.Application) -> web.Response:
    paths = app[PATHS]
    hw = await asyncio.to_thread(probe, disk=paths.state_dir)  # nvidia-smi may take a moment
    await asyncio.to_thread(atomic_write, paths.hardware_json, json.dumps(hw, indent=2) + "\n")
    return json_response(hw)


@routes.get("/api/hardware")
async def hardware(request: web.Request) -> web.Response:
    file = request.app[PATHS].hardware_json
    if file.exists():
        return web.Response(text=file.read_text(), content_type="application/json")
    return await _probe_and_store(request.app)


@routes.post("/api/hardware/probe")
async def reprobe(request: web.Request) -> web.Response:
    return await _probe_and_store(request.app)
