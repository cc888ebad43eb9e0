"""``/api/models``: the registry (listing and registering files on disk) and pulls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from hal0.errors import Hal0Error, ModelInUse, ModelNotFound, RequestInvalid
from hal0.models.gguf import read_gguf
from hal0.models.registry import ModelEntry
from hal0.server.keys import PULLS, REGISTRY, SLOTS
from hal0.web.http import json_response, read_json

__all__ = ["remove_model_entry", "routes"]

routes = web.RouteTableDef()


@routes.get("/api/models")
async def list_models(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    await asyncio.to_thread(registry.check)  # a broken registry.toml is config.invalid, never an empty list
    entries = registry.entries().values()
    return json_response({"models": [e.to_json() for e in entries]})


@routes.post("/api/models/pull")
async def start_pull(request: web.Request) -> web.Response:
    """Body: ``{"ref", "as"?, "sha256"?}``; answers 202 with the job at once (progress: /api/events)."""
    body = await read_json(request)
    ref, as_id, sha256 = body.get("ref"), body.get("as"), body.get("sha256")
    if not isinstance(ref, str) or not ref:
        raise RequestInvalid("`ref` is required: a catalogue id, hf://OWNER/REPO/PATH, hf://OWNER/REPO:QUANT or a URL",
                             param="ref")
    for key, value in (("as", as_id), ("sha256", sha256)):
        if value is not None and not isinstance(value, str):
            raise RequestInvalid(f"`{key}` must be a string", param=key)
    job = await request.app[PULLS].start(ref, as_id, sha256)
    return json_response(job.to_json(), status=202)


@routes.get("/api/models/pulls")
async def list_pulls(request: web.Request) -> web.Response:
    return json_response({"pulls": [j.to_json() for j in request.app[PULLS].jobs()]})


@routes.get("/api/models/pulls/{id}")
async def show_pull(request: web.Request) -> web.Response:
    return json_response(request.app[PULLS].get(request.match_info["id"]).to_json())


@routes.delete("/api/models/pulls/{id}")
async def cancel_pull(request: web.Request) -> web.Response:
    """Cancel a running pull; its partial files stay, so pulling again resumes."""
    return json_response(request.app[PULLS].cancel(request.match_info["id"]).to_json())


@routes.get("/api/models/{id}")
async def show_model(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    await asyncio.to_thread(registry.check)
    entry = registry.get(request.match_info["id"])
    if entry is None:
        raise ModelNotFound(f"model {request.match_info['id']!r} is not in the registry")
    return json_response({**entry.to_json(), **await asyncio.to_thread(_header, Path(entry.path))})


@routes.delete("/api/models/{id}")
async def remove_model(request: web.Request) -> web.Response:
    """Refused while a slot runs the model; removes the entry and the files hal0 pulled for it."""
    entry = await remove_model_entry(request.app, request.match_info["id"])
    return json_response({"removed": entry.id, "path": entry.path})


async def remove_model_entry(app: web.Application, mid: str) -> ModelEntry:
    """Remove ``mid`` from the registry with its pulled files. Raises ModelInUse while a slot runs
    it, ModelNotFound when it is not registered."""
    using = [s.name for s in app[SLOTS].snapshots() if mid in s.served]
    if using:
        raise ModelInUse(f"{mid} is running in {', '.join(using)}: unload it (`hal0 slot unload {using[0]}`) or "
                         "swap it out first", model=mid, slots=using)
    entry = await asyncio.to_thread(app[REGISTRY].remove, mid)
    await app[SLOTS].forget_model(entry.id)  # its measured memory and saved prompt caches
    return entry


def _header(path: Path) -> dict[str, Any]:
    """What a GGUF's header says (architecture, size, context, quantisation...), without its tensors."""
    if path.suffix.lower() != ".gguf":
        return {}
    try:
        info = read_gguf(path)
    except Hal0Error as e:
        return {"gguf_error": e.message}
    return {"gguf": {k: getattr(info, k) for k in (
        "architecture", "name", "parameters", "quantization", "context_length", "block_count", "embedding_length",
        "head_count", "head_count_kv", "pooling_type", "has_chat_template", "split_no", "split_count")}}


@routes.post("/api/models")
async def register_model(request: web.Request) -> web.Response:
    body = await read_json(request)
    mid, path, caps = body.get("id"), body.get("path"), body.get("capabilities", [])
    outside, source = body.get("allow_outside_roots", False), body.get("source", "")
    if not isinstance(outside, bool):
        raise RequestInvalid("`allow_outside_roots` must be true or false", param="allow_outside_roots")
    if not isinstance(source, str) or len(source) > 1024:
        raise RequestInvalid("`source` must be a string (where the file came from)", param="source")
    if not isinstance(mid, str) or not isinstance(path, str) or not path.startswith("/"):
        raise RequestInvalid("`id` (string) and `path` (absolute path) are required")
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise RequestInvalid("`capabilities` must be a list of strings", param="capabilities")
    entry = await asyncio.to_thread(request.app[REGISTRY].register, mid, Path(path), tuple(caps),
                                    outside_roots=outside, source=source)  # reads the file's head, fsyncs
    return json_response(entry.to_json(), status=201)
