"""A lean HTTP/1.1 client for the slots: pooled keep-alive connections to 127.0.0.1.

Every /v1 request crosses this hop, so it does only what a loopback backend needs: one write
per request, a head parsed from one buffer, bodies by Content-Length, chunked or until close,
and back-pressure through the transport. aiohttp's client (kept for remote upstreams) does
far more per request (URL objects, cookie jar, tracing, timers), which is most of a proxy's
cost at these sizes, and it hands a stream's head over late.

A reused connection that turns out to have been closed by the backend before answering is
retried once on a fresh one (backends close idle keep-alive connections on their own timer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

__all__ = ["BackendError", "H1Pool", "H1Response"]

MAX_HEAD = 64 * 1024
HIGH_WATER, LOW_WATER = 1 << 20, 1 << 18
CONNECT_TIMEOUT_S = 5.0


class BackendError(Exception):
    """The backend could not be reached, or broke the exchange off."""


class _Conn(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.received = 0  # bytes received for the current request
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.received += len(data)
        if len(self.buf) > HIGH_WATER and not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self) -> None:
        """Until more bytes (or the end) arrive; raises BackendError at the end."""
        if self.eof:
            raise BackendError("the backend closed the connection")
        self._waiter = self.loop.create_future()
        await self._waiter

    def take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        self.consume(n)
        return data

    def consume(self, n: int) -> None:
        """Drop the first ``n`` bytes of the buffer."""
        if n:
            del self.buf[:n]
        if self._paused and len(self.buf) < LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.eof = True
        if self.transport is not None:
            self.transport.close()


class H1Response:
    """A backend's answer: ``status``, ``headers`` (name, value pairs) and a body read once."""

    def __init__(self, pool: H1Pool, port: int, conn: _Conn, status: int, headers: list[tuple[str, str]], *,
                 length: int | None, chunked: bool, keep_alive: bool, no_body: bool) -> None:
        self.status, self.headers = status, headers
        self._pool, self._port, self._conn = pool, port, conn
        self._length, self._chunked, self._keep_alive = length, chunked, keep_alive
        if no_body:
            self._length, self._chunked = 0, False
        elif self._chunked:
            self._length = None
        elif self._length is None:
            self._keep_alive = False  # the body ends when the connection does
        self._left = self._length  # fixed length: bytes still to come
        self._chunk_left = 0  # chunked: bytes left in the current chunk
        self._need_crlf = False
        self._trailers = False
        self.done = self._length == 0

    @property
    def content_length(self) -> int | None:
        return self._length

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed)."""
        while not self.done:
            data = await self._next()
            if data:
                yield data

    async def _next(self) -> bytes:
        conn = self._conn
        if not self._chunked:
            while not conn.buf:
                if conn.eof and self._left is None:
                    self.done = True
                    return b""
                await conn.wait()
            n = len(conn.buf) if self._left is None else min(self._left, len(conn.buf))
            data = conn.take(n)
            if self._left is not None:
                self._left -= n
                self.done = self._left == 0
            return data
        while True:
            data = self._drain_chunked()
            if data or self.done:
                return data
            await conn.wait()

    def _drain_chunked(self) -> bytes:
        """Every chunk's data already here, at once (a burst of SSE events is one write).

        Parses by offset and drops the consumed bytes once, so a burst costs one pass."""
        conn, out, pos = self._conn, [], 0
        buf = conn.buf
        size = len(buf)
        while not self.done:
            if self._chunk_left:
                if pos >= size:
                    break
                n = min(self._chunk_left, size - pos)
                out.append(buf[pos:pos + n])
                pos += n
                self._chunk_left -= n
                if self._chunk_left:
                    break
                self._need_crlf = True
            if self._need_crlf:
                if size - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise BackendError("malformed chunked body from the backend")
                pos += 2
                self._need_crlf = False
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if size - pos > MAX_HEAD:
                    raise BackendError("malformed chunked body from the backend")
                break
            line = buf[pos:end]
            pos = end + 2
            if self._trailers:  # after the last chunk: trailer lines up to an empty one
                self.done = not line
                continue
            try:
                n = int(line, 16)
            except ValueError:
                try:
                    n = int(line.split(b";", 1)[0].strip(), 16)  # a chunk extension
                except ValueError:
                    raise BackendError("malformed chunk size from the backend") from None
            if n == 0:
                self._trailers = True
            self._chunk_left = n
        conn.consume(pos)
        return b"".join(out)

    def close(self) -> None:
        """Drop the connection (the client left, or the body is not wanted)."""
        self.done = True
        self._keep_alive = False
        self._conn.close()

    def release(self) -> None:
        """Give the connection back for reuse if the exchange ended cleanly, else close it."""
        if self.done and self._keep_alive and not self._conn.eof and not self._conn.buf:
            self._pool.put(self._port, self._conn)
        else:
            self._conn.close()


class H1Pool:
    def __init__(self) -> None:
        self._idle: dict[int, list[_Conn]] = {}

    def put(self, port: int, conn: _Conn) -> None:
        self._idle.setdefault(port, []).append(conn)

    async def _get(self, port: int) -> tuple[_Conn, bool]:
        idle = self._idle.get(port)
        while idle:
            conn = idle.pop()
            if not conn.eof:
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, conn = await loop.create_connection(lambda: _Conn(loop), "127.0.0.1", port)
        except TimeoutError:
            raise BackendError(f"cannot connect to 127.0.0.1:{port}: timed out") from None
        except OSError as e:
            raise BackendError(f"cannot connect to 127.0.0.1:{port}: {e.strerror or e}") from None
        return conn, False

    async def request(self, port: int, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes | None) -> H1Response:
        """Send one request and return once the head of the answer is in."""
        lines = [f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in headers)
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("utf-8", "surrogateescape")  # header bytes as the client sent them
        for attempt in (0, 1):
            conn, reused = await self._get(port)
            conn.received = 0
            try:
                assert conn.transport is not None
                conn.transport.write(head + body if body and len(body) < 65536 else head)
                if body and len(body) >= 65536:
                    conn.transport.write(body)
                return await self._head(port, conn, method)
            except BackendError:
                conn.close()
                if reused and attempt == 0 and conn.received == 0:
                    continue  # a keep-alive connection the backend had already closed
                raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    async def _head(self, port: int, conn: _Conn, method: str) -> H1Response:
        while True:
            end = conn.buf.find(b"\r\n\r\n")
            while end < 0:
                if len(conn.buf) > MAX_HEAD:
                    raise BackendError("the backend's response head is too large")
                await conn.wait()
                end = conn.buf.find(b"\r\n\r\n")
            lines = conn.take(end + 4)[:-4].decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise BackendError(f"not an HTTP/1.1 response from the backend: {lines[0][:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200:
                continue  # an interim answer (100 Continue): the real one follows
            headers = []
            length, chunked, keep_alive = None, False, True
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    continue
                name, value = name.strip(), value.strip()
                headers.append((name, value))
                lname = name.lower()
                if lname == "content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        raise BackendError(f"a bad Content-Length from the backend: {value[:40]!r}") from None
                elif lname == "transfer-encoding":
                    chunked = "chunked" in value.lower()
                elif lname == "connection":
                    keep_alive = "close" not in value.lower()
            return H1Response(self, port, conn, status, headers, length=length, chunked=chunked,
                              keep_alive=keep_alive, no_body=method == "HEAD" or status in (204, 304))

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
