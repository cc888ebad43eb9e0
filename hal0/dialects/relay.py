"""Relaying a backend's answer that a dialect reads or rewrites on the way (the plain relay is
``hal0.dispatch.proxy.forward``, which the error paths here reuse)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from hal0.dialects.sse import SseEvent, SseParser
from hal0.dispatch.dispatcher import Target
from hal0.dispatch.h1 import BackendError
from hal0.dispatch.proxy import MAX_BUFFERED, OPENAI, SSE_DONE, Answer, Dialect, abort, forward, relayed
from hal0.errors import SlotBackendError
from hal0.web.http import REQUEST_ID, json_response

__all__ = ["answer_json", "json_answer", "passthrough", "relay_sse"]

_BROKEN = (BackendError, aiohttp.ClientError, OSError)


async def passthrough(request: web.Request, answer: Answer, target: Target,
                      dialect: Dialect = OPENAI) -> web.StreamResponse:
    """An answer hal0 does not rewrite (an error, say) relayed as ``forward`` relays any."""
    async def given() -> Answer:
        return answer
    return await forward(request, given, target.unreachable, target.label, slot=target.slot, dialect=dialect)


def _headers(request: web.Request, target: Target) -> dict[str, str]:
    out = {"X-Request-Id": request[REQUEST_ID]}
    if target.slot:
        out["X-Hal0-Slot"] = target.slot
    return out


async def answer_json(answer: Answer, target: Target) -> Any:
    """A successful JSON answer, read whole; raises SlotBackendError if it is not JSON or too big."""
    try:
        if (answer.content_length or 0) > MAX_BUFFERED * 16:
            raise ValueError("answer too large")
        return json.loads(await answer.read())
    except _BROKEN as e:
        raise target.unreachable(f"{target.label} broke off its answer: {e}", target=target.label) from None
    except ValueError as e:
        raise SlotBackendError(f"{target.label} answered something that is not JSON: {e}",
                               target=target.label) from None
    finally:
        answer.release()


def json_answer(request: web.Request, target: Target, body: Any) -> web.Response:
    return json_response(body, headers=_headers(request, target))


async def relay_sse(request: web.Request, answer: Answer, target: Target, *,
                    rewrite: Callable[[SseEvent], list[bytes]] | None = None,
                    watch: Callable[[SseEvent], None] | None = None,
                    tail: Callable[[], list[bytes]] | None = None,
                    head: list[bytes] | None = None,
                    dialect: Dialect = OPENAI) -> web.StreamResponse:
    """Relay an SSE answer: chunks as they come (each parsed event shown to ``watch``), or each
    event through ``rewrite``; ``head`` goes first and ``tail`` after the backend's last event.
    A client that leaves closes the backend connection; a backend that breaks off cuts the
    stream (``proxy.abort``). The target's metrics ``Relay`` learns when the whole answer (or its
    ``[DONE]``) went out."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       **_headers(request, target)})
    parser = SseParser()
    relay = target.relay

    async def send(data: bytes) -> None:
        if relay is not None and data.endswith(SSE_DONE):
            relayed(relay, resp.status)  # the client may close as soon as it has it
        await resp.write(data)

    try:
        await resp.prepare(request)
        for b in head or []:
            await send(b)
        async for chunk in answer.chunks():
            events = parser.feed(chunk)
            if rewrite is None:
                await send(chunk)
                if watch is not None:
                    for event in events:
                        watch(event)
                continue
            for event in events:
                for b in rewrite(event):
                    await send(b)
        for b in tail() if tail else []:
            await send(b)
        if relay is not None:
            relayed(relay, resp.status)
        await resp.write_eof()
    except ConnectionError:
        answer.close()
    except _BROKEN as e:
        answer.close()
        await abort(request, resp, True, target.unreachable(f"{target.label} broke off its answer: {e}",
                                                            target=target.label), dialect)
    finally:
        answer.release()
    return resp
