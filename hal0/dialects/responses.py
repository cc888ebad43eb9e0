"""OpenAI Responses (``POST /v1/responses``): forwarded to a backend that implements it
(llama-server does, without ``previous_response_id``), translated to chat completions for one
that answers 404; either way the answer is kept (``store``, default true) so a later request's
``previous_response_id`` continues the conversation: hal0 sends the backend the whole of it."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from hal0.dialects.relay import answer_json, json_answer, passthrough, relay_sse
from hal0.dialects.responses_chat import ChatStream, chat_request, response_from_chat
from hal0.dialects.responses_store import ResponseStore
from hal0.dialects.sse import SseEvent
from hal0.dispatch.dispatcher import Target
from hal0.errors import RequestInvalid, ResponseNotFound

__all__ = ["Responses", "check_request", "input_items"]

_UNSUPPORTED = (404, 405, 501)  # a backend without /v1/responses


def input_items(value: Any) -> list[Any]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(i, dict) for i in value):
        return list(value)
    raise RequestInvalid("`input` must be a string or a list of input items", param="input")


def check_request(body: dict[str, Any]) -> None:
    if "input" not in body:
        raise RequestInvalid("`input` is required", param="input")
    input_items(body["input"])
    for key in ("model", "previous_response_id", "instructions"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise RequestInvalid(f"`{key}` must be a string", param=key)
    for key in ("stream", "store"):
        if key in body and not isinstance(body[key], bool):
            raise RequestInvalid(f"`{key}` must be true or false", param=key)


class Responses:
    """The store and the two ways to the backend; one per app."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def get(self, owner: str, rid: str) -> dict[str, Any]:
        record = await asyncio.to_thread(self.store.get, owner, rid)
        if record is None:
            raise ResponseNotFound(f"no stored response {rid!r} (it may have expired from hal0's store)",
                                   param="response_id")
        return record

    async def delete(self, owner: str, rid: str) -> None:
        if not await asyncio.to_thread(self.store.delete, owner, rid):
            raise ResponseNotFound(f"no stored response {rid!r}", param="response_id")

    async def prepare(self, owner: str, body: dict[str, Any]) -> list[Any]:
        """The whole conversation this request continues, its own input last."""
        items = input_items(body["input"])
        prev = body.get("previous_response_id")
        if prev:
            items = (await self.get(owner, prev))["conversation"] + items
        return items

    async def serve(self, request: web.Request, target: Target, owner: str, body: dict[str, Any],
                    items: list[Any]) -> web.StreamResponse:
        """Answer on ``target``: natively, or translated when it has no /v1/responses."""
        prev = body.get("previous_response_id")
        backend = {k: v for k, v in body.items() if k != "previous_response_id"}
        backend["input"] = items
        if target.model:
            backend["model"] = target.model
        keep = body.get("store", True)

        def stored(response: dict[str, Any]) -> dict[str, Any]:
            response["previous_response_id"] = prev
            return response

        async def remember(response: dict[str, Any]) -> None:
            if keep and isinstance(response.get("id"), str):
                conversation = items + [o for o in response.get("output") or [] if isinstance(o, dict)]
                await asyncio.to_thread(self.store.put, owner, response, conversation)

        answer = await target.call(request, "/v1/responses", backend)
        if answer.status in _UNSUPPORTED:
            answer.close()
            answer.release()
            return await self._translated(request, target, backend, items, stored, remember)
        if answer.status >= 400:
            return await passthrough(request, answer, target)
        if not body.get("stream"):
            response = stored(await answer_json(answer, target))
            await remember(response)
            return json_answer(request, target, response)
        done: list[dict[str, Any]] = []

        def watch(event: SseEvent) -> None:
            data = event.json()
            if isinstance(data, dict) and data.get("type") == "response.completed":
                done.append(data.get("response") or {})

        resp = await relay_sse(request, answer, target, watch=watch)
        if done:
            await remember(stored(done[-1]))
        return resp

    async def _translated(self, request: web.Request, target: Target, backend: dict[str, Any],
                          items: list[Any], stored: Any, remember: Any) -> web.StreamResponse:
        answer = await target.call(request, "/v1/chat/completions", chat_request(backend, items))
        if answer.status >= 400:
            return await passthrough(request, answer, target)
        if not backend.get("stream"):
            response = stored(response_from_chat(await answer_json(answer, target)))
            await remember(response)
            return json_answer(request, target, response)
        stream = ChatStream()

        def rewrite(event: SseEvent) -> list[bytes]:
            data = event.json()
            return stream.feed(data) if isinstance(data, dict) else []

        resp = await relay_sse(request, answer, target, head=stream.start(), rewrite=rewrite, tail=stream.finish)
        if stream.response is not None:
            await remember(stored(stream.response))
        return resp


