"""The middlewares every hal0 server uses (the API and the runners): request id, then the
error envelope. They need nothing but aiohttp and hal0.errors, so runners stay light."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from hal0.errors import (
    Hal0Error,
    InternalError,
    MethodNotAllowed,
    RequestTooLarge,
    RouteNotFound,
    envelope,
)
from hal0.web.http import REQUEST_ID, json_response

__all__ = ["ErrorRenderer", "error_middleware", "errors_as", "render", "request_id_middleware"]

log = logging.getLogger("hal0.server")
_RID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_RID_PREFIX = secrets.token_hex(4)  # per process; ids are prefix + counter (no syscall per request)
_RID_COUNTER = itertools.count(1)
_RENDERER = "hal0_render_error"
ErrorRenderer = Callable[[Hal0Error], web.Response]
H = TypeVar("H", bound=Callable[..., object])


def errors_as(renderer: ErrorRenderer) -> Callable[[H], H]:
    """Mark a handler whose errors another API's clients read: ``renderer`` shapes them instead of
    hal0's envelope (Ollama's ``{"error": "..."}``, for one)."""
    def mark(handler: H) -> H:
        setattr(handler, _RENDERER, renderer)
        return handler
    return mark


def render(err: Hal0Error) -> web.Response:
    """The one place an error becomes an HTTP response."""
    resp = json_response(envelope(err), status=err.status)
    resp.headers.update(err.headers())
    return resp


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")
    if not _RID_RE.match(rid):
        rid = f"{_RID_PREFIX}{next(_RID_COUNTER):08x}"
    request[REQUEST_ID] = rid
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        e.headers["X-Request-Id"] = rid
        raise
    if not resp.prepared:
        resp.headers["X-Request-Id"] = rid
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    shape: ErrorRenderer = getattr(request.match_info.handler, _RENDERER, render)
    try:
        return await handler(request)
    except Hal0Error as e:
        return shape(e)
    except web.HTTPNotFound:
        return shape(RouteNotFound(f"no route for {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as e:
        return shape(MethodNotAllowed(f"{request.method} is not allowed on {request.path}",
                                      allowed=sorted(e.allowed_methods)))
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        return shape(RequestTooLarge(f"request body is larger than the {limit} byte limit", max_bytes=limit))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path,
                      request.get(REQUEST_ID))
        return shape(InternalError("internal error; the hal0 log has the details",
                                   request_id=request.get(REQUEST_ID)))
