"""The API's own middleware (authentication) and access log; request ids and the error
envelope are in base_middleware.py (shared with runners). Order: request id, error, auth."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from hal0.errors import AuthForbidden, AuthMissing
from hal0.server.keys import CONFIG, REQUEST_ID, REQUEST_TOKEN, TOKENS

__all__ = ["AccessLogger", "auth_middleware"]

OPEN_ROUTES = {("GET", "/health"), ("GET", "/v1/models")}
OPEN_PREFIX = "/v1/images/files/"  # unguessable names are the capability (hal0.images.cache)


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.app[CONFIG].api.auth == "off" or (request.method, request.path) in OPEN_ROUTES or \
            (request.method == "GET" and request.path.startswith(OPEN_PREFIX)):
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
