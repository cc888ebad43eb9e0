"""Every client's dialect on :8080 with its real client: the official `anthropic` SDK (Messages),
the `openai` SDK (Responses, fill-in-the-middle, usage chunks), llama.cpp's router model API, and
the /v1/models fields UIs read, through a real `hal0 serve` and real llama-server slots.

`primary` runs Gemma 3 270M where the answer matters. Gemma has no fill-in-the-middle tokens and
no small FIM-trained GGUF ships on PyPI, so the slot tells llama-server to use three of Gemma's
unused tokens as FIM markers (`--override-kv`): /infill then works, and what is checked is that
the suffix reaches the model, not the quality of the infill."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import openai
import pytest
import tomli_w

from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.serve import Served, serving
from tests.helpers.slots import slot_toml

pytestmark = [pytest.mark.backends, pytest.mark.slow]
FACT, QUESTION = "My favourite fruit is the pineapple.", "What is my favourite fruit?"
FIM_TOKENS = "tokenizer.ggml.fim_pre_token_id=int:7,tokenizer.ggml.fim_suf_token_id=int:8," \
             "tokenizer.ggml.fim_mid_token_id=int:9"  # <unused1..3> in Gemma 3's vocabulary




class _OldBox(BaseHTTPRequestHandler):
    """An OpenAI-compatible box without /v1/responses (an older server): 404 there; chat
    completions are relayed to a real llama-server (``target``), byte for byte."""

    target = ""

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:
        data = json.dumps({"object": "list", "data": [{"id": "old-model", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not self.path.endswith("/chat/completions"):
            data = b'{"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        req = urllib.request.Request(self.target + "/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            self.send_response(r.status)
            self.send_header("Content-Type", r.headers["Content-Type"])
            self.send_header("Connection", "close")
            self.end_headers()
            while chunk := r.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()


@pytest.fixture(scope="module")
def hal0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str, str]]:
    """hal0 with Gemma in primary, tiny models in `cold` and `embed`, a disabled slot `off`, and
    a remote box without /v1/responses in front of primary's llama-server. Yields the server,
    an inference token and the admin token."""
    home = tmp_path_factory.mktemp("dialects")
    m = manifest()
    models = m["models"]
    etc = home / "etc"
    (etc / "slots").mkdir(parents=True)
    lo = free_port(span=31)
    primary_port = free_port()
    box = ThreadingHTTPServer(("127.0.0.1", 0), _OldBox)
    _OldBox.target = f"http://127.0.0.1:{primary_port}"
    threading.Thread(target=box.serve_forever, daemon=True).start()
    (etc / "hal0.toml").write_text(tomli_w.dumps({
        "slots": {"port_range": [lo, lo + 30], "wait_ready_s": 120},
        "providers": {"llama-server": {"bin": m["llama_server"]["bin"], "env": m["llama_server"]["env"]}},
        "upstreams": {"old": {"url": f"http://127.0.0.1:{box.server_address[1]}/v1", "models": ["old-model"]}},
    }))
    slots = {
        "primary": slot_toml("primary", models["gemma3-270m"], extra=("--override-kv", FIM_TOKENS)),
        "embed": slot_toml("embed", models["tiny-embed"], ctx=512),
        "ids": slot_toml("ids", models["tiny-embed"], ctx=512, extra=("--embedding",), ids=True),
        "cold": slot_toml("cold", models["tiny-chat"]),
        "off": slot_toml("off", models["tiny-chat"], enabled=False),
    }
    slots["primary"] = slots["primary"].replace(f"port = {_port_of(slots['primary'])}", f"port = {primary_port}")
    for name in ("stt", "tts", "img"):
        provider = {"stt": "whisper", "tts": "kokoro"}.get(name, "comfyui")
        slots[name] = slot_toml(name, "", enabled=False, provider=provider)
    for name, text in slots.items():
        (etc / "slots" / f"{name}.toml").write_text(text)
    subprocess.run([*HAL0, "init"], env=hal0_env(home), check=True, capture_output=True)
    made = subprocess.run([*HAL0, "token", "create", "dialects", "--json"], env=hal0_env(home), check=True,
                          capture_output=True, text=True)
    token = json.loads(made.stdout)["token"]
    try:
        with serving(home) as s:
            admin = (etc / "admin.token").read_text().strip()
            for name in ("primary", "cold"):
                s.load(name, admin)
            yield s, token, admin
            s.stop()
    finally:
        box.shutdown()
        box.server_close()


def _port_of(toml: str) -> int:
    return int(next(line for line in toml.splitlines() if line.startswith("port = ")).split("=")[1])


def _other_token(s: Served) -> str:
    made = subprocess.run([*HAL0, "token", "create", "other", "--json"], env=hal0_env(s.home), check=True,
                          capture_output=True, text=True)
    return str(json.loads(made.stdout)["token"])


def _request(s: Served, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(s.url + path, data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=180) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), json.loads(e.read())


def _sse_data(s: Served, path: str, token: str, body: dict[str, Any]) -> list[Any]:
    req = urllib.request.Request(s.url + path, json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=180) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        lines = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


@pytest.fixture
def claude(hal0: tuple[Served, str, str]) -> Iterator[anthropic.Anthropic]:
    s, token, _ = hal0
    with anthropic.Anthropic(base_url=s.url, api_key=token, max_retries=0) as client:
        yield client


@pytest.fixture
def oai(hal0: tuple[Served, str, str]) -> Iterator[openai.OpenAI]:
    s, token, _ = hal0
    with openai.OpenAI(base_url=s.url + "/v1", api_key=token, max_retries=0) as client:
        yield client


# --- Anthropic Messages ----------------------------------------------------------------

def test_anthropic_create_stream_and_count(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="primary", max_tokens=8,
                                 messages=[{"role": "user", "content": "The capital of France is"}])
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens == 8 and msg.stop_reason == "max_tokens"
    with claude.messages.stream(model="primary", max_tokens=6,
                                messages=[{"role": "user", "content": "Hello there"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text and final.usage.output_tokens == 6  # type: ignore[union-attr]
    short = claude.messages.count_tokens(model="primary", messages=[{"role": "user", "content": "Hi"}])
    long = claude.messages.count_tokens(model="primary",
                                        messages=[{"role": "user", "content": "Hi, how are you doing today?"}])
    assert 0 < short.input_tokens < long.input_tokens


def test_anthropic_errors_map_to_sdk_exceptions(hal0: tuple[Served, str, str], claude: anthropic.Anthropic) -> None:
    s, _, _ = hal0
    bad = anthropic.Anthropic(base_url=s.url, api_key="hal0_nope_nope", max_retries=0)
    with bad, pytest.raises(anthropic.AuthenticationError) as auth:
        bad.messages.create(model="primary", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert auth.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": auth.value.body["error"]["message"],  # type: ignore[index]
        "code": "auth.invalid", "details": {}}}
    with pytest.raises(anthropic.ConflictError) as conflict:  # hal0's own 409, in Anthropic's shape
        claude.messages.create(model="cold:other-model", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert conflict.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "hal0 slot swap cold --model other-model" in conflict.value.message
    with pytest.raises(anthropic.BadRequestError) as bad_request:
        claude.messages.create(model="primary", max_tokens=4, messages=[])
    assert bad_request.value.body["error"]["code"] == "request.invalid"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as disabled:  # 503, and no retry could help
        claude.messages.create(model="off", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert disabled.value.status_code == 503 and disabled.value.response.headers["x-should-retry"] == "false"
    assert disabled.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_anthropic_backend_error_is_rewritten(hal0: tuple[Served, str, str]) -> None:
    """llama-server answers a bad request in OpenAI's shape; the client gets Anthropic's."""
    s, token, _ = hal0
    status, _, body = _request(s, "POST", "/v1/messages", {  # a field hal0 leaves to the backend to check
        "model": "primary", "max_tokens": 4, "temperature": "hot", "messages": [{"role": "user", "content": "hi"}]},
        {"x-api-key": token})
    assert (status, body["type"], body["error"]["type"]) == (400, "error", "invalid_request_error"), body
    assert body["error"]["message"] == "Field 'temperature': [json.exception.type_error.302] type must be number, " \
        "but is string"


# --- OpenAI Responses ------------------------------------------------------------------

def test_responses_plain_stream_and_follow_up(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="primary", input=FACT,
                                 max_output_tokens=12, temperature=0)
    assert first.status in ("completed", "incomplete") and first.id.startswith("resp_")
    follow = oai.responses.create(model="primary", input=QUESTION, max_output_tokens=12,
                                  temperature=0, previous_response_id=first.id)
    assert "pineapple" in follow.output_text.lower()
    assert follow.previous_response_id == first.id
    alone = oai.responses.create(model="primary", input=QUESTION, max_output_tokens=12,
                                 temperature=0)
    assert "pineapple" not in alone.output_text.lower()  # the answer above came from the stored context
    events = list(oai.responses.create(model="primary", input=FACT,
                                       max_output_tokens=12, temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    completed = events[-1].response  # type: ignore[union-attr]
    assert deltas and completed.output_text == deltas
    again = oai.responses.create(model="primary", input=QUESTION, max_output_tokens=12,
                                 temperature=0, previous_response_id=completed.id)  # a streamed one is kept too
    assert "pineapple" in again.output_text.lower()


def test_responses_belong_to_their_token(hal0: tuple[Served, str, str], oai: openai.OpenAI) -> None:
    s, _, _ = hal0
    resp = oai.responses.create(model="cold", input="hi", max_output_tokens=2)
    assert oai.responses.retrieve(resp.id).id == resp.id
    with openai.OpenAI(base_url=s.url + "/v1", api_key=_other_token(s), max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(resp.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model="cold", input="more", previous_response_id=resp.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(resp.id)
    oai.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError) as gone:
        oai.responses.retrieve(resp.id)
    assert gone.value.code == "response.not_found"
    stored = list((s.home / "var/responses").glob(f"*/{resp.id}.json"))
    assert stored == []


def test_responses_translated_for_a_backend_without_them(oai: openai.OpenAI) -> None:
    """A box that answers 404 on /v1/responses gets chat completions; the answer is a Response."""
    first = oai.responses.create(model="old-model", input=FACT,
                                 max_output_tokens=12, temperature=0)
    assert first.object == "response" and first.output[0].type == "message" and first.usage is not None
    follow = oai.responses.create(model="old-model", input=QUESTION, max_output_tokens=12,
                                  temperature=0, previous_response_id=first.id)
    assert "pineapple" in follow.output_text.lower()
    events = list(oai.responses.create(model="old-model", input="Say hi", max_output_tokens=5, stream=True))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas == events[-1].response.output_text  # type: ignore[union-attr]


# --- fill-in-the-middle and usage chunks ---------------------------------------------------

def test_fim_through_completions_with_suffix(hal0: tuple[Served, str, str], oai: openai.OpenAI) -> None:
    prefix = "def add(a, b):\n    return "
    short = oai.completions.create(model="primary", prompt=prefix, suffix="\n", max_tokens=6, temperature=0)
    long = oai.completions.create(model="primary", prompt=prefix, suffix="\n\nprint(add(1, 2))\nprint(add(3, 4))\n",
                                  max_tokens=6, temperature=0)
    assert short.object == "text_completion" and isinstance(short.choices[0].text, str)
    assert short.usage is not None and long.usage is not None
    assert long.usage.prompt_tokens > short.usage.prompt_tokens  # the suffix reached the model
    assert short.choices[0].finish_reason in ("length", "stop")
    chunks = list(oai.completions.create(model="primary", prompt=prefix, suffix="\n", max_tokens=4, stream=True,
                                         stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    s, token, _ = hal0
    status, headers, body = _request(s, "POST", "/infill", {"input_prefix": prefix, "input_suffix": "\n",
                                                            "n_predict": 3}, {"Authorization": f"Bearer {token}"})
    assert status == 200 and body["tokens_predicted"] == 3 and headers["X-Hal0-Slot"] == "primary"


def test_every_stream_that_asks_ends_with_a_usage_chunk(hal0: tuple[Served, str, str], oai: openai.OpenAI) -> None:
    chat = list(oai.chat.completions.create(model="cold", messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                                            stream=True, stream_options={"include_usage": True}))
    completion = list(oai.completions.create(model="cold", prompt="hello", max_tokens=3, stream=True,
                                              stream_options={"include_usage": True}))
    for chunks in (chat, completion):
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 3
        assert all(c.usage is None for c in chunks[:-1])
    s, token, _ = hal0
    raw = _sse_data(s, "/v1/completions", token, {"model": "cold", "prompt": "hello", "max_tokens": 2,
                                                  "stream": True, "stream_options": {"include_usage": True}})
    assert raw[-1] == "[DONE]" and raw[-2]["choices"] == [] and raw[-2]["usage"]["completion_tokens"] == 2


# --- OpenAI details ----------------------------------------------------------------------

def test_embeddings_refuse_token_ids(oai: openai.OpenAI) -> None:
    """LangChain sends OpenAI-tokenizer ids by default: refused unless the slot opts in."""
    for ids in ([[9906, 1917]], [9906, 1917]):
        with pytest.raises(openai.BadRequestError) as e:
            oai.embeddings.create(model="embed", input=ids)
        assert "token ids" in e.value.message and "check_embedding_ctx_length=False" in e.value.message
    out = oai.embeddings.create(model="ids", input=[[5, 6, 7]], encoding_format="float")
    assert len(out.data) == 1 and len(out.data[0].embedding) == 64


def test_disabled_slot_says_do_not_retry(hal0: tuple[Served, str, str]) -> None:
    s, token, _ = hal0
    status, headers, body = _request(s, "POST", "/v1/chat/completions", {
        "model": "off", "messages": [{"role": "user", "content": "hi"}]}, {"Authorization": f"Bearer {token}"})
    assert (status, body["error"]["code"], headers["x-should-retry"]) == (503, "slot.disabled", "false")


# --- model status for UIs ------------------------------------------------------------------

def test_v1_models_carry_capabilities_and_context(hal0: tuple[Served, str, str]) -> None:
    s, _, _ = hal0
    _, body = s.get("/v1/models")
    by_id = {e["id"]: e for e in body["data"]}
    assert by_id["primary"]["context_length"] == 2048  # the slot's context (Gemma was trained on 32768)
    assert by_id["primary"]["capabilities"] == ["chat", "completion", "tools"]
    assert by_id["embed"]["capabilities"] == ["embed"] and by_id["tts"]["capabilities"] == ["tts"]
    assert by_id["gemma-3-270m-q4_k_m"]["slot"] == "primary"
    _, chat = s.get("/v1/models?capability=chat")
    ids = [e["id"] for e in chat["data"]]
    assert {"primary", "cold", "off", "gemma-3-270m-q4_k_m"} <= set(ids)
    assert not {"embed", "stt", "tts", "img"} & set(ids)
    _, audio = s.get("/v1/audio/models")
    assert [m["id"] for m in audio["models"]] == ["stt", "tts"]


def test_router_models_status_follows_load_and_unload(hal0: tuple[Served, str, str]) -> None:
    s, token, admin = hal0
    auth = {"Authorization": f"Bearer {admin}"}
    status, _, body = _request(s, "GET", "/models", headers={"Authorization": f"Bearer {token}"})
    entry = {e["id"]: e for e in body["data"]}["cold"]
    assert status == 200 and entry["status"]["value"] == "loaded" and "tiny-chat" in entry["aliases"]
    assert _request(s, "POST", "/models/unload", {"model": "cold"}, {"Authorization": f"Bearer {token}"})[0] == 403
    req = urllib.request.Request(s.url + "/models/sse", headers=auth)
    with urllib.request.urlopen(req, timeout=120) as events:
        status, _, body = _request(s, "POST", "/models/unload", {"model": "cold"}, auth)
        assert (status, body["success"], body["status"]["value"]) == (200, True, "unloaded")
        status, _, body = _request(s, "POST", "/models/load", {"model": "tiny-chat"}, auth)
        assert (status, body["id"], body["status"]["value"]) == (200, "cold", "loaded")
        seen: list[str] = []
        while "loaded" not in seen[1:]:
            line = events.readline().decode()
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event["model"] == "cold":
                    assert event["event"] == "status_change"
                    seen.append(event["data"]["status"])
    assert seen[seen.index("unloaded"):] == ["unloaded", "loading", "loading", "loaded"]
    _, _, body = _request(s, "GET", "/models?capability=embed", headers=auth)
    assert [e["id"] for e in body["data"]] == ["embed", "ids"]
    assert _request(s, "POST", "/models/load", {"model": "nope"}, auth)[0] == 404


# --- auth ------------------------------------------------------------------------------

NEW_ROUTES = [("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"), ("POST", "/v1/responses"),
              ("GET", "/v1/responses/resp_x"), ("DELETE", "/v1/responses/resp_x"), ("POST", "/infill"),
              ("GET", "/models"), ("GET", "/models/sse"), ("POST", "/models/load"), ("POST", "/models/unload")]


@pytest.mark.parametrize(("method", "path"), NEW_ROUTES)
def test_new_routes_refuse_missing_and_wrong_tokens(hal0: tuple[Served, str, str], method: str, path: str) -> None:
    s, _, _ = hal0
    body = {"model": "primary"} if method == "POST" else None
    for headers, code in (({}, "auth.missing"), ({"Authorization": "Bearer hal0_x_y"}, "auth.invalid"),
                          ({"x-api-key": "hal0_x_y"}, "auth.invalid")):
        status, _, answer = _request(s, method, path, body, headers)
        got = answer["error"]["code"]
        assert (status, got) == (401, code), (method, path, headers)
        if path.startswith("/v1/messages"):
            assert answer["type"] == "error" and answer["error"]["type"] == "authentication_error"


def test_voice_list_is_public(hal0: tuple[Served, str, str]) -> None:
    """Open WebUI fetches the voices without a token: no 401 (here the tts slot is disabled)."""
    s, _, _ = hal0
    status, headers, body = _request(s, "GET", "/v1/audio/voices")
    assert (status, body["error"]["code"], headers["x-should-retry"]) == (503, "slot.disabled", "false")
