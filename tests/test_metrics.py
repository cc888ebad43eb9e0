"""GET /metrics: the exposition, who may read it, and a real Prometheus scraping hal0."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from hal0.auth import create_token
from hal0.bootstrap import init_tree
from hal0.config import load_config, load_slots
from hal0.config.schema import MetricsConfig
from hal0.dispatch.observe import Relay
from hal0.errors import ModelChecksumMismatch, SlotSwapFailed
from hal0.events import EventBus
from hal0.metrics import Metrics, RequestStats, usage_of
from hal0.metrics.llama import relabel
from hal0.models.pulls import Pulls
from hal0.models.registry import Registry as ModelRegistry
from hal0.paths import Paths
from hal0.server.app import build_app
from hal0.slots import SlotState
from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.hub import Faults, fake_hub
from tests.helpers.serve import Served, sdk, serving, setup_home
from tests.helpers.slots import fake_bin, llama_bin, slot_config, slot_manager

Client = TestClient[web.Request, web.Application]
S = SlotState
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and labels (parsed by prometheus_client)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- usage and relabelling: pure -------------------------------------------------------------

# Shapes llama-server (b10434) answers with, trimmed.
CHAT_BODY = (b'{"choices":[{"finish_reason":"length","index":0,"message":{"role":"assistant","content":'
             b'"the \\"usage\\": {\\"prompt_tokens\\": 999}"}}],"object":"chat.completion","usage":{"completion_tokens"'
             b':5,"prompt_tokens":23,"total_tokens":28,"prompt_tokens_details":{"cached_tokens":0}},"id":"x",'
             b'"timings":{"cache_n":0,"prompt_n":23,"predicted_n":5}}')
STREAM_WITH_USAGE = (b'data: {"choices":[],"object":"chat.completion.chunk","usage":{"completion_tokens":3,'
                     b'"prompt_tokens":23,"total_tokens":26},"timings":{"cache_n":22,"prompt_n":1,"predicted_n":3}}'
                     b'\n\ndata: [DONE]\n\n')
STREAM_WITHOUT_USAGE = (b'data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}],"object":'
                        b'"chat.completion.chunk","timings":{"cache_n":22,"prompt_n":1,"prompt_ms":0.3,'
                        b'"predicted_n":3}}\n\ndata: [DONE]\n\n')
EMBEDDINGS_BODY = (b'{"model":"e","object":"list","usage":{"prompt_tokens":4,"total_tokens":4},'
                   b'"data":[{"embedding":[0.1,0.2],"index":0,"object":"embedding"}]}')


def test_usage_from_bodies_and_stream_ends() -> None:
    assert usage_of(CHAT_BODY) == (23, 5)  # the top-level usage, not the quoted one in the content
    assert usage_of(STREAM_WITH_USAGE) == (23, 3)
    assert usage_of(STREAM_WITHOUT_USAGE) == (23, 3)  # timings: the cached tokens count as prompt
    assert usage_of(EMBEDDINGS_BODY) == (4, 0)
    assert usage_of(b'data: {"choices":[],"usage":null}\n\n') is None
    assert usage_of(b'{"usage":{"prompt_tokens":"many","completion_tokens":-3}}') == (0, 0)
    assert usage_of(b'{"usage":{"prompt_tokens":1, "completion') is None  # cut short: nothing, no error
    assert usage_of(b"\x00\xff RIFF audio") is None
    assert usage_of(b'{"usage":' + b'{"":' * 2000 + b"1" + b"}" * 2000 + b"}") is None  # too deep: ignored


def test_request_stats_count_codes_durations_and_tokens() -> None:
    stats = RequestStats()
    for status, body in ((200, CHAT_BODY), (200, STREAM_WITHOUT_USAGE), (429, b""), (499, b"")):
        relay = Relay()
        started = time.perf_counter()
        if body:
            relay.first_byte, relay.last = started + 0.002, body
        stats.finished("primary", "/v1/chat/completions", status, started, relay)
    stats.finished("primary", "/v1/completions", 503, time.perf_counter(), Relay())

    class Registry:
        def collect(self) -> Any:
            return stats.families()

    from prometheus_client import generate_latest
    found = samples(generate_latest(Registry()).decode())
    chat = {"slot": "primary", "route": "/v1/chat/completions"}
    assert value(found, "hal0_slot_requests_total", **chat, code="200") == 2
    assert value(found, "hal0_slot_requests_total", **chat, code="429") == 1
    assert value(found, "hal0_slot_requests_total", **chat, code="499") == 1
    assert value(found, "hal0_slot_requests_total", slot="primary", route="/v1/completions", code="503") == 1
    assert value(found, "hal0_slot_busy_total", slot="primary") == 1
    assert value(found, "hal0_slot_request_duration_seconds_count", **chat) == 4
    assert value(found, "hal0_slot_time_to_first_byte_seconds_count", **chat) == 2
    assert value(found, "hal0_slot_time_to_first_byte_seconds_bucket", **chat, le="0.001") == 0
    assert value(found, "hal0_slot_time_to_first_byte_seconds_bucket", **chat, le="0.0025") == 2
    assert value(found, "hal0_slot_tokens_total", slot="primary", direction="in") == 46
    assert value(found, "hal0_slot_tokens_total", slot="primary", direction="out") == 8


LLAMA_TEXT = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 24
# HELP llamacpp:n_tokens_max Largest observed sequence length (prompt + generation)
# TYPE llamacpp:n_tokens_max counter
llamacpp:n_tokens_max 27
# TYPE other_metric gauge
other_metric 1
"""


