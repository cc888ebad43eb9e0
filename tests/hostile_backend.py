#!/usr/bin/env python3
"""A backend that breaks HTTP/1.1 on request, speaking llama-server's /health and /v1/models.

Accepts llama-server's arguments (only --port and --alias matter; --port 0 picks a free port).
Prints ``hostile backend listening on PORT`` once listening. POST /v1/chat/completions picks its
behaviour from the content of the last message:

  ok                 a chat completion (Content-Length), keep-alive
  ok-stream          an SSE stream (chunked) ending with ``data: [DONE]``, keep-alive
  neg-chunk          a chunked head, one valid chunk, then a chunk size of -6
  neg-length         Content-Length: -5
  huge-head          a header section of 200 KB
  http10-keepopen    an HTTP/1.0 answer without a Connection header, then the socket stays open
  close-mid-body     Content-Length: 1000, 10 bytes, then close
  close-mid-stream   an SSE head and two events, then close
  garbage-after-body a complete answer, then junk on the same connection (which keeps serving)
  hang               reads the request and never answers (the socket stays open)
  bad-status         a status line that is not HTTP
  text-error         a 404 whose body is plain text, as some servers answer a path they lack
  flood              an SSE stream of 4 KB events without end, as fast as the client takes them; when
                     the client (hal0) drops the connection it prints ``flood ended: N bytes sent``
  count-N            an SSE stream of N events (content ``"<i> "``) and ``data: [DONE]``, yielding
                     between events (a stand-in for a generation, for volume tests)

The ok answers carry X-Hostile-Connection (the connection's number, from 1) and
X-Hostile-Request (the request's number on it), so a test can tell whether a client reused one.
Standard library only: hal0 starts it as if it were llama-server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from typing import Literal

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=8080)
parser.add_argument("--alias", default="hostile")
args, _ = parser.parse_known_args()
connections = itertools.count(1)

Request = tuple[str, str, dict[str, str], bytes]
Then = Literal["serve", "hold", "close"]  # after an answer: the next request, silence until the client leaves, or close


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection (method, target, lower-cased headers, body), None at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, target, headers, body


def answer(status: str, body: bytes, *extra: str, version: str = "HTTP/1.1") -> bytes:
    head = [f"{version} {status}", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def completion(content: str) -> dict[str, object]:
    return {"id": "chatcmpl-hostile", "object": "chat.completion", "created": int(time.time()), "model": args.alias,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def delta(changes: dict[str, str], finish_reason: str | None = None) -> bytes:
    """One SSE event of a chat stream, as a chunk."""
    event = {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": int(time.time()),
             "model": args.alias, "choices": [{"index": 0, "delta": changes, "finish_reason": finish_reason}]}
    return chunk(b"data: " + json.dumps(event).encode() + b"\n\n")


def last_message(body: bytes) -> str:
    try:
        content = json.loads(body)["messages"][-1]["content"]
    except (ValueError, LookupError, TypeError):
        return ""
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content.strip() if isinstance(content, str) else ""


async def misbehave(case: str, tags: tuple[str, ...], writer: asyncio.StreamWriter) -> Then:
    """Answer one chat request as ``case`` says."""
    sse_head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    match case:
        case "ok":
            writer.write(answer("200 OK", json.dumps(completion("ok")).encode(), *tags))
        case "ok-stream":
            writer.write(sse_head + "".join(f"{t}\r\n" for t in tags).encode() + b"\r\n")
            for event in (delta({"role": "assistant", "content": "o"}), delta({"content": "k"}), delta({}, "stop")):
                writer.write(event)
                await writer.drain()
            writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        case "neg-chunk":
            writer.write(sse_head + b"\r\n" + delta({"role": "assistant", "content": "o"}) + b"-6\r\nabcdef\r\n")
            return "hold"
        case "neg-length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: -5\r\n\r\n{}")
            return "hold"
        case "huge-head":
            pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
            writer.write(b"HTTP/1.1 200 OK\r\n" + pad * 200 + b"Content-Length: 2\r\n\r\n{}")
            return "hold"
        case "http10-keepopen":
            writer.write(answer("200 OK", json.dumps(completion("ok")).encode(), *tags, version="HTTP/1.0"))
            return "hold"
        case "close-mid-body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                         + b'{"id": "x"')
            return "close"
        case "close-mid-stream":
            writer.write(sse_head + b"\r\n" + delta({"role": "assistant", "content": "o"}) + delta({"content": "k"}))
            return "close"
        case "garbage-after-body":
            writer.write(answer("200 OK", json.dumps(completion("ok")).encode(), *tags) + b"JUNK\r\n\r\nJUNK")
        case "hang":
            return "hold"
        case "flood":
            writer.write(sse_head + b"\r\n")
            event, sent = delta({"content": "x" * 4000}), 0
            try:
                while True:
                    writer.write(event)
                    sent += len(event)
                    await writer.drain()
            except ConnectionError:
                print(f"flood ended: {sent} bytes sent", flush=True)
                return "close"
        case _ if case.startswith("count-") and case[6:].isdigit():
            writer.write(sse_head + "".join(f"{t}\r\n" for t in tags).encode() + b"\r\n")
            for i in range(int(case[6:])):
                writer.write(delta({"content": f"{i} "}))
                await writer.drain()
                await asyncio.sleep(0)  # other streams get their turn, as between a model's tokens
            writer.write(delta({}, "stop") + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        case "text-error":
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n"
                         b"File Not Found")
        case "bad-status":
            writer.write(b"ICY 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            return "hold"
        case _:
            error = {"error": {"code": 400, "message": f"unknown behaviour {case!r}", "type": "invalid_request_error"}}
            writer.write(answer("400 Bad Request", json.dumps(error).encode(), *tags))
    return "serve"


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every request on one connection, until the client leaves or a behaviour ends it."""
    conn = next(connections)
    try:
        for n in itertools.count(1):
            request = await read_request(reader)
            if request is None:
                break
            method, target, headers, body = request
            tags = (f"X-Hostile-Connection: {conn}", f"X-Hostile-Request: {n}")
            if method == "GET" and target == "/health":
                writer.write(answer("200 OK", b'{"status":"ok"}', *tags))
            elif method == "GET" and target == "/v1/models":
                models = {"object": "list", "data": [{"id": args.alias, "object": "model"}]}
                writer.write(answer("200 OK", json.dumps(models).encode(), *tags))
            elif method == "POST" and target == "/v1/chat/completions":
                then = await misbehave(last_message(body), tags, writer)
                if then != "serve":
                    await writer.drain()
                    if then == "hold":
                        await reader.read()  # the socket stays open, answering nothing, until the client leaves
                    break
            else:
                writer.write(answer("404 Not Found", b'{"error": {"code": 404, "message": "not found"}}', *tags))
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", args.port)
    print(f"hostile backend listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
