"""Open WebUI managed by hal0: the real Open WebUI 0.12.4 from the manifest, turned on with the
webui card against a real `hal0 serve` with llama-server in primary (Gemma 3 270M) and embed,
driven through Open WebUI's own HTTP API as its browser would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from hal0.config import load_config
from hal0.errors import ConfigInvalid
from hal0.paths import Paths
from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.serve import Served, serving, setup_home

NON_CHAT = ("embed", "stt", "tts", "img", "embed-rerank")


# --- configuration, without a server ----------------------------------------------------------


@pytest.mark.parametrize(("table", "key"), [
    ({"host": "webui.lan"}, "openwebui.host"),
    ({"port": 0}, "openwebui.port"),
    ({"port": 8080}, "openwebui.port"),  # [api].port
    ({"port": 8090}, "openwebui.port"),  # inside [slots].port_range
    ({"enabled": "yes"}, "openwebui.enabled"),
    ({"bin": "open-webui"}, "openwebui.bin"),
    ({"start_timeout_s": 0}, "openwebui.start_timeout_s"),
    ({"secret": "x"}, "openwebui.secret"),
])
def test_an_invalid_openwebui_table_names_the_key(paths: Paths, table: dict[str, Any], key: str) -> None:
    paths.config_dir.mkdir(parents=True)
    paths.hal0_toml.write_text(tomli_w.dumps({"openwebui": table}))
    with pytest.raises(ConfigInvalid) as e:
        load_config(paths)
    assert e.value.code == "config.invalid"
    assert e.value.details["key"] == key


def test_the_defaults_are_off_on_the_public_interface_on_3001(paths: Paths) -> None:
    cfg = load_config(paths).openwebui
    assert (cfg.enabled, cfg.host, cfg.port, cfg.bin) == (False, "0.0.0.0", 3001, "")


def test_the_card_refuses_when_open_webui_is_not_installed(tmp_path: Path) -> None:
    subprocess.run([*HAL0, "init"], env=hal0_env(tmp_path), check=True, capture_output=True)
    for name in ("primary", "embed", "stt", "tts", "img"):
        toml = tmp_path / f"etc/slots/{name}.toml"
        toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
    token = (tmp_path / "etc/admin.token").read_text().strip()
    with serving(tmp_path) as s:
        status, cards = s.get("/api/capabilities", token)
        assert cards["cards"]["webui"]["webui"] | {"enabled": False, "exists": False, "state": "off"} == \
            cards["cards"]["webui"]["webui"]
        status, err = s.post("/api/capabilities/webui/webui", token, {"enabled": True})
        assert (status, err["error"]["code"]) == (501, "slot.provider_unavailable")
        assert "hal0 backend install openwebui" in err["error"]["message"]
        status, err = s.post("/api/capabilities/webui/webui", token, {"enabled": True, "model": "x"})
        assert (status, err["error"]["code"]) == (400, "request.invalid")
    assert not (tmp_path / "etc/capabilities.toml").exists()  # nothing was recorded


# --- the real thing -----------------------------------------------------------------------------


class WebUI:
    """Open WebUI's HTTP API, with the session token of the account signed up."""

    def __init__(self, url: str) -> None:
        self.url, self.token = url, ""

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, None if body is None else json.dumps(body).encode(),
                                     method=method, headers={"Content-Type": "application/json"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.read().decode(errors="replace")


@pytest.fixture(scope="module")
def webui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, WebUI, dict[str, Any]]]:
    m = manifest()
    if not m.get("openwebui"):
        pytest.skip("the manifest has no Open WebUI: scripts/setup-backends could not install it on this machine")
    home = tmp_path_factory.mktemp("webui")
    setup_home(home, m["llama_server"]["bin"], m["models"]["gemma3-270m"],
               also={"embed": m["models"]["all-minilm-l6-v2"]})
    cfg_file = home / "etc/hal0.toml"
    cfg = tomllib.loads(cfg_file.read_text())
    port = free_port()  # loopback in the test; the default is the public interface
    cfg["openwebui"] = {"enabled": False, "host": "127.0.0.1", "port": port, "bin": m["openwebui"]["bin"],
                        "start_timeout_s": 600.0}
    cfg_file.write_text(tomli_w.dumps(cfg))
    with serving(home) as s:
        # turned on as an operator would: the card, through the CLI (it answers once Open WebUI is ready)
        r = subprocess.run([*HAL0, "capability", "enable", "webui", "webui", "--json"], capture_output=True,
                           text=True, env=hal0_env(home, HAL0_URL=s.url), timeout=900)
        assert r.returncode == 0, r.stderr
        card = json.loads(r.stdout)
        if card["state"] != "ready":
            log = (home / "var/openwebui/backend.log")
            raise AssertionError(f"Open WebUI is {card['state']}: {card['message']}\n"
                                 + (log.read_text()[-4000:] if log.exists() else ""))
        yield s, WebUI(f"http://127.0.0.1:{port}"), card


