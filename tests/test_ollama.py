"""The Ollama API (/api/chat, /api/generate, /api/embed, /api/tags, ...) through a real `hal0 serve`,
real llama-server slots and the official `ollama` Python library."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import subprocess
import tomllib
import urllib.error
import urllib.request
import zlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ollama
import pytest
import tomli_w

from hal0.config import load_config
from hal0.dialects import ollama as ol
from hal0.errors import ConfigInvalid, RequestInvalid
from hal0.paths import Paths
from hal0.server.ollama_api import OLLAMA_VERSION
from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.hub import FakeHub, fake_hub
from tests.helpers.serve import Served, serving, setup_home
from tests.helpers.slots import slot_toml

# A ChatML template that knows tools (Hermes 2 Pro's <tool_call> form, which llama-server parses),
# so Gemma 3 270M makes real tool calls; its own GGUF template has no tools.
TOOL_TEMPLATE = """\
{%- if tools %}<|im_start|>system
You can call these tools. To call one, answer with <tool_call>{"name": NAME, "arguments": ARGS}</tool_call>.
<tools>{% for tool in tools %}{{ tool | tojson }}{% endfor %}</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{% for tc in message.tool_calls %}<tool_call>{"name": "{{ tc.function.name }}", "arguments": \
{{ tc.function.arguments | tojson }}}</tool_call>{% endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>{{ message.content }}</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}
"""
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
GREEDY = {"temperature": 0, "seed": 7}


class Hal0:
    """A served hal0, its tokens, the Ollama listener's URL, and ollama clients closed at the end."""

    def __init__(self, served: Served, token: str, admin: str, listener: str) -> None:
        self.served, self.token, self.admin, self.listener = served, token, admin, listener
        self._clients: list[ollama.Client] = []
        self.ai = self.client(token)

    def client(self, token: str | None = None, host: str | None = None) -> ollama.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = ollama.Client(host=host or self.served.url, headers=headers, timeout=180)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()




