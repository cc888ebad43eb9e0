"""Measure a slot swap phase by phase and hal0's overhead beyond the backend's own time.

Direct: exec llama-server with the argv hal0 would use, probe /health and /v1/models every
2 ms until ready (the backend's exec-to-healthy time), SIGTERM it and time the exit.
Through hal0: a SlotManager swaps between two copies of the same model, alternating, each
swap right after a direct run of the same file; each phase is timed from the slot's own
events. Overhead = hal0's swap - (direct stop + direct start), per pair, then the median.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

from hal0.config.schema import ModelSection, ProviderConfig, ServerSection, SlotConfig, SlotsConfig
from hal0.events import EventBus
from hal0.models.registry import Registry, resolve_model
from hal0.paths import resolve_paths
from hal0.providers.llama_server import LlamaServer
from hal0.slots import SlotDeps, SlotManager, Supervision
from hal0.slots.process import BackendProcess, LogRing
from tests.helpers.env import free_port, manifest


async def direct(provider: ProviderConfig, slot: SlotConfig, model: Path, tmp: Path) -> tuple[float, float]:
    """(exec-to-ready, SIGTERM-to-exit) seconds for the bare backend."""
    spec = LlamaServer().launch(slot, resolve_model(str(model), Registry(resolve_paths({"HAL0_HOME": str(tmp)}))),
                                provider, tmp)
    async with aiohttp.ClientSession() as http:
        t0 = time.perf_counter()
        proc = await BackendProcess.spawn(spec.argv, spec.env, LogRing(), tmp / "direct.log")
        url = f"http://127.0.0.1:{slot.port}"
        while True:
            try:
                async with http.get(url + "/health") as r:
                    if r.status == 200:
                        async with http.get(url + "/v1/models") as m:
                            if (await m.json()).get("data"):
                                break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.002)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        await proc.stop(10)
        return ready, time.perf_counter() - t1


async def interleaved(provider: ProviderConfig, slot: SlotConfig, models: list[Path], runs: int,
                      tmp: Path) -> tuple[list[tuple[float, float]], list[dict[str, float]]]:
    """Alternate a direct start/stop (on another port) with a hal0 swap, so caches treat both alike."""
    paths = resolve_paths({"HAL0_HOME": str(tmp / "home")})
    events = EventBus()
    direct_slot = replace(slot, name="direct", port=free_port())
    directs, swaps = [], []
    async with aiohttp.ClientSession() as http:
        deps = SlotDeps(paths=paths, settings=SlotsConfig(port_range=(slot.port, slot.port)),
                        registry=Registry(paths), providers={"llama-server": provider}, session=http,
                        supervision=Supervision())
        async with SlotManager(deps, {slot.name: slot}, events) as mgr:
            s = mgr.get(slot.name)
            await s.swap(str(models[0]))
            for i in range(runs):
                target = models[(i + 1) % 2]
                directs.append(await direct(provider, direct_slot, target, tmp))
                with events.subscribe() as sub:
                    t0 = time.time()
                    await s.swap(str(target))
                    stamps = {"begin": t0}
                    while (e := sub.get_nowait()) is not None:
                        if e.kind == "slot.state":
                            stamps.setdefault(e.data["state"], e.ts)
                swaps.append({
                    "unload": stamps["offline"] - stamps["begin"],
                    "spawn": stamps["warming"] - stamps["offline"],
                    "warm": stamps["ready"] - stamps["warming"],
                    "total": stamps["ready"] - stamps["begin"],
                })
    return directs, swaps


def med(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


async def bench(name: str, model: Path, runs: int) -> None:
    m = manifest()["llama_server"]
    provider = ProviderConfig(bin=m["bin"], env=m["env"])
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        copies = [tmp / "a.gguf", tmp / "b.gguf"]
        for c in copies:
            shutil.copy(model, c)
        slot = SlotConfig(name="bench", backend="cpu", port=free_port(),
                          model=ModelSection(context_size=2048), server=ServerSection(threads=1))
        directs, swaps = await interleaved(provider, slot, copies, runs, tmp)
        ready, stop = [d[0] for d in directs], [d[1] for d in directs]
    total = [s["total"] for s in swaps]
    overhead = [t - (r + s) for t, r, s in zip(total, ready, stop, strict=True)]
    print(f"\n{name}: {runs} runs, medians in ms")
    print(f"  direct llama-server: exec->ready {med(ready):8.1f}   SIGTERM->exit {med(stop):8.1f}")
    print(f"  hal0 swap:           unload {med([s['unload'] for s in swaps]):8.1f}   "
          f"spawn {med([s['spawn'] for s in swaps]):6.1f}   warm {med([s['warm'] for s in swaps]):8.1f}   "
          f"total {med(total):8.1f}")
    print(f"  hal0 overhead beyond the backend: {med(overhead):.1f} ms median "
          f"(goal <= 50 ms); swap/direct ratio {med(total) / (med(ready) + med(stop)):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    models = manifest()["models"]
    asyncio.run(bench("tiny-chat", Path(models["tiny-chat"]), args.runs))
    asyncio.run(bench("gemma3-270m", Path(models["gemma3-270m"]), args.runs))


if __name__ == "__main__":
    main()
