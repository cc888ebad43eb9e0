#!/usr/bin/env python3
"""A stand-in backend for fault injection, speaking llama-server's /health and /v1/models.

Accepts llama-server's arguments (only --port and --alias matter). Behaviour comes
from environment variables, which tests set through the slot's [env]:

  FAKE_CRASH_ON_START=CODE  print a line and exit with CODE before listening
  FAKE_READY_AFTER=S        /health answers 503 "loading" for S seconds
  FAKE_EXIT_AFTER=S         exit with code 7 S seconds after becoming ready
  FAKE_IGNORE_SIGTERM=1     ignore SIGTERM (hal0 must SIGKILL)
  FAKE_GRANDCHILD=PATH      start a grandchild that sleeps, and write its pid to PATH
  FAKE_STARTS=PATH          append one line per start to PATH (counts spawns)
  FAKE_EXIT_SKIP=N          with FAKE_STARTS: FAKE_EXIT_AFTER spares the first N starts
  FAKE_SSE_HOLD=1           a POST with "stream": true gets one chunk and ``data: [DONE]``, then
                            the answer stays open (no end of the chunked body) until hal0 drops it

GET /fake/exit makes it exit with code 7 at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--alias", default="fake")
args, _ = parser.parse_known_args()
env = os.environ.get
print(f"fake backend starting on {args.port}", flush=True)
if env("FAKE_STARTS"):
    with open(env("FAKE_STARTS"), "a") as f:
        f.write(f"{os.getpid()}\n")
if env("FAKE_CRASH_ON_START"):
    print("fake backend: simulated crash while loading", flush=True)
    sys.exit(int(env("FAKE_CRASH_ON_START")))
if env("FAKE_IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if env("FAKE_GRANDCHILD"):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(env("FAKE_GRANDCHILD"), "w") as f:
        f.write(str(child.pid))
ready_at = time.monotonic() + float(env("FAKE_READY_AFTER") or 0)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a: object) -> None:
        pass

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/fake/exit":  # a crash the test triggers when it wants one
            print("fake backend: simulated crash", flush=True)
            os._exit(7)
        if time.monotonic() < ready_at:
            self._send(503, {"error": {"code": 503, "message": "Loading model"}})
        elif self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": args.alias, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if env("FAKE_SSE_HOLD") and json.loads(body or b"{}").get("stream"):
            self._hold_after_done()
        elif time.monotonic() < ready_at:
            self._send(503, {"error": {"code": 503, "message": "Loading model"}})
        else:
            self._send(200, {"object": "chat.completion", "model": args.alias,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]})


    def _hold_after_done(self) -> None:
        self.protocol_version = "HTTP/1.1"  # a chunked body needs it (this answer only)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = json.dumps({"object": "chat.completion.chunk", "model": args.alias,
                            "choices": [{"index": 0, "delta": {"content": "ok"}}]})
        for event in (f"data: {chunk}\n\n", "data: [DONE]\n\n"):
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.rfile.read(1)  # blocks until hal0 closes the connection (the body's end never comes)


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
print("fake backend listening", flush=True)
starts = len(Path(env("FAKE_STARTS") or "").read_text().split()) if env("FAKE_STARTS") else 0
if env("FAKE_EXIT_AFTER") and starts > int(env("FAKE_EXIT_SKIP") or 0):
    def _exit_later() -> None:
        time.sleep(max(0.0, ready_at - time.monotonic()) + float(env("FAKE_EXIT_AFTER") or 0))
        print("fake backend: simulated crash", flush=True)
        os._exit(7)
    threading.Thread(target=_exit_later, daemon=True).start()
server.serve_forever()
