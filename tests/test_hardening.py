"""Limits against slow and hostile clients, and what the attack run found (issue 17), against a
real `hal0 serve` over real sockets.

The slot behind it is tests/hostile_backend.py started as primary's llama-server: a fault-
injection backend, because what is tested here is hal0 (an endless stream to a client that never
reads, 256 streams at once through one slot) and a real llama-server on 2 cores can neither
stream without end nor serve 256 requests at once. The limits are set low in hal0.toml so each
test sees its limit hit within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hal0.server.guard import OVERFLOW
from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.serve import Served, serving, setup_home
from tests.test_slots_hostile import hostile_bin

pytestmark = pytest.mark.slow

LIMITS = {"header_timeout_s": 3, "body_timeout_s": 3, "send_timeout_s": 3, "max_connections": 280,
          "max_messages": 100, "max_inputs": 100}


class Logged:
    """A served hal0 whose log is read as it comes (a full pipe would stall hal0), so a test can
    wait for a line and look at every line at the end."""

    def __init__(self, served: Served) -> None:
        self.s, self.lines, self._cv = served, list(served.log), threading.Condition()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.s.proc.stderr is not None
        for line in self.s.proc.stderr:
            with self._cv:
                self.lines.append(line)
                self._cv.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60, since: int = 0) -> str:
        """The first log line matching ``pattern`` from line ``since`` on (waits for it; raises
        after ``timeout``)."""
        rx = re.compile(pattern)
        with self._cv:
            found = self._cv.wait_for(lambda: next((ln for ln in self.lines[since:] if rx.search(ln)), None),
                                      timeout)
        if found is None:
            raise AssertionError(f"no log line matched {pattern!r}:\n{''.join(self.lines[-30:])}")
        return found

    def stop(self) -> int:
        self.s.proc.terminate()
        code = self.s.proc.wait(timeout=60)
        self._thread.join(10)
        return code


def token(home: Path) -> str:
    return (home / "etc/admin.token").read_text().strip()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1])


@pytest.fixture(scope="module")
def hal0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Logged, str]]:
    home = tmp_path_factory.mktemp("hardening")
    model = home / "var/models/hostile.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF")
    setup_home(home, hostile_bin(home), str(model), **LIMITS)
    cfg = home / "etc/hal0.toml"  # the Ollama listener too, on a port of its own
    cfg.write_text(re.sub(r"(\[ollama\]\nenabled = )false(\nhost = \"127.0.0.1\"\nport = )11434",
                          rf"\g<1>true\g<2>{free_port()}", cfg.read_text()))
    primary = home / "etc/slots/primary.toml"
    primary.write_text(re.sub(r"^max_inflight = \d+$", "max_inflight = 300", primary.read_text(), flags=re.M))
    (home / "etc/slots/handmade.toml").write_text(  # edited by hand: never through `slot create`
        f'name = "handmade"\nprovider = "whisper"\nport = {free_port()}\nenabled = false\n'
        f'[model]\ndefault = "{model}"\n[server]\nextra_args = ["--host", "0.0.0.0"]\n')
    with serving(home, drain=False) as s:  # Logged reads its log itself
        s.load("primary", token(home))
        logged = Logged(s)
        yield logged, token(home)
        assert logged.stop() == 0
    assert not [ln for ln in logged.lines if "Traceback" in ln], "".join(logged.lines[-60:])


def raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def request(url: str, method: str, path: str, token: str | None = None, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(url + path, body, method=method, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read()
            return r.status, json.loads(data) if data else {}, dict(r.headers)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read()), dict(e.headers)


def hang_up(socks: list[socket.socket]) -> None:
    """Close client connections and wait until hal0 has closed its side of each (so the next test
    finds them gone)."""
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_WR)
            closed_by_peer(sock, 30)
        except OSError:
            pass
        sock.close()


def closed_by_peer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (raises if it does not)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


# --- JSON bodies: hal0 decides, 400 with its envelope, never a 500 or the backend's -------------

BAD_BODIES = {
    "100,000 nested arrays": b'{"model": "primary", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "65 levels": b'{"model": "primary", "messages": [{"role": "user", "content": "ok", "x": '
                 + b"[" * 63 + b"]" * 63 + b"}]}",
    "a 5,000-digit integer": b'{"messages": [{"role": "user", "content": "ok"}], "seed": ' + b"7" * 5000 + b"}",
    "NaN": b'{"messages": [{"role": "user", "content": "ok"}], "temperature": NaN}',
    "-Infinity": b'{"messages": [{"role": "user", "content": "ok"}], "temperature": -Infinity}',
    "1e999": b'{"messages": [{"role": "user", "content": "ok"}], "temperature": 1e999}',
    "an escaped lone surrogate": b'{"messages": [{"role": "user", "content": "ok \\ud800"}]}',
    "a lone surrogate in a key": b'{"messages": [{"role": "user", "content": "ok", "\\udfff": 1}]}',
    "a surrogate as UTF-8 bytes": b'{"messages": [{"role": "user", "content": "ok \xed\xa0\x80"}]}',
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_json_that_hal0_refuses_is_its_own_400(hal0: tuple[Logged, str], case: str) -> None:
    """Attack run: deep nesting (RecursionError) and a 5,000-digit integer (ValueError) were 500s
    with a traceback; NaN and lone surrogates passed and came back as the backend's 500."""
    logged, tok = hal0
    status, body, _ = request(logged.s.url, "POST", "/v1/chat/completions", tok, BAD_BODIES[case],
                              {"Content-Type": "application/json"})
    assert status == 400, body
    assert body["error"]["code"] == "request.malformed_json", body  # hal0's code, not the backend's


