"""Driving the dashboard in Debian's Chromium: launching it, signing in, finding things,
screenshots into ``test-artifacts/dashboard/`` (``$HAL0_TEST_ARTIFACTS`` moves it)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Locator, Page, Playwright, expect

from tests.helpers.env import REPO
from tests.helpers.serve import Served

CHROMIUM = Path("/usr/bin/chromium")  # Debian's, installed by scripts/setup-backends: no browser download
NO_CHROMIUM = "Debian's chromium is not installed at /usr/bin/chromium (scripts/setup-backends installs it)"
BUILTINS = ("primary", "embed", "stt", "tts", "img")
SETTLE_MS = 120_000  # a backend start on two shared cores; the page shows it as soon as it happens
ARTIFACTS = Path(os.environ.get("HAL0_TEST_ARTIFACTS") or REPO / "test-artifacts") / "dashboard"
expect.set_options(timeout=15_000)  # generous: two shared cores; events themselves take milliseconds


def launch(p: Playwright) -> Browser:
    return p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])  # tests run as root


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(url + "/")
    page.get_by_label("Token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in", exact=True).click()


def slot_card(page: Page, name: str) -> Locator:
    return page.get_by_role("article", name=name, exact=True)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def call(served: Served, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """A JSON request with the token; (status, body) for errors too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(served.url + path, data, method=method,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=180) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def raw(served: Served, path: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A request as it goes on the wire: status, headers and the undecoded body."""
    req = urllib.request.Request(served.url + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read()
