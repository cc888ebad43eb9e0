"""A lean HTTP/1.1 client for the slots: pooled keep-alive connections to 127.0.0.1.

Every /v1 request crosses this hop, so it does only what a loopback backend needs: one write
per request, a head parsed from one buffer, bodies by Content-Length, chunked or until close,
and back-pressure through the transport. aiohttp's client (kept for remote upstreams) does
far more per request (URL objects, cookie jar, tracing, timers), which is most of a proxy's
cost at these sizes, and it hands a stream's head over late.

A backend is ours but not trusted to behave: framing is parsed strictly, memory is bounded
(head and trailers by MAX_HEAD, the buffer by pause_reading), the head has ``head_timeout_s``
to arrive, and a connection is reused only after an exchange that ended cleanly with nothing
left over. Every parser loop consumes bytes, awaits or raises: no backend can freeze the loop.

A reused connection that turns out to have been closed by the backend before answering is
retried once on a fresh one. Backends close idle keep-alive connections on their own timer, and
llama-server closes one after every streamed answer although its head says keep-alive: that
close is read a turn of the loop after the answer's end, by when the connection may be pooled
and taken again.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable

__all__ = ["BackendError", "BackendTimeout", "H1Pool", "H1Response"]

MAX_HEAD = 64 * 1024  # a response head; a chunked body's trailer section has its own MAX_HEAD
MAX_SIZE_LINE = 1024  # a chunk-size line, extensions included
MAX_LENGTH_DIGITS = 18  # Content-Length below 10**18: an int64 on any backend
HIGH_WATER, LOW_WATER = 1 << 20, 1 << 18
CONNECT_TIMEOUT_S = 5.0

_HEX = b"0123456789abcdefABCDEF"
_SIZE_WITH_EXT = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*;[^\r\n]*")  # int() alone would take -6, 0x2, 1_0, " 2"
_STATUS = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?")


class BackendError(Exception):
    """The backend could not be reached, or broke the exchange off."""


class BackendTimeout(BackendError):
    """The backend took the request but sent no response head in time."""


class _Conn(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.error: BackendError | None = None  # why the connection was ended on our side
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
        """Until more bytes (or the end) arrive; raises BackendError (or the timeout) at the end."""
        if self.eof:
            raise self.error or BackendError("the backend closed the connection")
        self._waiter = self.loop.create_future()
        await self._waiter

    def expire(self, after_s: float) -> None:
        """The head timer ran out: end the connection so the waiting request raises."""
        self.error = BackendTimeout(f"no response head from the backend within {after_s:g} s")
        self.close()
        self._wake()

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


def _chunk_size(line: bytearray) -> int:
    """A chunk-size line that is not plain hex: 1..16 hex digits and a ``;extension``, or an error."""
    m = _SIZE_WITH_EXT.fullmatch(line)
    if m is None:
        raise BackendError(f"malformed chunk size from the backend: {bytes(line[:40])!r}")
    return int(m[1], 16)


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
        self._left = self._length  # fixed length: bytes still to come (never negative)
        self._chunk_left = 0  # chunked: bytes left in the current chunk (never negative)
        self._need_crlf = False
        self._trailers = False
        self._trailer_left = MAX_HEAD
        self._released = False
        self.done = self._length == 0

    @property
    def content_length(self) -> int | None:
        return self._length

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed); raises BackendError if it breaks off."""
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

        Parses by offset and drops the consumed bytes once, so a burst costs one pass. Each
        turn of the loop moves ``pos`` forward, breaks to wait for more, or raises."""
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
            # Each line is looked for within its bound, so a line without end costs no rescans.
            if self._trailers:  # after the last chunk: trailer lines up to an empty one, MAX_HEAD in all
                end = buf.find(b"\r\n", pos, pos + self._trailer_left)
                if end < 0:
                    if size - pos >= self._trailer_left:
                        raise BackendError("the backend's chunk trailers are too large")
                    break
                self._trailer_left -= end + 2 - pos
                self.done = end == pos
                pos = end + 2
                continue
            end = buf.find(b"\r\n", pos, pos + MAX_SIZE_LINE)
            if end < 0:
                if size - pos >= MAX_SIZE_LINE:
                    raise BackendError("malformed chunk size from the backend: the line is too long")
                break
            line = buf[pos:end]  # only hex digits is the common case: no regex for it
            n = int(line, 16) if 0 < end - pos <= 16 and not line.strip(_HEX) else _chunk_size(line)
            pos = end + 2
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
        """Give the connection back for reuse if the exchange ended cleanly, else close it.

        Only the first call counts: a second one must not pool the connection twice."""
        if self._released:
            return
        self._released = True
        if self.done and self._keep_alive and not self._conn.eof and not self._conn.buf:
            self._pool.put(self._port, self._conn)
        else:
            self._conn.close()


class H1Pool:
    """Keep-alive connections to backends on 127.0.0.1, by port. ``head_timeout_s`` bounds the
    wait for a response head, not for the body: a generation may stream as long as it likes."""

    def __init__(self, head_timeout_s: float = 600.0) -> None:
        self._idle: dict[int, list[_Conn]] = {}
        self._head_timeout_s = head_timeout_s
        # Requests awaiting a head. One timeout for all makes insertion order deadline order, so
        # one timer watches them all: a timer per request costs 2-3 us, more than a small answer's parse.
        self._waiting: dict[_Conn, float] = {}
        self._watchdog: asyncio.TimerHandle | None = None

    def put(self, port: int, conn: _Conn) -> None:
        self._idle.setdefault(port, []).append(conn)

    def _watch(self, conn: _Conn) -> None:
        deadline = conn.loop.time() + self._head_timeout_s
        self._waiting[conn] = deadline
        if self._watchdog is None:
            self._watchdog = conn.loop.call_at(deadline, self._expire_late)

    def _expire_late(self) -> None:
        """End every request whose head is late, then sleep until the next deadline."""
        self._watchdog = None
        while self._waiting:
            conn, deadline = next(iter(self._waiting.items()))
            if deadline > conn.loop.time():
                self._watchdog = conn.loop.call_at(deadline, self._expire_late)
                return
            del self._waiting[conn]
            conn.expire(self._head_timeout_s)

    async def _get(self, port: int) -> tuple[_Conn, bool]:
        idle = self._idle.get(port)
        while idle:
            conn = idle.pop()
            if not conn.eof and not conn.buf:
                return conn, True
            conn.close()  # closed by the backend, or stray bytes came while idle: never reuse it
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
        """Send one request and return once the head of the answer is in.

        Raises BackendTimeout if the head is not in within ``head_timeout_s`` (the connection is
        closed), BackendError for anything else that goes wrong. Cancellable."""
        lines = [f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in headers)
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("utf-8", "surrogateescape")  # header bytes as the client sent them
        for attempt in (0, 1):
            conn, reused = await self._get(port)
            conn.received = 0
            self._watch(conn)
            try:
                assert conn.transport is not None
                conn.transport.write(head + body if body and len(body) < 65536 else head)
                if body and len(body) >= 65536:
                    conn.transport.write(body)
                return await self._head(port, conn, method)
            except BackendTimeout:
                raise  # not retried: the backend took the request, it may be working on it
            except BackendError:
                conn.close()
                if reused and attempt == 0 and conn.received == 0:
                    # A keep-alive connection the backend had already closed. Others idle beside it
                    # may be too (llama-server's streams end together and it closes each one's
                    # connection), so they are dropped and the retry opens a new one.
                    for stale in self._idle.pop(port, []):
                        stale.close()
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            finally:
                self._waiting.pop(conn, None)
        raise AssertionError("unreachable")

    async def _head(self, port: int, conn: _Conn, method: str) -> H1Response:
        buf = conn.buf
        while True:
            # Search only the new bytes, and never past MAX_HEAD: a dripped head costs one pass.
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD)
            while end < 0:
                if len(buf) >= MAX_HEAD:
                    raise BackendError("the backend's response head is too large")
                seen = max(0, len(buf) - 3)
                await conn.wait()
                end = buf.find(b"\r\n\r\n", seen, MAX_HEAD)
            lines = conn.take(end + 4)[:-4].decode("latin-1").split("\r\n")
            m = _STATUS.fullmatch(lines[0])
            if m is None:
                raise BackendError(f"not an HTTP/1.1 response from the backend: {lines[0][:80]!r}")
            status = int(m[2])
            if 100 <= status < 200:
                continue  # an interim answer (100 Continue): the real one follows (within the timeout)
            return self._response(port, conn, status, lines, http10=m[1] == "0",
                                  no_body=method == "HEAD" or status in (204, 304))

    def _response(self, port: int, conn: _Conn, status: int, lines: list[str], *, http10: bool,
                  no_body: bool) -> H1Response:
        """The framing headers, read strictly: a body read the wrong way is a hang or a lie."""
        headers: list[tuple[str, str]] = []
        length: int | None = None
        te: str | None = None
        connection: str | None = None
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise BackendError(f"a malformed header line from the backend: {line[:80]!r}")
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            lname = name.lower()
            if lname == "content-length":
                # isdigit() alone takes "²" (latin-1), int() takes "-5", "+5", "1_0"
                if not (value.isascii() and value.isdigit() and len(value) <= MAX_LENGTH_DIGITS) or (
                        length is not None and int(value) != length):
                    raise BackendError(f"a bad Content-Length from the backend: {value[:40]!r}")
                length = int(value)
            elif lname == "transfer-encoding":
                te = value.lower() if te is None else f"{te}, {value.lower()}"
            elif lname == "connection":
                connection = value.lower() if connection is None else f"{connection}, {value.lower()}"
        tokens = {t.strip() for t in connection.split(",")} if connection else ()
        # HTTP/1.0 closes unless it says otherwise; "close" is never pooled whatever the version.
        keep_alive = "close" not in tokens and (not http10 or "keep-alive" in tokens)
        if te is not None:
            if te != "chunked" or http10:  # any other coding would be relayed still encoded
                raise BackendError(f"an unsupported Transfer-Encoding from the backend: {te[:40]!r}")
            if length is not None:  # both framings: chunked wins, and the connection is not trusted after
                length, keep_alive = None, False
        return H1Response(self, port, conn, status, headers, length=length, chunked=te is not None,
                          keep_alive=keep_alive, no_body=no_body)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
