"""The middlewares every hal0 server uses (the API and the runners): request id, then the
error envelope. They need nothing but aiohttp and hal0.errors, so runners stay light."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from hal0.errors import (
    Hal0Error,
    InternalError,
    MethodNotAllowed,
    RequestTooLarge,
    RouteNotFound,
    envelope,
    no_space,
)
from hal0.web.http import REQUEST_ID, json_response
from hal0.web.logs import CURRENT_REQUEST_ID

__all__ = ["ErrorShape", "error_middleware", "error_shape", "render", "request_id_middleware"]

ErrorShape = Callable[[Hal0Error], dict[str, Any]]
H = TypeVar("H", bound=Callable[..., object])
_SHAPE_ATTR = "hal0_error_shape"

log = logging.getLogger("hal0.server")
_RID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_RID_PREFIX = secrets.token_hex(4)  # per process; ids are prefix + counter (no syscall per request)
_RID_COUNTER = itertools.count(1)


def error_shape(shape: ErrorShape) -> Callable[[H], H]:
    """Mark a handler whose clients read another dialect's error body (Anthropic's, say): every
    error on its route, authentication included, is rendered with ``shape``."""
    def mark(handler: H) -> H:
        setattr(handler, _SHAPE_ATTR, shape)
        return handler
    return mark


def render(err: Hal0Error, shape: ErrorShape = envelope) -> web.Response:
    """The one place an error becomes an HTTP response."""
    resp = json_response(shape(err), status=err.status)
    resp.headers.update(err.headers())
    return resp


def _shape_of(request: web.Request) -> ErrorShape:
    shape: ErrorShape = getattr(request.match_info.handler, _SHAPE_ATTR, envelope)
    return shape


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id", "")
    if not _RID_RE.match(rid):
        rid = f"{_RID_PREFIX}{next(_RID_COUNTER):08x}"
    request[REQUEST_ID] = rid
    CURRENT_REQUEST_ID.set(rid)  # this request's task only: every line it logs carries the id
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
    try:
        return await handler(request)
    except Hal0Error as e:
        return render(e, _shape_of(request))
    except web.HTTPNotFound:
        return render(RouteNotFound(f"no route for {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as e:
        return render(MethodNotAllowed(f"{request.method} is not allowed on {request.path}",
                                       allowed=sorted(e.allowed_methods)))
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        return render(RequestTooLarge(f"request body is larger than the {limit} byte limit",
                                      max_bytes=limit), _shape_of(request))
    except web.HTTPException:
        raise
    except Exception as e:
        if isinstance(e, OSError) and (full := no_space(e)) is not None:  # a full disk is no bug
            log.error("%s %s: %s", request.method, request.path, full.message)
            return render(full)
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path,
                      request.get(REQUEST_ID))
        return render(InternalError("internal error; the hal0 log has the details",
                                    request_id=request.get(REQUEST_ID)), _shape_of(request))