def test_relabel_merges_slots_and_keeps_llama_servers_names() -> None:
    text = relabel({"primary": LLAMA_TEXT, "embed": LLAMA_TEXT.replace("24", "7")}).decode()
    assert text.count("# TYPE llamacpp:prompt_tokens_total counter") == 1
    assert 'llamacpp:prompt_tokens_total{slot="primary"} 24' in text
    assert 'llamacpp:prompt_tokens_total{slot="embed"} 7' in text
    assert 'llamacpp:n_tokens_max{slot="embed"} 27' in text  # not renamed to ..._total
    assert "other_metric" not in text
    found = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "llamacpp:prompt_tokens_total" in found  # the result parses


# --- access: a real aiohttp server ----------------------------------------------------------

def _app(paths: Paths, **metrics: Any) -> web.Application:
    cfg = load_config(paths)
    cfg = dataclasses.replace(cfg, metrics=dataclasses.replace(cfg.metrics, **metrics))
    return build_app(paths, cfg, load_slots(paths), autostart=False)


@pytest.fixture
def tokens(paths: Paths) -> dict[str, str]:
    init_tree(paths)
    return {"admin": paths.admin_token.read_text().strip(),
            "inference": create_token(paths.tokens_toml, "i", "inference")[1],
            "metrics": create_token(paths.tokens_toml, "m", "metrics")[1]}


async def test_who_may_read_metrics(paths: Paths, tokens: dict[str, str], aiohttp_client: Any) -> None:
    client: Client = await aiohttp_client(_app(paths))
    r = await client.get("/metrics")
    assert r.status == 401 and (await r.json())["error"]["code"] == "auth.missing"
    r = await client.get("/metrics", headers=bearer(tokens["inference"]))
    assert r.status == 403 and (await r.json())["error"]["code"] == "auth.forbidden"
    for scope in ("metrics", "admin"):
        r = await client.get("/metrics", headers=bearer(tokens[scope]))
        assert r.status == 200, scope
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        found = samples(await r.text())
        assert value(found, "hal0_slot_state", slot="primary", state="offline") == 1
        assert value(found, "process_resident_memory_bytes") > 0
    # a metrics token reads /metrics and nothing else
    r = await client.get("/api/status", headers=bearer(tokens["metrics"]))
    assert r.status == 403
    r = await client.post("/v1/chat/completions", json={"messages": []}, headers=bearer(tokens["metrics"]))
    assert r.status == 403 and "admin or inference token" in (await r.json())["error"]["message"]
    r = await client.get("/v1/models", headers=bearer(tokens["metrics"]))
    assert r.status == 200  # open to all


