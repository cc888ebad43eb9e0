"""Ollama's ``/api/*`` routes: translated to OpenAI requests that go through the dispatcher (the
same resolution, admission, wake and swap as ``/v1``), the answers translated back
(``hal0.dialects.ollama``). Errors are Ollama's ``{"error": "..."}`` with hal0's status."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from hal0 import __version__
from hal0.dialects import ollama as ol
from hal0.dispatch.proxy import RELAYED_ERRORS, Answer
from hal0.errors import Hal0Error, ModelNotFound, RequestInvalid, SlotBackendError
from hal0.models.gguf import GgufInfo, read_gguf
from hal0.models.registry import ModelEntry
from hal0.roles import Modality
from hal0.server.access import inference, ollama_route, public
from hal0.server.keys import DISPATCHER, EVENTS, PULLS, REGISTRY, SLOTS
from hal0.server.models_api import remove_model_entry
from hal0.slots import Slot, SlotSnapshot
from hal0.web.http import json_response, read_json
from hal0.web.middleware import error_shape

__all__ = ["OLLAMA_VERSION", "routes"]

routes = web.RouteTableDef()
H = TypeVar("H", bound=Callable[..., object])
OLLAMA_VERSION = "0.12.0"  # the Ollama API level these routes follow (clients gate features on it)
NDJSON = "application/x-ndjson"
_TEXT_KINDS = {Modality.CHAT, Modality.EMBEDDINGS}
_OLLAMA_CAPS = frozenset({"chat", "embed", "vision"})  # registry capabilities the Ollama routes can use


def _shape(err: Hal0Error) -> dict[str, Any]:
    return {"error": err.message}


def _ollama(handler: H) -> H:
    """An Ollama route: served on the Ollama listener too, errors in Ollama's shape."""
    return ollama_route(error_shape(_shape)(handler))


