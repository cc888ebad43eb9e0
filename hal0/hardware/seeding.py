"""From a hardware snapshot to the built-in slots' install-time configuration (SPEC section 7).

The decisions are data (tiers.toml); this module only evaluates them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from hal0.config.defaults import builtin_slot
from hal0.config.schema import BUILTIN_SLOTS, SlotConfig
from hal0.hardware.flavors import Toolchains, buildable, toolchains

__all__ = ["Seed", "box_memory", "gpu_gib", "llama_backend", "match_tier", "memory_for", "rerank_model", "seed_slots",
           "tiers"]


@dataclass(frozen=True)
class Seed:
    slot: SlotConfig
    reason: str  # why a slot is written disabled ("" when enabled)
    note: str = ""  # why its backend is not the tier's (a build this box cannot have)


def tiers() -> list[dict[str, Any]]:
    return tomllib.loads(resources.files("hal0.hardware").joinpath("tiers.toml").read_text())["tier"]  # type: ignore[no-any-return]


def _primary(hw: dict[str, Any]) -> dict[str, Any] | None:
    return next((g for g in hw.get("gpus", []) if g["pci"] == hw.get("primary_gpu")), None)


def gpu_gib(hw: dict[str, Any]) -> float:
    """The primary GPU's usable memory: its VRAM, or VRAM + GTT for an APU (a VRAM carve-out
    under 4 GiB, where GTT is most of what the GPU gets). A discrete card's GTT is only a window
    onto system RAM and does not count."""
    gpu = _primary(hw)
    if gpu is None:
        return 0.0
    vram, gtt = gpu["vram_bytes"] or 0, gpu["gtt_bytes"] or 0
    return (vram + gtt if vram < 4 * 2**30 else vram) / 2**30


def memory_for(hw: dict[str, Any], backend: str) -> int | None:
    """Bytes a model may use on ``backend``: the primary GPU's (``gpu_gib``) for a GPU backend,
    system memory (or the cgroup's limit, if lower) on the CPU; None when the probe did not know."""
    if backend == "cpu":
        mem = hw.get("memory") or {}
        known = [b for b in (mem.get("total_bytes"), mem.get("cgroup_limit_bytes")) if b]
        return min(known) if known else None
    return int(gpu_gib(hw) * 2**30) or None


def box_memory(hw: dict[str, Any]) -> int | None:
    """The most a model can use here: the primary GPU's memory or system memory, whichever is
    larger; None when the probe knew neither."""
    known = [m for m in (memory_for(hw, "gpu"), memory_for(hw, "cpu")) if m]
    return max(known) if known else None


def _holds(when: dict[str, Any], hw: dict[str, Any]) -> bool:
    gpu = _primary(hw)
    if "gpu" in when and (gpu is None or (when["gpu"] != "any" and gpu["vendor"] != when["gpu"])):
        return False
    if gpu_gib(hw) < when.get("min_gpu_gb", 0):
        return False
    if when.get("rocm") and not hw["rocm"]["kfd"]:
        return False
    return not (when.get("vulkan_gpu") and not hw["vulkan"]["gpu"])


def match_tier(hw: dict[str, Any]) -> dict[str, Any]:
    """The first tier whose conditions the snapshot meets (the last tier matches anything)."""
    return next(t for t in tiers() if _holds(t.get("when", {}), hw))


def llama_backend(tier: dict[str, Any], hw: dict[str, Any], tc: Toolchains) -> tuple[str, str]:
    """The llama-server slots' backend: the tier's when this box can have that build of llama-server,
    else Vulkan (or the CPU), with a note saying so."""
    wanted, can = tier["backend"], buildable(hw, tc)
    if wanted in can:
        return wanted, ""
    instead = "vulkan" if "vulkan" in can else "cpu"
    return instead, (f"backend: the {tier['name']} tier prefers {wanted}, but this box cannot build a {wanted} "
                     f"llama-server (no {'CUDA toolkit' if wanted == 'cuda' else 'ROCm'}), so it uses {instead}"
                     + (" (the GPU's Vulkan driver)" if instead == "vulkan" else " (no GPU Vulkan driver either)"))


def seed_slots(hw: dict[str, Any], tc: Toolchains | None = None) -> dict[str, Seed]:
    """Provider, backend, default model and enabled flag for each built-in slot on this box; ``tc``
    (default: what is installed here) says which llama-server builds it can have."""
    tier = match_tier(hw)
    llama, note = llama_backend(tier, hw, toolchains() if tc is None else tc)
    disabled: dict[str, str] = dict(tier.get("disabled", {}))
    if tier.get("img_needs_rocm") and not hw["rocm"]["kfd"]:
        disabled.setdefault("img", "ComfyUI needs ROCm here and /dev/kfd is missing (install ROCm, then "
                                   "`hal0 slot enable img`)")
    seeds = {}
    for name in BUILTIN_SLOTS:
        slot = builtin_slot(name, model=tier["models"].get(name, ""))
        backend = {"stt": "cpu", "tts": "cpu", "img": tier.get("img_backend", "cpu")}.get(name, llama)
        slot = replace(slot, backend=backend, enabled=name not in disabled, pinned=name in tier.get("pinned", ()))
        if name == "primary" and tier.get("parallel"):
            slot = replace(slot, server=replace(slot.server, parallel=int(tier["parallel"])))
        seeds[name] = Seed(slot, disabled.get(name, ""), note if slot.provider == "llama-server" else "")
    return seeds


def rerank_model(hw: dict[str, Any]) -> str:
    """The default model of the rerank child (the embed card's ``embed-rerank`` slot) on this box."""
    return str(match_tier(hw)["models"]["rerank"])
