"""CORS: off unless ``[api].cors_origins`` lists the browser origins allowed to call hal0.

Off, hal0 sends no ``Access-Control-*`` header at all (and drops the backends'), so a web page
on another origin cannot read any answer, even with a token it somehow holds. On, a listed
origin (or any, with ``"*"``) gets its preflight answered before authentication (browsers send
no token with it) and every answer marked readable; credentials are bearer tokens, never
cookies, so ``Allow-Credentials`` is never sent.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler

from hal0.server.keys import CONFIG

__all__ = ["add_cors_headers", "cors_middleware"]

_METHODS = "GET, POST, DELETE, OPTIONS"
_EXPOSE = "X-Request-Id, X-Hal0-Slot, Retry-After"
_TOKEN_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def _allowed(request: web.Request) -> str | None:
    """The value for Access-Control-Allow-Origin, or None when this origin gets no CORS."""
    origin = request.headers.get("Origin")
    origins = request.app[CONFIG].api.cors_origins
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers a preflight from an allowed origin (before authentication)."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        allow = _allowed(request)
        if allow is not None:
            headers = {"Access-Control-Allow-Origin": allow, "Access-Control-Allow-Methods": _METHODS,
                       "Access-Control-Max-Age": "600", "Vary": "Origin"}
            asked = request.headers.get("Access-Control-Request-Headers", "")
            if asked and _TOKEN_LIST.match(asked):
                headers["Access-Control-Allow-Headers"] = asked
            return web.Response(status=204, headers=headers)
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: mark an answer to an allowed origin readable (streams included)."""
    allow = _allowed(request)
    if allow is not None and "Access-Control-Allow-Origin" not in response.headers:
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Access-Control-Expose-Headers"] = _EXPOSE
        response.headers.add("Vary", "Origin")
