"""``GET /openapi.json``: the OpenAPI 3.1 description built from ``openapi_routes.OPERATIONS``."""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from hal0 import __version__
from hal0.server.access import public
from hal0.server.openapi_routes import OPERATIONS, Op
from hal0.server.openapi_schemas import COMPONENTS

__all__ = ["document", "routes"]

routes = web.RouteTableDef()

_ERROR_SCHEMA = {"hal0": "Error", "anthropic": "AnthropicError", "ollama": "OllamaError"}
_REASONS = {400: "The request is invalid (the envelope's `code` says why)", 401: "No token, or an unknown one",
            403: "The token's scope does not reach this route", 404: "Not found", 409: "Conflicts with a state",
            413: "The body is over `[api] max_body_mb`", 429: "The slot's queue is full (Retry-After)",
            500: "An internal error (the log has the traceback; the answer never does)",
            502: "The backend or upstream answered with something broken",
            503: "The slot or upstream is not available (Retry-After when it is loading)",
            504: "The backend or upstream did not answer in time", 507: "Not enough memory or disk"}
_SECURITY = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "`Authorization: Bearer <token>`: an admin token or one made by `hal0 token create`"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
               "description": "The same token in Anthropic's header"},
}


def _error(op: Op, status: int) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{_ERROR_SCHEMA[op.error_shape]}"}
    reason = _REASONS.get(status, "An error")
    if op.upstream:
        reason += "; or the backend's own error with its status, passed through in the backend's shape"
    return {"description": reason, "content": {"application/json": {"schema": schema}}}


def _operation(op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
                           "x-hal0-scope": op.scope}
    if op.params:
        out["parameters"] = [{"name": p.name, "in": p.where, "required": p.where == "path", "schema": p.schema,
                              "example": p.example, **({"description": p.description} if p.description else {})}
                             for p in op.params]
    if op.request is not None:
        out["requestBody"] = {"required": op.request_required, "content": {op.request_type: {"schema": op.request}}}
    out["security"] = [] if op.scope == "public" else [{"bearer": [op.scope]}, {"apiKey": [op.scope]}]
    responses: dict[str, Any] = {str(op.status): {"description": "Success",
                                                  "content": {op.response_type: {"schema": op.response}}}}
    statuses = set(op.errors) | {500}
    if op.scope != "public":
        statuses |= {401} if op.scope == "inference" else {401, 403}
    if op.upstream:
        statuses |= {502, 503, 504}
    for status in sorted(statuses):
        responses[str(status)] = _error(op, status)
    out["responses"] = responses
    if op.openai:
        out["x-openai-schema"] = op.openai
    return out


@functools.cache
def document() -> dict[str, Any]:
    """The whole description (built once; it is data, the same for every caller)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "hal0", "version": __version__,
                 "description": "hal0's own API (/api), the OpenAI-compatible /v1, Anthropic Messages, OpenAI "
                                "Responses, Ollama's API and llama.cpp's router model API. Each operation's "
                                "`x-hal0-scope` (public, inference or admin) is the token it needs; an admin "
                                "token reaches everything. Errors use the `Error` envelope (Anthropic's and "
                                "Ollama's routes their own shapes)."},
        "paths": paths,
        "components": {"schemas": COMPONENTS, "securitySchemes": _SECURITY},
    }


@functools.cache
def _body() -> bytes:
    return json.dumps(document()).encode()


@routes.get("/openapi.json")
@public
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_body(), content_type="application/json")