def test_json_hal0_accepts_still_reaches_the_slot(hal0: tuple[Logged, str]) -> None:
    """A surrogate pair (an emoji as Python's json writes it), big integers and deep-enough
    nesting are fine."""
    logged, tok = hal0
    body = (b'{"model": "primary", "seed": 18446744073709551615, "temperature": 0.5, "messages": '
            b'[{"role": "system", "content": "\\ud83d\\ude00", "x": ' + b"[" * 60 + b"]" * 60 +
            b'}, {"role": "user", "content": "ok"}]}')
    status, answer, headers = request(logged.s.url, "POST", "/v1/chat/completions", tok, body,
                                      {"Content-Type": "application/json"})
    assert status == 200 and answer["choices"][0]["message"]["content"] == "ok", answer
    assert headers["X-Hal0-Slot"] == "primary"


@pytest.mark.parametrize(("path", "key", "item"), [
    ("/v1/chat/completions", "messages", {"role": "user", "content": "ok"}),
    ("/v1/embeddings", "input", "text"),
    ("/v1/completions", "prompt", "text"),
    ("/v1/rerankings", "documents", "text"),
])
def test_huge_lists_are_refused_before_any_backend(hal0: tuple[Logged, str], path: str, key: str,
                                                   item: Any) -> None:
    """Attack run: 50,000 messages tied the backend up for 75 s before it answered 400. hal0 takes
    at most [api].max_messages messages and [api].max_inputs inputs (100 here)."""
    logged, tok = hal0
    body = {"model": "primary", key: [item] * 101, "query": "q"}
    status, answer, _ = request(logged.s.url, "POST", path, tok, json.dumps(body).encode())
    assert status == 400 and answer["error"]["code"] == "request.invalid_size", answer
    assert answer["error"]["param"] == key and answer["error"]["details"]["limit"] == 100
    status, answer, _ = request(logged.s.url, "POST", "/v1/chat/completions", tok,
                                json.dumps({"messages": [{"role": "user", "content": "ok"}] * 100}).encode())
    assert status == 200, answer  # at the limit: served


@pytest.mark.parametrize(("path", "message", "field"), [
    ("/v1/chat/completions", {"role": "tool", "name": [], "content": None}, "name"),
    ("/v1/chat/completions", {"role": "tool", "tool_call_id": 7, "content": "x"}, "tool_call_id"),
    ("/v1/chat/completions", {"role": "user", "content": 5}, "content"),
    ("/v1/messages/count_tokens", {"role": "user", "name": None, "content": ""}, "name"),
])
def test_message_fields_llama_server_parses_strictly_are_checked_by_hal0(
        hal0: tuple[Logged, str], path: str, message: dict[str, Any], field: str) -> None:
    """Found by the fuzz: a message `name` that is not a string was llama-server's 500."""
    logged, tok = hal0
    status, answer, _ = request(logged.s.url, "POST", path, tok,
                                json.dumps({"model": "primary", "messages": [message], "max_tokens": 5}).encode())
    assert status == 400, answer
    message_text = answer["error"]["message"]
    assert f"messages[0].{field}" in message_text, answer


