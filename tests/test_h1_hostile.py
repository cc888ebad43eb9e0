"""hal0's HTTP/1.1 client against tests/hostile_backend.py, a separate process that breaks the protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal0.dispatch.h1 import BackendError, BackendTimeout, H1Pool, H1Response
from tests.test_h1 import responsive

HOSTILE = Path(__file__).resolve().parent / "hostile_backend.py"

pytestmark = pytest.mark.timeout(20)  # a parser loop without an await freezes the loop (no asyncio timeout fires)


@pytest.fixture(scope="module")
def hostile() -> Iterator[int]:
    """The hostile backend on a free port, started with a llama-server command line; always reaped."""
    with subprocess.Popen([sys.executable, str(HOSTILE), "-m", "model.gguf", "--port", "0", "--alias", "hostile-test",
                           "--ctx-size", "512", "--jinja"], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the script prints this line once it listens, or exits
            assert line.startswith("hostile backend listening on "), line
            yield int(line.rsplit(" ", 1)[1])
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def chat(case: str) -> bytes:
    return json.dumps({"model": "hostile-test", "messages": [{"role": "system", "content": "be nice"},
                                                             {"role": "user", "content": case}]}).encode()


async def ask(pool: H1Pool, port: int, case: str) -> tuple[H1Response, bytes]:
    """One chat request and its whole body; the connection goes back to the pool if it may."""
    r = await pool.request(port, "POST", "/v1/chat/completions", [("Content-Type", "application/json")], chat(case))
    try:
        return r, await r.read()
    finally:
        r.release()


def connection(r: H1Response) -> str:
    """Which of the backend's connections answered (it numbers them)."""
    return dict(r.headers)["X-Hostile-Connection"]


async def test_it_looks_like_llama_server(hostile: int) -> None:
    pool = H1Pool()
    async with responsive():
        health = await pool.request(hostile, "GET", "/health", [], None)
        assert (health.status, json.loads(await health.read())) == (200, {"status": "ok"})
        health.release()
        models = await pool.request(hostile, "GET", "/v1/models", [], None)
        assert (models.status, json.loads(await models.read())) == (
            200, {"object": "list", "data": [{"id": "hostile-test", "object": "model"}]})
        models.release()
    assert connection(health) == connection(models)  # keep-alive
    pool.close()


async def test_ok_answers_and_streams_keep_the_connection(hostile: int) -> None:
    pool = H1Pool()
    async with responsive():
        first, body = await ask(pool, hostile, "ok")
        assert json.loads(body)["choices"][0]["message"]["content"] == "ok"
        second, stream = await ask(pool, hostile, "ok-stream")
        third, _ = await ask(pool, hostile, "ok")
    events = [e.removeprefix(b"data: ") for e in stream.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    choices = [json.loads(e)["choices"][0] for e in events[:-1]]
    assert "".join(c["delta"].get("content", "") for c in choices) == "ok" and choices[-1]["finish_reason"] == "stop"
    assert second.content_length is None and dict(second.headers)["Content-Type"] == "text/event-stream"
    assert connection(first) == connection(second) == connection(third)
    assert [dict(r.headers)["X-Hostile-Request"] for r in (first, second, third)] == ["1", "2", "3"]
    pool.close()


@pytest.mark.parametrize(("case", "error", "match"), [
    ("neg-chunk", BackendError, "malformed chunk size"),
    ("neg-length", BackendError, "bad Content-Length"),
    ("huge-head", BackendError, "head is too large"),
    ("close-mid-body", BackendError, "closed"),
    ("close-mid-stream", BackendError, "closed"),
    ("hang", BackendTimeout, "no response head from the backend within 0.5 s"),
    ("bad-status", BackendError, "not an HTTP/1.1 response"),
])
async def test_a_broken_answer_is_an_error_and_the_pool_goes_on(hostile: int, case: str, error: type[BackendError],
                                                                match: str) -> None:
    pool = H1Pool(head_timeout_s=0.5)
    async with responsive():
        with pytest.raises(error, match=match):
            await ask(pool, hostile, case)
        r, body = await ask(pool, hostile, "ok")
    assert (r.status, json.loads(body)["choices"][0]["message"]["content"]) == (200, "ok")
    pool.close()


@pytest.mark.parametrize("case", ["http10-keepopen", "garbage-after-body"])
async def test_a_connection_that_cannot_be_trusted_again_is_not_reused(hostile: int, case: str) -> None:
    """Regression: an HTTP/1.0 answer went back to the pool, and the next request on it hung."""
    pool = H1Pool(head_timeout_s=5)
    async with responsive():
        first, body = await ask(pool, hostile, case)
        second, _ = await ask(pool, hostile, "ok")
    assert json.loads(body)["choices"][0]["message"]["content"] == "ok"
    assert second.status == 200 and connection(second) != connection(first)
    pool.close()
