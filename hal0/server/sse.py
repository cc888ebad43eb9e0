"""Server-sent events framing shared by /api/events and log following."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

__all__ = ["HEARTBEAT_S", "format_event", "open_sse"]

HEARTBEAT_S = 15.0


async def open_sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    return resp


def format_event(kind: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
