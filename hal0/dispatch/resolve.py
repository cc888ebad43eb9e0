"""Which slot or upstream serves a request: a pure function of a ``DispatchView`` (SPEC section 5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hal0.errors import CapabilityDisabled, ModelNotFound, ModelNotLoaded

__all__ = ["PATH_DEFAULTS", "DispatchView", "Route", "SlotView", "resolve"]

# The slot each /v1 path falls back to.
PATH_DEFAULTS = {
    "/v1/chat/completions": "primary",
    "/v1/completions": "primary",
    "/v1/embeddings": "embed",
    "/v1/rerankings": "embed-rerank",
    "/v1/rerank": "embed-rerank",
    "/v1/audio/transcriptions": "stt",
    "/v1/audio/speech": "tts",
    "/v1/audio/voices": "tts",
    "/v1/images/generations": "img",
}


@dataclass(frozen=True)
class SlotView:
    name: str
    models: frozenset[str]  # what the slot runs (its id and its ref); empty when nothing runs
    configured: str | None  # what a start would load


@dataclass(frozen=True)
class DispatchView:
    """What resolution may look at, captured from memory (never from a backend)."""

    slots: tuple[SlotView, ...]
    upstream_models: dict[str, str] = field(default_factory=dict)  # model id -> upstream name
    registry_ids: frozenset[str] = frozenset()
    unknown_model: Literal["default", "reject"] = "default"


@dataclass(frozen=True)
class Route:
    slot: str | None = None
    upstream: str | None = None
    model: str | None = None  # the client's model field, or None


def _slot_route(name: str, view: DispatchView, path: str, model: str | None) -> Route:
    if name not in {s.name for s in view.slots}:
        if name == "embed-rerank":
            raise CapabilityDisabled(
                "rerank is not enabled: create the embed-rerank slot (`hal0 capability enable embed rerank`, "
                "or a slot named embed-rerank with `--reranking`)", capability="embed.rerank")
        raise ModelNotFound(f"no slot {name!r} serves {path}", slot=name)
    return Route(slot=name, model=model)


def resolve(model: str | None, path: str, view: DispatchView) -> Route:
    """The route for ``model`` on ``path``. Raises ModelNotLoaded, ModelNotFound or CapabilityDisabled."""
    default = PATH_DEFAULTS[path]
    if not model:
        return _slot_route(default, view, path, None)
    by_name = {s.name: s for s in view.slots}
    slot_name, sep, ref = model.partition(":")
    if sep and slot_name in by_name:
        s = by_name[slot_name]
        if ref not in s.models and not (not s.models and ref == s.configured):
            running = ", ".join(sorted(s.models)) or "nothing"
            raise ModelNotLoaded(
                f"slot {slot_name} runs {running}, not {ref}; load it with "
                f"`hal0 slot swap {slot_name} --model {ref}`", slot=slot_name, model=ref)
        return Route(slot=slot_name, model=model)
    if model in by_name:
        return Route(slot=model, model=model)
    for s in view.slots:
        if model in s.models:
            return Route(slot=s.name, model=model)
    if model in view.upstream_models:
        return Route(upstream=view.upstream_models[model], model=model)
    if model in view.registry_ids:
        raise ModelNotLoaded(
            f"model {model} is registered but no slot runs it; load it with "
            f"`hal0 slot swap {default} --model {model}`", model=model, slot=default)
    if view.unknown_model == "default":
        return _slot_route(default, view, path, model)
    raise ModelNotFound(f"the model {model!r} does not exist", model=model, param="model")
