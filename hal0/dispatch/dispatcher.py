"""From a parsed /v1 request to a forwarded one: resolve, admit (which wakes or waits for the
slot), proxy."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import LooseHeaders

from hal0.config import Hal0Config
from hal0.dispatch.h1 import BackendError, H1Pool
from hal0.dispatch.proxy import AiohttpAnswer, Answer, error_text, forward, open_answer, request_headers
from hal0.dispatch.resolve import DispatchView, Route, SlotView, resolve
from hal0.dispatch.upstreams import Upstreams
from hal0.errors import ModelNotFound, SlotBackendError, SlotUnreachable, UpstreamUnavailable
from hal0.models.registry import ModelEntry, Registry
from hal0.slots import Slot, SlotChanged, SlotManager, SlotSnapshot

__all__ = ["BACKEND_PATHS", "Dispatcher"]

Serve = Callable[[Slot], Awaitable[web.StreamResponse]]

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
        """Resolve; an unknown id first refreshes stale upstream model lists, then tries again."""
        try:
            return resolve(model, path, self.view())
        except ModelNotFound:
            if model and await self.upstreams.refresh_stale(self._session):
                return resolve(model, path, self.view())
            raise

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

    async def _handle(self, request: web.Request, path: str, model: str | None,
                      render: Callable[[str | None], bytes | None], content_type: str,
                      translate: Serve | None = None) -> web.StreamResponse:
        route = await self.route(model, path)
        if route.upstream is not None:
            up = self.upstreams.by_name[route.upstream]
            headers = request_headers(request, {"Content-Type": content_type, **up.headers()})
            return await forward(request, self._remote(up.url + path, render(None), headers),
                                 UpstreamUnavailable, f"upstream {up.name}")
        assert route.slot is not None
        slot = self._slots.get(route.slot)
        async with slot.admit():
            if translate is not None:
                return await translate(slot)
            headers = request_headers(request, {"Content-Type": content_type})
            return await forward(request, self._local(slot, path, render(slot.model_id), headers),
                                 SlotUnreachable, f"slot {slot.name}", slot=slot.name)

    def _remote(self, url: str, data: bytes | None, headers: LooseHeaders) -> Callable[[], Awaitable[Answer]]:
        """The request to a remote upstream (``data`` None: a GET)."""
        async def send() -> Answer:
            r = await (self._session.get(url, headers=headers) if data is None
                       else self._session.post(url, data=data, headers=headers))
            return AiohttpAnswer(r)
        return send

    def _local(self, slot: Slot, path: str, data: bytes | None,
               headers: list[tuple[str, str]]) -> Callable[[], Awaitable[Answer]]:
        """The request to a slot's backend (``data`` None: a GET)."""
        return lambda: self._pool.request(slot.config.port, "GET" if data is None else "POST",
                                          BACKEND_PATHS.get(path, path), headers, data)

    @contextlib.asynccontextmanager
    async def exchange(self, path: str, model: str | None, data: bytes | None,
                       content_type: str) -> AsyncIterator[Answer]:
        """One /v1 request for a caller that is not an HTTP handler (the Wyoming server), taking the
        same way as ``handle_raw``: resolved, admitted (woken, waited for, queued, counted as
        serving until the block ends) and sent; ``data`` None is a GET. Yields a successful answer
        with its head in. Raises what resolution and admission raise, SlotTimeout,
        SlotUnreachable or UpstreamUnavailable, and SlotBackendError for an error answer (its
        ``details`` carry the backend's status and, for hal0's envelope, its code)."""
        route = await self.route(model, path)
        if route.upstream is not None:
            up = self.upstreams.by_name[route.upstream]
            headers = {"Content-Type": content_type, **up.headers()}
            target = f"upstream {up.name}"
            answer = await open_answer(self._remote(up.url + path, data, headers), UpstreamUnavailable, target)
            async with _checked(answer, target):
                yield answer
            return
        assert route.slot is not None
        slot = self._slots.get(route.slot)
        async with slot.admit():
            target = f"slot {slot.name}"
            answer = await open_answer(self._local(slot, path, data, [("Content-Type", content_type)]),
                                       SlotUnreachable, target)
            async with _checked(answer, target):
                yield answer


@contextlib.asynccontextmanager
async def _checked(answer: Answer, target: str) -> AsyncIterator[None]:
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
        yield
    finally:
        answer.release()
