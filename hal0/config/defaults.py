"""Defaults for the five built-in slots and the rendering of slot TOMLs.

The probe (hardware seeding) picks models and backends per box later; without it
a built-in slot has the seed's provider and port and no model yet.
"""

from __future__ import annotations

from typing import Any

import tomli_w

from hal0.config.schema import ModelSection, SlotConfig

__all__ = ["BUILTIN_DEFAULTS", "builtin_slot", "render_slot_toml"]

BUILTIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "primary": {"provider": "llama-server", "backend": "vulkan", "port": 8081},
    "embed": {"provider": "llama-server", "backend": "vulkan", "port": 8082},
    "stt": {"provider": "moonshine", "backend": "cpu", "port": 8083},
    "tts": {"provider": "kokoro", "backend": "cpu", "port": 8084},
    "img": {"provider": "comfyui", "backend": "rocm", "port": 8085},
}


def builtin_slot(name: str, *, model: str = "") -> SlotConfig:
    """The default configuration of built-in slot ``name``."""
    return SlotConfig(name=name, model=ModelSection(default=model), **BUILTIN_DEFAULTS[name])


def render_slot_toml(slot: SlotConfig, note: str = "") -> str:
    """The slot as TOML text in the one flat shape, with a header comment (and ``note``)."""
    data: dict[str, Any] = {
        "name": slot.name,
        "provider": slot.provider,
        "backend": slot.backend,
        "port": slot.port,
        "enabled": slot.enabled,
        "idle_timeout_s": slot.idle_timeout_s,
        "unload_after_s": slot.unload_after_s,
        "max_queue": slot.max_queue,
        "max_inflight": slot.max_inflight,
        "pinned": slot.pinned,
        **({"rpc": list(slot.rpc)} if slot.rpc else {}),
        "model": {"default": slot.model.default, "context_size": slot.model.context_size,
                  "gpu_layers": slot.model.gpu_layers},
        "server": {"extra_args": list(slot.server.extra_args), "threads": slot.server.threads,
                   "parallel": slot.server.parallel,
                   **({"accept_token_ids": True} if slot.server.accept_token_ids else {})},
        "env": dict(slot.env),
    }
    header = (f"# hal0 slot {slot.name!r}. [model].default is the install-time seed only:\n"
              f"# `hal0 slot swap {slot.name} --model ID` changes the live model.\n")
    if note:
        header += f"# {note}\n"
    return header + tomli_w.dumps(data)
