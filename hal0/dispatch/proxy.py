"""Forward one request to a slot or upstream and stream the answer back unchanged.

Slots are reached through hal0's own HTTP/1.1 client (``h1``), remote upstreams through
aiohttp's; both answers are relayed by the same code. The handler runs with aiohttp's
handler cancellation on: a client that goes away cancels it, which closes the backend
connection, and llama-server stops generating. A write to a vanished client is caught the
same way.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from hal0.dispatch.h1 import BackendError, BackendTimeout
from hal0.dispatch.observe import Relay
from hal0.errors import Hal0Error, SlotBackendError, SlotTimeout, envelope
from hal0.web.http import REQUEST_ID

__all__ = ["HOP_BY_HOP", "MAX_BUFFERED", "OPENAI", "RELAYED_ERRORS", "SSE_DONE", "AiohttpAnswer", "Answer", "Dialect",
           "abort", "error_text", "forward", "relayed", "request_headers", "send"]

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"})
_CLIENT_ONLY = frozenset({"authorization", "x-api-key", "cookie", "x-request-id", "expect"})
_BACKEND_ONLY = frozenset({"server", "date", "access-control-allow-origin"})  # hal0 speaks for itself
_DROP_REQUEST = HOP_BY_HOP | _CLIENT_ONLY
_DROP_RESPONSE = HOP_BY_HOP | _BACKEND_ONLY
RELAYED_ERRORS = (BackendError, aiohttp.ClientError, OSError)  # what a broken exchange raises


@dataclass(frozen=True)
class Dialect:
    """How a route's clients read errors: hal0's own (``error``), a backend's JSON error rewritten
    (``backend_error``, None: passed through), and the last event of a cut stream (``sse_event``
    names it, None: a bare ``data:`` line)."""

    error: Callable[[Hal0Error], dict[str, Any]] = envelope
    backend_error: Callable[[int, Any], Any] | None = None
    sse_event: str | None = None

    def sse(self, err: Hal0Error) -> bytes:
        head = f"event: {self.sse_event}\n".encode() if self.sse_event else b""
        return head + b"data: " + json.dumps(self.error(err)).encode() + b"\n\n"


OPENAI = Dialect()


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


MAX_BUFFERED = 1 << 20  # a body above this is relayed as it arrives, never held whole
SSE_DONE = b"data: [DONE]\n\n"  # an OpenAI event stream's last event
_ERROR_TEXT_MAX = 4096


def _is_json(content_type: str) -> bool:
    mime = content_type.partition(";")[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


async def error_text(answer: Answer) -> str:
    """The start of a non-JSON error body (the rest is dropped with the connection)."""
    parts, size = [], 0
    async for chunk in answer.chunks():
        parts.append(chunk)
        size += len(chunk)
        if size >= _ERROR_TEXT_MAX:
            answer.close()
            break
    return b"".join(parts)[:_ERROR_TEXT_MAX].decode("utf-8", "replace").strip()


async def abort(request: web.Request, resp: web.StreamResponse, sse: bool, error: Hal0Error,
                dialect: Dialect = OPENAI) -> None:
    """The head is out, so no error response can follow: end an SSE stream with an error event,
    then drop the connection without the final chunk, so the client sees a broken stream and
    never a second response inside the body."""
    if sse:
        with contextlib.suppress(ConnectionError):
            await resp.write(dialect.sse(error))
    if request.transport is not None:
        request.transport.close()


async def send(sender: Callable[[], Awaitable[Answer]], unreachable: type[Hal0Error], target: str) -> Answer:
    """The backend's answer (its head); raises ``unreachable`` (a Hal0Error class) if none comes
    back, SlotTimeout when it does not start in time."""
    try:
        return await sender()
    except BackendTimeout as e:
        raise SlotTimeout(f"{target} did not start its answer: {e}", target=target) from None
    except RELAYED_ERRORS as e:
        raise unreachable(f"{target} did not answer: {e}", target=target) from None


async def _rewritten_error(answer: Answer, dialect: Dialect, out: CIMultiDict[str]) -> web.Response:
    """A backend's JSON error in the route's dialect (a body that does not parse stays as it is)."""
    assert dialect.backend_error is not None
    body = await answer.read()
    with contextlib.suppress(ValueError):
        body = json.dumps(dialect.backend_error(answer.status, json.loads(body))).encode()
    out.popall("Content-Length", None)
    return web.Response(status=answer.status, body=body, headers=out)


def relayed(relay: Relay, status: int, usage_in: tuple[bytes, bytes] | None = None) -> None:
    """The whole answer went out: note it, and for an answer below 400 the last two chunks of an
    event stream whose usage the metrics read (``usage_in``)."""
    relay.ended, relay.status = True, status
    if usage_in is not None and status < 400:
        relay.prev, relay.last = usage_in


async def forward(request: web.Request, sender: Callable[[], Awaitable[Answer]],
                  unreachable: type[Hal0Error], target: str, slot: str | None = None,
                  dialect: Dialect = OPENAI, relay: Relay | None = None) -> web.StreamResponse:
    """Send the request (``sender``) and relay the answer as it arrives; ``relay`` (for an
    observer) gets the time of the first body byte and where the usage is (see ``Relay``).

    Raises ``unreachable`` (a Hal0Error class) if no answer comes back, or if the backend breaks
    off before anything was relayed; SlotTimeout when the answer does not start in time;
    SlotBackendError for an error answer that is not JSON (hal0's envelope carries its text).
    A backend that breaks off after the head went out ends in an aborted stream.
    """
    answer = await send(sender, unreachable, target)
    resp: web.StreamResponse | None = None
    sse = False
    try:
        out = CIMultiDict((k, v) for k, v in answer.headers if k.lower() not in _DROP_RESPONSE)
        content_type = out.get("Content-Type", "")
        if answer.status >= 400 and not _is_json(content_type):
            text = await error_text(answer)
            raise SlotBackendError(f"{target} answered {answer.status}: {text or '(no body)'}", target=target,
                                   backend_status=answer.status, body=text)
        out["X-Request-Id"] = request[REQUEST_ID]
        if slot:
            out["X-Hal0-Slot"] = slot
        rewrite = dialect.backend_error is not None and (answer.content_length or 0) <= MAX_BUFFERED
        if answer.status >= 400 and rewrite:
            return await _rewritten_error(answer, dialect, out)
        length = answer.content_length
        sse = content_type.startswith("text/event-stream")
        if not sse and length is not None and length <= MAX_BUFFERED:
            body = await answer.read()
            if relay is not None:
                relay.first_byte = time.perf_counter()
                if answer.status < 400 and _is_json(content_type):
                    relay.last = body
            return web.Response(status=answer.status, body=body, headers=out)
        chunks = answer.chunks()
        first = await anext(chunks, b"")  # the head goes out with the first chunk, not a step ahead of it
        if relay is not None:
            relay.first_byte = time.perf_counter()
        resp = web.StreamResponse(status=answer.status, headers=out)
        if length is not None:
            resp.content_length = length
        await resp.prepare(request)
        prev, last = b"", b""
        try:
            chunk: bytes | None = first
            while chunk is not None:
                if chunk:
                    prev, last = last, chunk  # the usage comes at the end: keep the last two, never the stream
                    if relay is not None and sse and chunk.endswith(SSE_DONE):
                        relayed(relay, answer.status, (prev, last))  # the client may close as soon as it has it
                    await resp.write(chunk)
                chunk = await anext(chunks, None)
            if relay is not None:
                relayed(relay, answer.status, (prev, last) if sse else None)
            await resp.write_eof()
        except ConnectionError:
            answer.close()  # the client left: drop the backend connection so it stops working
        return resp
    except RELAYED_ERRORS as e:
        answer.close()
        error = unreachable(f"{target} broke off its answer: {e}", target=target)
        if resp is None:
            raise error from None
        await abort(request, resp, sse, error, dialect)
        return resp
    finally:
        answer.release()
