"""Small request helpers shared by every handler."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from hal0.errors import RequestInvalid, RequestMalformed

__all__ = ["REQUEST_ID", "json_response", "parse_json", "read_json"]

REQUEST_ID = web.RequestKey("request_id", str)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json", headers=headers)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; raises RequestInvalid or RequestMalformed."""
    return parse_json(await request.read())  # over client_max_size: the error middleware answers 413


def parse_json(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object; raises RequestInvalid or RequestMalformed."""
    if not raw:
        raise RequestInvalid("request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestMalformed(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestInvalid("request body must be a JSON object")
    return body
