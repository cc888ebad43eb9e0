"""Slots through `hal0 serve` and the CLI, as an operator uses them."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import openai
import pytest

from tests.helpers.env import HAL0, alive, hal0_env, manifest
from tests.helpers.serve import sdk, serving, setup_home
from tests.helpers.slots import fake_bin

pytestmark = pytest.mark.slow


def cli(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAL0, *args], env=hal0_env(home, HAL0_URL=url), capture_output=True, text=True,
                          timeout=120)



def test_cli_swap_shows_transitions_and_fails_loudly_on_rollback(tmp_path: Path) -> None:
    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\0" * 64)
    with serving(tmp_path) as s:
        assert cli(tmp_path, s.url, "slot", "load", "primary").returncode == 0
        r = cli(tmp_path, s.url, "slot", "swap", "primary", "--model", m["models"]["tiny-embed"])
        assert r.returncode == 0, r.stderr
        states = [line.split()[1] for line in r.stdout.splitlines()[:-1]]
        assert states == ["unloading", "offline", "starting", "warming", "ready"]
        assert r.stdout.splitlines()[-1].startswith("primary: ready (tiny-embed) after ")
        r = cli(tmp_path, s.url, "slot", "swap", "primary", "--model", str(corrupt))
        assert r.returncode == 1
        assert "hal0: slot.swap_failed: swap of primary to" in r.stderr and "rolled back to" in r.stderr
        assert [line.split()[1] for line in r.stdout.splitlines()][-1] == "ready"
        listed = json.loads(cli(tmp_path, s.url, "slot", "list", "--json").stdout)
        assert (listed[0]["state"], listed[0]["model"]) == ("ready", "tiny-embed")
        r = cli(tmp_path, s.url, "slot", "logs", "primary", "-n", "3")
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 3
        assert s.stop() == 0


def test_a_killed_hal0_leaves_an_orphan_that_the_next_serve_cleans_up(tmp_path: Path) -> None:
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    setup_home(tmp_path, fake_bin(tmp_path).bin, str(model))
    with serving(tmp_path) as s:
        r = cli(tmp_path, s.url, "slot", "load", "primary", "--json")
        orphan = json.loads(r.stdout)["pid"]
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
    state = json.loads((tmp_path / "var/slots/primary/state.json").read_text())
    # whole and legal (the write of "ready" may still have been in flight when hal0 died)
    assert state["state"] in ("warming", "ready") and state["pid"] == orphan
    assert alive(orphan)
    with serving(tmp_path) as s:
        assert not alive(orphan)
        assert any(f"killing backend pid {orphan}" in line for line in s.log)
        r = cli(tmp_path, s.url, "slot", "load", "primary", "--json")
        assert json.loads(r.stdout)["state"] == "ready"  # the port was free again
        assert s.stop() == 0


def test_a_request_for_a_slot_of_another_kind_is_refused_without_waking_it(tmp_path: Path) -> None:
    """Regression: embeddings sent to primary answered 501, speech 404, images a text/plain 405,
    each after waking the slot. Now a 400 in hal0's envelope, and the slot stays offline."""
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    setup_home(tmp_path, fake_bin(tmp_path).bin, str(model))
    token = (tmp_path / "etc/admin.token").read_text().strip()
    with serving(tmp_path) as s, sdk(s, token) as client:
        s.load("primary", token)  # serve may have started it already: then unload it
        assert cli(tmp_path, s.url, "slot", "unload", "primary").returncode == 0
        calls = {
            "embeddings": lambda: client.embeddings.create(model="primary", input="hi"),
            "audio.speech": lambda: client.audio.speech.create(model="primary", input="hi", voice="alloy"),
            "images": lambda: client.images.generate(model="primary", prompt="a cat"),
            "audio.transcriptions": lambda: client.audio.transcriptions.create(model="primary",
                                                                               file=("a.wav", b"RIFF")),
            "rerank": lambda: client.post("/rerank", body={"model": "primary", "query": "q", "documents": ["d"]},
                                          cast_to=object),
        }
        for kind, call in calls.items():
            with pytest.raises(openai.BadRequestError) as e:
                call()
            body = e.value.body
            assert body["code"] == "model.wrong_modality", kind  # type: ignore[index]
            assert body["details"]["slot_kind"] == "chat" and body["details"]["route_kind"] == kind  # type: ignore[index]
        status, slot = s.get("/api/slots/primary", token)
        assert status == 200
        assert (slot["state"], slot["starts"], slot["kind"]) == ("offline", 1, "chat")
        assert s.stop() == 0
