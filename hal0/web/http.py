"""Small request helpers shared by every handler, and the one JSON body parser.

``parse_json`` decides every body before hal0 or a backend looks at it: not JSON, nested deeper
than ``max_depth``, an integer of more than ``MAX_INT_DIGITS`` digits, ``NaN``/``Infinity`` (or
a number that overflows to it), or a string with a lone UTF-16 surrogate (``"\\ud800"``, which no
backend can encode) is a 400, never a 500.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hal0.errors import RequestInvalid, RequestMalformed

__all__ = ["JSON_LIMITS", "MAX_INT_DIGITS", "REQUEST_ID", "JsonLimits", "json_response", "parse_json", "read_json"]

REQUEST_ID = web.RequestKey("request_id", str)
MAX_INT_DIGITS = 40  # beyond any int64/uint64 a backend takes (and far below Python's 4300)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # the start of an escaped UTF-16 surrogate


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = 64


JSON_LIMITS = web.AppKey("json_limits", JsonLimits)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json", headers=headers)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (the app's ``JSON_LIMITS``); raises RequestInvalid or
    RequestMalformed."""
    limits = request.app.get(JSON_LIMITS) or _DEFAULT_LIMITS
    return parse_json(await request.read(), limits)  # over client_max_size: the error middleware answers 413


class _Refused(ValueError):
    """A value the JSON is not allowed to hold (raised from the decoder's hooks)."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_int=_int, parse_float=_float, parse_constant=_constant)
_DEFAULT_LIMITS = JsonLimits()


def parse_json(raw: bytes, limits: JsonLimits = _DEFAULT_LIMITS) -> dict[str, Any]:
    """``raw`` (UTF-8, as RFC 8259 requires) as a JSON object; raises RequestInvalid or
    RequestMalformed (both 400)."""
    if not raw:
        raise RequestInvalid("request body is empty; expected a JSON object")
    try:
        body = _DECODER.decode(raw.decode("utf-8"))  # strict: surrogates encoded as UTF-8 bytes are refused
    except _Refused as e:
        raise RequestMalformed(f"request body refused: {e}") from None
    except RecursionError:
        raise RequestMalformed(f"request body is nested too deeply (at most {limits.max_depth} levels)",
                               max_depth=limits.max_depth) from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise RequestMalformed(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestInvalid("request body must be a JSON object")
    if raw.count(b"[") + raw.count(b"{") > limits.max_depth:  # fewer brackets cannot nest deeper
        _check_depth(body, limits.max_depth)
    if _SURROGATE_ESCAPE.search(raw):  # only an escape can put a lone surrogate in a string
        _check_strings(body)
    return body


def _check_depth(body: Any, limit: int) -> None:
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise RequestMalformed(f"request body is nested too deeply (at most {limit} levels)", max_depth=limit)
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def _check_strings(body: Any) -> None:
    """Every string (keys too) must be encodable: a lone surrogate is not text."""
    stack = [body]
    while stack:
        value = stack.pop()
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        for item in items:
            if isinstance(item, str):
                try:
                    item.encode()
                except UnicodeEncodeError:
                    raise RequestMalformed("request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                                           "which is not text") from None
            elif isinstance(item, dict | list):
                stack.append(item)
