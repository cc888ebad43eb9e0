"""Where the provisioned backends are, and small process helpers for tests."""

from __future__ import annotations

import json
import os
import random
import socket
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def manifest() -> dict[str, Any]:
    """The manifest scripts/setup-backends wrote (scripts/test always provisions first)."""
    path = os.environ.get("HAL0_DEV_MANIFEST") or str(
        Path(os.environ.get("HAL0_DEV_CACHE") or Path.home() / ".cache/hal0-dev") / "manifest.json")
    if not Path(path).exists():
        raise RuntimeError(f"no backend manifest at {path}: run scripts/setup-backends (scripts/test does)")
    return json.loads(Path(path).read_text())


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768+), so that no outgoing
    connection can take it between this check and the moment a server binds it."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def hal0_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a hal0 subprocess rooted at ``home``, importing this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAL0_", "XDG_"))}
    env.update(HAL0_HOME=str(home), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **extra)
    return env


HAL0 = [sys.executable, "-m", "hal0"]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by init, does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
