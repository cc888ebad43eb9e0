"""A slot whose backend misbehaves, through `hal0 serve` and the OpenAI SDK, as a client sees it.

The backend is tests/hostile_backend.py started as the slot's llama-server; the content of the
last message picks how it breaks HTTP. Every case ends in a clean error (or an aborted stream),
hal0 keeps answering meanwhile, and the next request on the slot succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.helpers.env import REPO
from tests.helpers.serve import Served, sdk, serving, setup_home
from tests.helpers.slots import fake_bin

pytestmark = pytest.mark.slow
HOSTILE = REPO / "tests" / "hostile_backend.py"


def hostile_bin(tmp: Path) -> str:
    wrapper = tmp / "hostile-llama-server"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {HOSTILE} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def token(home: Path) -> str:
    return (home / "etc/admin.token").read_text().strip()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    home = tmp_path_factory.mktemp("hostile")
    model = home / "hostile.gguf"
    model.write_bytes(b"GGUF")
    setup_home(home, hostile_bin(home), str(model), response_head_timeout_s=1)
    with serving(home) as s:
        s.load("primary", token(home))
        yield s, token(home)
        assert s.stop() == 0


class HealthWatch:
    """Asks /health over and over from a thread while a test runs; the slowest answer it saw."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self.count = url + "/health", 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            with urllib.request.urlopen(self.url, timeout=10) as r:
                assert r.status == 200
            self.worst = max(self.worst, time.monotonic() - t0)
            self.count += 1

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def chat(client: openai.OpenAI, case: str, stream: bool = False) -> str:
    """The answer's text; raises what the SDK raises."""
    messages = [{"role": "user", "content": case}]
    if not stream:
        out = client.chat.completions.create(model="primary", messages=messages)  # type: ignore[arg-type]
        return out.choices[0].message.content or ""
    parts = client.chat.completions.create(model="primary", messages=messages, stream=True)  # type: ignore[arg-type]
    return "".join(c.choices[0].delta.content or "" for c in parts if c.choices)


@pytest.mark.parametrize("case", ["neg-chunk", "neg-length", "huge-head", "close-mid-body", "bad-status"])
def test_a_broken_answer_is_a_clean_502_and_the_slot_goes_on(hostile: tuple[Served, str], case: str) -> None:
    with sdk(*hostile) as client, HealthWatch(hostile[0].url) as health:
        with pytest.raises(openai.APIStatusError) as e:
            chat(client, case)
        assert e.value.status_code == 502
        assert e.value.body["code"] == "slot.unreachable"  # type: ignore[index]
        assert chat(client, "ok") == "ok"
    assert health.count > 0 and health.worst < 0.5  # a frozen loop would never answer


@pytest.mark.parametrize("case", ["http10-keepopen", "garbage-after-body"])
def test_an_answer_on_a_connection_that_cannot_be_reused(hostile: tuple[Served, str], case: str) -> None:
    """The answer itself is whole; the connection it came on must not serve the next request."""
    with sdk(*hostile) as client:
        assert chat(client, case) == "ok"
        assert chat(client, "ok") == "ok" and chat(client, "ok-stream", stream=True) == "ok"


def test_a_backend_that_takes_the_request_and_never_answers_is_a_504(hostile: tuple[Served, str]) -> None:
    with sdk(*hostile) as client:
        with pytest.raises(openai.APIStatusError) as e:
            chat(client, "hang")
        assert e.value.status_code == 504 and e.value.body["code"] == "slot.timeout"  # type: ignore[index]
        assert chat(client, "ok") == "ok"


def test_a_plain_text_error_from_a_backend_comes_in_the_envelope(hostile: tuple[Served, str]) -> None:
    with sdk(*hostile) as client, pytest.raises(openai.APIStatusError) as e:
        chat(client, "text-error")
    body = e.value.body
    assert e.value.status_code == 502 and body["code"] == "slot.backend_error"  # type: ignore[index]
    assert body["details"]["backend_status"] == 404 and body["details"]["body"] == "File Not Found"  # type: ignore[index]


def raw_post(served: Served, tok: str, body: dict[str, object]) -> bytes:
    """Everything hal0 sends back on one connection, until it closes it."""
    data = json.dumps(body).encode()
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: hal0\r\nConnection: close\r\n"
                     b"Authorization: Bearer " + tok.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        chunks = []
        while part := sock.recv(65536):
            chunks.append(part)
    return b"".join(chunks)


def test_a_backend_that_dies_mid_stream_aborts_the_stream(hostile: tuple[Served, str]) -> None:
    """Regression: after the 200 head and some events, hal0 wrote a second response, a 502,
    inside the chunked body. Now the stream ends with an error event and no final chunk."""
    served, tok = hostile
    reply = raw_post(served, tok, {"model": "primary", "stream": True,
                                   "messages": [{"role": "user", "content": "close-mid-stream"}]})
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.count(b"HTTP/1.1") == 1
    assert b'"delta": {"content": "k"}' in reply and b'"code": "slot.unreachable"' in reply
    assert not reply.endswith(b"0\r\n\r\n")  # no last chunk: the client knows the stream broke
    with sdk(*hostile) as client, pytest.raises(openai.APIError):
        chat(client, "close-mid-stream", stream=True)


def test_a_hung_backend_fails_its_requests_and_comes_back(tmp_path: Path) -> None:
    """SIGSTOP: the request waiting on it gets a 502 once liveness gives up, the backend is
    restarted under the usual backoff, and the next request is answered."""
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    setup_home(tmp_path, fake_bin(tmp_path).bin, str(model), liveness_interval_s=0.25, liveness_failures=2)
    tok = token(tmp_path)
    with serving(tmp_path) as s, sdk(s, tok) as client:
        pid = s.load("primary", tok)["pid"]
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(openai.APIStatusError) as e:
            chat(client, "hello")
        assert e.value.status_code == 502 and e.value.body["code"] == "slot.unreachable"  # type: ignore[index]
        assert chat(client, "hello") == "ok"  # waits for the restart, then answers
        status, slot = s.get("/api/slots/primary", tok)
        assert status == 200 and slot["pid"] != pid and slot["starts"] == 2
        assert slot["last_error"].startswith("backend stopped answering its health check")
        assert s.stop() == 0
