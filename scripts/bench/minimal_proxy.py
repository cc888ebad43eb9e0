"""The floor for any Python proxy: one pooled ClientSession and iter_any() pass-through.

    python minimal_proxy.py --port P --upstream http://127.0.0.1:Q
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date", "server"}


def make_app(upstream: str) -> web.Application:
    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await app["s"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with request.app["s"].request(request.method, upstream + request.path_qs, data=body,
                                            headers={"Content-Type": "application/json"}) as up:
            headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
            resp = web.StreamResponse(status=up.status, headers=headers)
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None)
