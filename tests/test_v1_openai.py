"""/v1 through a real `hal0 serve`, real llama-server slots and the official OpenAI SDK."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
import tomli_w

from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.openapi import llama_chat_quirks, validate
from tests.helpers.serve import Served, serving
from tests.helpers.slots import slot_toml

pytestmark = [pytest.mark.backends, pytest.mark.slow]
BOX_KEY = "sk-box-secret"


class _Box(BaseHTTPRequestHandler):
    """Another OpenAI-compatible box: lists one model and echoes who called it."""

    def log_message(self, *a: object) -> None:
        pass

    def _json(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._json({"object": "list", "data": [{"id": "box-model", "object": "model", "created": 0,
                                                 "owned_by": "box"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("/images/generations"):  # answers with what it was asked
            self._json({"created": 0, "data": [{"url": f"http://box/{body['model']}/{body['prompt']}.png"}]})
            return
        self._json({"id": "chatcmpl-box", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                 "message": {"role": "assistant", "refusal": None,
                                             "content": f"auth={self.headers.get('Authorization')}"}}]})




@pytest.fixture(scope="module")
def box() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Box)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def hal0(tmp_path_factory: pytest.TempPathFactory, box: int) -> Iterator[tuple[Served, str]]:
    home = tmp_path_factory.mktemp("v1")
    m = manifest()
    models = m["models"]
    etc = home / "etc"
    (etc / "slots").mkdir(parents=True)
    lo = free_port(span=31)
    (etc / "hal0.toml").write_text(tomli_w.dumps({
        "slots": {"port_range": [lo, lo + 30], "wait_ready_s": 60},
        "providers": {"llama-server": {"bin": m["llama_server"]["bin"], "env": m["llama_server"]["env"]}},
        "upstreams": {"box": {"url": f"http://127.0.0.1:{box}/v1", "api_key_env": "BOX_KEY"},
                      "dead": {"url": f"http://127.0.0.1:{free_port()}/v1", "models": ["dead-model"]}},
    }))
    slots = {
        "primary": slot_toml("primary", models["tiny-chat"]),
        "embed": slot_toml("embed", models["all-minilm-l6-v2"], ctx=512),
        "embed-rerank": slot_toml("embed-rerank", models["tiny-rerank"], extra=("--reranking",), ctx=512),
        "cold": slot_toml("cold", models["tiny-chat"], max_queue=128),
        "tight": slot_toml("tight", models["tiny-chat"], max_inflight=1, max_queue=0),
        "long": slot_toml("long", models["gemma3-270m"], ctx=4096),
    }
    for name in ("stt", "tts", "img"):
        slots[name] = slot_toml(name, "", enabled=False, provider={"stt": "moonshine", "tts": "kokoro"}.get(
            name, "comfyui"))
    for name, text in slots.items():
        (etc / "slots" / f"{name}.toml").write_text(text)
    subprocess.run([*HAL0, "init"], env=hal0_env(home), check=True, capture_output=True)
    made = subprocess.run([*HAL0, "token", "create", "sdk", "--json"], env=hal0_env(home), check=True,
                          capture_output=True, text=True)
    token = json.loads(made.stdout)["token"]
    with serving(home, env=hal0_env(home, BOX_KEY=BOX_KEY)) as s:
        admin = (etc / "admin.token").read_text().strip()
        for name in ("primary", "embed", "embed-rerank", "cold", "tight", "long"):
            s.load(name, admin)
        yield s, token
        s.stop()


@contextmanager
def open_stream(s: Served, token: str, body: dict[str, Any], path: str = "/v1/chat/completions") -> Iterator[None]:
    """A streaming request on a raw socket, held open after its first SSE event, closed on exit."""
    data = json.dumps(body).encode()
    port = int(s.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        got = b""
        while b"data: " not in got:
            chunk = sock.recv(65536)
            assert chunk, "the stream ended before its first event"
            got += chunk
        assert got.startswith(b"HTTP/1.1 200")
        yield


def admin_get(hal0: tuple[Served, str], path: str) -> Any:
    s, _ = hal0
    token = (s.home / "etc/admin.token").read_text().strip()
    return s.get(path, token)[1]


def test_models_list_answers_from_memory_in_order(client: openai.OpenAI) -> None:
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert ids[:5] == ["primary", "embed", "stt", "tts", "img"]
    assert {"cold", "tight", "long", "embed-rerank", "tiny-chat", "all-minilm-l6-v2-f16", "box-model"} <= set(ids)
    assert all(m.owned_by == "hal0" for m in page.data)
    raw = client.models.with_raw_response.list()
    body = json.loads(raw.content)
    validate("ListModelsResponse", body)
    primary = body["data"][0]
    assert (primary["slot"], primary["state"], primary["modality"]) == ("primary", "ready", "chat")
    assert client.models.retrieve("tiny-chat").id == "tiny-chat"


def test_chat_non_streaming_validates(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=4,
        extra_body={"ignore_eos": True})
    assert raw.headers["X-Hal0-Slot"] == "primary"
    body = json.loads(raw.content)
    validate("CreateChatCompletionResponse", llama_chat_quirks(body))
    assert body["model"] == "tiny-chat" and body["usage"]["completion_tokens"] == 4


def test_chat_streaming_chunks_validate_and_end_with_done(hal0: tuple[Served, str]) -> None:
    s, token = hal0
    req = urllib.request.Request(s.url + "/v1/chat/completions", json.dumps({
        "model": "primary", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "stream": True,
        "ignore_eos": True, "stream_options": {"include_usage": True}}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    assert [ch["finish_reason"] for c in chunks for ch in c["choices"]][-1] == "length"


def test_sdk_stream_and_completions(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="primary", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=3, stream=True, extra_body={"ignore_eos": True},
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    raw = client.completions.with_raw_response.create(model="primary", prompt="hello", max_tokens=3)
    validate("CreateCompletionResponse", json.loads(raw.content))


def test_async_sdk_chat(hal0: tuple[Served, str]) -> None:
    s, token = hal0

    async def run() -> str:
        async with openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=token, max_retries=0) as aclient:
            out = await aclient.chat.completions.create(model="tiny-chat", max_tokens=2,
                                                        messages=[{"role": "user", "content": "hi"}])
            return out.model
    assert asyncio.run(run()) == "tiny-chat"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_rank_similar_sentences_closer(client: openai.OpenAI) -> None:
    sentences = ["A man is eating food.", "A man is eating bread.", "A man is riding a horse."]
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=sentences,
                                                     encoding_format="float")
    body = json.loads(raw.content)
    validate("CreateEmbeddingResponse", body)
    a, b, c = (d["embedding"] for d in body["data"])
    assert raw.headers["X-Hal0-Slot"] == "embed"
    assert cosine(a, b) > cosine(a, c) + 0.2
    # The SDK's default asks for base64 and decodes it: the same vectors arrive.
    decoded = client.embeddings.create(model="embed", input=sentences).data
    assert cosine(decoded[0].embedding, a) > 0.999


@pytest.mark.parametrize("path", ["/rerankings", "/rerank"])
def test_rerank_reaches_the_rerank_slot(client: openai.OpenAI, path: str) -> None:
    out = client.post(path, body={"query": "hello", "documents": ["hello world", "a horse", "bread"]},
                      cast_to=object)
    assert sorted(r["index"] for r in out["results"]) == [0, 1, 2]  # type: ignore[index]


def test_remote_upstream_gets_its_own_key_not_the_clients(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="box-model", messages=[{"role": "user", "content": "x"}])
    assert out.choices[0].message.content == f"auth=Bearer {BOX_KEY}"


def test_a_remote_upstream_draws_its_own_images(client: openai.OpenAI) -> None:
    out = client.images.generate(model="box-model", prompt="kite", size="1024x1024")
    assert out.data and out.data[0].url == "http://box/box-model/kite.png"


@pytest.mark.parametrize(("call", "exc", "code"), [
    (lambda c: c.chat.completions.create(model="dead-model", messages=[{"role": "user", "content": "x"}]),
     openai.APIStatusError, "upstream.unavailable"),
    (lambda c: c.chat.completions.create(model="primary:llama-70b", messages=[{"role": "user", "content": "x"}]),
     openai.ConflictError, "model.not_loaded"),
    (lambda c: c.chat.completions.create(model="primary", messages=[]),
     openai.BadRequestError, "request.invalid"),
    (lambda c: c.embeddings.create(model="embed", input=""), openai.BadRequestError, "request.invalid"),
    (lambda c: c.models.retrieve("nope"), openai.NotFoundError, "model.not_found"),
])
def test_errors_map_to_sdk_exceptions(client: openai.OpenAI, call: Any, exc: type[Exception], code: str) -> None:
    with pytest.raises(exc) as e:
        call(client)
    assert e.value.body["code"] == code  # type: ignore[attr-defined]


def test_malformed_json_and_bad_auth(hal0: tuple[Served, str]) -> None:
    s, token = hal0
    req = urllib.request.Request(s.url + "/v1/chat/completions", b"{oops", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and json.loads(e.value.read())["error"]["code"] == "request.malformed_json"
    with openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0) as bad, \
            pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="primary", messages=[{"role": "user", "content": "x"}])


def test_a_full_slot_answers_429_before_streaming(hal0: tuple[Served, str], client: openai.OpenAI) -> None:
    s, token = hal0
    body = {"model": "tight", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200000,
            "stream": True, "ignore_eos": True}
    with open_stream(s, token, body):  # the one place is taken, mid-stream
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="tight", messages=[{"role": "user", "content": "x"}])
        assert e.value.body["code"] == "slot.busy"  # type: ignore[index]
        assert e.value.response.headers["Retry-After"] == "1"


def test_a_hundred_requests_to_a_cold_slot_start_one_backend(hal0: tuple[Served, str]) -> None:
    s, token = hal0
    admin = (s.home / "etc/admin.token").read_text().strip()
    req = urllib.request.Request(f"{s.url}/api/slots/cold/unload", b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {admin}"})
    urllib.request.urlopen(req, timeout=60).close()
    before = admin_get(hal0, "/api/slots/cold")["starts"]

    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=token, max_retries=0) as ac:
            outs = await asyncio.gather(*(ac.completions.create(model="cold", prompt="hi", max_tokens=1)
                                          for _ in range(100)))
            return [o.model for o in outs]
    models = asyncio.run(run())
    assert admin_get(hal0, "/api/slots/cold")["starts"] - before == 1
    assert models == ["tiny-chat"] * 100


def test_client_disconnect_stops_generation(hal0: tuple[Served, str]) -> None:
    s, token = hal0
    port = next(x["port"] for x in admin_get(hal0, "/api/slots")["slots"] if x["name"] == "long")
    body = {"model": "long", "prompt": "Once upon a time", "max_tokens": 3500, "stream": True,
            "ignore_eos": True}

    def processing() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/slots", timeout=10) as resp:
            return any(slot["is_processing"] for slot in json.loads(resp.read()))

    with open_stream(s, token, body, "/v1/completions"):
        assert processing()
    # the client went away mid-stream
    # 3500 tokens take Gemma minutes on this machine: stopping within seconds proves the abort.
    deadline = 100
    while processing() and deadline:
        deadline -= 1
        threading.Event().wait(0.1)  # polling a process we do not control
    assert not processing()
