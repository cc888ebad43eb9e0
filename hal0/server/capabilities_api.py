"""``/api/capabilities``: the cards, and enabling, disabling or retargeting one child."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from hal0.capabilities import CARDS, RERANK_DEFAULT_MODEL, check_backend, child_slot, record_choice
from hal0.config import RERANK_SLOT
from hal0.config.schema import ProviderConfig
from hal0.errors import RequestInvalid, SlotNotFound
from hal0.hardware.seeding import rerank_model
from hal0.providers.flm import flm_binary
from hal0.server.http import json_response, read_json
from hal0.server.keys import CONFIG, PATHS, SLOTS
from hal0.slots import SlotManager

__all__ = ["cards_json", "routes"]

routes = web.RouteTableDef()


def npu_visible(app: web.Application) -> bool:
    """The npu card is shown only with an XDNA device (hardware.json) and the FLM runtime installed."""
    hw_file = app[PATHS].hardware_json
    try:
        xdna = bool(json.loads(hw_file.read_text())["npu"]["xdna"]) if hw_file.exists() else False
    except (OSError, ValueError, KeyError, TypeError):
        xdna = False
    return xdna and flm_binary(app[CONFIG].providers.get("flm", ProviderConfig())) is not None


def cards_json(app: web.Application) -> dict[str, Any]:
    manager: SlotManager = app[SLOTS]
    slots = {s.name: s for s in manager}
    cards = dict(CARDS)
    if npu_visible(app):  # one disclosure: every slot that runs on the NPU
        cards["npu"] = {s.name: s.name for s in manager if s.config.provider == "flm" or s.config.backend == "npu"}
    out: dict[str, Any] = {}
    for card, children in cards.items():
        out[card] = {}
        for child, name in children.items():
            s = slots.get(name)
            out[card][child] = {
                "slot": name, "exists": s is not None, "enabled": bool(s and s.config.enabled),
                "state": str(s.state) if s else "offline", "provider": s.config.provider if s else None,
                "backend": s.config.backend if s else None,
                "model": (s.model_id or s.configured_model()) if s else None}
    return out


@routes.get("/api/capabilities")
async def list_cards(request: web.Request) -> web.Response:
    return json_response({"cards": cards_json(request.app)})


async def _ensure_rerank_slot(request: web.Request) -> None:
    """Synthesise embed-rerank on its first enable: llama-server with --reranking, embed's backend."""
    manager = request.app[SLOTS]
    try:
        manager.get(RERANK_SLOT)
    except SlotNotFound:
        embed = manager.get("embed").config
        model = RERANK_DEFAULT_MODEL
        hw_file = request.app[PATHS].hardware_json
        if hw_file.exists():
            model = rerank_model(json.loads(hw_file.read_text()))  # the tier table's pick for this box
        await manager.create({"name": RERANK_SLOT, "provider": "llama-server", "backend": embed.backend,
                              "model": model, "server": {"extra_args": ["--reranking"]}}, internal=True)


@routes.post("/api/capabilities/{card}/{child}")
async def change_child(request: web.Request) -> web.Response:
    """Body: any of ``{"enabled": bool, "model": str, "backend": str}``."""
    card, child = request.match_info["card"], request.match_info["child"]
    name = child_slot(card, child)
    body = await read_json(request)
    unknown = set(body) - {"enabled", "model", "backend"}
    if unknown or not body:
        raise RequestInvalid("send any of `enabled`, `model` and `backend`", param=next(iter(unknown), None))
    if name == RERANK_SLOT and body.get("enabled"):
        await _ensure_rerank_slot(request)
    slot = request.app[SLOTS].get(name)
    if "backend" in body:
        if not isinstance(body["backend"], str):
            raise RequestInvalid("`backend` must be a string", param="backend")
        check_backend(slot.config.provider, body["backend"])
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise RequestInvalid("`enabled` must be true or false", param="enabled")
        await (slot.enable() if body["enabled"] else slot.disable())
    if "backend" in body:
        await slot.set_backend(body["backend"])
    if "model" in body:
        if not isinstance(body["model"], str) or not body["model"]:
            raise RequestInvalid("`model` must be a non-empty string", param="model")
        await slot.swap(body["model"])
    record_choice(request.app[PATHS], card, child, **body)
    return json_response({"card": card, "child": child, **cards_json(request.app)[card][child]})