@pytest.fixture(scope="module")
def hal0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hal0]:
    home = tmp_path_factory.mktemp("ollama")
    m = manifest()
    models = m["models"]
    etc = home / "etc"
    (etc / "slots").mkdir(parents=True)
    template = home / "var" / "slots" / "primary" / "tools.jinja"  # backend files live in hal0's folders
    template.parent.mkdir(parents=True)
    template.write_text(TOOL_TEMPLATE)
    lo, listener = free_port(span=31), free_port()
    (etc / "hal0.toml").write_text(tomli_w.dumps({
        "slots": {"port_range": [lo, lo + 30], "wait_ready_s": 120},
        "providers": {"llama-server": {"bin": m["llama_server"]["bin"], "env": m["llama_server"]["env"]}},
        "ollama": {"enabled": True, "host": "127.0.0.1", "port": listener},
    }))
    slots = {
        "primary": slot_toml("primary", models["gemma3-270m"], extra=("--chat-template-file", str(template))),
        "embed": slot_toml("embed", models["all-minilm-l6-v2"], ctx=512),
        "cold": slot_toml("cold", models["tiny-chat"]),
    }
    for name in ("stt", "tts", "img"):
        slots[name] = slot_toml(name, "", enabled=False, provider={"stt": "moonshine", "tts": "kokoro"}.get(
            name, "comfyui"))
    for name, text in slots.items():
        (etc / "slots" / f"{name}.toml").write_text(text)
    subprocess.run([*HAL0, "init"], env=hal0_env(home), check=True, capture_output=True)
    made = subprocess.run([*HAL0, "token", "create", "webui", "--scope", "inference", "--json"],
                          env=hal0_env(home), check=True, capture_output=True, text=True)
    token = json.loads(made.stdout)["token"]
    with serving(home) as s:
        admin = (etc / "admin.token").read_text().strip()
        for name in ("primary", "embed"):
            s.load(name, admin)
        h = Hal0(s, token, admin, f"http://127.0.0.1:{listener}")
        yield h
        h.close()
        s.stop()


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def _png() -> bytes:
    """A 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# --- end to end, with the ollama library ---------------------------------------------------------

@pytest.mark.backends
@pytest.mark.slow
class TestOllamaLibrary:
    def test_list_names_slots_and_what_they_run(self, hal0: Hal0) -> None:
        listed = {m.model: m for m in hal0.ai.list().models}
        assert {"primary", "embed", "cold"} <= set(listed)
        assert listed["primary"].details is not None and listed["primary"].details.family == "gemma3"
        assert listed["primary"].size is not None and listed["primary"].size > 100_000_000
        assert "stt" not in listed  # only what the Ollama API can talk to

    def test_ps_shows_loaded_models_with_size_and_expiry(self, hal0: Hal0) -> None:
        running = {m.model: m for m in hal0.ai.ps().models}
        gemma = running["gemma-3-270m-q4_k_m"]
        assert gemma.size is not None and gemma.size > 100_000_000 and gemma.context_length == 2048
        assert gemma.expires_at is not None and gemma.expires_at.year >= 2999  # idle unload is off: never
        assert "all-minilm-l6-v2-f16" in running

    def test_show_describes_a_model_and_names_what_it_can_do(self, hal0: Hal0) -> None:
        shown = hal0.ai.show("primary:latest")
        assert shown.details is not None and shown.details.family == "gemma3"
        assert shown.capabilities is not None and "completion" in shown.capabilities
        assert shown.modelinfo is not None and shown.modelinfo["gemma3.context_length"] == 32768
        assert shown.parameters == "num_ctx 2048"
        assert shown.template == ""  # this GGUF carries no chat template (llama-server falls back to ChatML)
        assert "<|im_start|>" in (hal0.ai.show("cold").template or "")  # tiny-chat's own
        assert hal0.ai.show("embed").capabilities == ["embedding"]
        with pytest.raises(ollama.ResponseError) as e:
            hal0.ai.show("no-such-model")
        assert e.value.status_code == 404 and e.value.error == "model 'no-such-model' not found"

    def test_chat_with_options_fills_the_counts_and_durations(self, hal0: Hal0) -> None:
        r = hal0.ai.chat(model="primary", messages=[{"role": "user", "content": "Name three colours."}],
                         options={**GREEDY, "num_predict": 8})
        assert r.done and r.done_reason == "length" and r.eval_count == 8
        assert r.message.role == "assistant" and r.message.content
        assert r.prompt_eval_count is not None and r.prompt_eval_count > 5
        assert r.eval_duration is not None and r.eval_duration > 0
        assert r.prompt_eval_duration is not None and r.prompt_eval_duration >= 0
        assert r.total_duration is not None and r.load_duration is not None
        assert r.total_duration > r.eval_duration and r.total_duration >= r.load_duration

    def test_a_streamed_chat_says_what_the_plain_one_says(self, hal0: Hal0) -> None:
        msgs = [{"role": "user", "content": "Count from one to five."}]
        plain = hal0.ai.chat(model="primary:latest", messages=msgs, options={**GREEDY, "num_predict": 12})
        parts = list(hal0.ai.chat(model="primary", messages=msgs, options={**GREEDY, "num_predict": 12}, stream=True))
        assert len(parts) > 3 and all(not p.done for p in parts[:-1])
        last = parts[-1]
        assert last.done and last.done_reason == "length" and last.eval_count == 12
        assert "".join(p.message.content or "" for p in parts) == plain.message.content

    def test_without_stream_in_the_body_ollama_streams(self, hal0: Hal0) -> None:
        """Ollama's default is to stream; the library always says which it wants, curl does not."""
        body = {"model": "primary", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 4}}
        req = urllib.request.Request(hal0.served.url + "/api/chat", json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {hal0.token}"})
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.headers["Content-Type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in r.read().splitlines()]
        assert len(lines) >= 2 and [x["done"] for x in lines] == [False] * (len(lines) - 1) + [True]
        assert lines[-1]["eval_count"] == 4 and lines[-1]["model"] == "primary"

    def test_a_stop_sequence_ends_the_answer(self, hal0: Hal0) -> None:
        r = hal0.ai.chat(model="primary", messages=[{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6"}],
                         options={**GREEDY, "num_predict": 40})
        first = (r.message.content or "").strip()[:1]
        assert first, "the model said nothing"
        stopped = hal0.ai.chat(model="primary", messages=[{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6"}],
                               options={**GREEDY, "num_predict": 40, "stop": [first]})
        assert stopped.done_reason == "stop" and first not in (stopped.message.content or "")

    def test_format_json_schema_gives_that_object(self, hal0: Hal0) -> None:
        schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                  "required": ["name", "age"]}
        r = hal0.ai.chat(model="primary", messages=[{"role": "user", "content": "Describe a person."}],
                         format=schema, options={**GREEDY, "num_predict": 60})
        person = json.loads(r.message.content or "")
        assert isinstance(person["name"], str) and isinstance(person["age"], int)

    def test_format_json_gives_an_object(self, hal0: Hal0) -> None:
        r = hal0.ai.generate(model="primary", prompt='{"a": 1}', format="json", options={**GREEDY, "num_predict": 200})
        assert r.done_reason == "stop", r.response
        assert isinstance(json.loads(r.response or ""), dict)

    def _weather_chat(self) -> list[dict[str, Any]]:
        """Few-shot: earlier calls in Ollama's form (arguments an object) lead the model to the next."""
        return [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
            {"role": "user", "content": "What is the weather in Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
            {"role": "user", "content": "What is the weather in Berlin?"},
        ]

    def test_tool_calls_come_back_with_object_arguments(self, hal0: Hal0) -> None:
        r = hal0.ai.chat(model="primary", messages=self._weather_chat(), tools=[WEATHER],
                         options={**GREEDY, "num_predict": 40})
        calls = r.message.tool_calls or []
        assert calls, r.message.content
        assert calls[0].function.name == "get_weather" and calls[0].function.arguments == {"city": "Berlin"}

    def test_streamed_tool_calls_come_whole(self, hal0: Hal0) -> None:
        parts = list(hal0.ai.chat(model="primary", messages=self._weather_chat(), tools=[WEATHER], stream=True,
                                  options={**GREEDY, "num_predict": 40}))
        calls = [c for p in parts for c in p.message.tool_calls or []]
        assert calls and calls[0].function.arguments == {"city": "Berlin"}
        assert parts[-1].done and parts[-1].eval_count is not None

    def test_generate_and_raw_generate(self, hal0: Hal0) -> None:
        r = hal0.ai.generate(model="primary", prompt="Monday, Tuesday, Wednesday,", system="Continue the list.",
                             options={**GREEDY, "num_predict": 6})
        assert r.done and r.response and r.eval_count == 6 and r.prompt_eval_count is not None
        raw = hal0.ai.generate(model="primary", prompt="Monday, Tuesday, Wednesday,", raw=True,
                               options={**GREEDY, "num_predict": 6})
        assert raw.response and raw.eval_count == 6
        parts = list(hal0.ai.generate(model="primary", prompt="Monday, Tuesday, Wednesday,", raw=True,
                                      options={**GREEDY, "num_predict": 6}, stream=True))
        assert "".join(p.response or "" for p in parts) == raw.response and parts[-1].done

    def test_embed_and_the_older_embeddings(self, hal0: Hal0) -> None:
        texts = ["a cat sits on the mat", "a kitten rests on the rug", "stock markets fell sharply today"]
        r = hal0.ai.embed(model="embed", input=texts)
        vecs = [list(v) for v in r.embeddings]
        assert len(vecs) == 3 and len(vecs[0]) == 384
        assert _cos(vecs[0], vecs[1]) > _cos(vecs[0], vecs[2]) + 0.2
        assert r.prompt_eval_count is not None and r.prompt_eval_count > 10
        old = hal0.ai.embeddings(model="embed", prompt=texts[0])
        assert _cos(list(old.embedding), vecs[0]) > 0.999

    def test_images_reach_the_backend_as_image_parts(self, hal0: Hal0) -> None:
        """No vision model is provisioned: llama-server's refusal, which names the image input it
        recognised, comes back in Ollama's shape with the backend's status."""
        for call in (lambda: hal0.ai.chat(model="cold", messages=[{"role": "user", "content": "what is this?",
                                                                   "images": [_png()]}]),
                     lambda: hal0.ai.generate(model="cold", prompt="what is this?", images=[_png()])):
            with pytest.raises(ollama.ResponseError) as e:
                call()
            assert e.value.status_code == 500 and e.value.error.startswith("image input is not supported")

    def test_keep_alive_zero_unloads_after_the_answer(self, hal0: Hal0) -> None:
        r = hal0.ai.chat(model="cold", messages=[{"role": "user", "content": "hi"}], keep_alive=0,
                         options={"num_predict": 2})
        assert r.done
        status, slot = _get(hal0.served.url + "/api/slots/cold", hal0.admin)
        assert status == 200 and slot["state"] == "offline", slot  # unloaded before the answer came back
        assert "tiny-chat" not in {m.model for m in hal0.ai.ps().models}
        loaded = hal0.ai.generate(model="cold")  # an empty prompt loads the model
        assert loaded.done_reason == "load"
        assert _get(hal0.served.url + "/api/slots/cold", hal0.admin)[1]["state"] == "ready"
        stopped = hal0.ai.generate(model="cold", keep_alive=0)  # what `ollama stop` sends
        assert stopped.done_reason == "unload"
        assert _get(hal0.served.url + "/api/slots/cold", hal0.admin)[1]["state"] == "offline"

    def test_keep_alive_duration_sets_the_expiry(self, hal0: Hal0) -> None:
        before = datetime.now(UTC)
        hal0.ai.chat(model="cold", messages=[{"role": "user", "content": "hi"}], keep_alive="1h",
                     options={"num_predict": 2})
        after = datetime.now(UTC)
        running = {m.model: m for m in hal0.ai.ps().models}
        expires = running["tiny-chat"].expires_at
        assert expires is not None and before + timedelta(minutes=59) < expires < after + timedelta(minutes=61)
        hal0.ai.generate(model="cold", keep_alive=0)

    def test_hal0_errors_come_in_ollamas_shape(self, hal0: Hal0) -> None:
        with pytest.raises(ollama.ResponseError) as e:
            hal0.ai.chat(model="cold:other-model", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 409 and isinstance(e.value.error, str) and "hal0 slot swap" in e.value.error
        with pytest.raises(ollama.ResponseError) as e:  # a stream refused before it began: the same answer
            list(hal0.ai.chat(model="cold:other-model", messages=[{"role": "user", "content": "hi"}], stream=True))
        assert e.value.status_code == 409 and "hal0 slot swap" in e.value.error
        with pytest.raises(ollama.ResponseError) as e:
            hal0.ai.chat(model="embed", messages=[{"role": "user", "content": "hi"}], stream=False)
        assert e.value.status_code == 400 and "serves embeddings" in e.value.error
        with pytest.raises(ollama.ResponseError) as e:
            hal0.ai.chat(model="primary", messages=[{"role": "user", "content": "hi"}], keep_alive="soon")
        assert e.value.status_code == 400 and "keep_alive" in e.value.error
        req = urllib.request.Request(hal0.served.url + "/api/chat", b"{not json", method="POST",
                                     headers={"Authorization": f"Bearer {hal0.token}"})
        with pytest.raises(urllib.error.HTTPError) as raw:
            urllib.request.urlopen(req, timeout=30)
        with raw.value as r:
            assert r.code == 400 and json.loads(r.read())["error"].startswith("request body is not valid JSON")


@pytest.mark.backends
@pytest.mark.slow
class TestAccess:
    def test_an_inference_token_works_and_a_missing_or_wrong_one_is_refused(self, hal0: Hal0) -> None:
        assert hal0.client(hal0.token).list().models
        for client in (hal0.client(None), hal0.client("hal0_wrong")):
            for call in (client.list, client.ps, lambda c=client: c.chat(model="cold", messages=[])):
                with pytest.raises(ollama.ResponseError) as e:
                    call()
                assert e.value.status_code == 401 and isinstance(e.value.error, str)
        status, _ = _get(hal0.served.url + "/api/status", hal0.token)  # hal0's own /api stays admin-only
        assert status == 403
        assert _get(hal0.served.url + "/api/version")[0] == 200  # discovery needs no token

    def test_pull_and_delete_need_admin(self, hal0: Hal0) -> None:
        for call in (lambda: hal0.ai.pull("tiny"), lambda: hal0.ai.delete("tiny")):
            with pytest.raises(ollama.ResponseError) as e:
                call()
            assert e.value.status_code == 403

    def test_the_ollama_listener_serves_only_ollama_without_a_token(self, hal0: Hal0) -> None:
        local = hal0.client(None, host=hal0.listener)
        assert {"primary", "embed"} <= {m.model for m in local.list().models}
        r = local.chat(model="primary", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3})
        assert r.done and r.eval_count == 3
        status, body = _get(hal0.listener + "/api/status", hal0.admin)
        assert status == 404 and "Ollama" in body["error"]["message"]
        assert _get(hal0.listener + "/v1/models")[0] == 404
        status, body = _get(hal0.listener + "/api/version")
        assert status == 200 and body["version"] == OLLAMA_VERSION


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    async with fake_hub() as h:
        yield h


@pytest.mark.backends
@pytest.mark.slow
async def test_pull_streams_progress_then_delete_removes_it(hub: FakeHub, tmp_path: Path) -> None:
    """A pull through hal0's pulls (hf.co/OWNER/REPO:QUANT, Ollama's Hugging Face form), with
    Ollama's NDJSON progress, then delete; on an Ollama listener with `auth = "on"`."""
    tiny = Path(manifest()["models"]["tiny-chat"])
    hub.add("acme/tiny-GGUF", "tiny-chat-Q8_0.gguf", tiny)
    setup_home(tmp_path, manifest()["llama_server"]["bin"], str(tiny))
    cfg = tmp_path / "etc/hal0.toml"
    listener = free_port()
    data = tomllib.loads(cfg.read_text())
    data["ollama"] = {"enabled": True, "host": "127.0.0.1", "port": listener, "auth": "on"}
    cfg.write_text(tomli_w.dumps(data))
    env = hal0_env(tmp_path, HF_ENDPOINT=hub.hub_url)
    with serving(tmp_path, env=env) as s:
        admin = (tmp_path / "etc/admin.token").read_text().strip()
        local = f"http://127.0.0.1:{listener}"  # auth = "on": tokens count there too
        assert (await asyncio.to_thread(_get, local + "/api/tags"))[0] == 401
        assert (await asyncio.to_thread(_get, local + "/api/tags", admin))[0] == 200
        client = ollama.AsyncClient(host=local, headers={"Authorization": f"Bearer {admin}"}, timeout=180)
        try:
            await _pull_and_delete(client, tmp_path, await asyncio.to_thread(lambda: tiny.stat().st_size))
        finally:
            await client.close()
        s.stop()


async def _pull_and_delete(client: ollama.AsyncClient, home: Path, size: int) -> None:
    lines = [p async for p in await client.pull("hf.co/acme/tiny-GGUF:Q8_0", stream=True)]
    assert lines[0].status == "pulling manifest" and lines[-1].status == "success"
    progress = [p for p in lines if p.completed is not None]
    assert progress and progress[-1].completed == progress[-1].total == size
    assert "tiny-gguf-q8_0" in {m.model for m in (await client.list()).models}
    assert (await client.show("tiny-gguf-q8_0")).details.family == "llama"  # type: ignore[union-attr]
    with pytest.raises(ollama.ResponseError) as e:
        await client.pull("hf.co/acme/tiny-GGUF:Q2_K")
    assert e.value.status_code == 404 and "Q8_0" in e.value.error
    assert (await client.delete("tiny-gguf-q8_0")).status == "success"
    assert "tiny-gguf-q8_0" not in {m.model for m in (await client.list()).models}
    assert not await asyncio.to_thread((home / "var/models/tiny-gguf-q8_0").exists)
    with pytest.raises(ollama.ResponseError) as e:
        await client.delete("tiny-gguf-q8_0")
    assert e.value.status_code == 404


# --- config ----------------------------------------------------------------------------------

def test_a_tokenless_listener_must_be_loopback(paths: Paths) -> None:
    paths.hal0_toml.parent.mkdir(parents=True)
    paths.hal0_toml.write_text('[ollama]\nenabled = true\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigInvalid) as e:
        load_config(paths)
    assert e.value.code == "config.invalid" and "ollama.host" in e.value.message
    paths.hal0_toml.write_text('[ollama]\nenabled = true\nhost = "0.0.0.0"\nauth = "on"\n')
    assert load_config(paths).ollama.host == "0.0.0.0"
    paths.hal0_toml.write_text('[ollama]\nenabled = true\nport = 8080\n')
    with pytest.raises(ConfigInvalid) as e:
        load_config(paths)
    assert "ollama.port" in e.value.message
    paths.hal0_toml.write_text('[ollama]\nenabled = "yes"\n')
    with pytest.raises(ConfigInvalid):
        load_config(paths)


# --- pure translation ------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "seconds"), [
    (None, None), (0, 0.0), ("0", 0.0), (300, 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5s", 1.5),
    ("250ms", 0.25), (-1, -1.0), ("-1", -1.0), ("-5m", -1.0),
    # found by the fuzz: a timer that far out overflowed `expires_at` (500 on /api/ps): forever instead
    (1e300, -1.0), ("9999999h", -1.0), (float("nan"), -1.0), ("nan", -1.0)])
def test_keep_alive_durations(given: Any, seconds: float | None) -> None:
    assert ol.parse_keep_alive(given) == seconds


@pytest.mark.parametrize("bad", ["soon", "5 m", "m5", True, [1], "5m3"])
def test_keep_alive_refuses_what_is_no_duration(bad: Any) -> None:
    with pytest.raises(RequestInvalid):
        ol.parse_keep_alive(bad)


def test_a_chat_request_becomes_an_openai_one() -> None:
    body = ol.chat_request({
        "model": "primary:latest", "format": "json", "think": False,
        "options": {"temperature": 0.2, "top_k": 5, "top_p": 0.9, "seed": 3, "stop": "END", "num_predict": 7,
                    "num_ctx": 99999, "num_gpu": 3},
        "messages": [
            {"role": "user", "content": "look", "images": ["iVBORw0KGgoAAAA"]},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            {"role": "tool", "tool_name": "f", "content": "42"}],
        "tools": [{"function": {"name": "f", "parameters": {"type": "object"}}}]})
    assert body["model"] == "primary" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert {k: body[k] for k in ("temperature", "top_k", "top_p", "seed", "stop", "max_tokens")} == {
        "temperature": 0.2, "top_k": 5, "top_p": 0.9, "seed": 3, "stop": ["END"], "max_tokens": 7}
    assert "num_ctx" not in json.dumps(body) and "num_gpu" not in json.dumps(body)
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    user, assistant, tool = body["messages"]
    assert user["content"] == [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {
        "url": "data:image/png;base64,iVBORw0KGgoAAAA"}}]
    call = assistant["tool_calls"][0]
    assert call["function"] == {"name": "f", "arguments": '{"a": 1}'} and tool["tool_call_id"] == call["id"]
    assert body["tools"][0]["type"] == "function"


def test_a_stream_becomes_ndjson_with_whole_tool_calls_and_counts() -> None:
    s = ol.ChatStream("m", ol.Timing())
    chunks = [
        {"choices": [{"delta": {"role": "assistant", "content": None}}]},
        {"choices": [{"delta": {"content": "Hel"}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f",
                                                                                 "arguments": "{\"a"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\": 1}"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 1, "id": "d", "function": {"name": "f",
                                                                                 "arguments": "{\"a\": "}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4},
         "timings": {"prompt_ms": 2.5, "predicted_ms": 10.0}},
    ]
    lines = [line for c in chunks for line in s.feed(c)]
    assert [x["message"]["content"] for x in lines] == ["Hel", ""]
    # the second call was cut off (its arguments are no JSON object): dropped, not passed on broken
    assert lines[1]["message"]["tool_calls"] == [{"id": "c", "function": {"index": 0, "name": "f",
                                                                          "arguments": {"a": 1}}}]
    final = s.final()
    assert final["done"] and final["done_reason"] == "stop"
    assert (final["prompt_eval_count"], final["eval_count"]) == (11, 4)
    assert (final["prompt_eval_duration"], final["eval_duration"]) == (2_500_000, 10_000_000)


def test_sse_is_split_at_any_byte() -> None:
    d = ol.SSEDecoder()
    stream = b'data: {"a": 1}\n\ndata: [DONE]\n\n'
    got = [p for i in range(len(stream)) for p in d.feed(stream[i:i + 1])]
    assert got == ['{"a": 1}', "[DONE]"]
    failed = d.feed(b'error: {"error": {"code": 500, "message": "boom"}}\n\n')
    assert [json.loads(p) for p in failed] == [{"error": {"code": 500, "message": "boom"}}]


def test_pull_names() -> None:
    assert ol.pull_ref("hf.co/acme/x-GGUF:Q8_0") == "hf://acme/x-GGUF:Q8_0"
    assert ol.pull_ref("hf.co/acme/x-GGUF") == "hf://acme/x-GGUF:Q4_K_M"
    assert ol.pull_ref("gemma3-270m:latest") == "gemma3-270m"
    assert ol.pull_ref("hf://acme/x/y.gguf") == "hf://acme/x/y.gguf"


def test_an_answer_with_thinking_and_tool_calls_becomes_ollamas() -> None:
    answer = {"choices": [{"finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "reasoning_content": "the user wants weather",
        "tool_calls": [{"id": "x", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Oslo\"}"}},
                       {"id": "y", "type": "function", "function": {"name": "w", "arguments": "[1, 2]"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9}}
    out = ol.chat_response(answer, "primary:latest", ol.Timing())
    assert out["model"] == "primary:latest" and out["done"] and out["done_reason"] == "stop"
    assert out["message"] == {"role": "assistant", "content": "", "thinking": "the user wants weather",
                              "tool_calls": [{"id": "x", "function": {"index": 0, "name": "w",
                                                                      "arguments": {"city": "Oslo"}}}]}
    assert (out["prompt_eval_count"], out["eval_count"]) == (3, 9) and "eval_duration" not in out
    streamed = ol.ChatStream("m", ol.Timing())
    lines = list(streamed.feed({"choices": [{"delta": {"reasoning_content": "hmm"}}]}))
    assert lines[0]["message"] == {"role": "assistant", "content": "", "thinking": "hmm"}


def test_generate_picks_chat_or_plain_completions() -> None:
    path, body = ol.generate_request({"model": "m", "prompt": "p", "system": "s", "images": ["/9j/4AAQ"],
                                      "think": "high", "stream": False})
    assert path == "/v1/chat/completions" and body["stream"] is False and "stream_options" not in body
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
    assert body["messages"] == [{"role": "system", "content": "s"},
                                {"role": "user", "content": [{"type": "text", "text": "p"}, image]}]
    assert body["reasoning_effort"] == "high" and body["chat_template_kwargs"] == {"enable_thinking": True}
    path, body = ol.generate_request({"model": "m", "prompt": "def f(", "suffix": "return x",
                                      "format": {"type": "object"}})
    assert path == "/v1/completions" and body["prompt"] == "def f(" and body["suffix"] == "return x"
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    with pytest.raises(RequestInvalid):
        ol.generate_request({"model": "m", "prompt": "x", "raw": True, "images": ["abc"]})
    with pytest.raises(RequestInvalid):
        ol.chat_request({"model": "m", "messages": [], "format": "yaml"})
    with pytest.raises(RequestInvalid):
        ol.chat_request({"model": "", "messages": []})


def test_expiry_times_past_the_year_3000_are_written_as_never() -> None:
    assert ol.rfc3339(1e18) == ol.rfc3339(ol.NEVER) == "3000-01-01T00:00:00.000000Z"
