"""What a llama-server binary says about itself: ``--version`` and ``--list-devices``.

Both run the binary with its own folder on the library path (llama.cpp builds ship their shared
libraries beside it), so they prove it loads here, and ``--list-devices`` shows whether the GPU
backend found the GPU the probe did. Blocks for as long as the binary takes (bounded).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NVIDIA_VULKAN_PACKAGES", "Device", "Ran", "gpu_devices", "list_devices", "missing_packages",
           "parse_devices", "parse_version", "run"]

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


def run(binary: Path, *args: str, timeout: float = 60) -> Ran:
    """``binary args`` with its folder on LD_LIBRARY_PATH; its exit code and output (stdout + stderr)."""
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in (str(binary.parent),
                                                                  os.environ.get("LD_LIBRARY_PATH")) if p)}
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


def list_devices(binary: Path) -> tuple[list[Device], Ran]:
    ran = run(binary, "--list-devices")
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
