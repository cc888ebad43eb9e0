"""Server-sent events framing shared by /api/events, llama.cpp's /models/sse and log following."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hal0.events import Event, EventBus

__all__ = ["HEARTBEAT_S", "format_event", "open_sse", "relay_events"]

HEARTBEAT_S = 15.0


async def open_sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    return resp


def format_event(kind: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def relay_events(request: web.Request, bus: EventBus, render: Callable[[Event], bytes | None],
                       greeting: bytes = b"") -> web.StreamResponse:
    """``bus``'s events as ``render`` writes each (None: skipped), with a heartbeat comment when it
    is quiet, until the client leaves or the bus closes (the server shuts down)."""
    with bus.subscribe() as sub:
        resp = await open_sse(request)
        try:
            if greeting:
                await resp.write(greeting)
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), HEARTBEAT_S)
                except TimeoutError:
                    await resp.write(b": ping\n\n")
                    continue
                if event is None:
                    break
                if (data := render(event)) is not None:
                    await resp.write(data)
        except ConnectionError:
            pass  # the client went away
    return resp
