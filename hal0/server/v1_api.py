"""``/v1``: the OpenAI-compatible surface for the llama-server modalities."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hal0.dispatch.multipart import form_fields
from hal0.errors import ModelNotFound, RequestInvalid, RouteNotFound
from hal0.images.request import parse_image_request
from hal0.images.service import FILES_PREFIX
from hal0.server.access import public
from hal0.server.keys import DISPATCHER, IMAGES, SLOTS, STARTED_WALL
from hal0.web.http import json_response, parse_json

__all__ = ["routes"]

routes = web.RouteTableDef()

def _model_list(app: web.Application) -> list[dict[str, Any]]:
    """Slot names (built-ins first), then the models they run, then remote ids (an upstream's, a
    peer's with ``peer`` and ``owned_by`` naming it; ``state`` "down" when its health check failed):
    from the slot directory (kept by the change channel) and the upstream lists, never from a backend."""
    created = int(app[STARTED_WALL])
    snaps = app[SLOTS].snapshots()
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(mid: str, **meta: Any) -> None:
        if mid not in seen:
            seen.add(mid)
            entries.append({"id": mid, "object": "model", "created": created, "owned_by": "hal0", **meta})

    for snap in snaps:
        add(snap.name, slot=snap.name, state=str(snap.state), modality=snap.kind)
    for snap in snaps:
        if snap.model and snap.pid:
            add(snap.model, slot=snap.name, state=str(snap.state), modality=snap.kind)
    upstreams = app[DISPATCHER].upstreams
    for mid, name in upstreams.model_map().items():
        up = upstreams.by_name[name]
        state = "remote" if up.up else "down"
        if up.kind == "peer":  # another hal0: owned by it, named for it
            add(mid, owned_by=name, peer=name, upstream=name, state=state, modality="remote")
        else:
            add(mid, upstream=name, state=state, modality="remote")
    return entries


@routes.get("/v1/models")
@public
async def list_models(request: web.Request) -> web.Response:
    return json_response({"object": "list", "data": _model_list(request.app)})


@routes.get("/v1/models/{id:.+}")
async def get_model(request: web.Request) -> web.Response:
    mid = request.match_info["id"]
    for entry in _model_list(request.app):
        if entry["id"] == mid:
            return json_response(entry)
    raise ModelNotFound(f"the model {mid!r} does not exist", model=mid, param="model")


def _require(body: dict[str, Any], key: str, kinds: tuple[type, ...], what: str) -> None:
    if key not in body:
        raise RequestInvalid(f"`{key}` is required", param=key)
    value = body[key]
    if not isinstance(value, kinds) or isinstance(value, bool) or (isinstance(value, list | str) and not value):
        raise RequestInvalid(f"`{key}` must be {what}", param=key)


def _validate(path: str, body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestInvalid("`model` must be a string", param="model")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RequestInvalid("`stream` must be true or false", param="stream")
    for key in ("max_tokens", "max_completion_tokens", "n"):
        if key in body and (not isinstance(body[key], int) or isinstance(body[key], bool) or body[key] < 0):
            raise RequestInvalid(f"`{key}` must be a non-negative integer", param=key)
    if path == "/v1/chat/completions":
        _require(body, "messages", (list,), "a non-empty list of messages")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in body["messages"]):
            raise RequestInvalid("each message must be an object with a `role`", param="messages")
    elif path == "/v1/completions":
        _require(body, "prompt", (str, list), "a string or a list")
    elif path == "/v1/embeddings":
        _require(body, "input", (str, list), "a non-empty string or list")
    elif path == "/v1/audio/speech":
        _require(body, "input", (str,), "a non-empty string")
    else:
        _require(body, "query", (str,), "a non-empty string")
        _require(body, "documents", (list,), "a non-empty list of strings")


async def _dispatch(request: web.Request, path: str) -> web.StreamResponse:
    raw = await request.read()
    body = parse_json(raw)
    _validate(path, body)
    return await request.app[DISPATCHER].handle(request, path, body, raw)


@routes.post("/v1/audio/transcriptions")
async def transcriptions(request: web.Request) -> web.StreamResponse:
    """Checked (a `file` that is present and not empty), then forwarded without re-encoding."""
    raw = await request.read()
    content_type = request.headers.get("Content-Type", "")
    fields = form_fields(raw, content_type)
    if "file" not in fields:
        raise RequestInvalid("`file` is required", param="file")
    if not fields["file"]:
        raise RequestInvalid("the uploaded file is empty", param="file")
    model = fields.get("model", b"").decode(errors="replace").strip() or None
    return await request.app[DISPATCHER].handle_raw(request, "/v1/audio/transcriptions", model, raw, content_type)


@routes.get("/v1/audio/voices")
async def voices(request: web.Request) -> web.StreamResponse:
    """The voices of the tts slot (or of the slot named by ``?model=``)."""
    model = request.query.get("model") or None
    return await request.app[DISPATCHER].handle_raw(request, "/v1/audio/voices", model, None, "application/json")


@routes.post("/v1/images/generations")
async def images_generations(request: web.Request) -> web.StreamResponse:
    """Checked here (every problem a 400 before any slot wakes), then translated for ComfyUI."""
    raw = await request.read()
    body = parse_json(raw)
    job = parse_image_request(body)
    images = request.app[IMAGES]
    return await request.app[DISPATCHER].handle_with(
        request, "/v1/images/generations", body, raw, lambda slot: images.generate(request, slot, job))


@routes.get(FILES_PREFIX + "{name}")
@public  # unguessable names are the capability (hal0.images.cache)
async def image_file(request: web.Request) -> web.StreamResponse:
    """An image of an earlier ``response_format: url`` answer (no token needed: the name is the key)."""
    path = request.app[IMAGES].cache.path(request.match_info["name"])
    if path is None or not path.is_file():
        raise RouteNotFound("this image does not exist or has expired from hal0's image cache")
    return web.FileResponse(path, headers={"Content-Type": "image/png", "Cache-Control": "private, max-age=86400"})


def _proxied(path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _dispatch(request, path)
    return handler


# /v1/rerank is an alias of /v1/rerankings (both reach the rerank slot's /v1/rerank).
for _path, _target in (("/v1/chat/completions", "/v1/chat/completions"), ("/v1/completions", "/v1/completions"),
                       ("/v1/embeddings", "/v1/embeddings"), ("/v1/rerankings", "/v1/rerankings"),
                       ("/v1/rerank", "/v1/rerankings"), ("/v1/audio/speech", "/v1/audio/speech")):
    routes.post(_path)(_proxied(_target))
