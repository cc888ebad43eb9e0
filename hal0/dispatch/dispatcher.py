"""From a parsed /v1 request to a forwarded one: resolve, admit (which wakes or waits for the
slot), proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from hal0.config import Hal0Config
from hal0.dispatch.h1 import BackendError, H1Pool
from hal0.dispatch.observe import Observer, Relay
from hal0.dispatch.proxy import OPENAI, AiohttpAnswer, Answer, Dialect, error_text, forward, request_headers, send
from hal0.dispatch.resolve import DispatchView, Route, SlotView, resolve
from hal0.dispatch.upstreams import Upstream, Upstreams
from hal0.errors import Hal0Error, ModelNotFound, SlotBackendError, SlotUnreachable, UpstreamUnavailable
from hal0.models.registry import ModelEntry, Registry
from hal0.slots import Slot, SlotChanged, SlotManager, SlotSnapshot

__all__ = ["BACKEND_PATHS", "Dispatcher", "Target"]

Serve = Callable[[Slot], Awaitable[web.StreamResponse]]
T = TypeVar("T")
Translate = Callable[[Answer, "Slot | None"], Awaitable[T]]

# Where each /v1 path lives on a llama-server backend.
BACKEND_PATHS = {"/v1/rerankings": "/v1/rerank"}


def _slot_view(snap: SlotSnapshot) -> SlotView:
    return SlotView(snap.name, snap.served, snap.configured, snap.kind)


class Dispatcher:
    def __init__(self, config: Hal0Config, slots: SlotManager, registry: Registry, upstreams: Upstreams,
                 session: aiohttp.ClientSession, observer: Observer | None = None) -> None:
        self._config, self._slots, self._registry, self.upstreams = config, slots, registry, upstreams
        self._session = session
        self._observer = observer  # None ([metrics] enabled = false): requests pay for nothing
        self._pool = H1Pool(head_timeout_s=config.slots.response_head_timeout_s)  # keep-alive to the slots
        self._slot_views = {snap.name: _slot_view(snap) for snap in slots.snapshots()}
        self._unsubscribe = slots.changes.subscribe(self._on_change)
        self._view: tuple[dict[str, str], dict[str, ModelEntry], DispatchView] | None = None

    def close(self) -> None:
        self._unsubscribe()
        self._pool.close()

    def _on_change(self, change: SlotChanged) -> None:
        """Keep what resolution needs of each slot; a serving flip changes none of it."""
        if change.hot:
            return
        if change.snapshot is None:
            self._slot_views.pop(change.name, None)
        else:
            view = _slot_view(change.snapshot)
            if self._slot_views.get(change.name) == view:
                return
            self._slot_views[change.name] = view
        self._view = None

    def view(self) -> DispatchView:
        """Everything resolution needs, from memory; rebuilt only after a slot, the registry or an
        upstream list changed."""
        upstream_map, registry = self.upstreams.model_map(), self._registry.entries()
        cached = self._view
        if cached is None or cached[0] is not upstream_map or cached[1] is not registry:
            view = DispatchView(tuple(self._slot_views.values()), upstream_map, frozenset(registry),
                                self._config.dispatcher.unknown_model)
            self._view = cached = (upstream_map, registry, view)
        return cached[2]

    async def route(self, model: str | None, path: str) -> Route:
        """Resolve; an unknown id first refreshes the upstream model lists that may be out of date
        (stale ones, and a peer's not fetched within the last seconds), then tries again."""
        try:
            route = resolve(model, path, self.view())
        except ModelNotFound:
            if model and await self.upstreams.refresh_stale(self._session, miss=True):
                return resolve(model, path, self.view())
            raise
        if route.fallback and await self.upstreams.refresh_stale(self._session, miss=True):
            return resolve(model, path, self.view())
        return route

    def _upstream(self, name: str) -> Upstream:
        """The upstream a route names; raises UpstreamDown (503 at once) when its health check failed."""
        up = self.upstreams.by_name[name]
        up.require_up()
        return up

    async def handle(self, request: web.Request, path: str, body: dict[str, Any], raw: bytes,
                     dialect: Dialect = OPENAI) -> web.StreamResponse:
        """A JSON request (``raw`` is its text): ``model`` is rewritten to the id the slot's backend
        serves; the body is re-encoded only when that changes it."""
        model = body.get("model")

        def render(backend_model: str | None) -> bytes:
            if not backend_model or backend_model == model:
                return raw
            return json.dumps({**body, "model": backend_model}).encode()

        async def serve(target: Target) -> web.StreamResponse:
            return await target.forward(request, path, render(target.model), "application/json", dialect)
        return await self.handle_via(request, path, model if isinstance(model, str) else None, serve)

    async def handle_raw(self, request: web.Request, path: str, model: str | None, data: bytes | None,
                         content_type: str) -> web.StreamResponse:
        """A request forwarded byte for byte (multipart uploads are never re-encoded); None: a GET."""
        async def serve(target: Target) -> web.StreamResponse:
            return await target.forward(request, path, data, content_type)
        return await self.handle_via(request, path, model, serve)

    async def handle_with(self, request: web.Request, path: str, body: dict[str, Any], raw: bytes,
                          serve: Serve) -> web.StreamResponse:
        """A request hal0 translates for its slot: ``serve`` talks to the backend once the slot is
        admitted and ready. A remote upstream gets the JSON body (``raw``) as it came."""
        model = body.get("model")

        async def either(target: Target) -> web.StreamResponse:
            if target.slot is None:
                return await target.forward(request, path, raw, "application/json")
            return await serve(self._slots.get(target.slot))
        return await self.handle_via(request, path, model if isinstance(model, str) else None, either)

    async def exchange(self, request: web.Request, path: str, body: dict[str, Any], translate: Translate[T]) -> T:
        """A request hal0 translates from another dialect: ``body``, an OpenAI request for ``path``, goes
        where its ``model`` resolves, through the same admission (wake, wait, queue) as a /v1 request;
        ``translate(answer, slot)`` reads the backend's answer while the slot is still admitted (``slot``
        is None for a remote upstream). Raises what resolution and admission raise, SlotUnreachable,
        UpstreamUnavailable or SlotTimeout when no answer comes back."""
        model = body.get("model")

        async def serve(target: Target) -> T:
            answer = await target.call(request, path, {**body, "model": target.model or model} if target.slot
                                       else body)
            try:
                return await translate(answer, self._slots.get(target.slot) if target.slot else None)
            finally:
                answer.release()
        return await self.handle_via(request, path, model if isinstance(model, str) else None, serve)

    async def handle_via(self, request: web.Request, path: str, model: str | None,
                         serve: Callable[[Target], Awaitable[T]]) -> T:
        """Resolve ``model`` for ``path``, admit (a slot wakes, or the request waits or is refused),
        then let ``serve`` talk to the target: a slot's backend or a remote upstream."""
        route = await self.route(model, path)
        if route.upstream is not None:
            return await serve(self._upstream_target(route.upstream))
        assert route.slot is not None
        slot = self._slots.get(route.slot)
        if self._observer is None:
            async with slot.admit():
                return await serve(self._slot_target(slot))
        started, relay, status = time.perf_counter(), Relay(), 500
        try:
            async with slot.admit():
                result = await serve(self._slot_target(slot, relay))
            status = result.status if isinstance(result, web.StreamResponse) else 200
            return result
        except Hal0Error as e:
            status = e.status
            raise
        except asyncio.CancelledError:
            status = relay.status if relay.ended else 499  # 499: the client left before the answer ended
            raise
        finally:
            self._observer.finished(slot.name, path, status, started, relay)

    @contextlib.asynccontextmanager
    async def open(self, path: str, model: str | None, data: bytes | None,
                   content_type: str) -> AsyncIterator[Answer]:
        """One /v1 request for a caller that is not an HTTP handler (the Wyoming server), taking the
        same way as ``handle_raw``: resolved, admitted (woken, waited for, queued, counted as
        serving until the block ends) and sent; ``data`` None is a GET. Yields a successful answer
        with its head in. Raises what resolution and admission raise, SlotTimeout,
        SlotUnreachable or UpstreamUnavailable, and SlotBackendError for an error answer (its
        ``details`` carry the backend's status and, for hal0's envelope, its code)."""
        headers = [("Content-Type", content_type)]

        async def opened(target: Target) -> Answer:
            return await send(lambda: target.send("GET" if data is None else "POST", path, data, headers),
                              target.unreachable, target.label)
        route = await self.route(model, path)
        if route.upstream is not None:
            target = self._upstream_target(route.upstream)
            async with _checked(await opened(target), target.label) as answer:
                yield answer
            return
        assert route.slot is not None
        slot = self._slots.get(route.slot)
        async with slot.admit():
            target = self._slot_target(slot)
            async with _checked(await opened(target), target.label) as answer:
                yield answer

    def _slot_target(self, slot: Slot, relay: Relay | None = None) -> Target:
        port = slot.config.port

        async def send(method: str, path: str, data: bytes | None, headers: list[tuple[str, str]]) -> Answer:
            return await self._pool.request(port, method, BACKEND_PATHS.get(path, path), headers, data)
        return Target(f"slot {slot.name}", send, SlotUnreachable, slot=slot.name, model=slot.model_id, relay=relay)

    def _upstream_target(self, name: str) -> Target:
        up = self._upstream(name)
        session = self._session

        async def send(method: str, path: str, data: bytes | None, headers: list[tuple[str, str]]) -> Answer:
            extra = up.headers()
            hdrs = [(k, v) for k, v in headers if k.lower() not in {h.lower() for h in extra}] + list(extra.items())
            r = await session.request(method, up.url + path, data=data, headers=hdrs)
            return AiohttpAnswer(r)
        return Target(f"upstream {up.name}", send, UpstreamUnavailable)


@dataclass(frozen=True)
class Target:
    """Where an admitted request goes: a slot's backend (``slot``, ``model`` the id it serves) or a
    remote upstream (both None). ``send`` makes one HTTP request there."""

    label: str
    send: Callable[[str, str, bytes | None, list[tuple[str, str]]], Awaitable[Answer]]
    unreachable: type[Hal0Error]
    slot: str | None = None
    model: str | None = None
    relay: Relay | None = None  # what the metrics observer reads of a relayed answer

    async def forward(self, request: web.Request, path: str, data: bytes | None, content_type: str,
                      dialect: Dialect = OPENAI) -> web.StreamResponse:
        """Send the client's request on and relay the answer unchanged (``hal0.dispatch.proxy``)."""
        headers = request_headers(request, {"Content-Type": content_type})
        return await forward(request, lambda: self.send("GET" if data is None else "POST", path, data, headers),
                             self.unreachable, self.label, slot=self.slot, dialect=dialect, relay=self.relay)

    async def call(self, request: web.Request, path: str, body: dict[str, Any]) -> Answer:
        """One JSON POST hal0 makes itself (a translation); raises ``unreachable`` or SlotTimeout.
        The answer is never compressed: hal0 reads it."""
        headers = request_headers(request, {"Content-Type": "application/json", "Accept-Encoding": "identity"})
        data = json.dumps(body).encode()
        return await send(lambda: self.send("POST", path, data, headers), self.unreachable, self.label)


@contextlib.asynccontextmanager
async def _checked(answer: Answer, target: str) -> AsyncIterator[Answer]:
    """Release ``answer`` at the end; an error answer becomes SlotBackendError with its message."""
    try:
        if answer.status >= 400:
            text = ""
            with contextlib.suppress(BackendError, aiohttp.ClientError, OSError):  # broke off: no text
                text = await error_text(answer)
            message, code = text, None
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                err = json.loads(text)["error"]
                message, code = str(err["message"]), err.get("code")
            raise SlotBackendError(f"{target} answered {answer.status}: {message or '(no body)'}", target=target,
                                   backend_status=answer.status, backend_code=code)
        yield answer
    finally:
        answer.release()
