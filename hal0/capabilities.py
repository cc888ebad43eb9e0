"""Capability cards group slots so an operator thinks "voice", not "two processes" (SPEC section 6).

A card's children are slots; a child's state is its slot's. The rerank child of ``embed`` is
the auto-managed ``embed-rerank`` slot, synthesised on its first enable. ``capabilities.toml``
records what the operator chose per child. The ``npu`` card arrives with the FLM provider.
"""

from __future__ import annotations

import tomllib
from typing import Any

import tomli_w

from hal0.atomic import atomic_write
from hal0.config.schema import RERANK_SLOT
from hal0.errors import CapabilityIllegalPair, CapabilityNotFound
from hal0.paths import Paths

__all__ = ["BACKENDS", "CARDS", "RERANK_DEFAULT_MODEL", "check_backend", "child_slot", "record_choice"]

# card -> child -> slot
CARDS: dict[str, dict[str, str]] = {
    "embed": {"embed": "embed", "rerank": RERANK_SLOT},
    "voice": {"stt": "stt", "tts": "tts"},
    "img": {"img": "img"},
}
RERANK_DEFAULT_MODEL = "bge-reranker-v2-m3-q4_k_m"
# The backends each provider can run models on.
BACKENDS: dict[str, tuple[str, ...]] = {
    "llama-server": ("vulkan", "rocm", "cuda", "cpu"),
    "whisper": ("cpu", "cuda"),
    "moonshine": ("cpu",),
    "kokoro": ("cpu", "cuda"),
    "comfyui": ("rocm", "cuda", "cpu"),
    "flm": ("npu",),
}


def child_slot(card: str, child: str) -> str:
    """The slot behind ``card``/``child``; raises CapabilityNotFound."""
    try:
        return CARDS[card][child]
    except KeyError:
        known = ", ".join(f"{c}/{k}" for c, kids in CARDS.items() for k in kids)
        raise CapabilityNotFound(f"no capability {card}/{child}; known: {known}", card=card, child=child) from None


def check_backend(provider: str, backend: str) -> None:
    """Raise CapabilityIllegalPair unless ``provider``'s models can run on ``backend``."""
    if backend not in BACKENDS.get(provider, ()):
        raise CapabilityIllegalPair(f"{provider} models cannot run on the {backend} backend; it runs on "
                                    f"{', '.join(BACKENDS.get(provider, ())) or 'nothing here'}",
                                    provider=provider, backend=backend)


def record_choice(paths: Paths, card: str, child: str, **choice: Any) -> None:
    """Remember the operator's choice for a child in capabilities.toml."""
    file = paths.capabilities_toml
    data: dict[str, Any] = tomllib.loads(file.read_text()) if file.exists() else {}
    data.setdefault(card, {}).setdefault(child, {}).update(choice)
    atomic_write(file, "# hal0 capability cards: what the operator chose. Manage with `hal0 capability`.\n"
                 + tomli_w.dumps(data))
