"""The dashboard in a real browser (Debian's Chromium through Playwright) against one real
``hal0 serve`` with real llama-server slots, shared by the module. Screenshots of every view land
in ``test-artifacts/dashboard/`` (or ``$HAL0_TEST_ARTIFACTS/dashboard``), never in the repo.
tests/test_dashboard_serve.py has the tests that need a hal0 of their own."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import APIResponse, Browser, Page, Route, expect

from tests.helpers.browser import (
    BUILTINS,
    SETTLE_MS,
    call,
    raw,
    shot,
    sign_in,
    slot_card,
)
from tests.helpers.env import HAL0, REPO, hal0_env, manifest
from tests.helpers.hub import FakeHub, Faults, fake_hub
from tests.helpers.serve import Served, serving, setup_home

pytestmark = [pytest.mark.slow, pytest.mark.backends]

class Box:
    """A served hal0 with two registered tiny chat models and a corrupt one, and two tokens."""

    def __init__(self, served: Served, admin: str, inference: str) -> None:
        self.served, self.admin, self.inference = served, admin, inference

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, out = call(self.served, method, path, self.admin, body)
        assert status < 300, (status, out)
        return out


class Hub:
    """The local stand-in for the Hugging Face hub, run on its own loop in a thread (the
    browser tests are synchronous). ``pulled-tiny.gguf`` stalls halfway on its first request
    until ``release()``."""

    REPO, FILE = "acme/tiny-GGUF", "pulled-tiny.gguf"

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.src = Path(manifest()["models"]["tiny-chat"])
        self.half = self.src.stat().st_size // 2
        self.hub: FakeHub
        self.loop: asyncio.AbstractEventLoop
        self.stop: asyncio.Event
        self.resume: asyncio.Event
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        src, half = self.src, self.half
        async with fake_hub() as hub:
            self.hub, self.loop = hub, asyncio.get_running_loop()
            self.stop, self.resume = asyncio.Event(), asyncio.Event()
            hub.add(self.REPO, self.FILE, src)
            hub.faults[self.FILE] = Faults(stall_at=half, resume=self.resume)
            self.ready.set()
            await self.stop.wait()

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self.resume.set)


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    h = Hub()
    h.thread.start()
    assert h.ready.wait(60)
    yield h
    h.release()
    h.loop.call_soon_threadsafe(h.stop.set)
    h.thread.join(120)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, hub: Hub) -> Iterator[Box]:
    home = tmp_path_factory.mktemp("dash")
    m = manifest()
    setup_home(home, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    corrupt = home / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\0" * 64)
    made = subprocess.run([*HAL0, "token", "create", "phone", "--json"], env=hal0_env(home), check=True,
                          capture_output=True, text=True)
    inference = json.loads(made.stdout)["token"]
    admin = (home / "etc/admin.token").read_text().strip()
    with serving(home, env=hal0_env(home, HF_ENDPOINT=hub.hub.hub_url)) as s:
        b = Box(s, admin, inference)
        for mid, path in (("tiny-chat", m["models"]["tiny-chat"]), ("tiny-chat-b", m["models"]["tiny-chat"]),
                          ("corrupt", str(corrupt))):
            b.api("POST", "/api/models", {"id": mid, "path": path, "capabilities": ["chat"],
                                          "allow_outside_roots": True})
        b.api("POST", "/api/slots/primary/swap", {"model": "tiny-chat"})  # a registry id from the start
        yield b
        assert s.stop() == 0
        assert admin not in "".join(s.log) and inference not in "".join(s.log)  # never logged


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert errors == []  # no uncaught script error in any test


# --- the files ------------------------------------------------------------------------------------


def test_root_is_the_page_for_a_browser_and_ollamas_banner_for_anything_else(box: Box) -> None:
    s = box.served
    status, headers, body = raw(s, "/", Accept="text/html,application/xhtml+xml")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script type="module" src="/ui/app.js">' in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    for method in ("GET", "HEAD"):
        status, headers, body = raw(s, "/", method)
        assert (status, headers["Content-Type"]) == (200, "text/plain; charset=utf-8")
        assert body == (b"Ollama is running" if method == "GET" else b"")
    status, headers, body = raw(s, "/ui/app.js", **{"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert gzip.decompress(body) == (REPO / "hal0/ui/app.js").read_bytes()
    assert headers["ETag"].endswith('-gz"')  # the gzipped copy is its own representation
    status, _, _ = raw(s, "/ui/app.js", **{"If-None-Match": headers["ETag"], "Accept-Encoding": "gzip"})
    assert status == 304
    status, plain, body = raw(s, "/ui/app.js", **{"If-None-Match": headers["ETag"]})
    assert status == 200 and plain["ETag"] != headers["ETag"] and "Content-Encoding" not in plain
    status, _, body = raw(s, "/ui/%2e%2e%2fhal0.toml")
    assert status == 404
    status, _, body = raw(s, "/ui/missing.js")
    assert status == 404 and json.loads(body)["error"]["code"] == "request.not_found"


def test_the_whole_page_is_small() -> None:
    """Every file the page loads, compressed, stays under the issue's 150 KB budget."""
    files = [f for f in (REPO / "hal0/ui").iterdir() if f.is_file()]
    assert {f.name for f in files} >= {"index.html", "app.js", "style.css"}
    assert sum(len(gzip.compress(f.read_bytes(), 9)) for f in files) < 150 * 1024


