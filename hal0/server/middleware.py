"""The API's own middleware (authentication) and access log; request ids and the error
envelope are in hal0.web.middleware (shared with runners); the order is in hal0.server.app."""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from hal0.errors import AuthForbidden, AuthMissing, RouteNotFound
from hal0.server.access import ACCEPTS, access_of, ollama_serves, on_ollama_listener
from hal0.server.keys import CONFIG, REQUEST_ID, REQUEST_TOKEN, TOKENS

__all__ = ["AccessLogger", "auth_middleware"]


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def _from_loopback(request: web.Request) -> bool:
    """Whether the peer of the connection is this machine (the socket's address, not a header)."""
    try:
        ip = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False  # a Unix socket or an unknown peer
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = access_of(request)
    cfg = request.app[CONFIG]
    auth = cfg.api.auth
    if cfg.ollama.enabled and on_ollama_listener(request, cfg.ollama.port):
        if not ollama_serves(request):
            raise RouteNotFound(f"the Ollama listener serves only the Ollama API, not {request.path}; "
                                "hal0's own API is on its main port")
        auth = cfg.ollama.auth
    if auth == "off" or access == "public":
        return await handler(request)
    if access == "metrics" and cfg.metrics.loopback_without_token and _from_loopback(request):
        return await handler(request)
    token = _bearer(request)
    if token is None:
        raise AuthMissing("an API token is required: send `Authorization: Bearer <token>`")
    record = request.app[TOKENS].verify(token)
    if record.scope not in ACCEPTS[access]:
        wanted = " or ".join(sorted(ACCEPTS[access]))
        raise AuthForbidden(f"{request.method} {request.path} needs {'an' if wanted[0] in 'aei' else 'a'} "
                            f"{wanted} token; this one is {record.scope!r}")
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
