"""The API's own middleware (authentication) and access log; request ids and the error
envelope are in hal0.web.middleware (shared with runners); the order is in hal0.server.app."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from hal0.errors import AuthForbidden, AuthMissing
from hal0.server.access import access_of
from hal0.server.keys import CONFIG, REQUEST_ID, REQUEST_TOKEN, TOKENS

__all__ = ["AccessLogger", "auth_middleware"]


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = access_of(request)
    if request.app[CONFIG].api.auth == "off" or access == "public":
        return await handler(request)
    token = _bearer(request)
    if token is None:
        raise AuthMissing("an API token is required: send `Authorization: Bearer <token>`")
    record = request.app[TOKENS].verify(token)
    if access == "admin" and record.scope != "admin":
        raise AuthForbidden(f"{request.method} {request.path} needs an admin token; this one is {record.scope!r}")
    request[REQUEST_TOKEN] = record
    return await handler(request)


_SECRET_PARAM = re.compile(r"(?i)(key|token|secret|password|auth)")


def _loggable(request: web.BaseRequest) -> str:
    """The path and query, with the value of any parameter that looks like a credential hidden (hal0
    takes none in the query, but a client may send one there)."""
    if not request.query_string:
        return request.path
    query = "&".join(f"{k}=***" if _SECRET_PARAM.search(k) else f"{k}={v}" for k, v in request.query.items())
    return f"{request.path}?{query}"


class AccessLogger(AbstractAccessLogger):
    """One line per request with its id and duration (``[api] access_log = false`` turns it off)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = request.get(REQUEST_ID, "-")
        self.logger.info("%s %s %s %d %.1fms rid=%s", request.remote, request.method,
                         _loggable(request), response.status, time * 1000, rid, extra={"request_id": rid})
