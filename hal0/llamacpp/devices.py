"""What a llama-server binary says about itself: ``--version`` and ``--list-devices``.

Both run the binary with its own folder on the library path (llama.cpp builds ship their shared
libraries beside it), so they prove it loads here, and ``--list-devices`` shows whether the GPU
backend found the GPU the probe did. Blocks for as long as the binary takes (bounded).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hal0.hardware.flavors import GPU_FLAVORS, primary_gpu

__all__ = ["NVIDIA_VULKAN_PACKAGES", "Device", "GpuSeen", "Ran", "gpu_devices", "gpu_seen", "list_devices",
           "missing_packages", "nvidia_vulkan", "nvidia_vulkan_problem", "parse_devices", "parse_version", "run"]

# NVIDIA's Vulkan driver (its ICD, libGLX_nvidia) needs the GL vendor-neutral dispatch libraries;
# without them it fails to load and llama-server quietly runs on the CPU (measured on an H200).
NVIDIA_VULKAN_PACKAGES = ("libvulkan1", "libglvnd0", "libegl1", "libgl1", "libglx0", "libopengl0", "libgles2")
CPU_RENDERERS = ("llvmpipe", "lavapipe", "swiftshader")  # Vulkan drivers that are the CPU
_DEVICE = re.compile(r"^\s+(?P<name>[A-Za-z_-]+\d+):\s+(?P<desc>.*?)\s+"
                     r"\((?P<total>\d+) MiB, (?P<free>\d+) MiB free\)\s*$")
_VERSION = re.compile(r"^version:\s*(?P<version>.+)$", re.M)


@dataclass(frozen=True)
class Device:
    name: str  # Vulkan0, CUDA0, ROCm0
    description: str  # "NVIDIA H200"
    total_mib: int
    free_mib: int

    @property
    def is_gpu(self) -> bool:
        return not any(c in self.description.lower() for c in CPU_RENDERERS)


@dataclass(frozen=True)
class Ran:
    code: int | None  # None: it could not be started or did not finish
    output: str


def run(binary: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> Ran:
    """``binary args`` in ``env`` (default: this process's) with the binary's folder on
    LD_LIBRARY_PATH; its exit code and output (stdout + stderr)."""
    base = os.environ if env is None else env
    env = {**base, "LD_LIBRARY_PATH": ":".join(p for p in (str(binary.parent), base.get("LD_LIBRARY_PATH")) if p)}
    try:
        done = subprocess.run([str(binary), *args], capture_output=True, text=True, errors="replace", env=env,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Ran(None, str(e))
    return Ran(done.returncode, done.stdout + done.stderr)


def parse_version(output: str) -> str | None:
    """``version: 7000 (abc1234)`` from ``--version``'s output, as ``7000 (abc1234)``."""
    found = _VERSION.search(output)
    return found["version"].strip() if found else None


def parse_devices(output: str) -> list[Device]:
    """The devices of ``--list-devices``' "Available devices:" block (CPU backends are not listed)."""
    out, inside = [], False
    for line in output.splitlines():
        if line.startswith("Available devices:"):
            inside = True
        elif inside and (m := _DEVICE.match(line)):
            out.append(Device(m["name"], m["desc"], int(m["total"]), int(m["free"])))
        elif inside and line and not line.startswith(" "):
            inside = False
    return out


def list_devices(binary: Path, env: dict[str, str] | None = None) -> tuple[list[Device], Ran]:
    ran = run(binary, "--list-devices", env=env)
    return parse_devices(ran.output) if ran.code == 0 else [], ran


def gpu_devices(devices: list[Device]) -> list[Device]:
    return [d for d in devices if d.is_gpu]


def missing_packages(packages: tuple[str, ...] = NVIDIA_VULKAN_PACKAGES) -> list[str]:
    """Those of the Debian ``packages`` that are not installed; empty where there is no dpkg."""
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        return []
    done = subprocess.run([dpkg, "-W", "-f=${Package} ${db:Status-Status}\n", *packages], capture_output=True,
                          text=True)
    installed = {ln.split()[0] for ln in done.stdout.splitlines() if ln.endswith(" installed")}
    return [p for p in packages if p not in installed]


def nvidia_vulkan(hw: dict[str, Any], flavor: str) -> bool:
    """A Vulkan build on an NVIDIA GPU: NVIDIA's driver, which needs the GL dispatch libraries."""
    gpu = primary_gpu(hw)
    return flavor == "vulkan" and gpu is not None and gpu.get("vendor") == "nvidia"


def nvidia_vulkan_problem(hw: dict[str, Any], flavor: str, devices: list[Device], missing: list[str]) -> str | None:
    """Why a GPU-flavored llama-server that lists no GPU is not done, naming what to install; None
    when it sees a GPU or none was expected."""
    gpu = primary_gpu(hw)
    if flavor not in GPU_FLAVORS or gpu is None or gpu_devices(devices):
        return None
    what = _found(gpu)
    if flavor == "vulkan" and gpu.get("vendor") == "nvidia":
        libs = missing or list(NVIDIA_VULKAN_PACKAGES)
        return (f"llama-server ({flavor}) lists no GPU although the probe found {what}: NVIDIA's Vulkan driver "
                f"needs the GL dispatch libraries{' (missing: ' + ', '.join(missing) + ')' if missing else ''}: "
                f"apt-get install {' '.join(libs)}, then `hal0 backend install llama-server` again")
    check = {"vulkan": "vulkaninfo --summary", "cuda": "nvidia-smi", "rocm": "rocminfo"}[flavor]
    return (f"llama-server ({flavor}) lists no GPU although the probe found {what}: check the GPU driver "
            f"(`{check}`) and that this user may open its devices, or use --flavor cpu")


@dataclass(frozen=True)
class GpuSeen:
    """What ``gpu_seen`` found: ``seen`` (True: it lists the GPU; False: it lists none although
    the probe found one; None: nothing to tell, as no GPU was found, hardware.json is unreadable,
    or the binary did not answer) and, when not seen, why and what to install."""

    seen: bool | None
    problem: str = ""


def gpu_seen(binary: Path, env: dict[str, str], flavor: str, hardware_json: Path) -> GpuSeen:
    """Whether ``binary``, run in a slot's ``env``, lists the GPU the probe found (``flavor``: the
    build's, else the slot's backend). Blocks while the binary lists its devices."""
    try:
        hw = json.loads(hardware_json.read_text())
    except (OSError, ValueError):
        return GpuSeen(None)
    gpu = primary_gpu(hw) if isinstance(hw, dict) else None
    if gpu is None:
        return GpuSeen(None)
    devices, ran = list_devices(binary, env)
    if ran.code != 0:
        return GpuSeen(None)  # the start itself says why it does not run
    if gpu_devices(devices):
        return GpuSeen(True)
    if flavor not in GPU_FLAVORS:
        return GpuSeen(False, f"{binary} is a {flavor} build of llama-server and lists no GPU, although the probe "
                              f"found {_found(gpu)}: `hal0 backend install llama-server` installs the GPU build, or "
                              "set the slot's backend to cpu")
    problem = nvidia_vulkan_problem(hw, flavor, devices, missing_packages() if nvidia_vulkan(hw, flavor) else [])
    return GpuSeen(False, f"{problem} (`hal0 doctor` checks it)")


def _found(gpu: dict[str, Any]) -> str:
    return f"the {gpu.get('name') or gpu.get('vendor') or 'GPU'} at {gpu.get('pci')}"
