"""Resolution (SPEC section 5) without an event loop or a backend."""

from __future__ import annotations

import pytest

from hal0.dispatch.resolve import DispatchView, Route, SlotView, resolve
from hal0.errors import CapabilityDisabled, ModelNotFound, ModelNotLoaded, ModelWrongModality
from hal0.roles import ROUTES, Modality

VIEW = DispatchView(
    slots=(SlotView("primary", frozenset({"qwen3-4b"}), "qwen3-4b", "chat"),
           SlotView("embed", frozenset(), "minilm", "embeddings"),
           SlotView("fast", frozenset({"gemma", "/m/gemma.gguf"}), "/m/gemma.gguf", "chat")),
    upstream_models={"gpt-remote": "box"},
    registry_ids=frozenset({"qwen3-4b", "minilm", "llama-70b"}),
)
CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(("model", "path", "route"), [
    (None, CHAT, Route(slot="primary")),
    ("", "/v1/embeddings", Route(slot="embed")),
    ("primary:qwen3-4b", CHAT, Route(slot="primary", model="primary:qwen3-4b")),
    ("embed:minilm", "/v1/embeddings", Route(slot="embed", model="embed:minilm")),  # would load it
    ("fast", CHAT, Route(slot="fast", model="fast")),
    ("gemma", CHAT, Route(slot="fast", model="gemma")),
    ("/m/gemma.gguf", CHAT, Route(slot="fast", model="/m/gemma.gguf")),
    ("gpt-remote", CHAT, Route(upstream="box", model="gpt-remote")),
    ("gpt-4o-mini", CHAT, Route(slot="primary", model="gpt-4o-mini")),
    ("text-embedding-3-small", "/v1/embeddings", Route(slot="embed", model="text-embedding-3-small")),
])
def test_resolution_order(model: str | None, path: str, route: Route) -> None:
    assert resolve(model, path, VIEW) == route


def test_slot_ref_not_running_says_how_to_swap() -> None:
    with pytest.raises(ModelNotLoaded) as e:
        resolve("primary:llama-70b", CHAT, VIEW)
    assert "hal0 slot swap primary --model llama-70b" in e.value.message


def test_registered_but_not_loaded() -> None:
    with pytest.raises(ModelNotLoaded) as e:
        resolve("llama-70b", CHAT, VIEW)
    assert e.value.status == 409 and e.value.details["slot"] == "primary"


def test_reject_policy_gives_404() -> None:
    view = DispatchView(VIEW.slots, unknown_model="reject")
    with pytest.raises(ModelNotFound):
        resolve("gpt-4o-mini", CHAT, view)


def test_rerank_without_its_slot_names_the_command() -> None:
    with pytest.raises(CapabilityDisabled) as e:
        resolve(None, "/v1/rerankings", VIEW)
    assert "hal0 capability enable embed rerank" in e.value.message and e.value.status == 409


# One slot of every kind, each named by its kind, plus the built-in names.
KINDS = DispatchView(slots=tuple(SlotView(k.value, frozenset({f"m-{k.value}"}), f"m-{k.value}", k.value)
                                 for k in Modality))


@pytest.mark.parametrize("path", sorted(ROUTES))
@pytest.mark.parametrize("kind", list(Modality))
def test_every_route_refuses_a_slot_of_another_kind(path: str, kind: Modality) -> None:
    """By slot name, by ``slot:ref`` and by the model it runs: the same answer."""
    for model in (kind.value, f"{kind.value}:m-{kind.value}", f"m-{kind.value}"):
        if ROUTES[path][0] is kind:
            assert resolve(model, path, KINDS).slot == kind.value
            continue
        with pytest.raises(ModelWrongModality) as e:
            resolve(model, path, KINDS)
        assert e.value.status == 400 and e.value.code == "model.wrong_modality"
        assert e.value.details["slot_kind"] == kind.value and e.value.details["slots"] == [ROUTES[path][0].value]


def test_the_same_model_in_two_kinds_goes_to_the_right_one() -> None:
    view = DispatchView(slots=(SlotView("primary", frozenset({"m"}), "m", "chat"),
                               SlotView("embed", frozenset({"m"}), "m", "embeddings")))
    assert resolve("m", "/v1/embeddings", view).slot == "embed"
    assert resolve("m", CHAT, view).slot == "primary"
