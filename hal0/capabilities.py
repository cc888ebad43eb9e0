"""Capability cards group slots so an operator thinks "voice", not "two processes" (SPEC section 6).

This is the fixed card -> slot map; enabling and disabling cards, the rerank child's
synthesised slot and the npu card build on it.
"""

from __future__ import annotations

__all__ = ["CARDS"]

CARDS: dict[str, tuple[str, ...]] = {
    "embed": ("embed", "embed-rerank"),
    "voice": ("stt", "tts"),
    "img": ("img",),
}