async def test_loopback_without_token(paths: Paths, tokens: dict[str, str], aiohttp_client: Any) -> None:
    client: Client = await aiohttp_client(_app(paths, loopback_without_token=True))
    r = await client.get("/metrics")  # the test client connects from 127.0.0.1
    assert r.status == 200
    r = await client.get("/api/status")
    assert r.status == 401  # only /metrics is opened


def _own_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing address
            addr: str = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


async def test_loopback_option_does_not_open_other_addresses(paths: Paths, tokens: dict[str, str]) -> None:
    addr = _own_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    port = free_port()
    server = TestServer(_app(paths, loopback_without_token=True), host="0.0.0.0", port=port)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{addr}:{port}/metrics") as r:
                assert r.status == 401
            async with session.get(f"http://{addr}:{port}/metrics", headers=bearer(tokens["metrics"])) as r:
                assert r.status == 200
    finally:
        await server.close()


async def test_metrics_off_is_a_404_and_no_accounting(paths: Paths, tokens: dict[str, str],
                                                      aiohttp_client: Any) -> None:
    client: Client = await aiohttp_client(_app(paths, enabled=False))
    r = await client.get("/metrics", headers=bearer(tokens["admin"]))
    assert r.status == 404 and "enabled = false" in (await r.json())["error"]["message"]
    from hal0.server.keys import DISPATCHER
    assert client.app is not None and client.app[DISPATCHER]._observer is None


async def test_two_apps_in_one_process_keep_their_own_registries(paths: Paths, tokens: dict[str, str],
                                                                 aiohttp_client: Any) -> None:
    one: Client = await aiohttp_client(_app(paths))
    two: Client = await aiohttp_client(_app(paths))
    for client in (one, two):
        r = await client.get("/metrics", headers=bearer(tokens["admin"]))
        assert r.status == 200 and "hal0_slot_state" in await r.text()


def test_token_create_with_the_metrics_scope(tmp_path: Path) -> None:
    home = tmp_path / "home"
    subprocess.run([*HAL0, "init"], env=hal0_env(home), check=True, capture_output=True)
    out = subprocess.run([*HAL0, "token", "create", "scraper", "--scope", "metrics", "--json"],
                         env=hal0_env(home), check=True, capture_output=True, text=True)
    made = json.loads(out.stdout)
    assert made["scope"] == "metrics" and made["token"].startswith("hal0_")


# --- the slot lifecycle, in-process over real processes -----------------------------------------

async def _scrape(metrics: Metrics) -> Samples:
    async with aiohttp.ClientSession() as session:
        return samples((await metrics.render(session)).decode())