def test_50000_messages_answer_at_once(hal0: tuple[Logged, str]) -> None:
    logged, tok = hal0
    body = json.dumps({"model": "primary", "messages": [{"role": "user", "content": "hello"}] * 50_000}).encode()
    status, answer, _ = request(logged.s.url, "POST", "/v1/chat/completions", tok, body, timeout=30)
    assert status == 400 and answer["error"]["details"]["got"] == 50_000


# --- the request head and body ---------------------------------------------------------------

def test_slowloris_heads_are_cut_off_and_health_answers(hal0: tuple[Logged, str]) -> None:
    """Attack run: 200 connections trickling one header byte a second were never closed. Now each
    is closed once [api].header_timeout_s (3 s here) passes without a complete head."""
    logged, _ = hal0
    every = [raw(logged.s.url) for _ in range(200)]
    socks = {sock.fileno(): sock for sock in every}
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    sent, deadline = 0, time.monotonic() + 60
    try:
        while socks and time.monotonic() < deadline:
            for fd, sock in list(socks.items()):
                try:
                    sock.send(head[sent:sent + 1])  # one byte per round to each
                except OSError:
                    del socks[fd]
            sent += 1
            with urllib.request.urlopen(logged.s.url + "/health", timeout=10) as r:  # meanwhile: served
                assert r.status == 200
            ready, _, _ = select.select(list(socks.values()), [], [], 0.25)  # the trickle's pace
            for sock in ready:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed by hal0, without an answer
                    del socks[sock.fileno()]
        assert not socks, f"{len(socks)} slow connections still open after 60 s"
        assert sent < 200  # closed within seconds, long before the 10 KB head was through
    finally:
        for sock in every:
            sock.close()


def test_a_trickled_body_is_cut_off_with_408(hal0: tuple[Logged, str]) -> None:
    logged, tok = hal0
    sock = raw(logged.s.url)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode())
    answer = b""
    sock.settimeout(0.5)
    for _ in range(120):  # a byte every half second (the trickle), until hal0 answers
        try:
            sock.send(b" ")
            answer += sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if b"\r\n\r\n" in answer:
            break
    answer += closed_by_peer(sock, 20)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert json.loads(body)["error"]["code"] == "request.timeout"
    sock.close()


def test_oversized_and_malformed_heads_get_the_envelope(hal0: tuple[Logged, str]) -> None:
    logged, _ = hal0
    cases = {
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n": (431, "request.header_too_large"),
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(200)) + b"\r\n":
            (431, "request.header_too_large"),
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n": (431, "request.header_too_large"),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n": (400, "request.malformed_http"),
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n": (400, "request.malformed_http"),
    }
    for data, (status, code) in cases.items():
        sock = raw(logged.s.url)
        sock.sendall(data)
        answer = closed_by_peer(sock, 20)
        sock.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] %d " % status, head), answer[:200]  # 1.0: the request was not understood
        assert json.loads(body)["error"]["code"] == code


# --- connections -----------------------------------------------------------------------------

def test_idle_connections_beyond_the_limit_make_room_for_health(hal0: tuple[Logged, str]) -> None:
    """max_connections (280 here) idle or half-sent connections, and more: the oldest are closed,
    /health answers at once."""
    logged, _ = hal0
    socks = [raw(logged.s.url) for _ in range(400)]
    for sock in socks:
        sock.send(b"GET /heal")  # a request that never completes
    with urllib.request.urlopen(logged.s.url + "/health", timeout=10) as r:
        assert r.status == 200
    assert closed_by_peer(socks[0], 20) == b""  # the oldest went first
    hang_up(socks)


def test_the_ollama_listener_shares_the_connection_limit(hal0: tuple[Logged, str]) -> None:
    """The Ollama listener ([ollama]) was an aiohttp site of its own, outside the connection guard:
    any number of connections stayed open there. It now shares the main listener's guard, so
    idle ones are closed beyond max_connections, and Ollama clients are served."""
    logged, _ = hal0
    line = logged.wait_for(r"Ollama API listening on http://127\.0\.0\.1:\d+")
    url = "http://127.0.0.1:" + line.rsplit(":", 1)[1].strip()
    mark = len(logged.lines)
    socks = [raw(url) for _ in range(400)]
    for sock in socks:
        sock.send(b"GET /api/vers")  # a request that never completes
    logged.wait_for(r"closed an idle connection: \d+ connections open", timeout=20, since=mark)
    with urllib.request.urlopen(url + "/api/version", timeout=10) as r:
        assert r.status == 200
    hang_up(socks)


