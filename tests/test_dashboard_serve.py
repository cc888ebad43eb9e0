"""The dashboard with a hal0 of its own per test: a restart, a shutdown, the zipapp, and the
media playground on real Kokoro, Whisper and ComfyUI."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.helpers.browser import (
    BUILTINS,
    SETTLE_MS,
    call,
    raw,
    shot,
    sign_in,
    slot_card,
)
from tests.helpers.env import HAL0, REPO, free_port, hal0_env, manifest
from tests.helpers.serve import serving, setup_home

pytestmark = [pytest.mark.slow, pytest.mark.backends]


def test_the_pyz_serves_the_page(pyz: Path, tmp_path: Path) -> None:
    """The files are package data: the zipapp carries them."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HAL0_HOME": str(tmp_path / "home"),
           "SHIV_ROOT": str(tmp_path / "shiv")}
    subprocess.run(["python3", "-I", str(pyz), "init"], env=env, check=True, capture_output=True)
    for name in BUILTINS:
        toml = tmp_path / f"home/etc/slots/{name}.toml"
        toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
    with serving(tmp_path / "home", argv=["python3", "-I", str(pyz)], env=env) as s:
        for path in ("/ui/app.js", "/ui/style.css", "/ui/slots.js"):
            status, _, body = raw(s, path)
            assert status == 200 and body == (REPO / "hal0/ui" / path.removeprefix("/ui/")).read_bytes()
        assert raw(s, "/", Accept="text/html")[2] == (REPO / "hal0/ui/index.html").read_bytes()
        assert s.stop() == 0


def test_the_page_reconnects_after_hal0_restarts(tmp_path: Path, browser: Browser) -> None:
    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    toml = tmp_path / "etc/slots/primary.toml"
    toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))  # no backend needed here
    token = (tmp_path / "etc/admin.token").read_text().strip()
    port = free_port()
    page = browser.new_page()
    try:
        with serving(tmp_path, port=port) as s:
            sign_in(page, s.url, token)
            conn = page.locator("#conn")
            expect(conn).to_have_text("Live")
            toggle = slot_card(page, "embed").get_by_role("button", name=re.compile("^(Enable|Disable)$"))
            expect(toggle).to_have_text("Enable")
            assert s.stop() == 0
            expect(conn).to_have_text("Reconnecting…")
        with serving(tmp_path, port=port) as s:
            expect(conn).to_have_text("Live", timeout=30_000)  # the backoff is at most 10 s
            call(s, "POST", "/api/slots/embed/enable", token)
            expect(toggle).to_have_text("Disable")  # an event of the new process reached the page
            call(s, "POST", "/api/slots/embed/disable", token)
            expect(toggle).to_have_text("Enable")
            assert s.stop() == 0
    finally:
        page.close()


def test_a_log_follower_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    """Regression: an open ``logs?follow=1`` stream (the dashboard's Logs view) kept its handler
    waiting for a line that never came, so stopping hal0 waited the whole shutdown timeout."""
    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"], shutdown_timeout_s=3600)
    toml = tmp_path / "etc/slots/primary.toml"
    toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
    token = (tmp_path / "etc/admin.token").read_text().strip()
    with serving(tmp_path) as s:
        req = urllib.request.Request(s.url + "/api/slots/primary/logs?follow=1",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=120) as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            assert s.stop() == 0  # within the helper's 60 s, not after the hour-long timeout
            assert stream.read() == b""  # the stream ended cleanly


def test_the_media_playground_speaks_transcribes_and_draws(tmp_path: Path, browser: Browser) -> None:
    """Text -> Kokoro -> the page's audio player, a recording -> Whisper -> text, and a prompt ->
    ComfyUI -> a picture, all from the page."""
    m = manifest()
    home = tmp_path / "home"
    subprocess.run([*HAL0, "init", "--provider-python", f"whisper={m['whisper']['python']}",
                    "--provider-python", f"kokoro={m['kokoro']['python']}",
                    "--slot-provider", "stt=whisper", "--slot-model", f"stt={m['whisper']['model_dir']}",
                    "--slot-provider", "tts=kokoro", "--slot-model", f"tts={m['kokoro']['model']}",
                    "--provider-python", f"comfyui={m['comfyui']['python']}",
                    "--provider-bin", f"comfyui={m['comfyui']['bin']}",
                    "--slot-model", f"img={m['comfyui']['checkpoint']}"],
                   env=hal0_env(home), check=True, capture_output=True)
    for name in BUILTINS:
        toml = home / f"etc/slots/{name}.toml"
        text = re.sub(r"^port = \d+$", f"port = {free_port()}", toml.read_text(), count=1, flags=re.M)
        text = re.sub(r'^backend = ".*"$', 'backend = "cpu"', text, count=1, flags=re.M)
        text = text.replace("threads = 0", "threads = 2")
        enabled = "true" if name in ("stt", "tts", "img") else "false"
        toml.write_text(re.sub(r"^enabled = .*$", f"enabled = {enabled}", text, count=1, flags=re.M))
    wav = tmp_path / "hello.wav"
    subprocess.run([m["tools"]["espeak_ng"], "-w", str(wav), "hello world"], check=True)
    token = (home / "etc/admin.token").read_text().strip()
    page = browser.new_page()
    try:
        with serving(home) as s:
            sign_in(page, s.url, token)
            page.get_by_role("link", name="Playground").click()
            page.get_by_label("Text to speak").fill("Hello from the dashboard.")
            page.get_by_role("button", name="Speak", exact=True).click()
            audio = page.locator("#tts-audio")
            expect(audio).to_be_visible(timeout=SETTLE_MS)
            expect(page.locator("#tts-out")).to_be_empty()
            assert audio.evaluate("a => new Promise(ok => a.readyState >= 1 ? ok(a.duration)"
                                  " : a.addEventListener('loadedmetadata', () => ok(a.duration)))") > 0.5
            page.get_by_label("Audio file").set_input_files(str(wav))
            page.get_by_role("button", name="Transcribe", exact=True).click()
            expect(page.locator("#stt-text")).to_contain_text(re.compile("hello world", re.I), timeout=SETTLE_MS)
            page.get_by_label("Prompt").fill("a lighthouse at dusk")
            page.get_by_label("Size").fill("64x64")  # the CPU draws a bigger one in minutes
            page.get_by_role("button", name="Generate", exact=True).click()
            picture = page.get_by_role("img", name="a lighthouse at dusk")
            expect(picture).to_be_visible(timeout=SETTLE_MS)
            assert picture.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 64]
            shot(page, "playground-media")
            assert s.stop() == 0
    finally:
        page.close()


def test_with_auth_off_the_page_needs_no_token(tmp_path: Path, browser: Browser) -> None:
    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"], auth='"off"')
    toml = tmp_path / "etc/slots/primary.toml"
    toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
    page = browser.new_page()
    try:
        with serving(tmp_path) as s:
            page.goto(s.url + "/")
            expect(page.locator("article.slot")).to_have_count(len(BUILTINS))
            expect(page.get_by_label("Token", exact=True)).to_be_hidden()
            expect(page.locator("#conn")).to_have_text("Live")
            assert s.stop() == 0
    finally:
        page.close()