def _backend_error(data: bytes) -> str:
    """The message of a backend's error body (llama-server: ``{"error": {"message": ...}}``)."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return data.decode("utf-8", "replace")[:2000] or "the backend answered with an error"
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        err = err.get("message") or json.dumps(err)
    return str(err)


class _Exchange:
    """One translated request: reads the backend's answer while the slot is admitted; for a
    stream, everything but the ``done`` line, which ``finish()`` writes once the slot is let go
    (after a ``keep_alive`` took effect)."""

    def __init__(self, request: web.Request, model: str, kind: str, stream: bool) -> None:
        self.request, self.model, self.kind, self.stream = request, model, kind, stream
        self.timing = ol.Timing()
        self.slot: Slot | None = None
        self.response: web.StreamResponse | None = None
        self._translator: ol.ChatStream | None = None
        self._ended = False  # the stream is over (an error line went out, or the client left)

    async def translate(self, answer: Answer, slot: Slot | None) -> None:
        self.timing.admitted = time.monotonic_ns()
        self.slot = slot
        if answer.status >= 400:
            self.response = json_response({"error": _backend_error(await answer.read())}, status=answer.status)
            return
        sse = any(k.lower() == "content-type" and v.startswith("text/event-stream") for k, v in answer.headers)
        if not sse:
            data = await answer.read()
            try:
                self.response = self._single(json.loads(data))
            except (ValueError, AttributeError, TypeError):
                raise SlotBackendError(f"slot {slot.name if slot else 'upstream'} answered with something that is "
                                       f"not an OpenAI answer: {data[:200]!r}") from None
            return
        resp = web.StreamResponse(headers={"Content-Type": NDJSON})
        await resp.prepare(self.request)
        self.response = resp
        self._translator = ol.ChatStream(self.model, self.timing, generate=self.kind == "generate")
        try:
            await self._relay(answer, resp, self._translator)
        except RELAYED_ERRORS as e:
            answer.close()
            await self._error_line(f"the backend broke off its answer: {e}")
        except (ValueError, AttributeError, TypeError) as e:  # a line that is no OpenAI chunk
            answer.close()
            await self._error_line(f"the backend sent something that is not an OpenAI stream chunk: {e}")
        except ConnectionError:
            answer.close()  # the client left: the backend stops generating
            self._ended = True

    async def _relay(self, answer: Answer, resp: web.StreamResponse, stream: ol.ChatStream) -> None:
        decoder = ol.SSEDecoder()
        finished = False
        async for chunk in answer.chunks():  # read to the end, so the connection can be reused
            for payload in [] if finished else decoder.feed(chunk):
                if payload == "[DONE]":
                    finished = True
                    break
                data = json.loads(payload)
                if "error" in data:
                    await self._error_line(_backend_error(payload.encode()))
                    return
                for line in stream.feed(data):
                    await resp.write(ol.ndjson(line))

    async def _error_line(self, message: str) -> None:
        assert self.response is not None
        with contextlib.suppress(ConnectionError):
            await self.response.write(ol.ndjson({"error": message}))
        self._ended = True

    def _single(self, answer: dict[str, Any]) -> web.Response:
        if self.kind == "chat":
            body = ol.chat_response(answer, self.model, self.timing)
        elif self.kind == "generate":
            body = ol.generate_response(answer, self.model, self.timing)
        else:
            body = ol.embed_response(answer, self.model, self.timing, legacy=self.kind == "embeddings")
        return json_response(body, headers={"Content-Type": NDJSON} if self.stream else None)

    async def finish(self) -> web.StreamResponse:
        resp = self.response
        assert resp is not None
        if self._translator is not None:
            with contextlib.suppress(ConnectionError):
                if not self._ended:
                    await resp.write(ol.ndjson(self._translator.final()))
                await resp.write_eof()
        return resp


async def _exchange(request: web.Request, path: str, openai: dict[str, Any], model: str, kind: str,
                    keep_alive: float | None) -> web.StreamResponse:
    ex = _Exchange(request, model, kind, bool(openai.get("stream")))
    await request.app[DISPATCHER].exchange(request, path, openai, ex.translate)
    if keep_alive is not None and ex.slot is not None:
        await ex.slot.keep_alive(keep_alive)  # before the done line: a client that saw it sees the unload
    return await ex.finish()


async def _load_or_unload(request: web.Request, path: str, body: dict[str, Any], keep_alive: float | None,
                          kind: str) -> web.Response:
    """An empty prompt: load the model (wake the slot, as a request would), or with ``keep_alive`` 0
    unload it without waking anything (``ollama stop``)."""
    model = body.get("model")
    name = ol.model_name(model)
    route = await request.app[DISPATCHER].route(name, path)
    slot = request.app[SLOTS].get(route.slot) if route.slot is not None else None
    reason = "unload" if keep_alive == 0 else "load"
    if slot is not None:
        if reason == "load":
            async with slot.admit():
                pass
        if keep_alive is not None:
            await slot.keep_alive(keep_alive)
    out: dict[str, Any] = {"model": model, "created_at": ol.rfc3339()}
    if kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return json_response({**out, "done": True, "done_reason": reason})


# --- inference ---------------------------------------------------------------------------------

@routes.post("/api/chat")
@_ollama
@inference
async def chat(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    keep_alive = ol.parse_keep_alive(body.get("keep_alive"))
    if not body.get("messages"):
        return await _load_or_unload(request, "/v1/chat/completions", body, keep_alive, "chat")
    return await _exchange(request, "/v1/chat/completions", ol.chat_request(body), body["model"], "chat", keep_alive)


@routes.post("/api/generate")
@_ollama
@inference
async def generate(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    keep_alive = ol.parse_keep_alive(body.get("keep_alive"))
    if not body.get("prompt") and not body.get("images") and not body.get("suffix"):
        return await _load_or_unload(request, "/v1/chat/completions", body, keep_alive, "generate")
    path, openai = ol.generate_request(body)
    return await _exchange(request, path, openai, body["model"], "generate", keep_alive)


@routes.post("/api/embed")
@_ollama
@inference
async def embed(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    keep_alive = ol.parse_keep_alive(body.get("keep_alive"))
    return await _exchange(request, "/v1/embeddings", ol.embed_request(body), body["model"], "embed", keep_alive)


@routes.post("/api/embeddings")
@_ollama
@inference
async def embeddings(request: web.Request) -> web.StreamResponse:
    """The older embeddings route: one ``prompt``, one ``embedding``."""
    body = await read_json(request)
    keep_alive = ol.parse_keep_alive(body.get("keep_alive"))
    return await _exchange(request, "/v1/embeddings", ol.embed_request(body, legacy=True), body["model"],
                           "embeddings", keep_alive)


# --- models ------------------------------------------------------------------------------------

def _size_label(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}".replace(".0", "")
    return str(n)


def _gguf(path: Path) -> GgufInfo | None:
    if path.suffix.lower() != ".gguf" or not path.is_file():
        return None
    try:
        return read_gguf(path)
    except Hal0Error:
        return None


def _describe(ref: str, entry: ModelEntry | None) -> dict[str, Any]:
    """A model's file facts as Ollama lists them (blocks: reads a GGUF header)."""
    path = Path(entry.path if entry else ref)
    exists = (entry is not None or ref.startswith("/")) and path.exists()  # a catalogue id not pulled yet: no file
    stat = path.stat() if exists else None
    size = entry.size if entry and entry.size else (stat.st_size if stat and path.is_file() else 0)
    info = _gguf(path) if exists else None
    if entry and len(entry.files) == 1 and entry.files[0].sha256:
        digest = entry.files[0].sha256
    else:
        digest = hashlib.sha256(f"{path}:{size}:{stat.st_mtime_ns if stat else 0}".encode()).hexdigest()
    details = {"parent_model": "", "format": "gguf" if info else (path.suffix.lstrip(".") or "dir") if exists else "",
               "family": info.architecture if info else "", "families": [info.architecture] if info else None,
               "parameter_size": _size_label(info.parameters) if info else "",
               "quantization_level": info.quantization or "" if info else ""}
    return {"size": size, "digest": digest, "modified_at": ol.rfc3339(stat.st_mtime if stat else None),
            "details": details, "info": info}