def test_busy_connections_at_the_limit_leave_health_alone(hal0: tuple[Logged, str]) -> None:
    """Every allowed connection busy (event streams that never end): /health still answers on a
    new one, anything else gets 503 system.busy with Retry-After."""
    logged, tok = hal0
    streams = []
    try:
        while len(streams) < LIMITS["max_connections"]:
            sock = raw(logged.s.url)
            sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n".encode())
            first = sock.recv(4096)
            if not first.startswith(b"HTTP/1.1 200"):  # another test's leftovers may still count
                assert b"system.busy" in first, first
                sock.close()
                break
            streams.append(sock)
        assert len(streams) > LIMITS["max_connections"] // 2  # (earlier tests' connections are gone by now)
        status, body, _ = request(logged.s.url, "GET", "/health")
        assert status == 200 and body["status"] == "ok"
        status, body, headers = request(logged.s.url, "GET", "/api/status", tok)
        assert status == 503 and body["error"]["code"] == "system.busy" and headers["Retry-After"] == "1"
        silent = [raw(logged.s.url) for _ in range(OVERFLOW)]  # let in for /health, saying nothing yet
        with raw(logged.s.url) as extra:
            refused = closed_by_peer(extra, 20)  # beyond those: the 503 at once, unasked
        assert refused.startswith(b"HTTP/1.1 503") and b'"system.busy"' in refused, refused
        hang_up(silent)
    finally:
        hang_up(streams)
    status, body, _ = request(logged.s.url, "GET", "/api/status", tok)  # room again once they left
    assert status == 200


# --- answers: a client that never reads, and many at once -------------------------------------

def follow_log(url: str, tok: str, pattern: str, timeout: float = 90) -> str:
    """Read the slot's log as it comes (/api/slots/primary/logs?follow=1) until a line matches."""
    req = urllib.request.Request(url + "/api/slots/primary/logs?follow=1&lines=1000",
                                 headers={"Authorization": f"Bearer {tok}"})
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(req, timeout=timeout) as r:
        for raw_line in r:  # log lines, and a ping every few seconds
            line = raw_line.decode()
            if line.startswith("data: ") and re.search(pattern, line):
                return str(json.loads(line[6:])["line"])
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no log line matched {pattern!r} within {timeout:g} s")


def test_a_client_that_never_reads_is_dropped_and_the_backend_request_cancelled(hal0: tuple[Logged, str]) -> None:
    """Back-pressure from the client to the backend keeps memory bounded; after [api].send_timeout_s
    (3 s here) without the client taking a byte, hal0 drops it and closes the backend connection."""
    logged, tok = hal0
    pid = logged.s.proc.pid
    before = rss_kb(pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = logged.s.url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    body = json.dumps({"model": "primary", "stream": True, "messages": [{"role": "user", "content": "flood"}]})
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
    line = follow_log(logged.s.url, tok, "flood ended")  # the backend saw its connection dropped
    sent = int(re.search(r"flood ended: (\d+) bytes", line)[1])  # type: ignore[index]
    assert sent < 64 * 2**20, sent  # what socket buffers and hal0's bounded buffers hold, not more
    assert rss_kb(pid) - before < 100 * 1024
    logged.wait_for(r"took none of its answer")
    closed_by_peer(sock, 30)  # and the client's connection is gone
    sock.close()
    status, answer, _ = request(logged.s.url, "POST", "/v1/chat/completions", tok,
                                json.dumps({"messages": [{"role": "user", "content": "ok"}]}).encode())
    assert status == 200, answer  # the slot serves on


def test_256_streams_through_one_slot_arrive_whole(hal0: tuple[Logged, str]) -> None:
    """Volume: 256 concurrent streams of 200 events each through primary (max_inflight 300), every
    one complete and in order, hal0's memory bounded. The backend is the fault-injection backend
    (see the module docstring): a real llama-server on 2 cores cannot serve 256 streams at once."""
    logged, tok = hal0
    pid = logged.s.proc.pid
    before = rss_kb(pid)
    n, events = 256, 200
    expected = "".join(f"{i} " for i in range(events))

    async def one(session: aiohttp.ClientSession) -> str:
        body = {"model": "primary", "stream": True, "messages": [{"role": "user", "content": f"count-{events}"}]}
        async with session.post(logged.s.url + "/v1/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {tok}"}) as r:
            assert r.status == 200, await r.text()
            text, done = [], False
            async for raw_line in r.content:
                line = raw_line.decode().strip()
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    text.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
            assert done, "the stream was cut before [DONE]"
            return "".join(text)

    async def all_of_them() -> list[str]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
            return await asyncio.gather(*(one(session) for _ in range(n)))

    results = asyncio.run(all_of_them())
    assert len(results) == n and all(r == expected for r in results)
    assert rss_kb(pid) - before < 200 * 1024


