"""``/api/slots``: list, create, show, delete, actions and logs.

Actions answer when the slot has settled (a load answers once the model is
ready, or with the error), while every transition is published on /api/events
as it happens; ``hal0 slot swap`` prints those live.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from hal0.errors import RequestInvalid
from hal0.server.api import slot_json
from hal0.server.keys import EVENTS, SLOTS
from hal0.server.sse import HEARTBEAT_S, format_event, open_sse
from hal0.slots import Slot
from hal0.web.http import json_response, read_json

__all__ = ["routes"]

routes = web.RouteTableDef()
ACTIONS = ("load", "unload", "restart", "swap", "enable", "disable")


def _slot(request: web.Request) -> Slot:
    return request.app[SLOTS].get(request.match_info["name"])


@routes.get("/api/slots")
async def list_slots(request: web.Request) -> web.Response:
    return json_response({"slots": [slot_json(s) for s in request.app[SLOTS]]})


@routes.post("/api/slots")
async def create_slot(request: web.Request) -> web.Response:
    slot = await request.app[SLOTS].create(await read_json(request))
    return json_response(slot_json(slot), status=201)


@routes.get("/api/slots/{name}")
async def show_slot(request: web.Request) -> web.Response:
    slot = _slot(request)
    return json_response({**slot_json(slot), "log_tail": slot.log.tail(20)})


@routes.delete("/api/slots/{name}")
async def delete_slot(request: web.Request) -> web.Response:
    await request.app[SLOTS].delete(request.match_info["name"])
    return json_response({"deleted": request.match_info["name"]})


async def _model_args(request: web.Request, required: bool) -> tuple[str | None, bool]:
    """``model`` (a non-empty string) and ``force`` (load even if the fit check refuses it)."""
    body: dict[str, Any] = await read_json(request) if request.body_exists else {}
    model, force = body.get("model"), body.get("force", False)
    if model is None and required:
        raise RequestInvalid("`model` is required, e.g. {\"model\": \"qwen3-4b\"}", param="model")
    if model is not None and (not isinstance(model, str) or not model):
        raise RequestInvalid("`model` must be a non-empty string", param="model")
    if not isinstance(force, bool):
        raise RequestInvalid("`force` must be true or false", param="force")
    return model, force


@routes.post(r"/api/slots/{name}/{action:(load|unload|restart|swap|enable|disable)}")
async def slot_action(request: web.Request) -> web.Response:
    slot, action = _slot(request), request.match_info["action"]
    if action == "swap":
        model, force = await _model_args(request, required=True)
        assert model is not None
        await slot.swap(model, force=force)
    elif action == "load":
        model, force = await _model_args(request, required=False)
        await slot.load(model, force=force)
    else:
        await getattr(slot, action)()
    return json_response(slot_json(slot))


@routes.get("/api/slots/{name}/logs")
async def slot_logs(request: web.Request) -> web.StreamResponse:
    """The last ``lines`` lines (default 100); with ``follow=1``, then new lines as SSE."""
    slot = _slot(request)
    try:
        lines = int(request.query.get("lines", "100"))
    except ValueError:
        raise RequestInvalid("`lines` must be an integer", param="lines") from None
    if request.query.get("follow") not in ("1", "true"):
        return json_response({"slot": slot.name, "lines": slot.log.tail(lines)})
    resp = await open_sse(request)
    closing = asyncio.ensure_future(request.app[EVENTS].wait_closed())
    try:
        await _follow(resp, slot, lines, closing)
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        closing.cancel()
    return resp


async def _follow(resp: web.StreamResponse, slot: Slot, lines: int, closing: asyncio.Future[None]) -> None:
    """Write the tail, then each new line, until the server shuts down (``closing``)."""
    seq, _ = slot.log.since(0)
    for line in slot.log.tail(lines):
        await resp.write(format_event("log", {"line": line}))
    while not closing.done():
        nxt = asyncio.ensure_future(_next_lines(slot, seq))
        try:
            await asyncio.wait((nxt, closing), timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            nxt.cancel()  # a no-op once it is done
        if nxt.done() and not nxt.cancelled():
            seq, new = nxt.result()
            for line in new:
                await resp.write(format_event("log", {"line": line}))
        elif not closing.done():
            await resp.write(b": ping\n\n")


async def _next_lines(slot: Slot, seq: int) -> tuple[int, list[str]]:
    """The lines after ``seq``, waiting for one if there is none yet. The read and the start of
    the wait happen in one step, so a line appended in between cannot be missed."""
    while True:
        seq, new = slot.log.since(seq)
        if new:
            return seq, new
        await slot.log.wait_changed()
