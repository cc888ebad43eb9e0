"""An OpenAI ``POST /v1/images/generations`` body, checked once (every problem is a 400)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

from hal0.errors import RequestInvalid, RequestInvalidSize

__all__ = ["MAX_N", "ImageRequest", "parse_image_request"]

MAX_N = 8
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    n: int
    size: tuple[int, int] | None  # None: the family's default ("auto" or absent)
    response_format: Literal["url", "b64_json"]
    seed: int  # random when the request has none; echoed so the image can be made again
    steps: int | None
    cfg: float | None
    negative_prompt: str


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise RequestInvalid(f"`{key}` must be an integer from {lo} to {hi}", param=key)
    return value


def _size(value: Any) -> tuple[int, int] | None:
    if value is None or value == "auto":
        return None
    if not isinstance(value, str):
        raise RequestInvalidSize("`size` must be a string like \"512x512\"", param="size")
    w, sep, h = value.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise RequestInvalidSize(f"`size` {value!r} is not WIDTHxHEIGHT, e.g. \"512x512\"", param="size")
    width, height = int(w), int(h)
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE or side % 8:
            raise RequestInvalidSize(
                f"`size` {value!r}: width and height must each be {MIN_SIDE}-{MAX_SIDE} and a multiple of 8",
                param="size", width=width, height=height)
    return width, height


def parse_image_request(body: dict[str, Any]) -> ImageRequest:
    """Check ``body``. ``quality``, ``style``, ``user``, ``background`` and ``moderation`` are
    accepted and ignored; hal0's own ``seed``, ``steps``, ``cfg`` and ``negative_prompt`` come
    at the top level (where the OpenAI SDK puts ``extra_body``)."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestInvalid("`prompt` is required and must be a non-empty string", param="prompt")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestInvalid("`model` must be a string", param="model")
    n = _int(body, "n", 1, MAX_N)
    fmt: Literal["url", "b64_json"] = body.get("response_format") or "url"
    if fmt not in ("url", "b64_json"):
        raise RequestInvalid("`response_format` must be \"url\" or \"b64_json\"", param="response_format")
    output_format = body.get("output_format")
    if output_format not in (None, "png"):
        raise RequestInvalid("`output_format` must be \"png\": hal0 returns PNG images", param="output_format")
    if body.get("stream"):
        raise RequestInvalid("`stream` is not supported for images: hal0 answers when the images are ready",
                             param="stream")
    seed = _int(body, "seed", 0, MAX_SEED)
    steps = _int(body, "steps", 1, 150)
    cfg = body.get("cfg")
    if cfg is not None and (not isinstance(cfg, int | float) or isinstance(cfg, bool) or not 0 <= cfg <= 30):
        raise RequestInvalid("`cfg` must be a number from 0 to 30", param="cfg")
    negative = body.get("negative_prompt", "")
    if not isinstance(negative, str):
        raise RequestInvalid("`negative_prompt` must be a string", param="negative_prompt")
    return ImageRequest(prompt=prompt, n=n or 1, size=_size(body.get("size")), response_format=fmt,
                        seed=secrets.randbelow(2**32) if seed is None else seed,
                        steps=steps, cfg=None if cfg is None else float(cfg), negative_prompt=negative)
