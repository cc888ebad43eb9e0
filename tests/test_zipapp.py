"""dist/hal0.pyz runs on a plain python3, without a virtualenv."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.env import free_port, manifest
from tests.helpers.serve import sdk, serving

pytestmark = pytest.mark.slow


def plain_env(home: Path, shiv_root: Path) -> dict[str, str]:
    keep = {"PATH": os.environ["PATH"], "HOME": str(home)}
    return {**keep, "HAL0_HOME": str(home), "SHIV_ROOT": str(shiv_root)}


def system_python() -> str:
    """A python3 outside any virtualenv (the one that runs scripts/setup-backends)."""
    found = shutil.which("python3", path=os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if "hal0-dev" not in p))
    assert found
    return found


def test_pyz_runs_version_and_serve_on_plain_python(pyz: Path, tmp_path: Path) -> None:
    env = plain_env(tmp_path / "home", tmp_path / "shiv")
    py = system_python()
    r = subprocess.run([py, "-I", str(pyz), "version"], env=env, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "hal0 0.1.0"
    assert (tmp_path / "shiv").is_dir()  # SHIV_ROOT is honoured
    subprocess.run([py, "-I", str(pyz), "init"], env=env, check=True, capture_output=True)
    with serving(tmp_path / "home", argv=[py, "-I", str(pyz)], env=env) as s:
        assert s.get("/health")[0] == 200
        assert s.stop() == 0


@pytest.mark.backends
def test_pyz_draws_an_image_with_its_shipped_workflows(pyz: Path, tmp_path: Path) -> None:
    """The workflow templates are data files inside the zipapp: one image through it proves them."""
    env = plain_env(tmp_path / "home", tmp_path / "shiv")
    py = system_python()
    m = manifest()["comfyui"]
    subprocess.run([py, "-I", str(pyz), "init", "--provider-python", f"comfyui={m['python']}", "--provider-bin",
                    f"comfyui={m['bin']}", "--slot-model", f"img={m['checkpoint']}"], env=env, check=True,
                   capture_output=True)
    toml = tmp_path / "home/etc/slots/img.toml"
    text = toml.read_text().replace("enabled = false", "enabled = true").replace('backend = "rocm"', 'backend = "cpu"')
    toml.write_text(text.replace("port = 8085", f"port = {free_port()}"))
    for name in ("primary", "embed", "stt", "tts"):
        slot = tmp_path / f"home/etc/slots/{name}.toml"
        slot.write_text(slot.read_text().replace("enabled = true", "enabled = false"))
    token = (tmp_path / "home/etc/admin.token").read_text().strip()
    with serving(tmp_path / "home", argv=[py, "-I", str(pyz)], env=env) as s, sdk(s, token) as client:
        out = client.images.generate(prompt="a kite", size="64x64", response_format="b64_json")
        assert base64.b64decode(out.data[0].b64_json or "")[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[index]
        assert s.stop() == 0
