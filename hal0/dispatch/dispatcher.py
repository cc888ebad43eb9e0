"""From a parsed /v1 request to a forwarded one: resolve, admit (which wakes or waits for the
slot), proxy."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from hal0.config import Hal0Config
from hal0.dispatch.h1 import H1Pool
from hal0.dispatch.proxy import AiohttpAnswer, Answer, forward, request_headers, send
from hal0.dispatch.resolve import DispatchView, Route, SlotView, resolve
from hal0.dispatch.upstreams import Upstream, Upstreams
from hal0.errors import ModelNotFound, SlotUnreachable, UpstreamUnavailable
from hal0.models.registry import ModelEntry, Registry
from hal0.slots import Slot, SlotChanged, SlotManager, SlotSnapshot

__all__ = ["BACKEND_PATHS", "Dispatcher"]

Serve = Callable[[Slot], Awaitable[web.StreamResponse]]
T = TypeVar("T")
Translate = Callable[[Answer, "Slot | None"], Awaitable[T]]

# Where each /v1 path lives on a llama-server backend.
BACKEND_PATHS = {"/v1/rerankings": "/v1/rerank"}


def _slot_view(snap: SlotSnapshot) -> SlotView:
    return SlotView(snap.name, snap.served, snap.configured, snap.kind)


class Dispatcher:
    def __init__(self, config: Hal0Config, slots: SlotManager, registry: Registry, upstreams: Upstreams,
                 session: aiohttp.ClientSession) -> None:
        self._config, self._slots, self._registry, self.upstreams = config, slots, registry, upstreams
        self._session = session
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

    async def handle(self, request: web.Request, path: str, body: dict[str, Any], raw: bytes) -> web.StreamResponse:
        """A JSON request (``raw`` is its text): ``model`` is rewritten to the id the slot's backend
        serves; the body is re-encoded only when that changes it."""
        model = body.get("model")

        def render(backend_model: str | None) -> bytes:
            if not backend_model or backend_model == model:
                return raw
            return json.dumps({**body, "model": backend_model}).encode()

        return await self._handle(request, path, model if isinstance(model, str) else None, render,
                                  "application/json")

    async def handle_raw(self, request: web.Request, path: str, model: str | None, data: bytes | None,
                         content_type: str) -> web.StreamResponse:
        """A request forwarded byte for byte (multipart uploads are never re-encoded); None: a GET."""
        return await self._handle(request, path, model, lambda _: data, content_type)

    async def handle_with(self, request: web.Request, path: str, body: dict[str, Any], raw: bytes,
                          serve: Serve) -> web.StreamResponse:
        """A request hal0 translates for its slot: ``serve`` talks to the backend once the slot is
        admitted and ready. A remote upstream gets the JSON body (``raw``) as it came."""
        model = body.get("model")
        return await self._handle(request, path, model if isinstance(model, str) else None, lambda _: raw,
                                  "application/json", serve)

    async def exchange(self, request: web.Request, path: str, body: dict[str, Any], translate: Translate[T]) -> T:
        """A request hal0 translates from another dialect: ``body``, an OpenAI request for ``path``, goes
        where its ``model`` resolves, through the same admission (wake, wait, queue) as a /v1 request;
        ``translate(answer, slot)`` reads the backend's answer while the slot is still admitted (``slot``
        is None for a remote upstream). Raises what resolution and admission raise, SlotUnreachable,
        UpstreamUnavailable or SlotTimeout when no answer comes back."""
        model = body.get("model")
        route = await self.route(model if isinstance(model, str) else None, path)
        if route.upstream is not None:
            up = self._upstream(route.upstream)
            data = json.dumps(body).encode()
            up_headers = request_headers(request, {"Content-Type": "application/json", **up.headers()})

            async def remote() -> Answer:
                return AiohttpAnswer(await self._session.post(up.url + path, data=data, headers=up_headers))
            answer = await send(remote, UpstreamUnavailable, f"upstream {up.name}")
            try:
                return await translate(answer, None)
            finally:
                answer.release()
        assert route.slot is not None
        slot = self._slots.get(route.slot)
        async with slot.admit():
            data = json.dumps({**body, "model": slot.model_id or model}).encode()
            headers = request_headers(request, {"Content-Type": "application/json"})
            answer = await send(lambda: self._pool.request(slot.config.port, "POST", BACKEND_PATHS.get(path, path),
                                                           headers, data), SlotUnreachable, f"slot {slot.name}")
            try:
                return await translate(answer, slot)
            finally:
                answer.release()

    async def _handle(self, request: web.Request, path: str, model: str | None,
                      render: Callable[[str | None], bytes | None], content_type: str,
                      translate: Serve | None = None) -> web.StreamResponse:
        route = await self.route(model, path)
        if route.upstream is not None:
            up = self._upstream(route.upstream)
            data = render(None)
            headers = request_headers(request, {"Content-Type": content_type, **up.headers()})

            async def remote() -> AiohttpAnswer:
                url = up.url + path
                r = await (self._session.get(url, headers=headers) if data is None
                           else self._session.post(url, data=data, headers=headers))
                return AiohttpAnswer(r)
            return await forward(request, remote, UpstreamUnavailable, f"upstream {up.name}")
        assert route.slot is not None
        slot = self._slots.get(route.slot)
        async with slot.admit():
            if translate is not None:
                return await translate(slot)
            data = render(slot.model_id)
            headers = request_headers(request, {"Content-Type": content_type})
            return await forward(
                request, lambda: self._pool.request(slot.config.port, "GET" if data is None else "POST",
                                                    BACKEND_PATHS.get(path, path), headers, data),
                SlotUnreachable, f"slot {slot.name}", slot=slot.name)
