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


_HANDED_OUT: set[int] = set()


def free_port(span: int = 1) -> int:
    """The first of ``span`` consecutive free ports below the kernel's ephemeral range (32768+), so
    that no outgoing connection can take one between this check and the moment a server binds it.
    No port is handed out twice in one test run: a test that asks for five slot ports and a
    serving port gets six different ones, even before any of them is bound."""
    for _ in range(10_000):
        port = random.randrange(20200, 32000 - span)  # 20000-20100 is slot_manager's fixed range
        ports = range(port, port + span)
        if _HANDED_OUT.intersection(ports) or not all(_bindable(p) for p in ports):
            continue
        _HANDED_OUT.update(ports)
        return port
    raise RuntimeError(f"no {span} free port(s) left in 20200-32000 ({len(_HANDED_OUT)} handed out in this run)")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


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