def test_catalogue_and_tier_routes(box: Box) -> None:
    from hal0.hardware.seeding import box_memory, match_tier

    hw = json.loads((box.served.home / "etc/hardware.json").read_text())
    tier = box.api("GET", "/api/hardware/tier")
    assert tier["tier"]["name"] == match_tier(hw)["name"] and tier["memory_bytes"] == box_memory(hw)
    everything = box.api("GET", "/api/catalog")["models"]
    fitting = box.api("GET", "/api/catalog?fits=1")["models"]
    assert everything and all(isinstance(m["fits"], bool) for m in everything)
    assert [m["id"] for m in fitting] == [m["id"] for m in everything if m["fits"]]
    assert len(fitting) < len(everything)  # this box cannot hold the 30B model
    assert call(box.served, "GET", "/api/catalog", box.inference)[0] == 403


# --- the browser ----------------------------------------------------------------------------------


def test_sign_in_refuses_a_wrong_token_and_shows_nothing(box: Box, page: Page) -> None:
    sign_in(page, box.served.url, "hal0_nope_nope")
    expect(page.get_by_role("alert").filter(has_text="not accepted")).to_be_visible()
    expect(page.locator("article.slot")).to_have_count(0)
    expect(page.get_by_role("navigation", name="Views")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('hal0.token')") is None
    page.get_by_label("Token", exact=True).fill(box.admin)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#conn")).to_have_text("Live")
    expect(page.locator("article.slot")).to_have_count(len(BUILTINS))
    assert box.admin not in page.url
    page.reload()  # the session survives a reload of the tab
    expect(page.locator("article.slot")).to_have_count(len(BUILTINS))
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_label("Token", exact=True)).to_be_visible()
    expect(page.locator("article.slot")).to_have_count(0)


def test_the_page_works_from_the_keyboard(box: Box, page: Page) -> None:
    page.goto(box.served.url + "/")
    expect(page.get_by_label("Token", exact=True)).to_be_focused()  # ready to type at once
    page.keyboard.type(box.admin)
    page.keyboard.press("Enter")
    expect(page.locator("article.slot")).to_have_count(len(BUILTINS))
    page.get_by_role("link", name="Logs").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Logs")).to_be_visible()
    page.keyboard.press("Tab")  # the first control of the view, in document order
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Slot", exact=True)).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Pause", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Resume", exact=True)).to_have_attribute("aria-pressed", "true")


