"""The API's own middleware (authentication) and access log; request ids and the error
envelope are in base_middleware.py (shared with runners). Order: request id, error, auth."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from hal0.errors import AuthForbidden, AuthMissing, RouteNotFound
from hal0.server.access import access_of, ollama_serves, on_ollama_listener
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
    config = request.app[CONFIG]
    access = access_of(request)
    auth = config.api.auth
    if config.ollama.enabled and on_ollama_listener(request, config.ollama.port):
        if not ollama_serves(request):
            raise RouteNotFound(f"the Ollama listener serves only the Ollama API, not {request.path}; "
                                "hal0's own API is on its main port")
        auth = config.ollama.auth
    if auth == "off" or access == "public":
        return await handler(request)
    token = _bearer(request)
    if token is None:
        raise AuthMissing("an API token is required: send `Authorization: Bearer <token>`")
    record = request.app[TOKENS].verify(token)
    if access == "admin" and record.scope != "admin":
        raise AuthForbidden(f"{request.method} {request.path} needs an admin token; this one is {record.scope!r}")
    request[REQUEST_TOKEN] = record
    return await handler(request)


class AccessLogger(AbstractAccessLogger):
    """One line per request with its id and duration (``[api] access_log = false`` turns it off)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.1fms rid=%s", request.remote, request.method,
                         request.path_qs, response.status, time * 1000, request.get(REQUEST_ID, "-"))
