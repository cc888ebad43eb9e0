"""Limits against slow and hostile clients, at the connection (docs/security.md).

aiohttp gives hal0 a parser with size limits and a keep-alive timer; the rest is here:

- **Request head**: aiohttp arms its keep-alive timer when a connection opens and again after
  each answer, and closes the connection if no complete head has arrived when it fires; hal0
  sets it to ``[api].header_timeout_s``, so a head trickled byte by byte is cut off (this is
  also how long an idle keep-alive connection stays open).
- **Request body**: ``body_middleware`` reads the whole body within ``body_timeout_s`` before
  the handler runs (408 ``request.timeout``, connection closed).
- **Answers nobody reads**: a connection whose writes stay paused (the client takes nothing)
  for ``send_timeout_s`` is aborted; the handler is cancelled, which drops the backend request.
- **Connections**: at ``max_connections``, a new connection closes the oldest one that is idle
  or still waiting for its request; if every one is busy, up to ``OVERFLOW`` more are let in
  for ``/health`` only (anything else: 503 ``system.busy``), and beyond those the connection
  gets that 503 at once. So a flood of slow clients never starves ``/health``.
- **Malformed or oversized requests** get the error envelope (400 ``request.malformed_http``,
  431 ``request.header_too_large``) and a log line without a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest

from hal0.config.schema import ApiConfig
from hal0.errors import (
    Hal0Error,
    InternalError,
    RequestHeaderTooLarge,
    RequestMalformedHttp,
    RequestTimeout,
    SystemBusy,
    envelope,
)
from hal0.web.middleware import render

__all__ = ["GUARD", "OVERFLOW", "ConnectionGuard", "GuardedHandler", "body_middleware", "connection_middleware"]

log = logging.getLogger("hal0.server")
OVERFLOW = 32  # connections let in beyond max_connections, for /health only
HEALTH_PATHS = frozenset({"/health"})


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler, with a send deadline and the envelope for bad requests."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, *, loop: asyncio.AbstractEventLoop,
                 **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self.guard = guard
        self.event_loop = loop
        self._stall: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self.event_loop.call_later(self.guard.send_timeout_s, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        """The client took none of its answer for send_timeout_s: drop it (abort: close() would wait
        for the unsent bytes forever). Its handler is cancelled, and with it the backend request."""
        self._stall = None
        if self.transport is not None:
            log.info("dropped a connection from %s: it took none of its answer for %g s ([api].send_timeout_s)",
                     self.transport.get_extra_info("peername"), self.guard.send_timeout_s)
            self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        self.guard.closed(self)
        super().connection_lost(exc)

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse (or a handler error that escaped the middlewares) as
        hal0's envelope; the connection is closed after it."""
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has started; no error can follow it")
        err: Hal0Error
        if status < 500:
            text = getattr(exc, "message", None) or message or str(exc)
            if isinstance(exc, LineTooLong) or "Too many headers" in str(text):
                err = RequestHeaderTooLarge(f"request head too large: {text}; the limits are [api].max_header_bytes "
                                            "and [api].max_headers")
            else:
                err = RequestMalformedHttp(f"not a valid HTTP/1.1 request: {text}")
            log.info("refused a request from %s: %s", request.remote, err.message)
        else:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            err = InternalError("internal error; the hal0 log has the details")
        resp = render(err)
        resp.force_close()
        return resp


class _Refusal(asyncio.Protocol):
    """A connection beyond every limit: one 503 ``system.busy`` and the door closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = json.dumps(envelope(SystemBusy("hal0 has too many open connections; try again shortly",
                                              retry_after=1))).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        assert isinstance(transport, asyncio.Transport)
        transport.write(head + body)
        transport.close()


class ConnectionGuard:
    """Counts the server's connections and knows which are busy; makes each connection's handler."""

    def __init__(self, api: ApiConfig) -> None:
        self.max_connections = api.max_connections
        self.send_timeout_s = api.send_timeout_s
        self.body_timeout_s = api.body_timeout_s
        self._open: dict[web.RequestHandler, None] = {}  # oldest first
        self._busy: dict[web.RequestHandler, int] = {}  # connections whose request is being handled
        self.overflow: set[web.RequestHandler] = set()  # let in beyond the limit, for /health only

    @property
    def count(self) -> int:
        return len(self._open)

    def factory(self, server: web.Server, loop: asyncio.AbstractEventLoop,
                **kwargs: Any) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for ``loop.create_server``: aiohttp's handler for ``server``."""
        def make() -> asyncio.Protocol:
            over = len(self._open) >= self.max_connections and not self._evict_one()
            if over and len(self.overflow) >= OVERFLOW:
                return _Refusal()
            handler = GuardedHandler(server, self, loop=loop, **kwargs)
            self._open[handler] = None
            if over:
                self.overflow.add(handler)
            return handler
        return make

    def _evict_one(self) -> bool:
        """Close the oldest connection that is idle or waiting for its request; False if all are busy."""
        for handler in self._open:
            if handler not in self._busy and handler not in self.overflow:
                log.info("closed an idle connection: %d connections open ([api].max_connections)",
                         len(self._open))
                self.closed(handler)
                handler.force_close()
                return True
        return False

    def closed(self, handler: web.RequestHandler) -> None:
        self._open.pop(handler, None)
        self._busy.pop(handler, None)
        self.overflow.discard(handler)

    def enter(self, handler: web.RequestHandler) -> None:
        self._busy[handler] = self._busy.get(handler, 0) + 1

    def leave(self, handler: web.RequestHandler) -> None:
        n = self._busy.get(handler, 0) - 1
        if n > 0:
            self._busy[handler] = n
        else:
            self._busy.pop(handler, None)


GUARD = web.AppKey("guard", ConnectionGuard)


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Marks the connection busy while its request is handled; an overflow connection gets
    ``/health`` and nothing else, and is closed after its answer."""
    guard = request.app[GUARD]
    proto = request.protocol
    if proto in guard.overflow:
        if request.path in HEALTH_PATHS:
            resp = await handler(request)
        else:
            resp = render(SystemBusy(f"hal0 holds {guard.max_connections} connections, all busy "
                                     "([api].max_connections); try again shortly", retry_after=1))
        resp.force_close()
        return resp
    guard.enter(proto)
    try:
        return await handler(request)
    finally:
        guard.leave(proto)


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The whole body within ``[api].body_timeout_s`` of the head, before the handler reads it
    (``request.read()`` then answers from memory); late: 408 and the connection closed."""
    if request.body_exists and not request.content.is_eof():  # a body still on its way (a small one is in)
        timeout = request.app[GUARD].body_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await request.read()
        except TimeoutError:
            resp = render(RequestTimeout(f"the request body did not arrive within {timeout:g} s "
                                         "([api].body_timeout_s)", timeout_s=timeout))
            resp.force_close()
            return resp
    return await handler(request)