def test_the_builtin_slots_are_listed_with_their_states_and_none_offers_delete(box: Box, page: Page) -> None:
    box.served.load("primary", box.admin)
    sign_in(page, box.served.url, box.admin)
    for name in BUILTINS:
        card = slot_card(page, name)
        expect(card.locator(".state")).to_have_text("ready" if name == "primary" else "offline")
        expect(card.get_by_role("button", name="Delete", exact=True)).to_have_count(0)
        expect(card.get_by_role("button", name="Load", exact=True)).to_be_visible()
    expect(slot_card(page, "primary")).to_contain_text("llama-server on cpu")
    shot(page, "slots")
    # a custom slot can be created and deleted
    page.get_by_text("Create a slot").click()
    page.get_by_label("Name").fill("scratch")
    page.get_by_role("button", name="Create", exact=True).click()
    card = slot_card(page, "scratch")
    expect(card.locator(".state")).to_have_text("offline")
    card.get_by_role("button", name="Delete", exact=True).click()
    card.get_by_role("button", name="Confirm delete", exact=True).click()
    expect(card).to_have_count(0)
    assert call(box.served, "GET", "/api/slots/scratch", box.admin)[0] == 404


def test_swap_from_the_page_shows_each_state_and_a_rollback_with_its_reason(box: Box, page: Page) -> None:
    box.served.load("primary", box.admin)
    sign_in(page, box.served.url, box.admin)
    card = slot_card(page, "primary")
    expect(card.locator(".state")).to_have_text("ready")
    try:
        card.get_by_label("Swap to").select_option("tiny-chat-b")
        card.get_by_role("button", name="Swap", exact=True).click()
        expect(card.get_by_label("primary progress")).to_have_text(
            "ready → unloading → offline → starting → warming → ready", timeout=SETTLE_MS)
        expect(card.get_by_role("alert")).to_have_text("Now serving tiny-chat-b.")
        expect(card).to_contain_text("tiny-chat-b")
        box.api("POST", "/v1/chat/completions", {"model": "primary", "max_tokens": 2,
                                                 "messages": [{"role": "user", "content": "hi"}]})
        expect(card.get_by_label("primary progress")).to_have_text(  # requests after it are not part of it
            "ready → unloading → offline → starting → warming → ready")
        card.get_by_label("Swap to").select_option("corrupt")
        card.get_by_role("button", name="Swap", exact=True).click()
        alert = card.get_by_role("alert")
        expect(alert).to_contain_text("Swap failed; rolled back to tiny-chat-b. Reason:", timeout=SETTLE_MS)
        expect(alert).to_contain_text("exited")  # the reason: the backend died on the corrupt file
        expect(card.locator(".state")).to_have_text("ready")
        expect(card.get_by_label("primary progress")).to_contain_text("starting → warming → ready")
        shot(page, "slots-rollback")
    finally:
        box.api("POST", "/api/slots/primary/swap", {"model": "tiny-chat"})


def test_unload_and_load_follow_on_the_page_within_a_second(box: Box, page: Page) -> None:
    box.served.load("primary", box.admin)
    sign_in(page, box.served.url, box.admin)
    state = slot_card(page, "primary").locator(".state")
    expect(state).to_have_text("ready")
    box.api("POST", "/api/slots/primary/unload")  # by another client: the page hears it as an event
    expect(state).to_have_text("offline", timeout=1_000)
    box.api("POST", "/api/slots/primary/load")
    expect(state).to_have_text("ready", timeout=1_000)
    slot_card(page, "primary").get_by_role("button", name="Unload", exact=True).click()  # and from the page itself
    expect(state).to_have_text("offline", timeout=SETTLE_MS)
    slot_card(page, "primary").get_by_role("button", name="Load", exact=True).click()
    expect(state).to_have_text("ready", timeout=SETTLE_MS)
    assert box.api("GET", "/api/slots/primary")["state"] == "ready"


def test_the_chat_playground_streams_an_answer_from_primary(box: Box, page: Page) -> None:
    box.served.load("primary", box.admin)
    sign_in(page, box.served.url, box.admin)
    page.get_by_role("link", name="Playground").click()
    chat = page.get_by_role("article", name="Chat")  # the Slots view's create form has a "Model" too
    chat.get_by_label("Model", exact=True).select_option("primary")
    page.get_by_label("Max reply length").fill("24")
    page.get_by_label("Message", exact=True).fill("Say hello.")
    page.get_by_role("button", name="Send", exact=True).click()
    answer = page.locator("#chat-log li[data-role=assistant]").last
    expect(answer).to_have_attribute("data-done", "1", timeout=SETTLE_MS)
    expect(page.locator("#chat-out")).to_be_empty()
    assert int(answer.get_attribute("data-chunks") or 0) > 1  # it arrived in pieces, as it was generated
    assert answer.locator(".text").inner_text().strip()
    shot(page, "playground")


