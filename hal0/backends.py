"""Engine virtualenvs: ``hal0 backend install|list`` (SPEC section 9).

Each engine without an OpenAI server of its own gets ``<state>/backends/<kind>/venv``, made
with the interpreter that runs hal0 (so the zipapp's own packages fit it) and holding the
engine's packages plus hal0's runtime dependencies, for ``hal0 runner``. A slot whose
``[providers.<kind>].python`` is unset uses that virtualenv when it exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import venv
from collections.abc import Callable
from pathlib import Path

from hal0.atomic import atomic_write
from hal0.paths import Paths

__all__ = ["ENGINES", "RUNTIME_DEPS", "engine_python", "install", "installed"]

# Pinned like the rest of hal0; tests keep RUNTIME_DEPS equal to pyproject's dependencies.
RUNTIME_DEPS = ("aiohttp==3.14.5", "tomli-w==1.2.0", "pyudev==0.24.5")
ENGINES: dict[str, tuple[str, ...]] = {
    "whisper": ("faster-whisper==1.2.1",),
    "moonshine": ("useful-moonshine-onnx==20251121", "soundfile==0.14.0"),
    "kokoro": ("kokoro-onnx==0.6.1", "soundfile==0.14.0"),
}
MARKER = "hal0-backend.json"


def _venv(paths: Paths, kind: str) -> Path:
    return paths.backends_dir / kind / "venv"


def engine_python(paths: Paths, kind: str) -> str | None:
    """The interpreter of an installed engine virtualenv, or None."""
    python = _venv(paths, kind) / "bin" / "python"
    return str(python) if (_venv(paths, kind) / MARKER).exists() and python.exists() else None


def installed(paths: Paths) -> dict[str, dict[str, object]]:
    """Installed engines with what their marker recorded."""
    out = {}
    for kind in ENGINES:
        marker = _venv(paths, kind) / MARKER
        if marker.exists():
            out[kind] = json.loads(marker.read_text())
    return out


def install(paths: Paths, kind: str, say: Callable[[str], None]) -> bool:
    """Create or update the engine's virtualenv; False if it was already up to date.

    Blocks for as long as pip takes; raises ValueError (unknown kind) or RuntimeError (pip failed).
    """
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; hal0 installs {', '.join(ENGINES)}")
    packages = [*ENGINES[kind], *RUNTIME_DEPS]
    target = _venv(paths, kind)
    marker = target / MARKER
    if marker.exists() and json.loads(marker.read_text()).get("packages") == packages:
        say(f"{kind} is already installed in {target}")
        return False
    started = time.monotonic()
    say(f"creating {target} with Python {sys.version_info[0]}.{sys.version_info[1]}")
    venv.EnvBuilder(with_pip=True, clear=not marker.exists() and target.exists()).create(target)
    say(f"installing {' '.join(packages)}")
    proc = subprocess.Popen([str(target / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                             "--progress-bar", "off", *packages], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(("Collecting", "Downloading", "Installing", "Successfully", "ERROR")):
            say("  " + line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"pip could not install {kind}'s packages (exit {proc.returncode}); see the output above")
    atomic_write(marker, json.dumps({"kind": kind, "packages": packages, "python": sys.executable,
                                     "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
    say(f"{kind} installed in {time.monotonic() - started:.0f}s")
    return True