def _listed(name: str, facts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": name, "modified_at": facts["modified_at"], "size": facts["size"],
            "digest": facts["digest"], "details": facts["details"], **extra}


def _text_slots(request: web.Request) -> list[SlotSnapshot]:
    return [s for s in request.app[SLOTS].snapshots() if s.kind in _TEXT_KINDS]


@routes.get("/api/tags")
@_ollama
@inference
async def tags(request: web.Request) -> web.Response:
    """Slot names (chat and embedding slots, each with what it runs or would load), then the
    registry's chat and embedding models (speech and image models are not Ollama's)."""
    registry = request.app[REGISTRY]
    entries = registry.entries()
    slots = _text_slots(request)

    def listing() -> list[dict[str, Any]]:
        out = []
        for s in slots:
            ref = s.model_ref or s.configured
            if ref:
                out.append(_listed(s.name, _describe(ref, entries.get(ref)), slot=s.name))
        out += [_listed(e.id, _describe(e.id, e)) for e in entries.values()
                if not e.capabilities or _OLLAMA_CAPS.intersection(e.capabilities)]
        return out
    return json_response({"models": await asyncio.to_thread(listing)})


@routes.get("/api/ps")
@_ollama
@inference
async def ps(request: web.Request) -> web.Response:
    """What runs now: each live slot's model, with its size and when it unloads if left alone."""
    entries = request.app[REGISTRY].entries()
    live = [(slot, slot.snapshot()) for slot in request.app[SLOTS] if slot.snapshot().kind in _TEXT_KINDS]
    live = [(slot, s) for slot, s in live if s.pid is not None and s.model is not None]

    def listing() -> list[dict[str, Any]]:
        out = []
        for slot, s in live:
            ref = s.model_ref or s.model
            assert ref is not None and s.model is not None
            facts = _describe(ref, entries.get(ref))
            out.append({**_listed(s.model, facts, slot=s.name),
                        "expires_at": ol.rfc3339(s.expires_at if s.expires_at is not None else ol.NEVER),
                        "size_vram": 0 if s.backend == "cpu" else facts["size"],
                        "context_length": slot.config.model.context_size})
        return out
    return json_response({"models": await asyncio.to_thread(listing)})


def _capabilities(kind: str, info: GgufInfo | None, entry: ModelEntry | None) -> list[str]:
    if kind == Modality.EMBEDDINGS:
        return ["embedding"]
    caps = ["completion"]
    template = info.metadata.get("tokenizer.chat_template") if info else None
    if isinstance(template, str):
        if "tool" in template:
            caps.append("tools")
        if "enable_thinking" in template or "<think>" in template:
            caps.append("thinking")
    if entry and "vision" in entry.capabilities:
        caps.append("vision")
    return caps