def test_the_logs_view_shows_backend_lines_follows_new_ones_and_pauses(box: Box, page: Page) -> None:
    box.served.load("primary", box.admin)
    sign_in(page, box.served.url, box.admin)
    page.get_by_role("link", name="Logs").click()
    page.get_by_label("Slot", exact=True).select_option("primary")
    log = page.get_by_role("log", name="Backend output")
    expect(log).to_contain_text("llama_server")  # llama-server's own output
    box.api("POST", "/api/slots/primary/unload")
    pid = box.api("POST", "/api/slots/primary/load")["pid"]
    expect(log).to_contain_text(f"started pid {pid}:")  # a line written after the page opened
    shot(page, "logs")
    page.get_by_role("button", name="Pause", exact=True).click()
    expect(page.get_by_role("button", name="Resume", exact=True)).to_have_attribute("aria-pressed", "true")
    box.api("POST", "/api/slots/primary/unload")
    pid = box.api("POST", "/api/slots/primary/load")["pid"]
    expect(log).not_to_contain_text(f"started pid {pid}:")
    page.get_by_role("button", name="Resume", exact=True).click()
    expect(log).to_contain_text(f"started pid {pid}:")


def test_a_pull_shows_progress_can_be_cancelled_resumed_and_removed(box: Box, hub: Hub, page: Page) -> None:
    sign_in(page, box.served.url, box.admin)
    page.get_by_role("link", name="Models").click()
    ref = f"hf://{Hub.REPO}/{Hub.FILE}"
    held: list[tuple[Route, APIResponse]] = []  # the pull's answer, sent on to the page after the progress events
    page.route("**/api/models/pull", lambda route: held.append((route, route.fetch())))
    page.get_by_label("Pull a model").fill(ref)
    page.get_by_role("button", name="Pull", exact=True).click()
    job = page.locator("#pull-list li").filter(has_text="pulled-tiny").first
    expect(job).to_have_attribute("data-state", "running")
    expect(job).to_contain_text(re.compile(r"of 479 KB \(\d+%\)"))  # the hub stalls halfway
    ((route, answer),) = held
    route.fulfill(response=answer)  # the job as it was when created: 0 B, size unknown
    expect(page.get_by_label("Pull a model")).to_have_value("")  # the page has taken the answer in
    page.unroute("**/api/models/pull")
    expect(job).to_contain_text(re.compile(r"of 479 KB \(\d+%\)"), timeout=1_000)  # and kept the newer state
    expect(job.get_by_role("progressbar", name="pulled-tiny progress")).to_be_visible()
    shot(page, "models-pulling")
    job.get_by_role("button", name="Cancel", exact=True).click()
    expect(job).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#model-table tr[data-model=pulled-tiny]")).to_have_count(0)
    hub.release()
    page.get_by_label("Pull a model").fill(ref)  # again: it resumes from the partial file
    page.get_by_role("button", name="Pull", exact=True).click()
    row = page.locator("#model-table tr[data-model=pulled-tiny]")
    expect(row).to_contain_text("479 KB")
    expect(row.locator("td").nth(1)).to_have_text("yes")  # verified against the hub's sha256
    assert hub.hub.cdn_requests(Hub.FILE)[-1].headers.get("Range", "").startswith("bytes=")
    row.get_by_role("button", name="Remove pulled-tiny").click()
    row.get_by_role("button", name="Remove pulled-tiny").click()  # the second click confirms
    expect(row).to_have_count(0)
    assert all(m["id"] != "pulled-tiny" for m in box.api("GET", "/api/models")["models"])


