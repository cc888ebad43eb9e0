"""Which slot or upstream serves a request: a pure function of a ``DispatchView`` (SPEC section 5).

The kind of slot each route needs and the slot it falls back to come from ``hal0.roles``. A
request that lands on a slot of another kind is refused here, before anything is woken.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from hal0.errors import CapabilityDisabled, ModelNotFound, ModelNotLoaded, ModelWrongModality
from hal0.roles import ROUTES

__all__ = ["DispatchView", "Route", "SlotView", "resolve"]


@dataclass(frozen=True)
class SlotView:
    name: str
    models: frozenset[str]  # what the slot runs (its id and its ref); empty when nothing runs
    configured: str | None  # what a start would load
    kind: str  # hal0.roles.Modality


@dataclass(frozen=True)
class DispatchView:
    """What resolution may look at, captured from memory (never from a backend)."""

    slots: tuple[SlotView, ...]
    upstream_models: dict[str, str] = field(default_factory=dict)  # model id -> upstream name
    registry_ids: frozenset[str] = frozenset()
    unknown_model: Literal["default", "reject"] = "default"
    by_name: dict[str, SlotView] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {s.name: s for s in self.slots})  # built once per view


@dataclass(frozen=True)
class Route:
    slot: str | None = None
    upstream: str | None = None
    model: str | None = None  # the client's model field, or None
    # An unknown model sent to the path's default slot (``unknown_model = "default"``).
    fallback: bool = field(default=False, compare=False)


def _slot_route(s: SlotView | None, name: str, view: DispatchView, path: str, model: str | None) -> Route:
    kind = ROUTES[path][0]
    if s is None:
        if name == "embed-rerank":
            raise CapabilityDisabled(
                "rerank is not enabled: create the embed-rerank slot (`hal0 capability enable embed rerank`, "
                "or a slot named embed-rerank with `--reranking`)", capability="embed.rerank")
        raise ModelNotFound(f"no slot {name!r} serves {path}", slot=name)
    if s.kind != kind:
        able = [v.name for v in view.slots if v.kind == kind]
        hint = f"use {' or '.join(able)}" if able else "no slot serves it: create one"
        raise ModelWrongModality(f"slot {s.name} serves {s.kind}, not {kind} ({path}); {hint}", param="model",
                                 slot=s.name, slot_kind=s.kind, route=path, route_kind=str(kind), slots=able)
    return Route(slot=name, model=model)


def resolve(model: str | None, path: str, view: DispatchView) -> Route:
    """The route for ``model`` on ``path``. Raises ModelNotLoaded, ModelNotFound, ModelWrongModality
    or CapabilityDisabled."""
    kind, default = ROUTES[path]
    by_name = view.by_name
    if not model:
        return _slot_route(by_name.get(default), default, view, path, None)
    slot_name, sep, ref = model.partition(":")
    if sep and slot_name in by_name:
        s = by_name[slot_name]
        if ref not in s.models and not (not s.models and ref == s.configured):
            runs = ", ".join(sorted(s.models)) or "nothing"
            raise ModelNotLoaded(
                f"slot {slot_name} runs {runs}, not {ref}; load it with "
                f"`hal0 slot swap {slot_name} --model {ref}`", slot=slot_name, model=ref)
        return _slot_route(s, slot_name, view, path, model)
    if model in by_name:
        return _slot_route(by_name[model], model, view, path, model)
    running = [s for s in view.slots if model in s.models]
    if running:  # the same model may run in slots of several kinds: the right kind first
        s = next((s for s in running if s.kind == kind), running[0])
        return _slot_route(s, s.name, view, path, model)
    if model in view.upstream_models:
        return Route(upstream=view.upstream_models[model], model=model)
    if model in view.registry_ids:
        raise ModelNotLoaded(
            f"model {model} is registered but no slot runs it; load it with "
            f"`hal0 slot swap {default} --model {model}`", model=model, slot=default)
    if view.unknown_model == "default":
        return replace(_slot_route(by_name.get(default), default, view, path, model), fallback=True)
    raise ModelNotFound(f"the model {model!r} does not exist", model=model, param="model")
