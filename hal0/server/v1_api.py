"""``/v1``: the OpenAI-compatible surface for the llama-server modalities."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hal0.config.schema import ApiConfig
from hal0.dialects.fim import infill_request, serve_infill, serve_raw_infill, serve_usage_split, wants_usage
from hal0.dialects.messages import check_message_fields
from hal0.dispatch.dispatcher import Target
from hal0.dispatch.multipart import form_fields
from hal0.errors import ModelNotFound, RequestInvalid, RequestInvalidSize, RouteNotFound
from hal0.images.request import parse_image_request
from hal0.images.service import FILES_PREFIX
from hal0.server.access import inference, public
from hal0.server.keys import CONFIG, DISPATCHER, IMAGES, SLOTS
from hal0.server.model_list import model_list
from hal0.web.http import JSON_LIMITS, json_response, parse_json

__all__ = ["bound_list", "routes"]

routes = web.RouteTableDef()

@routes.get("/v1/models")
@public
async def list_models(request: web.Request) -> web.Response:
    """Every slot and model; ``?capability=chat`` keeps the entries that can do it."""
    entries = await model_list(request.app)
    wanted = request.query.get("capability")
    if wanted:
        entries = [e for e in entries if wanted in e.get("capabilities", ())]
    return json_response({"object": "list", "data": entries})


@routes.get("/v1/models/{id:.+}")
async def get_model(request: web.Request) -> web.Response:
    mid = request.match_info["id"]
    for entry in await model_list(request.app):
        if entry["id"] == mid:
            return json_response(entry)
    raise ModelNotFound(f"the model {mid!r} does not exist", model=mid, param="model")


def _require(body: dict[str, Any], key: str, kinds: tuple[type, ...], what: str) -> None:
    if key not in body:
        raise RequestInvalid(f"`{key}` is required", param=key)
    value = body[key]
    if not isinstance(value, kinds) or isinstance(value, bool) or (isinstance(value, list | str) and not value):
        raise RequestInvalid(f"`{key}` must be {what}", param=key)


def bound_list(body: dict[str, Any], key: str, limit: int, setting: str) -> None:
    """A list in ``key`` may hold at most ``limit`` items (a list of token ids counts as one input)."""
    value = body.get(key)
    if not isinstance(value, list) or (value and all(isinstance(v, int) for v in value[:1])):
        return
    if len(value) > limit:
        raise RequestInvalidSize(f"`{key}` has {len(value)} items; hal0 takes at most {limit} "
                                 f"([api].{setting} in hal0.toml)", param=key, limit=limit, got=len(value))


def _validate(path: str, body: dict[str, Any], api: ApiConfig) -> None:
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
        bound_list(body, "messages", api.max_messages, "max_messages")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in body["messages"]):
            raise RequestInvalid("each message must be an object with a `role`", param="messages")
        check_message_fields(body["messages"])
    elif path == "/v1/completions":
        _require(body, "prompt", (str, list), "a string or a list")
        bound_list(body, "prompt", api.max_inputs, "max_inputs")
    elif path == "/v1/embeddings":
        _require(body, "input", (str, list), "a non-empty string or list")
        bound_list(body, "input", api.max_inputs, "max_inputs")
        if isinstance(body["input"], list) and not all(map(_embeddable, body["input"])):
            raise RequestInvalid("`input` must be a string or a list of strings (or of token ids)", param="input")
        if "encoding_format" in body and body["encoding_format"] not in ("float", "base64"):
            raise RequestInvalid("`encoding_format` must be \"float\" or \"base64\"", param="encoding_format")
    elif path == "/v1/audio/speech":
        _require(body, "input", (str,), "a non-empty string")
    else:
        _require(body, "query", (str,), "a non-empty string")
        _require(body, "documents", (list,), "a non-empty list of strings")
        bound_list(body, "documents", api.max_inputs, "max_inputs")


def _embeddable(item: Any) -> bool:
    """One element of an embeddings ``input`` list: a string, a token id or a list of token ids (the
    backend answers anything else with a 500)."""
    def token(t: Any) -> bool:
        return isinstance(t, int) and not isinstance(t, bool)
    return isinstance(item, str) or token(item) or (isinstance(item, list) and bool(item) and all(map(token, item)))


def _token_ids(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return any(isinstance(i, int) or (isinstance(i, list) and i and all(isinstance(t, int) for t in i))
               for i in items)


async def _refuse_token_ids(request: web.Request, body: dict[str, Any]) -> None:
    """Token ids are the client's tokenizer's (LangChain sends OpenAI's), which mean nothing to the
    slot's model: embedding them would give meaningless vectors, so they are refused before any
    slot wakes, unless the slot's ``[server] accept_token_ids`` says its clients send its own."""
    if not _token_ids(body["input"]):
        return
    model = body.get("model")
    route = await request.app[DISPATCHER].route(model if isinstance(model, str) else None, "/v1/embeddings")
    if route.slot is None or not request.app[SLOTS].get(route.slot).config.server.accept_token_ids:
        raise RequestInvalid(
            "`input` holds token ids; hal0's embedding models use their own tokenizers, so send the text "
            "itself (LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False); LiteLLM and the "
            "OpenAI SDK send strings unless given ids); if your clients do send this model's own token ids, "
            "set `accept_token_ids = true` under [server] in the slot's TOML", param="input")


async def _dispatch(request: web.Request, path: str) -> web.StreamResponse:
    raw = await request.read()
    body = parse_json(raw, request.app[JSON_LIMITS])
    _validate(path, body, request.app[CONFIG].api)
    if path == "/v1/embeddings":
        await _refuse_token_ids(request, body)
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
    if fields.get("stream", b"").strip().lower() in (b"true", b"1"):
        raise RequestInvalid("hal0 answers a transcription whole: send it without `stream=true`", param="stream")
    model = fields.get("model", b"").decode(errors="replace").strip() or None
    return await request.app[DISPATCHER].handle_raw(request, "/v1/audio/transcriptions", model, raw, content_type)


@routes.get("/v1/audio/voices")
@public  # Open WebUI fetches it without a token; voice names reveal nothing and cost no inference
async def voices(request: web.Request) -> web.StreamResponse:
    """The voices of the tts slot (or of the slot named by ``?model=``): ``voices`` [{id, name}]
    (what Open WebUI reads) beside ``data``."""
    model = request.query.get("model") or None
    return await request.app[DISPATCHER].handle_raw(request, "/v1/audio/voices", model, None, "application/json")


@routes.get("/v1/audio/models")
@public  # like /v1/models: names only
async def audio_models(request: web.Request) -> web.Response:
    """The speech slots and models, in the shape Open WebUI reads (``models`` [{id, name}]) and
    OpenAI's list shape (``data``)."""
    entries = [e for e in await model_list(request.app) if {"tts", "stt"} & set(e.get("capabilities", ()))]
    return json_response({"object": "list", "data": entries,
                          "models": [{"id": e["id"], "name": e["id"]} for e in entries]})


@routes.post("/v1/images/generations")
async def images_generations(request: web.Request) -> web.StreamResponse:
    """Checked here (every problem a 400 before any slot wakes), then translated for ComfyUI."""
    raw = await request.read()
    body = parse_json(raw, request.app[JSON_LIMITS])
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


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    """Forwarded; with ``suffix``, fill-in-the-middle through the slot's ``/infill``; a stream that
    asked for usage gets it as a chunk of its own."""
    raw = await request.read()
    body = parse_json(raw, request.app[JSON_LIMITS])
    _validate("/v1/completions", body, request.app[CONFIG].api)
    model = body.get("model")
    if body.get("suffix") is not None:
        infill = infill_request(body)

        async def fim(target: Target) -> web.StreamResponse:
            return await serve_infill(request, target, body, raw, infill)
        return await request.app[DISPATCHER].handle_via(request, "/v1/completions", model, fim)
    if not wants_usage(body):
        return await request.app[DISPATCHER].handle(request, "/v1/completions", body, raw)

    async def usage(target: Target) -> web.StreamResponse:
        return await serve_usage_split(request, target, body)
    return await request.app[DISPATCHER].handle_via(request, "/v1/completions", model, usage)


@routes.post("/infill")
@inference
async def infill(request: web.Request) -> web.StreamResponse:
    """llama.cpp's own fill-in-the-middle endpoint, forwarded to the chat slot (``model`` picks it)."""
    raw = await request.read()
    body = parse_json(raw, request.app[JSON_LIMITS])
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise RequestInvalid("`model` must be a string", param="model")

    async def serve(target: Target) -> web.StreamResponse:
        return await serve_raw_infill(request, target, body, raw)
    return await request.app[DISPATCHER].handle_via(request, "/infill", body.get("model"), serve)


# /v1/rerank is an alias of /v1/rerankings (both reach the rerank slot's /v1/rerank).
for _path, _target in (("/v1/chat/completions", "/v1/chat/completions"),
                       ("/v1/embeddings", "/v1/embeddings"), ("/v1/rerankings", "/v1/rerankings"),
                       ("/v1/rerank", "/v1/rerankings"), ("/v1/audio/speech", "/v1/audio/speech")):
    routes.post(_path)(_proxied(_target))
