"""A fast synthetic OpenAI backend on raw asyncio (so it is never the bottleneck).

Speaks enough of llama-server for hal0 to supervise it (/health, /v1/models) and answers
POST /v1/chat/completions with a fixed JSON body, or with 200 SSE chunks, a usage chunk and
[DONE] when the body contains "stream": true.

    python synthetic_backend.py --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json

JSON_BODY = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
                        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                     "message": {"role": "assistant", "content": "ok", "refusal": None}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()
CHUNKS = 200
CHUNK = b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "bench",
                                "choices": [{"index": 0, "delta": {"content": "tok"}, "finish_reason": None}]}
                               ).encode() + b"\n\n"
USAGE_CHUNK = b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "bench",
                                      "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": CHUNKS,
                                                               "total_tokens": CHUNKS + 1}}).encode() + b"\n\n"


def _fixed(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = next((int(v) for k, _, v in (ln.partition(": ") for ln in lines[1:])
                           if k.lower() == "content-length"), 0)
            body = await reader.readexactly(length) if length else b""
            if method == "GET":
                writer.write(_fixed(b"200 OK", b'{"status":"ok"}' if path == "/health" else MODELS))
            elif b'"stream": true' in body or b'"stream":true' in body:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                for _ in range(CHUNKS):
                    writer.write(_chunk(CHUNK))
                    await writer.drain()
                writer.write(_chunk(USAGE_CHUNK) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            else:
                writer.write(_fixed(b"200 OK", JSON_BODY))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(f"synthetic backend listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()  # llama-server's other arguments are ignored
    asyncio.run(main(args.port))
