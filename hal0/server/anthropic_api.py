"""Anthropic Messages on :8080: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

Resolved, admitted and forwarded like any /v1 request (``x-api-key`` is a hal0 token); every
error on these routes, hal0's own included, is in Anthropic's shape."""

from __future__ import annotations

from aiohttp import web

from hal0.dialects.anthropic import ANTHROPIC, check_messages
from hal0.errors import anthropic_envelope
from hal0.server.access import inference
from hal0.server.keys import CONFIG, DISPATCHER
from hal0.server.v1_api import bound_list
from hal0.web.http import JSON_LIMITS, parse_json
from hal0.web.middleware import error_shape

__all__ = ["routes"]

routes = web.RouteTableDef()


async def _messages(request: web.Request, path: str) -> web.StreamResponse:
    raw = await request.read()
    body = parse_json(raw, request.app[JSON_LIMITS])
    check_messages(body, count=path.endswith("count_tokens"))
    bound_list(body, "messages", request.app[CONFIG].api.max_messages, "max_messages")
    return await request.app[DISPATCHER].handle(request, path, body, raw, ANTHROPIC)


@routes.post("/v1/messages")
@error_shape(anthropic_envelope)
@inference
async def messages(request: web.Request) -> web.StreamResponse:
    return await _messages(request, "/v1/messages")


@routes.post("/v1/messages/count_tokens")
@error_shape(anthropic_envelope)
@inference
async def count_tokens(request: web.Request) -> web.StreamResponse:
    return await _messages(request, "/v1/messages/count_tokens")
