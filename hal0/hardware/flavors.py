"""Which llama-server build (flavor) this box can have, decided from ``hardware.json`` and the
toolchains found here. Pure decisions over data; ``toolchains()`` is the only thing that looks.

| flavor | how hal0 gets it                                                                 |
|--------|----------------------------------------------------------------------------------|
| vulkan | the prebuilt Vulkan build (x86_64), else built from source with glslc + headers  |
| cuda   | built from source with the CUDA toolkit (``nvcc``)                               |
| rocm   | built from source with ROCm (``hipcc``)                                          |
| cpu    | the prebuilt build on the CPU when it runs here, else built from source          |

``auto`` is what the tier table gives this box's llama-server slots (``seeding.llama_backend``):
the tier's backend where this box can have that build (CUDA on NVIDIA with the CUDA toolkit), else
Vulkan where a GPU Vulkan driver exists (AMD, Intel and NVIDIA all ship one), else the CPU. So the
build that installs is the one the slots were written for.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FLAVORS", "GPU_FLAVORS", "Choice", "Toolchains", "buildable", "choose", "primary_gpu", "toolchains"]

FLAVORS = ("cpu", "vulkan", "cuda", "rocm")
GPU_FLAVORS = frozenset({"vulkan", "cuda", "rocm"})


@dataclass(frozen=True)
class Toolchains:
    """What a build from source could use here."""

    nvcc: str | None = None  # the CUDA toolkit's compiler
    hipcc: str | None = None  # ROCm's
    glslc: str | None = None  # Vulkan's shader compiler (with the headers: a Vulkan build)
    vulkan_headers: bool = False


@dataclass(frozen=True)
class Choice:
    flavor: str
    why: str


def toolchains(root: Path = Path("/")) -> Toolchains:
    """The toolchains on this box (PATH, then their usual install folders under ``root``)."""
    def find(name: str, *folders: str) -> str | None:
        found = shutil.which(name) if root == Path("/") else None
        return found or next((str(root / f / name) for f in folders if (root / f / name).is_file()), None)

    return Toolchains(nvcc=find("nvcc", "usr/local/cuda/bin", "usr/bin"),
                      hipcc=find("hipcc", "opt/rocm/bin", "usr/bin"),
                      glslc=find("glslc", "usr/bin"),
                      vulkan_headers=(root / "usr/include/vulkan/vulkan.h").is_file())


def primary_gpu(hw: dict[str, Any]) -> dict[str, Any] | None:
    return next((g for g in hw.get("gpus") or [] if g.get("pci") == hw.get("primary_gpu")), None)


def buildable(hw: dict[str, Any], tc: Toolchains) -> dict[str, str]:
    """flavor -> why it can be had here; a flavor missing from the answer cannot."""
    gpu = primary_gpu(hw)
    vendor = gpu.get("vendor") if gpu else None
    out = {"cpu": "always"}
    if (hw.get("vulkan") or {}).get("gpu"):
        out["vulkan"] = "a GPU Vulkan driver is installed"
    if vendor == "nvidia" and tc.nvcc:
        out["cuda"] = f"the CUDA toolkit ({tc.nvcc})"
    if vendor == "amd" and (hw.get("rocm") or {}).get("kfd") and tc.hipcc:
        out["rocm"] = f"ROCm ({tc.hipcc})"
    return out


def choose(requested: str, hw: dict[str, Any], tc: Toolchains) -> Choice:
    """The flavor to install for ``requested`` (``auto`` or a flavor) on this box.

    Raises ValueError, with what to install or which flavor to pick, when an explicit flavor
    cannot be had here.
    """
    can = buildable(hw, tc)
    if requested != "auto":
        if requested not in FLAVORS:
            raise ValueError(f"unknown flavor {requested!r}; choose auto, {', '.join(FLAVORS)}")
        if requested not in can:
            raise ValueError(_cannot(requested, hw))
        return Choice(requested, "asked for")
    from hal0.hardware.seeding import gpu_gib, llama_backend, match_tier  # seeding imports this module

    tier = match_tier(hw)
    flavor, note = llama_backend(tier, hw, tc)
    if note:
        return Choice(flavor, note.removeprefix("backend: "))
    gpu = primary_gpu(hw)
    if flavor == "cpu" and gpu is None:
        return Choice("cpu", "no GPU")
    if flavor == "cpu" and gpu is not None:
        size = f"{gpu_gib(hw):.1f} GiB" if gpu_gib(hw) else "its memory unknown"
        driver = "" if (hw.get("vulkan") or {}).get("gpu") else ", no Vulkan driver"
        return Choice("cpu", f"the {gpu.get('vendor') or 'unknown'} GPU ({size}{driver}) falls to the "
                             f"{tier['name']} tier")
    return Choice(flavor, f"the {tier['name']} tier's backend: {can[flavor]}")


def _cannot(flavor: str, hw: dict[str, Any]) -> str:
    gpu = primary_gpu(hw)
    vendor = gpu.get("vendor") if gpu else None
    if flavor == "vulkan":
        return ("no GPU Vulkan driver on this box (hardware.json lists none): install the GPU's Vulkan driver "
                "(mesa-vulkan-drivers on AMD and Intel, the NVIDIA driver's ICD), then `hal0 probe --apply`")
    if flavor == "cuda":
        if vendor != "nvidia":
            return "a CUDA build needs an NVIDIA GPU, and the probe found none"
        return ("no CUDA toolkit (nvcc) to build llama-server with: install it (apt-get install nvidia-cuda-toolkit), "
                "or use --flavor vulkan (NVIDIA's Vulkan driver runs it on the GPU)")
    if vendor != "amd" or not (hw.get("rocm") or {}).get("kfd"):
        return "a ROCm build needs an AMD GPU with /dev/kfd, and the probe found none"
    return "no ROCm (hipcc) to build llama-server with: install ROCm, or use --flavor vulkan"