@pytest.mark.slow
async def test_lifecycle_counts_loads_restarts_and_lost_backends(paths: Paths, tmp_path: Path,
                                                                 fake_gguf: str) -> None:
    """The fake backend exits on demand (exited) and is SIGSTOPped (unresponsive); the restart
    policy brings it back each time."""
    metrics = Metrics(MetricsConfig())
    cfg = slot_config("chat", fake_gguf)
    async with slot_manager(paths, [cfg], fake_bin(tmp_path), liveness_interval_s=0.2,
                            liveness_failures=2) as (mgr, _):
        stop = metrics.watch_slots(mgr)
        slot = mgr.get("chat")
        found = await _scrape(metrics)
        assert value(found, "hal0_slot_state", slot="chat", state="offline") == 1
        await slot.ensure_ready()
        found = await _scrape(metrics)
        assert value(found, "hal0_slot_state", slot="chat", state="ready") == 1
        assert value(found, "hal0_slot_state", slot="chat", state="offline") == 0
        assert value(found, "hal0_slot_loads_total", slot="chat", result="ok") == 1
        assert value(found, "hal0_slot_load_duration_seconds_count", slot="chat") == 1

        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):  # it dies before answering
                await http.get(slot.base_url + "/fake/exit")
        await slot.wait_state(S.ERROR, timeout=30)
        await slot.wait_state(S.READY, timeout=30)
        pid = slot.snapshot().pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        await slot.wait_state(S.ERROR, timeout=30)
        await slot.wait_state(S.READY, timeout=30)
        await slot.restart()
        await slot.unload()
        found = await _scrape(metrics)
        assert value(found, "hal0_slot_liveness_failures_total", slot="chat", reason="exited") == 1
        assert value(found, "hal0_slot_liveness_failures_total", slot="chat", reason="unresponsive") == 1
        assert value(found, "hal0_slot_restarts_total", slot="chat", trigger="auto") == 2
        assert value(found, "hal0_slot_restarts_total", slot="chat", trigger="operator") == 1
        assert value(found, "hal0_slot_loads_total", slot="chat", result="ok") == 4
        assert value(found, "hal0_slot_state", slot="chat", state="offline") == 1
        assert value(found, "hal0_slot_state", slot="chat", state="ready") == 0
        stop()


@pytest.mark.slow
@pytest.mark.backends
async def test_swaps_by_result(paths: Paths, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x00" * 64)
    other = tmp_path / "tiny-chat-b.gguf"
    shutil.copyfile(manifest()["models"]["tiny-chat"], other)
    metrics = Metrics(MetricsConfig())
    async with slot_manager(paths, [slot_config("chat", manifest()["models"]["tiny-chat"])], llama_bin()) as (mgr, _):
        metrics.watch_slots(mgr)
        slot = mgr.get("chat")
        await slot.ensure_ready()
        await slot.swap(str(other))
        with pytest.raises(SlotSwapFailed):
            await slot.swap(str(corrupt), force=True)
        found = await _scrape(metrics)
        assert value(found, "hal0_slot_swaps_total", slot="chat", result="ok") == 1
        assert value(found, "hal0_slot_swaps_total", slot="chat", result="rolled_back") == 1
        assert value(found, "hal0_slot_loads_total", slot="chat", result="failed") == 1
        assert value(found, "hal0_slot_loads_total", slot="chat", result="ok") == 3  # first, swap, rollback
        assert value(found, "hal0_slot_info", slot="chat", provider="llama-server", backend="cpu", kind="chat",
                     model="tiny-chat-b") == 1
        # the ready llama-server's own metrics, with the slot label
        assert value(found, "hal0_slot_backend_metrics_up", slot="chat") == 1
        assert ("llamacpp:prompt_tokens_total", frozenset({("slot", "chat")})) in found


@pytest.mark.backends
async def test_pull_bytes_and_results(paths: Paths) -> None:
    """A clean pull counts its bytes and `done`; a corrupted one `failed` (over a local hub)."""
    tiny = Path(manifest()["models"]["tiny-chat"])
    size = (await asyncio.to_thread(tiny.stat)).st_size
    metrics = Metrics(MetricsConfig())
    async with fake_hub() as hub, aiohttp.ClientSession() as session, \
            Pulls(paths, ModelRegistry(paths), session, EventBus(), {"HF_ENDPOINT": hub.hub_url}) as pulls:
        stop = metrics.watch_pulls(pulls)
        hub.add("acme/tiny-GGUF", "tiny-chat.gguf", tiny)
        hub.add("acme/bad-GGUF", "bad.gguf", tiny)
        hub.faults["bad.gguf"] = Faults(corrupt=True)
        await pulls.pull("hf://acme/tiny-GGUF/tiny-chat.gguf")
        with pytest.raises(ModelChecksumMismatch):
            await pulls.pull("hf://acme/bad-GGUF/bad.gguf")
        stop()
        found = await _scrape(metrics)
    assert value(found, "hal0_pulls_total", result="done") == 1
    assert value(found, "hal0_pulls_total", result="failed") == 1
    assert value(found, "hal0_pull_bytes_total") == 2 * size  # the bad one came whole, then failed


# --- end to end: hal0 serve, the real llama-server, the OpenAI SDK and a real Prometheus ------------

N_CHATS = 7


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str, dict[str, int]]]:
    """hal0 with primary on the tiny model, a metrics token from the CLI, and N_CHATS chat requests
    (plain, streamed with and without include_usage) whose reported usage is summed."""
    home = tmp_path_factory.mktemp("hal0")
    m = manifest()
    setup_home(home, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    admin = (home / "etc/admin.token").read_text().strip()
    out = subprocess.run([*HAL0, "token", "create", "prometheus", "--scope", "metrics", "--json"],
                         env=hal0_env(home), check=True, capture_output=True, text=True)
    token = json.loads(out.stdout)["token"]
    with serving(home) as s, sdk(s, admin) as client:
        s.load("primary", admin)
        msgs: Any = [{"role": "user", "content": "hi"}]
        fixed: Any = {"ignore_eos": True}  # always max_tokens out
        first = client.chat.completions.create(model="primary", messages=msgs, max_tokens=4, extra_body=fixed)
        assert first.usage is not None and first.usage.completion_tokens == 4
        prompt = first.usage.prompt_tokens
        for i in range(1, N_CHATS):
            if i % 3 == 0:
                r = client.chat.completions.create(model="primary", messages=msgs, max_tokens=4, extra_body=fixed)
                assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt, 4)
                continue
            with_usage = i % 3 == 1
            chunks = list(client.chat.completions.create(
                model="primary", messages=msgs, max_tokens=4, stream=True, extra_body=fixed,
                stream_options={"include_usage": True} if with_usage else None))
            usage = [(c.usage.prompt_tokens, c.usage.completion_tokens) for c in chunks if c.usage]
            assert usage == ([(prompt, 4)] if with_usage else [])
        yield s, token, {"in": N_CHATS * prompt, "out": N_CHATS * 4}


