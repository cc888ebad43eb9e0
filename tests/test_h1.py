"""hal0's HTTP/1.1 client for the slots, against raw sockets that answer byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from hal0.dispatch.h1 import BackendError, H1Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def backend(handler: Handler) -> AsyncIterator[int]:
    """A server on a free port; at the end every connection it accepted is closed and reaped."""
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await handler(reader, writer)
    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = next((int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith(
        "content-length:")), 0)
    return head, await reader.readexactly(length)


def answers(*raw: bytes, drip: bool = False, close: bool = False) -> tuple[Handler, list[str]]:
    """A backend that answers the n-th request on a connection with raw[n] (byte by byte if drip)."""
    heads: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in raw:
            try:
                head, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            heads.append(head)
            for i in range(len(answer)) if drip else [None]:
                writer.write(answer if i is None else answer[i:i + 1])
                await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # until the client closes
            writer.close()
    return handler, heads


CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"6\r\ndata: \r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")


@pytest.mark.parametrize("drip", [False, True])
async def test_chunked_bodies_in_any_pieces_and_keep_alive(drip: bool) -> None:
    handler, heads = answers(CHUNKED, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", drip=drip)
    pool = H1Pool()
    async with backend(handler) as port:
        r = await pool.request(port, "POST", "/v1/x", [("Content-Type", "application/json")], b'{"a":1}')
        assert r.status == 200 and ("Content-Type", "text/event-stream") in r.headers and r.content_length is None
        assert await r.read() == b"data: hello"
        r.release()
        r2 = await pool.request(port, "GET", "/v1/y", [], None)  # the same connection
        assert (r2.content_length, await r2.read()) == (2, b"ok")
        r2.release()
    assert len(heads) == 2  # one connection answered both
    assert heads[0].startswith("POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:") and "Content-Length: 7" in heads[0]
    assert heads[1].startswith("GET /v1/y HTTP/1.1") and "content-length" not in heads[1].lower()
    pool.close()


async def test_a_body_that_ends_with_the_connection_and_interim_answers() -> None:
    handler, _ = answers(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n\r\nRIFFdata",
                         close=True)
    pool = H1Pool()
    async with backend(handler) as port:
        r = await pool.request(port, "POST", "/", [], b"x")
        assert r.status == 200 and await r.read() == b"RIFFdata"
        r.release()
    pool.close()


async def test_a_stale_keep_alive_connection_is_retried_once() -> None:
    handler, heads = answers(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", close=True)
    pool = H1Pool()
    async with backend(handler) as port:
        first = await pool.request(port, "POST", "/", [], b"1")
        assert await first.read() == b"a"
        first.release()  # back in the pool, but the backend closes it
        second = await pool.request(port, "POST", "/", [], b"2")
        assert await second.read() == b"a"
        second.release()
    assert len(heads) == 2
    pool.close()


async def test_a_backend_that_breaks_off_mid_body() -> None:
    handler, _ = answers(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close=True)
    pool = H1Pool()
    async with backend(handler) as port:
        r = await pool.request(port, "POST", "/", [], b"")
        with pytest.raises(BackendError, match="closed"):
            await r.read()
        r.release()
    pool.close()


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"])
async def test_garbage_is_a_backend_error(raw: bytes) -> None:
    handler, _ = answers(raw)
    pool = H1Pool()
    async with backend(handler) as port:
        with pytest.raises(BackendError, match=r"not an HTTP|malformed|bad Content-Length"):
            r = await pool.request(port, "GET", "/", [], None)
            await r.read()
    pool.close()


async def test_nobody_listening() -> None:
    async with backend(answers()[0]) as port:
        pass
    with pytest.raises(BackendError, match="cannot connect"):
        await H1Pool().request(port, "GET", "/", [], None)


async def test_large_bodies_flow_with_back_pressure() -> None:
    size = 8 << 20
    handler, _ = answers(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
    pool = H1Pool()
    async with backend(handler) as port:
        r = await pool.request(port, "POST", "/", [], b"y" * (3 << 20))
        total = 0
        async for chunk in r.chunks():
            assert len(chunk) <= (2 << 20)  # never more than the high-water mark plus one read
            total += len(chunk)
        assert total == size
        r.release()
    pool.close()


async def test_closing_an_answer_drops_its_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await reader.read()  # EOF: the client hung up mid-stream
        closed.set()
        writer.close()
    pool = H1Pool()
    async with backend(handler) as port:
        r = await pool.request(port, "POST", "/", [], b"")
        assert await anext(r.chunks()) == b"first"
        r.close()
        r.release()
        await closed.wait()
    pool.close()


async def test_header_bytes_go_out_as_they_came() -> None:
    handler, heads = answers(b"HTTP/1.1 204 No Content\r\n\r\n")
    pool = H1Pool()
    async with backend(handler) as port:
        value = b"caf\xc3\xa9 \xff".decode("utf-8", "surrogateescape")  # how aiohttp hands over raw bytes
        r = await pool.request(port, "GET", "/", [("User-Agent", value)], None)
        assert (r.status, await r.read()) == (204, b"")
        r.release()
    assert "User-Agent: café \udcff" in heads[0].encode("latin-1").decode("utf-8", "surrogateescape")
    pool.close()
