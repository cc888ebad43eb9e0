"""Who may call a route: each handler declares its access, the auth middleware enforces it.

A handler marked ``@public`` needs no token; ``@inference`` accepts an inference token as well
as an admin one; ``@metrics`` accepts a metrics token as well as an admin one (and, with
``[metrics].loopback_without_token``, no token from this machine); anything unmarked needs
admin, except under ``/v1/`` where inference is the default. A module that adds routes marks
its own handlers, so no central table grows.

``@ollama_route`` marks what the optional Ollama listener (``[ollama]``) serves; every other
route answers 404 there, and with ``[ollama] auth = "off"`` (loopback only) it needs no token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from aiohttp import web

from hal0.auth import Scope

__all__ = ["ACCEPTS", "Access", "access_of", "declared_access", "inference", "metrics", "ollama_route",
           "ollama_serves", "on_ollama_listener", "public"]

Access = Literal["public", "inference", "metrics", "admin"]
H = TypeVar("H", bound=Callable[..., object])
_ATTR = "hal0_access"
_OLLAMA = "hal0_ollama"

# The token scopes each access level accepts (a public route asks for no token at all).
ACCEPTS: dict[Access, frozenset[Scope]] = {
    "public": frozenset({"admin", "inference", "metrics"}),
    "inference": frozenset({"admin", "inference"}),
    "metrics": frozenset({"admin", "metrics"}),
    "admin": frozenset({"admin"}),
}
OLLAMA_EXTRA_PATHS = frozenset({"/"})  # "Ollama is running": served by the discovery route


def _mark(access: Access) -> Callable[[H], H]:
    def mark(handler: H) -> H:
        setattr(handler, _ATTR, access)
        return handler
    return mark


public = _mark("public")
inference = _mark("inference")
metrics = _mark("metrics")


def access_of(request: web.Request) -> Access:
    """The access the matched handler declared (or the default for its path)."""
    return declared_access(request.match_info.handler, request.path)


def declared_access(handler: object, path: str) -> Access:
    """The access ``handler`` declares, or the default for ``path`` (inference under /v1/, else admin)."""
    declared: Access | None = getattr(handler, _ATTR, None)
    if declared is not None:
        return declared
    return "inference" if path.startswith("/v1/") else "admin"


def ollama_route(handler: H) -> H:
    """Serve this handler on the Ollama listener too."""
    setattr(handler, _OLLAMA, True)
    return handler


def on_ollama_listener(request: web.Request, port: int) -> bool:
    """Whether the request came in on the Ollama listener (its local port is ``port``)."""
    sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return isinstance(sock, tuple) and len(sock) >= 2 and sock[1] == port


def ollama_serves(request: web.Request) -> bool:
    """Whether the Ollama listener serves the matched route."""
    return bool(getattr(request.match_info.handler, _OLLAMA, False)) or request.path in OLLAMA_EXTRA_PATHS
