"""hal0's HTTP/1.1 client for the slots, against raw sockets that answer byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from hal0.dispatch.h1 import BackendError, BackendTimeout, H1Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

pytestmark = pytest.mark.timeout(20)  # a parser loop without an await freezes the loop (no asyncio timeout fires)


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


@dataclass
class Script:
    """A scripted backend: its handler, the request heads it read, and how many connections it accepted."""

    handler: Handler
    heads: list[str] = field(default_factory=list)
    accepts: int = 0


def answers(*raw: bytes, drip: bool = False, close: bool = False) -> Script:
    """A backend that answers the n-th request on a connection with raw[n] (byte by byte if drip)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.accepts += 1
        for answer in raw:
            try:
                head, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            script.heads.append(head)
            for i in range(len(answer)) if drip else [None]:
                writer.write(answer if i is None else answer[i:i + 1])
                await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # until the client closes
            writer.close()
    script = Script(handler)
    return script


CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"6\r\ndata: \r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")


@pytest.mark.parametrize("drip", [False, True])
async def test_chunked_bodies_in_any_pieces_and_keep_alive(drip: bool) -> None:
    script = answers(CHUNKED, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", drip=drip)
    pool = H1Pool()
    async with backend(script.handler) as port:
        r = await pool.request(port, "POST", "/v1/x", [("Content-Type", "application/json")], b'{"a":1}')
        assert r.status == 200 and ("Content-Type", "text/event-stream") in r.headers and r.content_length is None
        assert await r.read() == b"data: hello"
        r.release()
        r2 = await pool.request(port, "GET", "/v1/y", [], None)  # the same connection
        assert (r2.content_length, await r2.read()) == (2, b"ok")
        r2.release()
    assert len(script.heads) == 2 and script.accepts == 1  # one connection answered both
    first, second = script.heads
    assert first.startswith("POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:") and "Content-Length: 7" in first
    assert second.startswith("GET /v1/y HTTP/1.1") and "content-length" not in second.lower()
    pool.close()


async def test_a_body_that_ends_with_the_connection_and_interim_answers() -> None:
    script = answers(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n\r\nRIFFdata",
                         close=True)
    pool = H1Pool()
    async with backend(script.handler) as port:
        r = await pool.request(port, "POST", "/", [], b"x")
        assert r.status == 200 and await r.read() == b"RIFFdata"
        r.release()
    pool.close()


async def test_a_stale_keep_alive_connection_is_retried_once() -> None:
    script = answers(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", close=True)
    pool = H1Pool()
    async with backend(script.handler) as port:
        first = await pool.request(port, "POST", "/", [], b"1")
        assert await first.read() == b"a"
        first.release()  # back in the pool, but the backend closes it
        second = await pool.request(port, "POST", "/", [], b"2")
        assert await second.read() == b"a"
        second.release()
    assert len(script.heads) == 2
    pool.close()


async def test_the_retry_skips_the_other_streams_stale_connections() -> None:
    """Regression: a stream to primary failed with 502 "the backend closed the connection" in
    the swap test under load. llama-server closes the connection after every streamed answer
    although its head says keep-alive, and its sequences end together: under load their closes
    were read only after several of those connections went back to the pool, and the retry of
    the request that found one closed took the next, closed too. This backend closes each
    connection when a second request comes on it (its close is always late); new ones it answers."""
    accepts = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepts
        accepts += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_request(reader)
            writer.write(CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n\r\n")
            await writer.drain()
            await read_request(reader)
        writer.close()  # not answered: the close the client had not read yet
    pool = H1Pool()
    async with backend(handler) as port, responsive():
        first, second = await asyncio.gather(exchange(pool, port), exchange(pool, port))
        # Two streams ended together, and both of their connections are pooled.
        assert (first, second, len(pool._idle[port])) == (b"hello", b"hello", 2)
        assert await exchange(pool, port) == b"hello"
    assert accepts == 3  # the retry went out on a new connection
    pool.close()


async def test_a_backend_that_breaks_off_mid_body() -> None:
    script = answers(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close=True)
    pool = H1Pool()
    async with backend(script.handler) as port:
        r = await pool.request(port, "POST", "/", [], b"")
        with pytest.raises(BackendError, match="closed"):
            await r.read()
        r.release()
    pool.close()


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"])
async def test_garbage_is_a_backend_error(raw: bytes) -> None:
    script = answers(raw)
    pool = H1Pool()
    async with backend(script.handler) as port:
        with pytest.raises(BackendError, match=r"not an HTTP|malformed|bad Content-Length"):
            r = await pool.request(port, "GET", "/", [], None)
            await r.read()
    pool.close()


async def test_nobody_listening() -> None:
    async with backend(answers().handler) as port:
        pass
    with pytest.raises(BackendError, match="cannot connect"):
        await H1Pool().request(port, "GET", "/", [], None)


async def test_large_bodies_flow_with_back_pressure() -> None:
    size = 8 << 20
    script = answers(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
    pool = H1Pool()
    async with backend(script.handler) as port:
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
    script = answers(b"HTTP/1.1 204 No Content\r\n\r\n")
    pool = H1Pool()
    async with backend(script.handler) as port:
        value = b"caf\xc3\xa9 \xff".decode("utf-8", "surrogateescape")  # how aiohttp hands over raw bytes
        r = await pool.request(port, "GET", "/", [("User-Agent", value)], None)
        assert (r.status, await r.read()) == (204, b"")
        r.release()
    assert "User-Agent: café \udcff" in script.heads[0].encode("latin-1").decode("utf-8", "surrogateescape")
    pool.close()


# --- a hostile backend: every misbehaviour is a BackendError, never a hang or a frozen loop ---

@asynccontextmanager
async def responsive(seconds: float = 5.0) -> AsyncIterator[None]:
    """The block fails (not hangs) past ``seconds``, and another task must get turns meanwhile.

    A parser loop without an await freezes the whole loop, where no asyncio timeout can fire:
    the module's pytest timeout catches that one."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)
    task = asyncio.create_task(ticker())
    try:
        async with asyncio.timeout(seconds):
            yield
    finally:
        task.cancel()
        await asyncio.wait([task])
    assert ticks > 0, "the event loop did not turn while the backend misbehaved"


async def exchange(pool: H1Pool, port: int, path: str = "/v1/chat/completions") -> bytes:
    """One request and its whole body; the connection goes back to the pool if it may."""
    r = await pool.request(port, "POST", path, [], b"{}")
    try:
        return await r.read()
    finally:
        r.release()


def endless(first: bytes, then: bytes, gone: asyncio.Event | None = None) -> Handler:
    """A backend that answers ``first``, then writes ``then`` until the client hangs up."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(first)
        with contextlib.suppress(ConnectionError):
            while not writer.is_closing():
                writer.write(then)
                await writer.drain()
                await asyncio.sleep(0)  # a turn for the client even while the socket takes everything
        if gone is not None:
            gone.set()
    return handler


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


async def test_a_negative_chunk_size_after_a_valid_chunk() -> None:
    """Regression: int(b"-6", 16) set a negative chunk length and the relay looped without awaiting."""
    script = answers(CHUNKED_HEAD + b"5\r\nhello\r\n-6\r\nabcdef\r\n0\r\n\r\n")
    pool = H1Pool()
    async with backend(script.handler) as port, responsive():
        with pytest.raises(BackendError, match="malformed chunk size from the backend: b'-6'"):
            await exchange(pool, port)
    pool.close()


@pytest.mark.parametrize("size", [b"0x2", b"1_0", b"+2", b" 2", b"2 ", b"", b"g", b"1" * 17,
                                  b"2\n3", b"1" * 2000])
async def test_chunk_sizes_that_int_would_take_are_errors(size: bytes) -> None:
    """Regression: int(line, 16) took 0x2, 1_0, +2 and " 2"; sizes are 1..16 hex digits, lines are bounded."""
    script = answers(CHUNKED_HEAD + size + b"\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n")
    pool = H1Pool()
    async with backend(script.handler) as port, responsive():
        with pytest.raises(BackendError, match="malformed chunk size"):
            await exchange(pool, port)
    pool.close()


@pytest.mark.parametrize("drip", [False, True])
async def test_strict_framing_still_takes_what_is_valid(drip: bool) -> None:
    chunked = (b"HTTP/1.1 200\r\nTransfer-Encoding: Chunked\r\nConnection: Keep-Alive\r\n\r\n"
               b"000A\r\n0123456789\r\n2 ;name=value\r\nab\r\n0\r\nX-One: 1\r\nX-Two: 2\r\n\r\n")
    twice = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello"
    script = answers(chunked, twice, OK, drip=drip)
    pool = H1Pool()
    async with backend(script.handler) as port, responsive():
        assert await exchange(pool, port) == b"0123456789ab"
        assert await exchange(pool, port) == b"hello"
        assert await exchange(pool, port) == b"ok"
    assert (script.accepts, len(script.heads)) == (1, 3)  # all kept alive on one connection
    pool.close()


@pytest.mark.parametrize("value", [b"-5", b"ten", b"+5", b"0x5", b"1_0", b"5, 5", b"\xb25", b"", b"1" * 19,
                                   b"5\r\nContent-Length: 6"])
async def test_a_bad_content_length_is_an_error(value: bytes) -> None:
    """Regression: Content-Length: -5 gave a silently truncated 200 (int() also takes +5 and 1_0)."""
    script = answers(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n" + b"x" * 20)
    pool = H1Pool()
    async with backend(script.handler) as port, responsive():
        with pytest.raises(BackendError, match="bad Content-Length"):
            await exchange(pool, port)
    pool.close()


@pytest.mark.parametrize("whole", [False, True], ids=["endless", "whole"])
async def test_a_huge_head_is_an_error_not_memory_growth(whole: bool) -> None:
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    gone = asyncio.Event()
    handler = answers(b"HTTP/1.1 200 OK\r\n" + pad * 200 + b"\r\nok").handler if whole else endless(
        b"HTTP/1.1 200 OK\r\n", pad, gone)
    pool = H1Pool()
    async with backend(handler) as port, responsive():
        with pytest.raises(BackendError, match="head is too large"):
            await exchange(pool, port)
        if not whole:
            await gone.wait()  # the client hung up rather than read on
    pool.close()


@pytest.mark.parametrize("then", [b"X-Trailer: 0123456789\r\n", b"X-Trailer: 0123456789"], ids=["lines", "one-line"])
async def test_an_endless_trailer_section_is_an_error(then: bytes) -> None:
    gone = asyncio.Event()
    pool = H1Pool()
    async with backend(endless(CHUNKED_HEAD + b"2\r\nok\r\n0\r\n", then, gone)) as port, responsive():
        with pytest.raises(BackendError, match="trailers are too large"):
            await exchange(pool, port)
        await gone.wait()
    pool.close()


@pytest.mark.parametrize(("raw", "body", "accepts"), [
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", 2),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", b"ok", 1),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", 2),
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok", b"ok", 2),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", 1),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"ok", 2),
], ids=["http10", "http10-keep-alive", "close", "keep-alive-close", "http11", "chunked-and-length"])
async def test_only_keep_alive_answers_are_pooled(raw: bytes, body: bytes, accepts: int) -> None:
    """Regression: an HTTP/1.0 answer went back to the pool and the next request on it hung.

    The backend answers every request on a connection and never closes one, so a connection
    the client wrongly kept would serve the second request too: only the count of accepts tells."""
    script = answers(raw, raw)
    pool = H1Pool()
    async with backend(script.handler) as port, responsive():
        assert await exchange(pool, port) == body
        assert await exchange(pool, port) == body
    assert (script.accepts, len(script.heads)) == (accepts, 2)
    pool.close()


@pytest.mark.parametrize("when", ["with-the-body", "while-idle"])
async def test_stray_bytes_after_a_body_discard_the_connection(when: str) -> None:
    """Regression: bytes that came in on an idle pooled connection were taken for the next answer."""
    idle = asyncio.Event()
    accepts = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepts
        accepts += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(reader)
                writer.write(OK + b"JUNK" if when == "with-the-body" else OK)
                if when == "while-idle" and accepts == 1:
                    await idle.wait()
                    writer.write(b"JUNK")
                await writer.drain()
    pool = H1Pool()
    async with backend(handler) as port, responsive():
        assert await exchange(pool, port) == b"ok"
        if when == "while-idle":
            idle.set()
            await pool._idle[port][-1].wait()  # the junk is in the pooled connection's buffer
        assert await exchange(pool, port) == b"ok"
    assert accepts == 2
    pool.close()


@pytest.mark.parametrize("interim", [False, True], ids=["silent", "endless-100-continue"])
async def test_a_backend_that_never_answers_times_out(interim: bool) -> None:
    """Regression: a backend that took the request and never answered hung it forever."""
    gone = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers; EOF when the client hangs up
        gone.set()
    handler = endless(b"", b"HTTP/1.1 100 Continue\r\n\r\n", gone) if interim else silent
    pool = H1Pool(head_timeout_s=0.3)
    async with backend(handler) as port, backend(answers(OK).handler) as good, responsive():
        with pytest.raises(BackendTimeout, match=r"no response head from the backend within 0\.3 s"):
            await exchange(pool, port)
        await gone.wait()  # the connection was closed
        assert await exchange(pool, good) == b"ok"  # the pool still works
    pool.close()


async def test_a_timeout_on_a_reused_connection_is_not_retried() -> None:
    script = answers(OK)  # answers the first request on a connection, then only reads
    pool = H1Pool(head_timeout_s=0.3)
    async with backend(script.handler) as port, responsive():
        assert await exchange(pool, port) == b"ok"
        with pytest.raises(BackendTimeout):
            await exchange(pool, port)
    assert (script.accepts, len(script.heads)) == (1, 1)  # the second request went out once, not twice
    pool.close()


@pytest.mark.parametrize("raw", [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst",
                                 CHUNKED_HEAD + b"5\r\nfirst\r\n",
                                 CHUNKED_HEAD + b"5\r\nfirst\r\n9\r\nsec"], ids=["length", "chunked", "mid-chunk"])
async def test_a_close_mid_body_is_an_error_from_the_body_iterator(raw: bytes) -> None:
    script = answers(raw, close=True)
    pool = H1Pool()
    async with backend(script.handler) as port, responsive():
        r = await pool.request(port, "POST", "/", [], b"")
        got = []
        with pytest.raises(BackendError, match="closed"):
            async for chunk in r.chunks():
                got.append(chunk)
        r.release()
    assert b"".join(got).startswith(b"first")
    pool.close()


async def test_releasing_twice_pools_the_connection_once() -> None:
    script = answers(OK, OK, OK)
    pool = H1Pool()
    async with backend(script.handler) as port, responsive():
        r = await pool.request(port, "GET", "/", [], None)
        assert await r.read() == b"ok"
        r.release()
        r.release()
        assert await asyncio.gather(exchange(pool, port), exchange(pool, port)) == [b"ok", b"ok"]
    assert script.accepts == 2  # the second request could not share the first's connection
    pool.close()


CORPUS = [CHUNKED, OK, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
          b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n\r\nRIFFdata"]
TOKENS = [b"-", b"-6\r\n", b"-1", b"0x", b"\r\n", b"\r\n\r\n", b";", b" ", b"\x00", b"9" * 20, b"0\r\n\r\n", b":",
          b"\xff", b"_"]


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """``raw`` with one to three random edits; most land where a line or a header value starts."""
    out = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        starts = [m.end() for m in re.finditer(rb"\r\n|: ", out)]
        i = rng.choice(starts) if starts and rng.random() < 0.6 else rng.randrange(len(out) + 1)
        match rng.randrange(4):
            case 0:
                out[i:i + 1] = bytes([rng.randrange(256)])
            case 1:
                out[i:i] = rng.choice(TOKENS)
            case 2:
                del out[i:i + rng.randint(1, 8)]
            case _:
                out[i:i] = out[max(0, i - 8):i]
    return bytes(out)


async def test_mutated_answers_end_in_a_body_or_a_backend_error() -> None:
    """Fuzz: whatever the bytes and however they are split, a body or a BackendError, never a hang
    (the backend closes after each answer, so waiting for more must end) or another exception."""
    rng = random.Random(20261130)
    cases = [mutate(rng, rng.choice(CORPUS)) for _ in range(300)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        raw = cases[int(head.split(" ")[1].strip("/").split("/")[0])]
        split = "/split" in head.split("\r\n")[0]
        step = random.Random(len(raw)).randint(1, 7) if split else len(raw) or 1
        with contextlib.suppress(ConnectionError):
            for i in range(0, len(raw), step):
                writer.write(raw[i:i + step])
                await writer.drain()
        writer.close()

    async def outcome(port: int, path: str) -> bytes | str:
        pool = H1Pool(head_timeout_s=5)
        try:
            return await exchange(pool, port, path)
        except BackendError:
            return "error"
        finally:
            pool.close()
    outcomes = []
    async with backend(handler) as port, responsive(30):
        for n in range(len(cases)):
            whole = await outcome(port, f"/{n}")
            assert await outcome(port, f"/{n}/split") == whole, cases[n]  # framing does not depend on segments
            outcomes.append(whole)
    assert 50 < outcomes.count("error") < 250  # the mutations reach both ends
