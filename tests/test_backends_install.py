"""`hal0 backend install|list`: engine virtualenvs made from the package registry."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from hal0.backends import RUNTIME_DEPS
from tests.helpers.env import HAL0, REPO, hal0_env


def test_runtime_deps_match_pyproject() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert tuple(deps) == RUNTIME_DEPS


@pytest.mark.slow
def test_install_whisper_then_list_then_reinstall_is_a_no_op(tmp_path: Path) -> None:
    def hal0(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*HAL0, *args], env=hal0_env(tmp_path), capture_output=True, text=True, timeout=600)

    assert json.loads(hal0("backend", "list", "--json").stdout) == {}
    first = hal0("backend", "install", "whisper")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Successfully installed" in first.stdout and "whisper installed in" in first.stdout
    listed = json.loads(hal0("backend", "list", "--json").stdout)
    assert listed["whisper"]["packages"][0] == "faster-whisper==1.2.1"
    python = tmp_path / "var/backends/whisper/venv/bin/python"
    check = subprocess.run([str(python), "-c", "import faster_whisper, aiohttp; print('ok')"],
                           capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "ok"
    again = hal0("backend", "install", "whisper")
    assert again.returncode == 0 and "already installed" in again.stdout


@pytest.mark.slow
def test_a_comfyui_torch_that_does_not_exist_fails_cleanly(tmp_path: Path) -> None:
    r = subprocess.run([*HAL0, "backend", "install", "comfyui", "--torch", "torch==0.0.1 torchvision==0.0.1"],
                       env=hal0_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    assert "pip install torch==0.0.1 torchvision==0.0.1" in r.stdout
    assert "hal0: pip could not install torch==0.0.1 torchvision==0.0.1" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(subprocess.run([*HAL0, "backend", "list", "--json"], env=hal0_env(tmp_path),
                                     capture_output=True, text=True, check=True).stdout) == {}


def test_torch_options_are_for_the_torch_engines_only(tmp_path: Path) -> None:
    r = subprocess.run([*HAL0, "backend", "install", "whisper", "--torch", "torch==2.9.1"], env=hal0_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr.strip()) == (
        2, "hal0: --torch and --torch-index-url apply to comfyui and openwebui only")
