"""OpenAI Responses on :8080: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

Responses are kept per token: a token reads, continues and deletes only its own."""

from __future__ import annotations

from aiohttp import web

from hal0.dialects.responses import check_request
from hal0.dispatch.dispatcher import Target
from hal0.server.keys import CONFIG, DISPATCHER, REQUEST_TOKEN, RESPONSES
from hal0.server.v1_api import bound_list
from hal0.web.http import JSON_LIMITS, json_response, parse_json

__all__ = ["routes"]

routes = web.RouteTableDef()


def _owner(request: web.Request) -> str:
    """The token's id; every caller is one owner when auth is off."""
    token = request.get(REQUEST_TOKEN)
    return token.id if token is not None else "anonymous"


@routes.post("/v1/responses")
async def create(request: web.Request) -> web.StreamResponse:
    body = parse_json(await request.read(), request.app[JSON_LIMITS])
    check_request(body)
    bound_list(body, "input", request.app[CONFIG].api.max_inputs, "max_inputs")
    responses, owner = request.app[RESPONSES], _owner(request)
    items = await responses.prepare(owner, body)  # an unknown previous_response_id: 404 before any slot wakes

    async def serve(target: Target) -> web.StreamResponse:
        return await responses.serve(request, target, owner, body, items)
    model = body.get("model")
    return await request.app[DISPATCHER].handle_via(request, "/v1/responses", model, serve)


@routes.get("/v1/responses/{id}")
async def get(request: web.Request) -> web.Response:
    record = await request.app[RESPONSES].get(_owner(request), request.match_info["id"])
    return json_response(record["response"])


@routes.delete("/v1/responses/{id}")
async def delete(request: web.Request) -> web.Response:
    rid = request.match_info["id"]
    await request.app[RESPONSES].delete(_owner(request), rid)
    return json_response({"id": rid, "object": "response.deleted", "deleted": True})
