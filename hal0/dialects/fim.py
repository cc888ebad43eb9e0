"""Fill-in-the-middle: ``/v1/completions`` with ``suffix`` (what editors send) becomes
llama-server's ``/infill`` (prefix, suffix, extra context) and its answer comes back in the
completions shape, streamed or not. Also the one fix plain completion streams need:
llama-server puts ``usage`` on the last text chunk, where OpenAI clients that asked for
``stream_options.include_usage`` expect a chunk of its own with empty ``choices``."""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from hal0.dialects.relay import answer_json, json_answer, passthrough, relay_sse
from hal0.dialects.sse import SseEvent, sse
from hal0.dispatch.dispatcher import Target
from hal0.dispatch.proxy import Answer
from hal0.errors import RequestInvalid

__all__ = ["InfillStream", "completion_from_infill", "infill_request", "serve_infill", "serve_raw_infill",
           "serve_usage_split", "split_usage", "wants_usage"]

# Sampling fields that mean the same on /infill as on /v1/completions.
_PASSED = ("temperature", "top_p", "top_k", "min_p", "stop", "seed", "stream", "presence_penalty",
           "frequency_penalty", "n_probs", "samplers", "input_extra", "t_max_prompt_ms", "t_max_predict_ms")
_FINISH = {"limit": "length", "eos": "stop", "word": "stop"}


def wants_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return bool(body.get("stream")) and isinstance(opts, dict) and opts.get("include_usage") is True


def infill_request(body: dict[str, Any]) -> dict[str, Any]:
    """The /infill body for a completions request with ``suffix``."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestInvalid("with `suffix`, `prompt` must be one string (the text before the cursor)",
                             param="prompt")
    if not isinstance(body.get("suffix"), str):
        raise RequestInvalid("`suffix` must be a string", param="suffix")
    out: dict[str, Any] = {"input_prefix": prompt, "input_suffix": body["suffix"]}
    out.update({k: body[k] for k in _PASSED if k in body})
    if "max_tokens" in body:
        out["n_predict"] = body["max_tokens"]
    return out


def _id() -> str:
    return f"cmpl-{secrets.token_hex(12)}"


def _usage(infill: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(infill.get("tokens_evaluated") or 0), int(infill.get("tokens_predicted") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_from_infill(infill: dict[str, Any], model: str | None) -> dict[str, Any]:
    return {"id": _id(), "object": "text_completion", "created": int(time.time()),
            "model": infill.get("model") or model, "choices": [{
                "text": infill.get("content", ""), "index": 0, "logprobs": None,
                "finish_reason": _FINISH.get(str(infill.get("stop_type")), "stop")}],
            "usage": _usage(infill)}


class InfillStream:
    """/infill stream events in, completion chunks out, ``[DONE]`` last (after the usage chunk
    when the client asked for one)."""

    def __init__(self, model: str | None, include_usage: bool) -> None:
        self._id, self._created, self._model, self._usage = _id(), int(time.time()), model, include_usage

    def _chunk(self, text: str, finish: str | None, model: Any) -> dict[str, Any]:
        return {"id": self._id, "object": "text_completion", "created": self._created, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    def feed(self, event: SseEvent) -> list[bytes]:
        data = event.json()
        if not isinstance(data, dict):
            return []
        model = data.get("model") or self._model
        if not data.get("stop"):
            return [sse(self._chunk(data.get("content", ""), None, model))]
        out = [sse(self._chunk(data.get("content", ""), _FINISH.get(str(data.get("stop_type")), "stop"), model))]
        if self._usage:
            out.append(sse({**self._chunk("", None, model), "choices": [], "usage": _usage(data)}))
        return [*out, sse("[DONE]")]


def split_usage(event: SseEvent) -> list[bytes]:
    """A completions stream event as OpenAI sends it: ``usage`` on a chunk of its own."""
    data = event.json()
    if not isinstance(data, dict) or not data.get("usage") or not data.get("choices"):
        return [sse(event.data, event.event)]
    usage = data.pop("usage")
    return [sse(data, event.event), sse({**data, "choices": [], "usage": usage}, event.event)]


async def serve_infill(request: web.Request, target: Target, body: dict[str, Any], raw: bytes,
                       infill: dict[str, Any]) -> web.StreamResponse:
    """A completions request with ``suffix`` on ``target``: a slot's /infill, answered as a
    completion; a remote box gets the request as it came (it does its own fill-in-the-middle)."""
    if target.slot is None:
        return await target.forward(request, "/v1/completions", raw, "application/json")
    answer = await target.call(request, "/infill", infill)
    await _refuse_unsupported(answer, target)
    if answer.status >= 400:
        return await passthrough(request, answer, target)
    if not body.get("stream"):
        return json_answer(request, target, completion_from_infill(await answer_json(answer, target), target.model))
    return await relay_sse(request, answer, target, rewrite=InfillStream(target.model, wants_usage(body)).feed)


async def serve_raw_infill(request: web.Request, target: Target, body: dict[str, Any],
                           raw: bytes) -> web.StreamResponse:
    """llama.cpp's own ``/infill`` on ``target``, relayed as it comes (streamed or not)."""
    if target.slot is None:
        return await target.forward(request, "/infill", raw, "application/json")
    answer = await target.call(request, "/infill", {**body, "model": target.model or body.get("model")})
    await _refuse_unsupported(answer, target)
    return await passthrough(request, answer, target)


async def _refuse_unsupported(answer: Answer, target: Target) -> None:
    """llama-server answers 501 when the model has no fill-in-the-middle tokens. That is the
    client's choice of model, so a 400 in hal0's envelope (on a 5xx the SDKs would retry)."""
    if answer.status != 501:
        return
    said = (await answer.read())[:500].decode("utf-8", "replace")
    raise RequestInvalid(f"{target.label} cannot fill in the middle: its model has no FIM tokens (the backend "
                         f"said: {said}); pick a coding model (Qwen2.5-Coder, CodeGemma, ...)", param="model",
                         model=target.model)


async def serve_usage_split(request: web.Request, target: Target, body: dict[str, Any]) -> web.StreamResponse:
    """A completions stream that asked for usage, with the usage moved to a chunk of its own."""
    answer = await target.call(request, "/v1/completions", {**body, "model": target.model or body.get("model")})
    if answer.status >= 400:
        return await passthrough(request, answer, target)
    return await relay_sse(request, answer, target, rewrite=split_usage)
