"""Read-only views the dashboard needs beside the rest of /api: the catalogue with what fits
this box (as ``hal0 model catalog --fits`` shows it) and the tier the probe's snapshot picks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from hal0.hardware.seeding import box_memory, match_tier
from hal0.models.catalog import load_catalog
from hal0.server.keys import PATHS, REGISTRY
from hal0.web.http import json_response

__all__ = ["routes"]

routes = web.RouteTableDef()


def _hardware(app: web.Application) -> dict[str, Any] | None:
    try:
        hw: dict[str, Any] = json.loads(app[PATHS].hardware_json.read_text())
    except (OSError, ValueError):
        return None
    return hw


@routes.get("/api/catalog")
async def catalog(request: web.Request) -> web.Response:
    """The curated models: ``fits`` (None before the probe ran) and ``on_disk``; ``?fits=1``
    leaves out what does not fit."""
    paths, registry = request.app[PATHS], request.app[REGISTRY]
    entries = await asyncio.to_thread(load_catalog, paths.catalog_toml)
    hw = await asyncio.to_thread(_hardware, request.app)
    memory = box_memory(hw) if hw else None
    await asyncio.to_thread(registry.check)
    have = {e.id for e in registry.entries().values()} | {e.source for e in registry.entries().values()}
    only_fitting = request.query.get("fits") in ("1", "true")
    models = []
    for e in entries.values():
        fits = None if memory is None else e.memory_gb * 2**30 <= memory
        if only_fitting and fits is False:
            continue
        models.append({"id": e.id, "kind": e.kind, "family": e.family, "provider": e.provider, "license": e.license,
                       "size": e.size, "memory_gb": e.memory_gb, "fits": fits, "on_disk": e.id in have,
                       "description": e.description})
    return json_response({"memory_bytes": memory, "models": models})


@routes.get("/api/hardware/tier")
async def tier(request: web.Request) -> web.Response:
    """The tier table's row for the stored snapshot (``tier`` None before the probe ran)."""
    hw = await asyncio.to_thread(_hardware, request.app)
    if hw is None:
        return json_response({"tier": None, "memory_bytes": None})
    row = match_tier(hw)
    return json_response({"tier": {"name": row["name"], "backend": row["backend"], "models": row.get("models", {}),
                                   "disabled": row.get("disabled", {})}, "memory_bytes": box_memory(hw)})
