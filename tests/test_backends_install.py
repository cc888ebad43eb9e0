"""`hal0 backend install|list`: engine virtualenvs made from the package registry."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from hal0.backends import RUNTIME_DEPS
from tests.helpers.env import HAL0, REPO, hal0_env, manifest


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


def test_system_torch_is_for_comfyui_only(tmp_path: Path) -> None:
    r = subprocess.run([*HAL0, "backend", "install", "openwebui", "--torch", "system"], env=hal0_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr.strip()) == (2, "hal0: --torch system applies to comfyui only")


@pytest.mark.slow
@pytest.mark.backends
def test_comfyui_on_the_systems_torch_installs_only_what_that_python_lacks(tmp_path: Path, pyz: Path) -> None:
    """A GPU box whose Python already has a CUDA torch (NVIDIA's containers, say): `--torch
    system` makes a virtualenv that uses that torch instead of downloading another, and ComfyUI
    starts on it. The provisioned ComfyUI virtualenv plays the box's Python (it has torch,
    torchvision and every requirement), so pip installs nothing but the ComfyUI tree."""
    system_python = manifest()["comfyui"]["python"]
    r = subprocess.run([system_python, str(pyz), "backend", "install", "comfyui", "--torch", "system"],
                       env=hal0_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "using the system's torch 2.14.1" in r.stdout
    installed = {name.rsplit("-", 1)[0] for line in r.stdout.splitlines() if "Successfully installed" in line
                 for name in line.split()[2:]}
    # Nothing the system had: at most Python 3.11's venv, which brings an older setuptools of its own
    # that torch's metadata does not accept (3.12 brings none).
    assert installed <= {"setuptools"}, r.stdout
    venv = tmp_path / "var/backends/comfyui/venv"
    assert not list(venv.glob("lib/python*/site-packages/torch"))  # no torch of its own
    marker = json.loads((venv / "hal0-backend.json").read_text())
    assert marker["packages"][0] == "system" and marker["torch"].startswith("torch 2.14.1")
    assert marker["torch"].endswith(str(Path(system_python).parent.parent / "lib/python3.11/site-packages"))
    main = Path(marker["bin"])
    base = tmp_path / "comfy"
    started = subprocess.run([str(venv / "bin/python"), str(main), "--cpu", "--quick-test-for-ci",
                              "--base-directory", str(base), "--database-url", f"sqlite:///{base / 'c.db'}",
                              "--disable-all-custom-nodes"],
                             cwd=main.parent, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    again = subprocess.run([system_python, str(pyz), "backend", "install", "comfyui", "--torch", "system"],
                           env=hal0_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already installed" in again.stdout
