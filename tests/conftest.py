from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from hal0.paths import Paths, resolve_paths
from tests.helpers.env import REPO
from tests.helpers.serve import Served, sdk


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """A private HAL0_HOME tree for one test."""
    return resolve_paths({"HAL0_HOME": str(tmp_path / "home")})


@pytest.fixture(scope="session")
def pyz() -> Path:
    """dist/hal0.pyz, built once per run with the README's build script."""
    subprocess.run([str(REPO / "scripts/build")], check=True, cwd=REPO, capture_output=True)
    return REPO / "dist" / "hal0.pyz"


@pytest.fixture
def fake_gguf(tmp_path: Path) -> str:
    """A file a fake backend accepts as its model (just the GGUF magic)."""
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF")
    return str(path)


@pytest.fixture
def client(hal0: tuple[Served, str]) -> Iterator[openai.OpenAI]:
    """The official OpenAI SDK against the module's own ``hal0`` fixture (a served hal0 and a token)."""
    with sdk(*hal0) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright, one per test module (skipped where it is missing)."""
    from playwright.sync_api import sync_playwright

    from tests.helpers.browser import CHROMIUM, NO_CHROMIUM, launch

    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    with sync_playwright() as p:
        yield launch(p)
