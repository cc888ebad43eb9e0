"""Middlewares, outermost first: request id, error envelope, authentication."""

from __future__ import annotations

import itertools
import logging
import re
import secrets

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from hal0.errors import (
    AuthForbidden,
    AuthMissing,
    Hal0Error,
    InternalError,
    MethodNotAllowed,
    RequestTooLarge,
    RouteNotFound,
    envelope,
)
from hal0.server.http import json_response
from hal0.server.keys import CONFIG, REQUEST_ID, REQUEST_TOKEN, TOKENS

__all__ = ["AccessLogger", "auth_middleware", "error_middleware", "request_id_middleware"]

log = logging.getLogger("hal0.server")
_RID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_RID_PREFIX = secrets.token_hex(4)  # per process; ids are prefix + counter (no syscall per request)
_RID_COUNTER = itertools.count(1)
OPEN_ROUTES = {("GET", "/health"), ("GET", "/v1/models")}


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
    try:
        return await handler(request)
    except Hal0Error as e:
        return render(e)
    except web.HTTPNotFound:
        return render(RouteNotFound(f"no route for {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed as e:
        return render(MethodNotAllowed(f"{request.method} is not allowed on {request.path}",
                                       allowed=sorted(e.allowed_methods)))
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        return render(RequestTooLarge(f"request body is larger than the {limit} byte limit",
                                      max_bytes=limit))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path,
                      request.get(REQUEST_ID))
        return render(InternalError("internal error; the hal0 log has the details",
                                    request_id=request.get(REQUEST_ID)))


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.app[CONFIG].api.auth == "off" or (request.method, request.path) in OPEN_ROUTES:
        return await handler(request)
    token = _bearer(request)
    if token is None:
        raise AuthMissing("an API token is required: send `Authorization: Bearer <token>`")
    record = request.app[TOKENS].verify(token)
    if record.scope != "admin" and not request.path.startswith("/v1/"):
        raise AuthForbidden(f"a {record.scope!r} token may only call /v1; {request.path} needs admin")
    request[REQUEST_TOKEN] = record
    return await handler(request)


class AccessLogger(AbstractAccessLogger):
    """One line per request with its id and duration (``[api] access_log = false`` turns it off)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.1fms rid=%s", request.remote, request.method,
                         request.path_qs, response.status, time * 1000, request.get(REQUEST_ID, "-"))