# --- files: a full disk, bytes that are not UTF-8 ---------------------------------------------

def test_non_utf8_env_and_token_files_are_config_invalid(tmp_path: Path) -> None:
    """Attack run: a byte that is not UTF-8 in slots/<name>.env or tokens.toml made `hal0 serve`
    exit with a raw traceback."""
    subprocess.run([*HAL0, "init"], env=hal0_env(tmp_path), check=True, capture_output=True)
    for rel in ("etc/slots/primary.env", "etc/tokens.toml", "etc/hal0.toml", "etc/slots/embed.toml"):
        file = tmp_path / rel
        original = file.read_bytes() if file.exists() else None
        file.write_bytes(b"HAL0_MODEL=caf\xe9\n" if rel.endswith(".env") else b"# caf\xe9\n" + (original or b""))
        r = subprocess.run([*HAL0, "serve", "--port", str(free_port())], env=hal0_env(tmp_path),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "config.invalid" in r.stderr and str(file) in r.stderr and "UTF-8" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        if original is None:
            file.unlink()
        else:
            file.write_bytes(original)


def test_token_files_readable_by_others_stop_serve(tmp_path: Path) -> None:
    subprocess.run([*HAL0, "init"], env=hal0_env(tmp_path), check=True, capture_output=True)
    for rel in ("etc/admin.token", "etc/tokens.toml"):
        file = tmp_path / rel
        file.chmod(0o644)
        r = subprocess.run([*HAL0, "serve", "--port", str(free_port())], env=hal0_env(tmp_path),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "config.invalid" in r.stderr and f"chmod 600 {file}" in r.stderr, r.stderr
        file.chmod(0o600)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs (needs root), unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {r.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of ``disk`` (it may be full already: hal0 wrote there first)."""
    try:
        with open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError:
        pass
    n = 0
    while True:  # the last few blocks and inodes too
        try:
            (disk / f"filler-{n}").write_bytes(b"\0" * 512)
            n += 1
        except OSError:
            break


def test_a_full_disk_is_system_no_space_and_files_stay_intact(tiny_disk: Path) -> None:
    """Attack run: a full disk gave 500 system.internal on register, swap, slot create and capability
    change, and a raw traceback from `hal0 token create`."""
    home = tiny_disk / "home"
    model = home / "var/models/hostile.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"GGUF")
    setup_home(home, hostile_bin(tiny_disk.parent), str(model))
    tiny = manifest()["models"]["tiny-chat"]  # a real GGUF, registered from where it lies
    tok = token(home)
    with serving(home) as s:
        s.load("primary", tok)  # started before the disk fills: nothing below needs a new process
        etc = home / "etc"
        before = {p: p.read_bytes() for p in (*etc.rglob("*"), home / "var/registry.toml") if p.is_file()}
        fill(tiny_disk)
        attempts = {
            "register": ("POST", "/api/models", {"id": "tiny", "path": tiny, "allow_outside_roots": True}),
            "swap": ("POST", "/api/slots/primary/swap", {"model": str(model)}),
            "slot create": ("POST", "/api/slots", {"name": "extra", "provider": "llama-server", "model": "x"}),
            "capability": ("POST", "/api/capabilities/voice/tts", {"enabled": True}),
        }
        for what, (method, path, body) in attempts.items():
            status, answer, _ = request(s.url, method, path, tok, json.dumps(body).encode())
            assert status == 507, (what, answer)
            assert answer["error"]["code"] == "system.no_space", (what, answer)
            assert answer["error"]["details"]["folder"].startswith(str(home)), (what, answer)
        r = subprocess.run([*HAL0, "token", "create", "ci"], env=hal0_env(home), capture_output=True, text=True)
        assert r.returncode == 1 and "hal0: system.no_space: no space left on the disk of " + str(etc) in r.stderr
        assert "Traceback" not in r.stderr
        after = {p: p.read_bytes() for p in before}
        assert after == before  # every file as it was
        assert not [p for p in etc.rglob("*.tmp")]  # and no temporary file left behind
        assert s.stop() == 0
    assert not [ln for ln in s.log if "Traceback" in ln], "".join(s.log)


# --- tokens and the slot arguments -------------------------------------------------------------

def test_tokens_are_never_echoed_or_logged(hal0: tuple[Logged, str]) -> None:
    logged, tok = hal0
    wrong = "hal0_" + tok.split("_")[1] + "_SECRETsecretSECRETsecret"
    for sent in (wrong, "not-even-a-hal0-token-SECRET", tok[:-3] + "xyz"):
        status, body, _ = request(logged.s.url, "GET", "/api/status", sent)
        assert status == 401 and body["error"]["code"] == "auth.invalid"
        assert sent not in json.dumps(body) and "SECRET" not in json.dumps(body)
    status, body, _ = request(logged.s.url, "GET", "/api/nothing-here", tok)
    assert status == 404 and tok not in json.dumps(body)
    status, _, _ = request(logged.s.url, "GET", "/v1/models?api_key=SECRETinQUERY&limit=3")  # not ours, logged hidden
    assert status == 200
    logged.wait_for(r"GET /v1/models\?api_key=\*\*\*&limit=3 200")
    text = "".join(logged.lines)
    secret = tok.split("_", 2)[2]  # hal0_<id>_<secret>, and the secret may hold "_" itself
    assert tok not in text and "SECRET" not in text and secret not in text


ROOTS_FREE = ["--threads", "2", "--override-kv", "x=int:1"]


@pytest.mark.parametrize(("provider", "args"), [
    ("whisper", ["--host", "0.0.0.0"]),  # the attack run: listened publicly without authentication
    ("kokoro", ["--port", "9999"]),  # the attack run: listened elsewhere, probed forever
    ("whisper", ["--host=0.0.0.0"]),
    ("moonshine", ["--ho", "0.0.0.0"]),  # argparse takes a prefix for the option
    ("kokoro", ["--po=1"]),
    ("kokoro", ["--voices", "/etc/passwd"]),
    ("comfyui", ["--listen"]),
    ("comfyui", ["--liste", "0.0.0.0"]),
    ("comfyui", ["--output-directory", "/tmp"]),
    ("llama-server", ["-m", "/etc/passwd"]),
    ("llama-server", ["--host=0.0.0.0"]),
    ("llama-server", ["--log-file", "/etc/hal0-owned"]),
    ("llama-server", ["--log-file", "relative.log"]),
    ("llama-server", ["--lora=/etc/shadow"]),
    ("llama-server", ["--path", "/"]),
    ("llama-server", ["--chat-template-file", "MODELS/../../../etc/passwd"]),
    ("llama-server", ["-hf", "someone/model"]),
    ("flm", ["--host", "0.0.0.0"]),
])
def test_extra_args_cannot_rebind_or_reach_outside(hal0: tuple[Logged, str], provider: str, args: list[str]) -> None:
    """One reserved-argument check for every provider, at `slot create`."""
    logged, tok = hal0
    models = str(logged.s.home / "var/models")
    args = [a.replace("MODELS", models) for a in args]
    spec = {"name": "probe", "provider": provider, "backend": "npu" if provider == "flm" else "cpu",
            "server": {"extra_args": args}, "enabled": False}
    status, body, _ = request(logged.s.url, "POST", "/api/slots", tok, json.dumps(spec).encode())
    assert status == 400 and body["error"]["code"] == "slot.reserved_arg", body
    assert not (logged.s.home / "etc/slots/probe.toml").exists()


def test_a_hand_edited_slot_with_reserved_args_does_not_start(hal0: tuple[Logged, str]) -> None:
    logged, tok = hal0
    status, body, _ = request(logged.s.url, "POST", "/api/slots/handmade/enable", tok, b"{}")
    assert status == 200, body
    status, body, _ = request(logged.s.url, "POST", "/api/slots/handmade/load", tok, b"{}")
    assert status == 503 and body["error"]["code"] == "slot.start_failed", body
    assert "--host: hal0 sets --host itself" in body["error"]["message"]
    status, body, _ = request(logged.s.url, "GET", "/api/slots/handmade", tok)
    assert body["pid"] is None and body["state"] == "offline", body  # nothing was started


def test_extra_args_inside_hal0s_folders_are_fine(hal0: tuple[Logged, str]) -> None:
    logged, tok = hal0
    lora = logged.s.home / "var/models/adapter.gguf"
    spec = {"name": "fine", "provider": "llama-server", "enabled": False,
            "server": {"extra_args": [*ROOTS_FREE, "--lora", str(lora), "--alias", "x"]}}
    status, body, _ = request(logged.s.url, "POST", "/api/slots", tok, json.dumps(spec).encode())
    assert status == 201, body
    status, body, _ = request(logged.s.url, "DELETE", "/api/slots/fine", tok)
    assert status == 200


def test_the_cli_refuses_a_public_whisper(hal0: tuple[Logged, str]) -> None:
    """The attack run's command line, as an operator would type it."""
    logged, _ = hal0
    r = subprocess.run([*HAL0, "slot", "create", "pub", "--provider", "whisper", "--extra-arg=--host",
                        "--extra-arg=0.0.0.0"], env=hal0_env(logged.s.home), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "slot.reserved_arg" in r.stderr and "--host" in r.stderr, r.stderr


def test_a_runner_takes_no_abbreviation_of_host() -> None:
    r = subprocess.run([sys.executable, "-m", "hal0", "runner", "whisper", "--ho", "0.0.0.0", "--port", "1",
                        "--model", "/nonexistent"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 2 and "unrecognized arguments: --ho" in r.stderr


def test_image_files_cannot_be_traversed(hal0: tuple[Logged, str]) -> None:
    logged, _ = hal0
    (logged.s.home / "var/images").mkdir(parents=True, exist_ok=True)
    for name in ("..%2f..%2fetc%2fhal0.toml", "..%2F..%2Fetc%2Fadmin.token", "%2e%2e", "a" * 22 + ".png",
                 "AAAAAAAAAAAAAAAAAAAAAA.png%00", "..", "x.png"):
        status, body, _ = request(logged.s.url, "GET", "/v1/images/files/" + name)
        assert status == 404 and body["error"]["code"] == "request.not_found", (name, body)


def test_without_cors_origins_no_browser_origin_is_let_in(hal0: tuple[Logged, str]) -> None:
    logged, tok = hal0
    status, _, headers = request(logged.s.url, "GET", "/v1/models", tok, headers={"Origin": "https://evil.example"})
    assert status == 200 and not [h for h in headers if h.lower().startswith("access-control")]
    status, body, headers = request(logged.s.url, "OPTIONS", "/v1/chat/completions", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert status in (401, 405) and not [h for h in headers if h.lower().startswith("access-control")], body


def test_json_logs_with_request_ids_and_cors_origins(tmp_path: Path) -> None:
    """[log].format = "json": one object per line, the request id on the lines of a request, no
    time of its own under the journal. [api].cors_origins lets exactly the listed origin in."""
    subprocess.run([*HAL0, "init"], env=hal0_env(tmp_path), check=True, capture_output=True)
    cfg = tmp_path / "etc/hal0.toml"
    text = cfg.read_text().replace("cors_origins = []", 'cors_origins = ["https://chat.example.lan"]')
    cfg.write_text(text.replace('format = "text"', 'format = "json"'))
    for name in ("primary", "embed", "stt", "tts", "img"):
        toml = tmp_path / f"etc/slots/{name}.toml"
        toml.write_text(re.sub(r"^port = \d+$", f"port = {free_port()}", toml.read_text(), flags=re.M)
                        .replace("enabled = true", "enabled = false"))
    tok = token(tmp_path)
    with serving(tmp_path, env=hal0_env(tmp_path, JOURNAL_STREAM="8:1234")) as s:
        ok = "https://chat.example.lan"
        status, _, headers = request(s.url, "GET", "/api/status", tok,
                                     headers={"Origin": ok, "X-Request-Id": "rid-one"})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == ok and headers["X-Request-Id"] == "rid-one"
        status, _, headers = request(s.url, "GET", "/api/status", tok, headers={"Origin": "https://evil.example"})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers
        status, _, headers = request(s.url, "OPTIONS", "/v1/chat/completions", headers={
            "Origin": ok, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert status == 204 and headers["Access-Control-Allow-Origin"] == ok
        assert headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        assert "Access-Control-Allow-Credentials" not in headers
        status, _, _ = request(s.url, "GET", "/api/status", "hal0_nope_nope", headers={"X-Request-Id": "rid-two"})
        assert status == 401
        assert s.stop() == 0
    records = []
    for line in s.log:
        assert line.startswith("<"), line  # the journal's priority prefix, then the object
        records.append(json.loads(line[line.index(">") + 1:]))
    assert records and all("ts" not in r and {"level", "logger", "message"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "hal0.access"]
    assert {r.get("request_id") for r in access} >= {"rid-one", "rid-two"}
    assert tok not in "".join(s.log)


def test_log_lines_of_a_request_carry_its_id() -> None:
    """Any line logged while a request is handled (its task), in either format."""
    import logging

    from hal0.web.logs import CURRENT_REQUEST_ID, JsonFormatter, TextFormatter

    record = logging.LogRecord("hal0.slots", logging.WARNING, __file__, 1, "slot %s moved", ("primary",), None)
    CURRENT_REQUEST_ID.set("abc123")
    assert TextFormatter(journal=True).format(record) == "<4>WARNING hal0.slots: slot primary moved rid=abc123"
    assert json.loads(JsonFormatter(journal=False).format(record))["request_id"] == "abc123"
    CURRENT_REQUEST_ID.set(None)
    assert "rid=" not in TextFormatter(journal=False).format(record)


def test_a_log_nobody_reads_never_stalls_serving(tmp_path: Path) -> None:
    """Regression: hal0 wrote its log from the event loop, so once a pipe to a reader that had
    stopped (a paused pager) was full, the next access-log line blocked the loop and hal0 stopped
    answering. A thread writes the log now; the loop only queues lines."""
    subprocess.run([*HAL0, "init"], env=hal0_env(tmp_path), check=True, capture_output=True)
    for name in ("primary", "embed", "stt", "tts", "img"):
        toml = tmp_path / f"etc/slots/{name}.toml"
        toml.write_text(re.sub(r"^port = \d+$", f"port = {free_port()}", toml.read_text(), flags=re.M)
                        .replace("enabled = true", "enabled = false"))
    with serving(tmp_path, drain=False) as s:  # its log is read up to "listening", then never
        for _ in range(1500):  # an access-log line each: several times what a pipe holds
            with urllib.request.urlopen(s.url + "/health", timeout=10) as r:
                assert r.status == 200
        assert s.stop() == 0  # and it stops cleanly, writing what was queued
    assert sum("GET /health 200" in line for line in s.log) == 1500


def test_log_lines_beyond_the_queue_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from hal0.web import logs

    read_end, write_end = os.pipe()
    stream, reader = os.fdopen(write_end, "w"), os.fdopen(read_end, "rb")
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(logs, "QUEUE_LINES", 100)
    log, root = logging.getLogger("hal0.test"), logging.getLogger()
    saved = (root.handlers[:], root.level)  # pytest's own, put back at the end
    try:
        logs.configure_logging("text", journal=False)
        started = time.monotonic()
        for i in range(5000):  # the pipe fills and nobody reads it: the writer blocks, the queue fills
            log.info("line %d of a long burst with some padding to fill the pipe sooner, %s", i, "x" * 200)
        assert time.monotonic() - started < 10  # logging itself never waited on the pipe
        os.set_blocking(reader.fileno(), False)
        got = b""
        while b"log lines were dropped" not in got:
            ready, _, _ = select.select([reader], [], [], 10)
            assert ready, got[-300:]
            got += reader.read() or b""
            log.info("one more")  # the next line written after the drops says how many
    finally:
        logs.stop_logging(timeout=1)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        reader.close()
        with contextlib.suppress(BrokenPipeError):  # what it still held for the pipe goes nowhere
            stream.close()
    dropped = int(re.search(rb"(\d+) log lines were dropped", got).group(1))  # type: ignore[union-attr]
    assert 0 < dropped < 5000
