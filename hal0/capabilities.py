"""Capability cards group slots so an operator thinks "voice", not "two processes" (SPEC section 6).

A card's children are slots; a child's state is its slot's, read from the slot directory. The
rerank child of ``embed`` is the auto-managed ``embed-rerank`` slot, synthesised on its first
enable. ``capabilities.toml`` records what the operator chose per child. ``CapabilityService``
owns every multi-step change: it validates the whole request first, then applies its steps
in order and undoes the ones done if a later one fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import tomli_w

from hal0.atomic import atomic_write
from hal0.config.schema import RERANK_SLOT, Hal0Config, ProviderConfig
from hal0.errors import CapabilityIllegalPair, CapabilityNotFound, Hal0Error, RequestInvalid
from hal0.hardware.seeding import rerank_model
from hal0.models.registry import Registry
from hal0.paths import Paths
from hal0.providers import get_provider
from hal0.providers.flm import flm_binary
from hal0.slots import SlotManager, SlotSnapshot

__all__ = ["BACKENDS", "CARDS", "RERANK_DEFAULT_MODEL", "CapabilityService", "ServiceChild", "check_backend",
           "child_slot"]

log = logging.getLogger("hal0.capabilities")

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
_FIELDS = {"enabled": (bool, "true or false"), "model": (str, "a non-empty string"),
           "backend": (str, "a string")}


class ServiceChild(Protocol):
    """A child that is a service of hal0 rather than a slot (Open WebUI on the ``webui`` card)."""

    def card_json(self) -> dict[str, Any]: ...

    async def set_enabled(self, enabled: bool) -> None: ...


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


def _check_body(body: dict[str, Any]) -> None:
    unknown = set(body) - set(_FIELDS)
    if unknown or not body:
        raise RequestInvalid("send any of `enabled`, `model` and `backend`", param=next(iter(unknown), None))
    for key, (kind, what) in _FIELDS.items():
        if key in body and (not isinstance(body[key], kind) or body[key] == ""):
            raise RequestInvalid(f"`{key}` must be {what}", param=key)


class CapabilityService:
    """The cards and every change to them. Changes run one at a time."""

    def __init__(self, paths: Paths, config: Hal0Config, registry: Registry, slots: SlotManager) -> None:
        self._paths, self._config, self._registry, self._slots = paths, config, registry, slots
        self._lock = asyncio.Lock()
        self._details: list[Callable[[SlotSnapshot], dict[str, Any]]] = []
        self._services: dict[tuple[str, str], ServiceChild] = {}

    def add_service(self, card: str, child: str, service: ServiceChild) -> Callable[[], None]:
        """Show ``service`` as ``card``/``child`` (only ``enabled`` can be changed on it); returns
        the function that takes it away."""
        self._services[(card, child)] = service

        def remove() -> None:
            self._services.pop((card, child), None)
        return remove

    def add_child_detail(self, detail: Callable[[SlotSnapshot], dict[str, Any]]) -> Callable[[], None]:
        """Show what ``detail`` says of each child's slot in its card (a service beside the slots,
        such as Wyoming on the voice children); returns the function that stops it."""
        self._details.append(detail)
        return lambda: self._details.remove(detail)

    def _npu_visible(self) -> bool:
        """The npu card is shown only with an XDNA device (hardware.json) and the FLM runtime installed."""
        hw_file = self._paths.hardware_json
        try:
            xdna = bool(json.loads(hw_file.read_text())["npu"]["xdna"]) if hw_file.exists() else False
        except (OSError, ValueError, KeyError, TypeError):
            xdna = False
        return xdna and flm_binary(self._config.providers.get("flm", ProviderConfig())) is not None

    def cards(self) -> dict[str, Any]:
        snaps = {s.name: s for s in self._slots.snapshots()}
        cards = dict(CARDS)
        if self._npu_visible():  # one disclosure: every slot that runs on the NPU
            cards["npu"] = {s.name: s.name for s in snaps.values() if s.provider == "flm" or s.backend == "npu"}
        out = {card: {child: self._child_json(name, snaps.get(name)) for child, name in children.items()}
               for card, children in cards.items()}
        for (card, child), service in self._services.items():
            out.setdefault(card, {})[child] = service.card_json()
        return out

    def _child_json(self, name: str, s: SlotSnapshot | None) -> dict[str, Any]:
        extra = {k: v for detail in self._details if s is not None for k, v in detail(s).items()}
        return {**extra, "slot": name, "exists": s is not None, "enabled": bool(s and s.enabled),
                "state": str(s.state) if s else "offline", "provider": s.provider if s else None,
                "backend": s.backend if s else None, "model": (s.model or s.configured) if s else None}

    async def change(self, card: str, child: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply ``{"enabled", "model", "backend"}`` (any of them) to one child: all or nothing.

        Everything is checked before the first step (RequestInvalid, CapabilityNotFound,
        CapabilityIllegalPair, ModelNotFound...). A failing step (a swap that did not load, say)
        undoes the steps before it and raises its error.
        """
        service = self._services.get((card, child))
        if service is not None:
            return await self._change_service(card, child, service, body)
        name = child_slot(card, child)
        _check_body(body)
        async with self._lock:
            existing = {s.name: s for s in self._slots.snapshots()}.get(name)
            provider = existing.provider if existing else "llama-server"  # the rerank slot, once made
            if "backend" in body:
                check_backend(provider, body["backend"])
            if "model" in body:
                get_provider(provider).resolve(body["model"], self._registry)  # unknown: nothing changes
            undo: list[Callable[[], Awaitable[Any]]] = []
            try:
                if existing is None:
                    await self._create_rerank(body)
                    undo.append(lambda: self._slots.delete(name))
                    if "model" in body and body.get("enabled"):
                        await self._slots.get(name).load()  # a model named on enable is loaded, as a swap is
                else:
                    await self._apply(name, existing, body, undo)
            except Hal0Error:
                for step in reversed(undo):
                    try:
                        await step()
                    except Hal0Error as e:
                        log.error("capability %s/%s: undoing a step failed: %s", card, child, e)
                raise
            await asyncio.to_thread(self._record_choice, card, child, body)
        return {"card": card, "child": child, **self.cards()[card][child]}

    async def _change_service(self, card: str, child: str, service: ServiceChild,
                              body: dict[str, Any]) -> dict[str, Any]:
        if set(body) != {"enabled"} or not isinstance(body["enabled"], bool):
            raise RequestInvalid(f"{card}/{child} is a service: send only `enabled` (true or false)",
                                 param=next(iter(set(body) - {"enabled"}), "enabled"))
        async with self._lock:
            await service.set_enabled(body["enabled"])
            await asyncio.to_thread(self._record_choice, card, child, body)
        return {"card": card, "child": child, **service.card_json()}

    async def _apply(self, name: str, before: SlotSnapshot, body: dict[str, Any],
                     undo: list[Callable[[], Awaitable[Any]]]) -> None:
        slot = self._slots.get(name)
        if "enabled" in body and body["enabled"] != before.enabled:
            await (slot.enable() if body["enabled"] else slot.disable())
            undo.append(slot.disable if body["enabled"] else slot.enable)
        if "backend" in body and body["backend"] != before.backend:
            await slot.set_backend(body["backend"])
            undo.append(lambda: slot.set_backend(before.backend))
        if "model" in body:
            await slot.swap(body["model"])  # the last step: a failed swap rolls itself back

    async def _create_rerank(self, body: dict[str, Any]) -> None:
        """Synthesise embed-rerank: llama-server with --reranking on embed's backend, the tier
        table's rerank model for this box (or what the request names)."""
        embed = self._slots.get("embed").config
        model = body.get("model")
        if model is None:
            hw_file = self._paths.hardware_json
            hw = await asyncio.to_thread(lambda: json.loads(hw_file.read_text()) if hw_file.exists() else None)
            model = rerank_model(hw) if hw else RERANK_DEFAULT_MODEL
        await self._slots.create({"name": RERANK_SLOT, "provider": "llama-server",
                                  "backend": body.get("backend", embed.backend), "model": model,
                                  "enabled": body.get("enabled", False),
                                  "server": {"extra_args": ["--reranking"]}}, internal=True)

    def _record_choice(self, card: str, child: str, choice: dict[str, Any]) -> None:
        """Remember the operator's choice for a child in capabilities.toml."""
        file = self._paths.capabilities_toml
        data: dict[str, Any] = tomllib.loads(file.read_text()) if file.exists() else {}
        data.setdefault(card, {}).setdefault(child, {}).update(choice)
        atomic_write(file, "# hal0 capability cards: what the operator chose. Manage with `hal0 capability`.\n"
                     + tomli_w.dumps(data))
