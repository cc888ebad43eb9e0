"""Forward one request to a slot or upstream and stream the answer back unchanged.

The handler runs with aiohttp's handler cancellation on: a client that goes away
cancels it, which closes the upstream connection, and llama-server stops
generating. A write to a vanished client is caught the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from hal0.errors import Hal0Error
from hal0.server.http import REQUEST_ID

__all__ = ["HOP_BY_HOP", "forward", "request_headers"]

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"})
_CLIENT_ONLY = frozenset({"authorization", "x-api-key", "cookie", "x-request-id"})
_BACKEND_ONLY = frozenset({"server", "date", "access-control-allow-origin"})  # hal0 speaks for itself
_DROP_REQUEST = HOP_BY_HOP | _CLIENT_ONLY
_DROP_RESPONSE = HOP_BY_HOP | _BACKEND_ONLY


def request_headers(request: web.Request, extra: Mapping[str, str] | None = None) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones and its credentials."""
    out = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST)
    out.update(extra or {})
    return out


async def forward(request: web.Request, session: aiohttp.ClientSession, url: str, data: bytes | None,
                  headers: CIMultiDict[str],
                  unreachable: type[Hal0Error], target: str, slot: str | None = None) -> web.StreamResponse:
    """Send ``data`` to ``url`` (POST; GET when None) and relay the response as it arrives.

    Raises ``unreachable`` (a Hal0Error class) if no response comes back at all.
    """
    try:
        upstream = await (session.get(url, headers=headers) if data is None
                          else session.post(url, data=data, headers=headers))
    except (aiohttp.ClientError, OSError) as e:
        raise unreachable(f"{target} did not answer: {e}", target=target) from None
    try:
        out = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in _DROP_RESPONSE)
        out["X-Request-Id"] = request[REQUEST_ID]
        if slot:
            out["X-Hal0-Slot"] = slot
        streaming = upstream.headers.get("Content-Length") is None or \
            upstream.headers.get("Content-Type", "").startswith("text/event-stream")
        if not streaming:
            body = await upstream.read()
            return web.Response(status=upstream.status, body=body, headers=out)
        resp = web.StreamResponse(status=upstream.status, headers=out)
        await resp.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
        except ConnectionError:
            upstream.close()  # the client left: drop the backend connection so it stops working
        return resp
    except aiohttp.ClientError as e:
        upstream.close()
        raise unreachable(f"{target} broke off its answer: {e}", target=target) from None
    finally:
        upstream.release()
