"""llama.cpp's router model API on :8080, mapped onto slots: ``GET /models`` (one entry per
slot, ``status.value`` unloaded / downloading / loading / loaded), ``POST /models/load`` and
``/models/unload`` (admin: a load or swap of the slot), and ``GET /models/sse`` (status changes
as they happen, with download progress while a slot pulls its model)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import web

from hal0.errors import Hal0Error, ModelNotFound, RequestInvalid
from hal0.events import Event
from hal0.providers import get_provider
from hal0.server.access import inference
from hal0.server.keys import EVENTS, REGISTRY, SLOTS, STARTED_WALL
from hal0.server.model_list import learn_contexts, slot_entry
from hal0.server.sse import relay_events
from hal0.slots import Slot, SlotSnapshot, SlotState
from hal0.web.http import json_response, read_json

__all__ = ["router_event", "routes", "status_value"]

routes = web.RouteTableDef()
S = SlotState
_VALUES = {S.OFFLINE: "unloaded", S.PULLING: "downloading", S.STARTING: "loading", S.WARMING: "loading",
           S.READY: "loaded", S.SERVING: "loaded", S.IDLE: "loaded", S.UNLOADING: "loaded",
           S.ERROR: "unloaded"}
# Which slot a registered model (by its capabilities) is loaded into by POST /models/load.
_SLOT_FOR = {"chat": "primary", "embed": "embed", "rerank": "embed-rerank", "stt": "stt", "tts": "tts",
             "image": "img"}


def status_value(state: SlotState | str) -> str:
    return _VALUES[SlotState(state)]


def _status(snap: SlotSnapshot) -> dict[str, Any]:
    out: dict[str, Any] = {"value": status_value(snap.state)}
    if snap.state is S.ERROR:  # llama.cpp's router marks a failed load this way
        out.update(failed=True, message=snap.message)
    if snap.state is S.PULLING and snap.pull:
        out["progress"] = _progress(snap.pull)
    return out


def _progress(pull: dict[str, Any]) -> dict[str, Any]:
    done, total = pull.get("done") or 0, pull.get("total") or 0
    return {"stages": ["download"], "current": "download", "value": round(done / total, 4) if total else 0.0}


def _names(request: web.Request, slot: Slot) -> set[str]:
    """What the slot answers to: what it runs, and the id and reference of what it would load."""
    snap = slot.snapshot()
    names = set(snap.served) | {m for m in (snap.model, snap.configured) if m}
    if snap.configured:
        with contextlib.suppress(Hal0Error):
            names.add(get_provider(snap.provider).resolve(snap.configured, request.app[REGISTRY]).id)
    return names


def _entry(request: web.Request, slot: Slot) -> dict[str, Any]:
    snap = slot.snapshot()
    caps = {mid: e.capabilities for mid, e in request.app[REGISTRY].entries().items()}
    aliases = sorted(_names(request, slot))
    return {"id": slot.name, "aliases": aliases, "tags": [], "object": "model", "owned_by": "hal0",
            "created": int(request.app[STARTED_WALL]), "status": _status(snap), **slot_entry(slot, caps)}


@routes.get("/models")
@inference
async def list_models(request: web.Request) -> web.Response:
    """``?capability=chat`` keeps the slots that can do it."""
    slots = request.app[SLOTS]
    await learn_contexts(slots)
    entries = [_entry(request, s) for s in slots]
    wanted = request.query.get("capability")
    if wanted:
        entries = [e for e in entries if wanted in e["capabilities"]]
    return json_response({"object": "list", "data": entries})


async def _target(request: web.Request) -> tuple[Slot, str | None]:
    """The slot ``model`` names (a slot, ``slot:ref``, a model a slot runs, ran last or is set to
    load, or a registered model: then the slot of its kind and that model)."""
    body = await read_json(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestInvalid("`model` is required: a slot name or a model id", param="model")
    slots = request.app[SLOTS]
    name, sep, ref = model.partition(":")
    if sep and name in {s.name for s in slots}:
        return slots.get(name), ref
    for slot in slots:
        if model == slot.name or model in _names(request, slot):
            return slot, None
    entry = request.app[REGISTRY].entries().get(model)
    if entry is not None:
        for cap in entry.capabilities:
            if cap in _SLOT_FOR and _SLOT_FOR[cap] in {s.name for s in slots}:
                return slots.get(_SLOT_FOR[cap]), model
    raise ModelNotFound(f"no slot or model {model!r}; GET /models lists them", model=model, param="model")


@routes.post("/models/load")
async def load(request: web.Request) -> web.Response:
    """Answers once the slot settled (loaded, or the error)."""
    slot, ref = await _target(request)
    await slot.load(ref)
    return json_response({"success": True, **_entry(request, slot)})


@routes.post("/models/unload")
async def unload(request: web.Request) -> web.Response:
    slot, _ = await _target(request)
    await slot.unload()
    return json_response({"success": True, **_entry(request, slot)})


def router_event(kind: str, data: dict[str, Any], pulling: dict[str, str]) -> bytes | None:
    """An /api/events event as the router's ``status_change`` line, or None: a slot's move
    (``slot.state``), or the progress of a pull a slot waits on (``model.pull``; ``pulling``
    maps pull ids to the slots pulling them)."""
    out: dict[str, Any]
    model: Any
    if kind == "model.pull":
        slot = pulling.get(str(data.get("id")))
        if slot is None or data.get("state") != "running":
            return None
        model, out = slot, {"status": "downloading", "progress": _progress(data)}
    elif kind == "slot.state":
        try:
            out = {"status": status_value(data["state"])}
        except (KeyError, ValueError):
            return None
        model = data.get("slot")
        if data.get("pull"):
            out["progress"] = _progress(data["pull"])
        if data["state"] == "error":
            out.update(failed=True, message=data.get("message", ""))
    else:
        return None
    return b"data: " + json.dumps({"model": model, "event": "status_change", "data": out}).encode() + b"\n\n"


@routes.get("/models/sse")
@inference
async def events(request: web.Request) -> web.StreamResponse:
    """Each slot's status changes until the client leaves or the server shuts down."""
    def render(event: Event) -> bytes | None:
        pulling = {} if event.kind != "model.pull" else {
            str(snap.pull.get("id")): snap.name for snap in request.app[SLOTS].snapshots() if snap.pull}
        return router_event(event.kind, event.data, pulling)
    return await relay_events(request, request.app[EVENTS], render)
