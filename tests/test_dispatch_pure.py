"""Resolution (SPEC section 5) and admission, without an event loop or a backend."""

from __future__ import annotations

import asyncio

import pytest

from hal0.dispatch.admission import Admission
from hal0.dispatch.resolve import DispatchView, Route, SlotView, resolve
from hal0.errors import CapabilityDisabled, ModelNotFound, ModelNotLoaded, SlotBusy

VIEW = DispatchView(
    slots=(SlotView("primary", frozenset({"qwen3-4b"}), "qwen3-4b"),
           SlotView("embed", frozenset(), "minilm"),
           SlotView("fast", frozenset({"gemma", "/m/gemma.gguf"}), "/m/gemma.gguf")),
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


async def test_admission_queues_in_order_and_rejects_beyond_the_queue() -> None:
    adm = Admission("s", max_inflight=1, max_queue=1)
    order: list[str] = []
    first = adm.admit()
    await first.__aenter__()

    async def second() -> None:
        async with adm.admit():
            order.append("second")

    task = asyncio.ensure_future(second())
    await asyncio.sleep(0)  # let it queue
    assert adm.queued == 1
    with pytest.raises(SlotBusy) as e:
        async with adm.admit():
            pass
    assert e.value.status == 429 and e.value.headers() == {"Retry-After": "1"}
    await first.__aexit__(None, None, None)
    await task
    assert order == ["second"] and adm.queued == 0


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    adm = Admission("s", max_inflight=1, max_queue=2)
    holder = adm.admit()
    await holder.__aenter__()
    waiter = asyncio.ensure_future(adm.admit().__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert adm.queued == 0
    await holder.__aexit__(None, None, None)
    async with adm.admit():  # the place is free again
        pass
