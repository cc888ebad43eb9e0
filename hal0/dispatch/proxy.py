"""Forward one request to a slot or upstream and stream the answer back unchanged.

Slots are reached through hal0's own HTTP/1.1 client (``h1``), remote upstreams through
aiohttp's; both answers are relayed by the same code. The handler runs with aiohttp's
handler cancellation on: a client that goes away cancels it, which closes the backend
connection, and llama-server stops generating. A write to a vanished client is caught the
same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from hal0.dispatch.h1 import BackendError
from hal0.errors import Hal0Error
from hal0.server.http import REQUEST_ID

__all__ = ["HOP_BY_HOP", "AiohttpAnswer", "Answer", "forward", "request_headers"]

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"})
_CLIENT_ONLY = frozenset({"authorization", "x-api-key", "cookie", "x-request-id", "expect"})
_BACKEND_ONLY = frozenset({"server", "date", "access-control-allow-origin"})  # hal0 speaks for itself
_DROP_REQUEST = HOP_BY_HOP | _CLIENT_ONLY
_DROP_RESPONSE = HOP_BY_HOP | _BACKEND_ONLY
_RELAYED_ERRORS = (BackendError, aiohttp.ClientError, OSError)


class Answer(Protocol):
    """A backend's answer as the relay sees it (``h1.H1Response`` or ``AiohttpAnswer``)."""

    status: int

    @property
    def headers(self) -> Iterable[tuple[str, str]]: ...

    @property
    def content_length(self) -> int | None: ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...

    def release(self) -> None: ...


class AiohttpAnswer:
    """An aiohttp client response in the shape the relay reads."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._r = response
        self.status = response.status

    @property
    def headers(self) -> Iterable[tuple[str, str]]:
        return self._r.headers.items()

    @property
    def content_length(self) -> int | None:
        return self._r.content_length

    async def read(self) -> bytes:
        return await self._r.read()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._r.content.iter_any()

    def close(self) -> None:
        self._r.close()

    def release(self) -> None:
        self._r.release()


def request_headers(request: web.Request, extra: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones and its credentials, with ``extra`` set."""
    drop = _DROP_REQUEST | {k.lower() for k in extra} if extra else _DROP_REQUEST
    out = [(k, v) for k, v in request.headers.items() if k.lower() not in drop]
    if extra:
        out.extend(extra.items())
    return out


async def forward(request: web.Request, send: Callable[[], Awaitable[Answer]],
                  unreachable: type[Hal0Error], target: str, slot: str | None = None) -> web.StreamResponse:
    """Send the request (``send``) and relay the answer as it arrives.

    Raises ``unreachable`` (a Hal0Error class) if no answer comes back at all, or if the
    backend breaks off before anything was relayed.
    """
    try:
        answer = await send()
    except _RELAYED_ERRORS as e:
        raise unreachable(f"{target} did not answer: {e}", target=target) from None
    try:
        out = CIMultiDict((k, v) for k, v in answer.headers if k.lower() not in _DROP_RESPONSE)
        out["X-Request-Id"] = request[REQUEST_ID]
        if slot:
            out["X-Hal0-Slot"] = slot
        streaming = answer.content_length is None or out.get("Content-Type", "").startswith("text/event-stream")
        if not streaming:
            body = await answer.read()
            return web.Response(status=answer.status, body=body, headers=out)
        chunks = answer.chunks()
        first = await anext(chunks, b"")  # the head goes out with the first chunk, not a step ahead of it
        resp = web.StreamResponse(status=answer.status, headers=out)
        await resp.prepare(request)
        try:
            if first:
                await resp.write(first)
            async for chunk in chunks:
                await resp.write(chunk)
            await resp.write_eof()
        except ConnectionError:
            answer.close()  # the client left: drop the backend connection so it stops working
        return resp
    except _RELAYED_ERRORS as e:
        answer.close()
        raise unreachable(f"{target} broke off its answer: {e}", target=target) from None
    finally:
        answer.release()