def test_a_file_on_disk_is_registered_from_the_page_and_offered_for_swaps(box: Box, page: Page) -> None:
    sign_in(page, box.served.url, box.admin)
    page.get_by_role("link", name="Models").click()
    page.get_by_text("Register a file already on disk").click()
    page.get_by_label("Model id").fill("tiny-chat-c")
    page.get_by_label("Absolute path").fill(manifest()["models"]["tiny-chat"])
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.locator("#reg-out")).to_contain_text("model folders")  # refused: outside the roots
    page.get_by_label("Outside the model folders").check()
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.locator("#reg-out")).to_have_text("Registered tiny-chat-c (479 KB).")
    row = page.locator("#model-table tr[data-model=tiny-chat-c]")
    expect(row.locator("td").nth(3)).to_have_text("—")  # used by no slot
    page.get_by_role("link", name="Slots").click()
    expect(slot_card(page, "primary").get_by_label("Swap to").locator("option[value=tiny-chat-c]")).to_have_count(1)
    box.api("DELETE", "/api/models/tiny-chat-c")


def test_a_capability_switch_enables_and_disables_its_slot(box: Box, page: Page) -> None:
    sign_in(page, box.served.url, box.admin)
    page.get_by_role("link", name="Capabilities").click()
    card = page.get_by_role("article", name="Images")
    switch = card.get_by_role("checkbox", name="img")
    expect(switch).not_to_be_checked()
    expect(card).to_contain_text("Reason: ")  # why this box's tier left it off
    shot(page, "capabilities")
    try:
        switch.check()
        expect(card).not_to_contain_text("Reason: ")  # the slot's change came back as an event
        expect(switch).to_be_checked()
        assert box.api("GET", "/api/slots/img")["enabled"] is True
        page.get_by_role("link", name="Slots").click()
        expect(slot_card(page, "img").get_by_role("button", name="Disable", exact=True)).to_be_visible()
        page.get_by_role("link", name="Capabilities").click()
        switch.uncheck()
        expect(card).to_contain_text("Reason: ")
        expect(switch).not_to_be_checked()
        assert box.api("GET", "/api/slots/img")["enabled"] is False
    finally:
        box.api("POST", "/api/slots/img/disable")


def test_an_inference_token_sees_the_playground_and_no_controls(box: Box, page: Page) -> None:
    box.served.load("primary", box.admin)
    sign_in(page, box.served.url, box.inference)
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("Playground only")
    for view in ("Slots", "Capabilities", "Models", "Logs", "Hardware"):
        expect(page.get_by_role("link", name=view)).to_have_count(0)
    for control in ("Load", "Unload", "Swap", "Pull", "Probe again"):
        expect(page.get_by_role("button", name=control, exact=True)).to_have_count(0)
    page.goto(box.served.url + "/#slots")  # typing an admin view's address shows the playground
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    expect(page.locator("article.slot")).to_have_count(0)
    page.get_by_label("Max reply length").fill("4")
    page.get_by_label("Message", exact=True).fill("Hi")
    page.get_by_role("button", name="Send", exact=True).click()
    answer = page.locator("#chat-log li[data-role=assistant]").last
    expect(answer).to_have_attribute("data-done", "1", timeout=SETTLE_MS)
    expect(page.locator("#chat-out")).to_be_empty()
    shot(page, "playground-inference")


def test_every_view_renders_light_dark_and_at_360px(box: Box, browser: Browser) -> None:
    for scheme, width in (("light", 1100), ("dark", 1100), ("light", 360), ("dark", 360)):
        context = browser.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme)  # type: ignore[arg-type]
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        sign_in(page, box.served.url, box.admin)
        expect(page.locator("article.slot")).to_have_count(len(BUILTINS))
        for view, ready in (("slots", "article.slot"), ("capabilities", "#cap-list article"),
                            ("models", "#model-table tbody tr[data-model]"), ("logs", "#log-lines li"),
                            ("hardware", "#hw-body dl"), ("playground", "#chat-form")):
            page.get_by_role("link", name=view.capitalize()).click()
            expect(page.locator(f"#view-{view}")).to_be_visible()
            expect(page.locator(ready).first).to_be_visible()
            if width == 360:  # nothing wider than a phone's screen
                assert page.evaluate("document.documentElement.scrollWidth") <= 360, view
            shot(page, f"{view}-{scheme}-{width}")
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert (bg == "rgb(15, 18, 22)") == (scheme == "dark")
        context.close()
        assert errors == []
