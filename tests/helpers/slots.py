"""Run a SlotManager in-process over real backend processes."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from hal0.config.defaults import render_slot_toml
from hal0.config.schema import MemoryConfig, ModelSection, ProviderConfig, ServerSection, SlotConfig, SlotsConfig
from hal0.events import Event, EventBus, Subscription
from hal0.models.pulls import Pulls
from hal0.models.registry import Registry
from hal0.paths import Paths
from hal0.slots import SlotDeps, SlotManager, Supervision
from tests.helpers.env import REPO, free_port, manifest

FAKE = REPO / "tests" / "fake_backend.py"
FAST = Supervision(backoff_s=0.05, backoff_max_s=0.2, probe_backoff_s=0.05, probe_backoff_max_s=0.2)


def llama_bin() -> ProviderConfig:
    m = manifest()["llama_server"]
    return ProviderConfig(bin=m["bin"], env=m["env"])


def fake_bin(tmp: Path) -> ProviderConfig:
    """The fake backend as the llama-server executable (run by this test interpreter)."""
    wrapper = tmp / "fake-llama-server"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    wrapper.chmod(0o755)
    return ProviderConfig(bin=str(wrapper))


def slot_config(name: str, model: str, *, env: dict[str, str] | None = None, extra: tuple[str, ...] = (),
                **kw: Any) -> SlotConfig:
    return SlotConfig(name=name, provider="llama-server", backend="cpu", port=free_port(),
                      model=ModelSection(default=model, context_size=512),
                      server=ServerSection(extra_args=extra, threads=1), env=env or {}, **kw)


@asynccontextmanager
async def slot_manager(paths: Paths, slots: list[SlotConfig], provider: ProviderConfig, *,
                       autostart: bool = False, supervision: Supervision = FAST, pulls: Pulls | None = None,
                       memory: MemoryConfig | None = None,
                       **settings: Any) -> AsyncIterator[tuple[SlotManager, EventBus]]:
    events = EventBus()
    cfg = dataclasses.replace(SlotsConfig(port_range=(20000, 20100), health_grace_s=60, stop_grace_s=5),
                              **settings)
    async with aiohttp.ClientSession() as session:
        deps = SlotDeps(paths=paths, settings=cfg, registry=pulls.registry if pulls else Registry(paths),
                        providers={"llama-server": provider}, session=session, supervision=supervision, pulls=pulls,
                        memory=memory or MemoryConfig())
        async with SlotManager(deps, {s.name: s for s in slots}, events, autostart=autostart) as mgr:
            yield mgr, events


async def next_move(sub: Subscription) -> Event | None:
    """The next ``slot.state`` event (a move), skipping reconfigurations; None once the bus closed."""
    while (e := await sub.get()) is not None and e.kind != "slot.state":
        pass
    return e


def slot_toml(name: str, model: str, *, extra: tuple[str, ...] = (), ctx: int = 2048, ids: bool = False,
              **kw: Any) -> str:
    """A slot's TOML on the CPU with one thread and a free port, for tests that write their own home."""
    server = ServerSection(threads=1, extra_args=extra, accept_token_ids=ids)
    return render_slot_toml(SlotConfig(name=name, backend="cpu", port=free_port(), server=server,
                                       model=ModelSection(default=model, context_size=ctx), **kw))