def admin_token(s: Served) -> str:
    return (s.home / "etc/admin.token").read_text().strip()


@pytest.fixture(scope="module")
def first_user(webui: tuple[Served, WebUI, dict[str, Any]]) -> dict[str, Any]:
    """The first account, signed up through Open WebUI's API; its session token is kept in ``ui``."""
    _, ui, _ = webui
    status, user = ui.call("POST", "/api/v1/auths/signup",
                           {"name": "Ada", "email": "ada@example.lan", "password": "correct horse battery"})
    assert status == 200, user
    ui.token = user["token"]
    return dict(user)


@contextlib.contextmanager
def hal0_events(s: Served) -> Iterator[Iterator[tuple[str, dict[str, Any]]]]:
    """hal0's /api/events, subscribed on entry: (kind, data) as they come."""
    req = urllib.request.Request(s.url + "/api/events", headers={"Authorization": f"Bearer {admin_token(s)}"})
    with urllib.request.urlopen(req, timeout=600) as r:
        def read() -> Iterator[tuple[str, dict[str, Any]]]:
            kind = ""
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    yield kind, json.loads(line.removeprefix("data: "))
        yield read()


def next_start(events: Iterator[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The card once Open WebUI's next start is ready (fails on a failed start)."""
    for kind, data in events:
        if kind == "openwebui.state" and data["state"] in ("ready", "backoff", "failed"):
            assert data["state"] == "ready", data
            return data
    raise AssertionError("hal0's event stream ended")


def test_the_card_shows_it_ready_on_its_port(webui: tuple[Served, WebUI, dict[str, Any]]) -> None:
    s, ui, card = webui
    assert (card["card"], card["child"], card["enabled"], card["state"]) == ("webui", "webui", True, "ready")
    assert card["url"] == ui.url
    status, body = s.get("/api/capabilities", admin_token(s))
    assert status == 200 and body["cards"]["webui"]["webui"]["state"] == "ready"
    status, answer = ui.call("GET", "/ready")
    assert (status, answer) == (200, {"status": True})


def test_a_first_admin_lists_only_chat_models_and_chats_with_primary(
        webui: tuple[Served, WebUI, dict[str, Any]], first_user: dict[str, Any]) -> None:
    s, ui, _ = webui
    assert first_user["role"] == "admin"  # the first account is the administrator

    status, models = ui.call("GET", "/api/models")
    assert status == 200, models
    ids = {mdl["id"] for mdl in models["data"]}
    assert "primary" in ids
    assert not ids & set(NON_CHAT), ids
    status, hal0_models = s.get("/v1/models")
    for entry in hal0_models["data"]:  # nothing that cannot chat, by name or by model id
        if "chat" not in entry["capabilities"]:
            assert entry["id"] not in ids

    status, before = s.get("/api/slots/primary/logs?lines=400", admin_token(s))
    status, answer = ui.call("POST", "/api/chat/completions", {
        "model": "primary", "stream": False, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello."}]}, timeout=600)
    assert status == 200, answer
    text = answer["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text.strip()
    # hal0's primary produced it: the answer names primary or the model primary runs, and
    # primary's llama-server logged a generation's timings meanwhile
    status, primary = s.get("/api/slots/primary", admin_token(s))
    assert answer["model"] in ("primary", primary["model"]), answer
    status, after = s.get("/api/slots/primary/logs?lines=400", admin_token(s))
    new = [line for line in after["lines"] if line not in before["lines"]]
    assert any("print_timing" in line for line in new), new[-20:]


def test_speech_transcription_images_and_embeddings_point_at_hal0(
        webui: tuple[Served, WebUI, dict[str, Any]], first_user: dict[str, Any]) -> None:
    """What Open WebUI's own admin settings say it uses: hal0's /v1 and slots, hal0's token."""
    s, ui, _ = webui
    v1, token = s.url + "/v1", (s.home / "var/openwebui/hal0.token").read_text().strip()
    status, audio = ui.call("GET", "/api/v1/audio/config")
    assert status == 200, audio
    for kind, model in (("tts", "tts"), ("stt", "stt")):
        got = audio[kind]
        assert (got["ENGINE"], got["OPENAI_API_BASE_URL"], got["OPENAI_API_KEY"], got["MODEL"]) == (
            "openai", v1, token, model)
    status, images = ui.call("GET", "/api/v1/images/config")
    assert status == 200, images
    assert (images["ENABLE_IMAGE_GENERATION"], images["IMAGE_GENERATION_ENGINE"], images["IMAGE_GENERATION_MODEL"],
            images["IMAGES_OPENAI_API_BASE_URL"], images["IMAGES_OPENAI_API_KEY"]) == (True, "openai", "img", v1, token)
    status, rag = ui.call("GET", "/api/v1/retrieval/embedding")
    assert status == 200, rag
    assert (rag["RAG_EMBEDDING_ENGINE"], rag["RAG_EMBEDDING_MODEL"], rag["openai_config"]) == (
        "openai", "embed", {"url": v1, "key": token})


def test_its_secrets_are_kept_private_in_the_state_folder(webui: tuple[Served, WebUI, dict[str, Any]]) -> None:
    s, _, _ = webui
    folder = s.home / "var/openwebui"
    for name in ("secret_key", "hal0.token"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    token = (folder / "hal0.token").read_text().strip()
    assert token not in "".join(s.log)  # never logged
    tokens = tomllib.loads((s.home / "etc/tokens.toml").read_text())["token"]
    assert [t["scope"] for t in tokens if t["name"] == "openwebui"] == ["inference"]
    assert (folder / "data" / "webui.db").exists()  # its data under hal0's state folder
    status, _ = s.get("/v1/models?capability=chat", token)
    assert status == 200


def test_a_new_chat_slot_restarts_it_offering_that_slot(webui: tuple[Served, WebUI, dict[str, Any]],
                                                        first_user: dict[str, Any]) -> None:
    s, ui, card = webui
    gemma = manifest()["models"]["gemma3-270m"]
    with hal0_events(s) as events:
        status, slot = s.post("/api/slots", admin_token(s), {"name": "chat2", "model": gemma})
        assert status == 201, slot
        restarted = next_start(events)
    assert restarted["models"] == ["primary", "chat2"] and restarted["pid"] != card["pid"]
    status, models = ui.call("GET", "/api/models")  # the session survives the restart (same secret key)
    assert status == 200, models
    assert {"primary", "chat2"} <= {m["id"] for m in models["data"]}
    with hal0_events(s) as events:
        req = urllib.request.Request(s.url + "/api/slots/chat2", method="DELETE",
                                     headers={"Authorization": f"Bearer {admin_token(s)}"})
        urllib.request.urlopen(req, timeout=60).close()
        assert next_start(events)["models"] == ["primary"]


def test_a_crash_is_restarted_after_a_backoff(webui: tuple[Served, WebUI, dict[str, Any]]) -> None:
    s, ui, _ = webui
    status, before = s.get("/api/capabilities", admin_token(s))
    pid = before["cards"]["webui"]["webui"]["pid"]
    seen: list[dict[str, Any]] = []
    with hal0_events(s) as events:
        os.kill(pid, signal.SIGKILL)
        for kind, data in events:
            if kind == "openwebui.state":
                seen.append(data)
                if data["state"] in ("ready", "failed"):
                    break
    assert [d["state"] for d in seen] == ["backoff", "starting", "ready"], seen
    assert "backend exited unexpectedly with code -9; restarting in 1s" in seen[0]["message"]
    assert seen[-1]["pid"] not in (None, pid)
    status, answer = ui.call("GET", "/health")
    assert (status, answer) == (200, {"status": True})


def test_disabling_the_card_stops_it(webui: tuple[Served, WebUI, dict[str, Any]]) -> None:
    s, ui, card = webui
    pid = card["pid"]
    status, out = s.post("/api/capabilities/webui/webui", admin_token(s), {"enabled": False})
    assert status == 200 and (out["enabled"], out["state"], out["pid"]) == (False, "off", None)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(ui.url + "/health", timeout=10)
    capabilities = tomllib.loads((s.home / "etc/capabilities.toml").read_text())
    assert capabilities["webui"]["webui"] == {"enabled": False}