def _metrics_text(s: Served, token: str) -> str:
    req = urllib.request.Request(s.url + "/metrics", headers=bearer(token))
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()  # type: ignore[no-any-return]


@pytest.mark.parametrize(("route", "extra"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),  # relayed as it comes
    ("/v1/completions", {"prompt": "hi", "stream_options": {"include_usage": True}}),  # rewritten on the way
])
def test_a_client_that_leaves_once_done_came_is_not_counted_as_leaving_early(
        tmp_path: Path, route: str, extra: dict[str, Any]) -> None:
    """The OpenAI SDK closes its connection as soon as it reads ``data: [DONE]``, before the end of
    the chunked body. Here the backend holds that end back, so the client is surely gone before
    the answer ends: the request was answered in full and counts as 200, not 499."""
    m = manifest()
    wrapper = fake_bin(tmp_path)
    setup_home(tmp_path, wrapper.bin, m["models"]["tiny-chat"])
    primary = tmp_path / "etc/slots/primary.toml"
    primary.write_text(primary.read_text().replace("[env]\n", '[env]\nFAKE_SSE_HOLD = "1"\n'))
    admin = (tmp_path / "etc/admin.token").read_text().strip()
    with serving(tmp_path) as s:
        s.load("primary", admin)
        body = json.dumps({"model": "primary", "stream": True, **extra})
        with socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1])), timeout=30) as conn:
            conn.sendall(f"POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
            got = b""
            while b"data: [DONE]" not in got:
                data = conn.recv(65536)
                assert data, got
                got += data
        deadline, found = time.monotonic() + 30, samples("")
        while time.monotonic() < deadline:  # the handler ends once hal0 sees the client gone
            found = samples(_metrics_text(s, admin))
            if value(found, "hal0_slot_request_duration_seconds_count", slot="primary", route=route):
                break
            time.sleep(0.05)  # polling hal0 from outside: nothing to wait on
        assert s.stop() == 0
    codes = {dict(k[1])["code"]: v for k, v in found.items() if k[0] == "hal0_slot_requests_total"}
    assert codes == {"200": 1.0}


@pytest.mark.slow
@pytest.mark.backends
def test_served_metrics_after_real_requests(served: tuple[Served, str, dict[str, int]]) -> None:
    s, token, used = served
    found = samples(_metrics_text(s, token))
    chat = {"slot": "primary", "route": "/v1/chat/completions"}
    assert value(found, "hal0_slot_requests_total", **chat, code="200") == N_CHATS
    assert value(found, "hal0_slot_request_duration_seconds_count", **chat) == N_CHATS
    assert value(found, "hal0_slot_time_to_first_byte_seconds_count", **chat) == N_CHATS
    # plain bodies, streams' usage chunks, and streams without one (llama-server's timings)
    assert value(found, "hal0_slot_tokens_total", slot="primary", direction="in") == used["in"]
    assert value(found, "hal0_slot_tokens_total", slot="primary", direction="out") == used["out"]
    assert value(found, "hal0_slot_state", slot="primary", state="ready") == 1
    assert value(found, "hal0_slot_loads_total", slot="primary", result="ok") == 1
    assert value(found, "hal0_slot_inflight", slot="primary") == 0
    assert value(found, "hal0_slot_memory_bytes", slot="primary", kind="rss") > 4 << 20  # llama-server's tree
    assert not [k for k in found if k[0] == "hal0_slot_memory_bytes" and ("kind", "gpu") in k[1]]  # no GPU here
    assert value(found, "hal0_slot_backend_metrics_up", slot="primary") == 1
    assert value(found, "llamacpp:tokens_predicted_total", slot="primary") >= used["out"]
    assert value(found, "process_resident_memory_bytes") > 0


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def _wait_for(url: str, promql: str, expected: float, proc: subprocess.Popen[bytes], deadline_s: float) -> float:
    """Poll Prometheus until ``promql`` gives ``expected``; returns the last value seen."""
    deadline, seen = time.monotonic() + deadline_s, float("nan")
    while time.monotonic() < deadline:
        assert proc.poll() is None, "prometheus exited"
        try:
            result = _query(url, promql)
        except (urllib.error.URLError, ConnectionError):
            result = []  # not listening yet
        if result:
            seen = float(result[0]["value"][1])
            if seen == expected:
                return seen
        time.sleep(0.2)  # polling an external system: its scrape interval decides
    return seen


@pytest.mark.slow
@pytest.mark.backends
def test_prometheus_scrapes_the_request_count(served: tuple[Served, str, dict[str, int]], tmp_path: Path) -> None:
    s, token, _ = served
    expected = value(samples(_metrics_text(s, token)), "hal0_slot_requests_total", slot="primary",
                     route="/v1/chat/completions", code="200")
    assert expected == N_CHATS
    binary = manifest().get("tools", {}).get("prometheus") or shutil.which("prometheus")
    if not binary:
        pytest.skip("prometheus is not installed (scripts/setup-backends installs it from Debian)")
    port = free_port()
    target = s.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: hal0\n"
        f"    authorization:\n      credentials: {token}\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        query = 'sum(hal0_slot_requests_total{slot="primary",route="/v1/chat/completions",code="200"})'
        got = _wait_for(url, query, expected, proc, 90)
        assert got == expected, (got, (tmp_path / "prometheus.log").read_text()[-2000:])
        assert float(_query(url, 'up{job="hal0"}')[0]["value"][1]) == 1
        assert float(_query(url, 'hal0_slot_state{slot="primary",state="ready"}')[0]["value"][1]) == 1
        assert _query(url, 'llamacpp:tokens_predicted_total{slot="primary"}')  # re-exported, and parsed
    finally:
        proc.terminate()
        proc.wait(30)