def _find(request: web.Request, name: str) -> tuple[str, str, SlotSnapshot | None]:
    """``name`` as (reference, kind, slot): a slot name, a model a slot runs, or a registry id."""
    snaps = request.app[SLOTS].snapshots()
    by_name = {s.name: s for s in snaps}
    slot_name, _, ref = name.partition(":")
    if slot_name in by_name and (ref or by_name[slot_name].model_ref or by_name[slot_name].configured):
        s = by_name[slot_name]
        return ref or s.model_ref or s.configured or "", s.kind, s
    for s in snaps:
        if name in s.served:
            return s.model_ref or name, s.kind, s
    entry = request.app[REGISTRY].get(name)
    if entry is not None:
        kind = Modality.EMBEDDINGS if "embed" in entry.capabilities else Modality.CHAT
        return name, kind, None
    raise ModelNotFound(f"model '{name}' not found", model=name)


@routes.post("/api/show")
@_ollama
@inference
async def show(request: web.Request) -> web.Response:
    body = await read_json(request)
    name = ol.model_name(body.get("model") or body.get("name"))
    ref, kind, snap = _find(request, name)
    entry = request.app[REGISTRY].get(ref)
    facts = await asyncio.to_thread(_describe, ref, entry)
    info: GgufInfo | None = facts["info"]
    ctx = request.app[SLOTS].get(snap.name).config.model.context_size if snap else None
    model_info: dict[str, Any] = {}
    if info:
        arch = info.architecture
        model_info = {"general.architecture": arch, "general.parameter_count": info.parameters,
                      **{f"{arch}.{k}": getattr(info, k) for k in ("context_length", "embedding_length",
                                                                   "block_count", "head_count")
                         if getattr(info, k) is not None}}
    template = info.metadata.get("tokenizer.chat_template") if info else None
    where = f"slot {snap.name}" if snap else "no slot yet"
    return json_response({
        "license": "", "modelfile": f"# {name}: served by hal0 ({where})\nFROM {ref}\n",
        "parameters": f"num_ctx {ctx}" if ctx else "", "template": template if isinstance(template, str) else "",
        "details": facts["details"], "model_info": model_info, "modified_at": facts["modified_at"],
        "capabilities": _capabilities(kind, info, entry)})


@routes.get("/api/version")
@_ollama
@public
async def version(request: web.Request) -> web.Response:
    return json_response({"version": OLLAMA_VERSION, "hal0": __version__})


@routes.post("/api/pull")
@_ollama
async def pull(request: web.Request) -> web.StreamResponse:
    """Through hal0's pulls (admin): Ollama's progress lines while ``stream`` (the default). A
    client that leaves does not cancel the pull (``hal0 model pulls`` shows and cancels it)."""
    body = await read_json(request)
    ref = ol.pull_ref(ol.model_name(body.get("model") or body.get("name")))
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise RequestInvalid("`stream` must be true or false", param="stream")
    with request.app[EVENTS].subscribe() as sub:
        job = await request.app[PULLS].start(ref)  # a reference that cannot be pulled fails here, before a byte
        if not stream:
            await asyncio.shield(job.result)  # its error is the answer's
            return json_response({"status": "success"})
        resp = web.StreamResponse(headers={"Content-Type": NDJSON})
        await resp.prepare(request)
        await resp.write(ol.ndjson({"status": "pulling manifest"}))
        while not job.result.done():
            event = await sub.get()
            if event is None:
                break
            if event.kind == "resync" or (event.kind == "model.pull" and event.data.get("id") == job.id):
                line: dict[str, Any] = {"status": f"pulling {job.model_id}", "digest": job.id, "completed": job.done}
                if job.total is not None:
                    line["total"] = job.total
                await resp.write(ol.ndjson(line))
    if job.result.done() and not job.result.cancelled() and job.result.exception() is None:
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            await resp.write(ol.ndjson({"status": status}))
    else:
        error = job.result.exception() if job.result.done() and not job.result.cancelled() else None
        await resp.write(ol.ndjson({"error": getattr(error, "message", None) or f"the pull of {ref} did not finish"}))
    await resp.write_eof()
    return resp


@routes.delete("/api/delete")
@_ollama
async def delete(request: web.Request) -> web.Response:
    """A registry model and the files hal0 pulled for it (admin); refused while a slot runs it."""
    body = await read_json(request)
    await remove_model_entry(request.app, ol.model_name(body.get("model") or body.get("name")))
    return web.Response(status=200)
