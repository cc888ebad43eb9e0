"""The set of slots: owner tasks in one TaskGroup, custom slot create/delete, autostart,
orphan clean-up before start and a bounded parallel stop at shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from hal0.atomic import atomic_write
from hal0.config import BUILTIN_SLOTS, RERANK_SLOT, SLOT_NAME_RE, SlotConfig, load_slot, render_slot_toml
from hal0.config.defaults import builtin_slot
from hal0.config.load import parse_section
from hal0.errors import (
    ConfigInvalid,
    RequestInvalid,
    SlotBuiltin,
    SlotExists,
    SlotInvalidName,
    SlotNoMemory,
    SlotNotFound,
    SlotNpuExclusive,
    SlotPortInUse,
)
from hal0.events import EventBus
from hal0.hardware.usage import gpu_used
from hal0.providers import check_extra_args
from hal0.slots import prompt_cache
from hal0.slots.changes import ChangeChannel
from hal0.slots.commands import Autostart
from hal0.slots.ledger import MemoryLedger
from hal0.slots.orphans import reap_orphans
from hal0.slots.ports import allocate_port, port_is_free
from hal0.slots.residency import Budget, Need, Resident, budget_from, outside_share, plan
from hal0.slots.slot import Slot, SlotDeps
from hal0.slots.state import DISPATCHABLE, SlotChanged, SlotSnapshot

__all__ = ["USER_PORT_START", "SlotManager"]

log = logging.getLogger("hal0.slots")
USER_PORT_START = 8087  # 8081-8085 built-ins, 8086 embed-rerank
SHUTDOWN_TIMEOUT_S = 30.0


def _hardware(file: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _primary_gpu(hw: dict[str, Any] | None) -> str | None:
    pci = (hw or {}).get("primary_gpu")
    return pci if isinstance(pci, str) else None


def _gib(need: Need) -> str:
    parts = [f"{n / 2**30:.2f} GiB of {what}" for what, n in (("RAM", need.ram), ("GPU memory", need.gpu)) if n]
    return " and ".join(parts) or "nothing known"


def _is_npu(config: SlotConfig) -> bool:
    return config.provider == "flm" or config.backend == "npu"


class SlotManager:
    """Owns every ``Slot`` and the change channel; use as ``async with SlotManager(...) as slots``.

    ``snapshots()`` is the slot directory: the latest snapshot of every slot, kept by listening
    to the change channel (never by asking the slots). ``events`` gets each change for ``/api/events``:
    ``slot.state`` (a move), ``slot.config`` (reconfigured) or ``slot.deleted``.
    """

    def __init__(self, deps: SlotDeps, configs: dict[str, SlotConfig], events: EventBus, *,
                 autostart: bool = True) -> None:
        self.changes = ChangeChannel()
        self.ledger = deps.ledger or MemoryLedger(deps.paths.state_dir / "memory.json")
        self._deps = replace(deps, changes=self.changes, room=self, ledger=self.ledger)
        self.budget = Budget()  # set from [memory] and hardware.json on entry
        self._room = asyncio.Lock()  # one load makes room at a time
        self._watcher: asyncio.Task[None] | None = None  # opt-in: steps aside when others take the GPU
        self._events = events
        self._directory: dict[str, SlotSnapshot] = {}
        self.changes.subscribe(self._record)
        self.changes.subscribe(self._bridge, hot=lambda: events.subscriber_count > 0)
        self._configs = configs
        self._autostart = autostart
        self._slots: dict[str, Slot] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg = asyncio.TaskGroup()
        self._lock = asyncio.Lock()  # serialises create/delete

    async def __aenter__(self) -> SlotManager:
        paths = self._deps.paths
        for name in BUILTIN_SLOTS:  # a built-in's missing TOML is re-created from defaults
            if not paths.slot_toml(name).exists():
                await asyncio.to_thread(atomic_write, paths.slot_toml(name),
                                        render_slot_toml(self._configs.get(name) or builtin_slot(name)))
        hw = await asyncio.to_thread(_hardware, paths.hardware_json)
        self.budget = budget_from(self._deps.memory, hw)
        state_files = sorted((paths.state_dir / "slots").glob("*/state.json"))
        await reap_orphans(state_files, self._deps.settings.stop_grace_s)
        await self._tg.__aenter__()
        for config in self._configs.values():
            self._start_owner(config)
        if self._autostart:
            for slot in self._slots.values():
                if slot.config.enabled and slot.configured_model():
                    slot.send_nowait(Autostart())
        gpu = _primary_gpu(hw)
        if self._deps.memory.release_above_share > 0 and gpu is not None:
            self._watcher = self._tg.create_task(self._watch_outside(gpu), name="memory-outside")
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self._watcher is not None:
                self._watcher.cancel()
            await asyncio.shield(self._shutdown_all())
        finally:
            await self._tg.__aexit__(et, exc, tb)

    async def _shutdown_all(self) -> None:
        """Stop every slot in parallel; owners still running after the timeout are cancelled."""
        slots = list(self._slots.values())
        results = await asyncio.gather(
            *(asyncio.wait_for(s.shutdown(), SHUTDOWN_TIMEOUT_S) for s in slots), return_exceptions=True)
        for slot, result in zip(slots, results, strict=True):
            if isinstance(result, BaseException):
                log.error("slot %s did not shut down cleanly: %r", slot.name, result)
                self._tasks[slot.name].cancel()

    def _record(self, change: SlotChanged) -> None:
        """The directory: the latest lifecycle snapshot of every slot."""
        if change.snapshot is None:
            self._directory.pop(change.name, None)
        else:
            self._directory[change.name] = change.snapshot

    def _bridge(self, change: SlotChanged) -> None:
        """Every change as an /api/events event, built only while someone follows them."""
        if not self._events.subscriber_count:
            return
        if change.snapshot is None:
            self._events.publish("slot.deleted", {"slot": change.name})
        elif change.prev is None:  # reconfigured (enabled, backend, the model override), not moved
            self._events.publish("slot.config", {"slot": change.name, **change.snapshot.to_json(), **change.detail})
        else:
            self._events.publish("slot.state", {"slot": change.name, **change.snapshot.to_json(),
                                                "prev": str(change.prev), **change.detail})

    def _start_owner(self, config: SlotConfig) -> Slot:
        slot = Slot(config, self._deps)
        self._slots[config.name] = slot
        self._tasks[config.name] = self._tg.create_task(slot.run(), name=f"slot-{config.name}")
        self.changes.publish(SlotChanged(config.name, slot.snapshot()))
        return slot

    # --- reading -------------------------------------------------------------------

    def get(self, name: str) -> Slot:
        try:
            return self._slots[name]
        except KeyError:
            raise SlotNotFound(f"no slot named {name!r}; `hal0 slot list` shows them", slot=name) from None

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._slots.values()))

    def snapshots(self) -> list[SlotSnapshot]:
        """Every slot's latest snapshot, built-ins first (for display: never decide on it).

        The directory has each slot's last lifecycle move; whether a ready slot is serving right
        now, and how many requests it holds, are per-request counters read live here."""
        out = []
        for snap in sorted(self._directory.values(), key=lambda s: s.name not in BUILTIN_SLOTS):
            live = self._slots.get(snap.name)
            if live is not None and snap.state in DISPATCHABLE:
                state, inflight, queued = live.counters()
                if (state, inflight, queued) != (snap.state, snap.inflight, snap.queued):
                    snap = replace(snap, state=state, inflight=inflight, queued=queued)
            out.append(snap)
        return out

    # --- memory ------------------------------------------------------------------

    def residents(self, but: str | None = None) -> list[Resident]:
        """Every slot holding memory (or loading), except ``but``: for decisions the owners re-check."""
        return [r for s in self._slots.values() if s.name != but and (r := s.resident()) is not None]

    async def make_room(self, slot: str, model: str, need: Need) -> None:
        """Unload idle, unpinned slots, least recently used first, until ``need`` fits the budget
        (a busy one only after its requests drain, up to ``[memory].drain_wait_s``). Raises
        SlotNoMemory, with what is needed and what is held by whom, when it cannot fit."""
        mem = self._deps.memory
        if need == Need():
            return  # nothing known about it (a runner before its first load): no grounds to refuse or evict
        refused: set[str] = set()
        async with self._room:
            while True:
                residents = [replace(r, evictable=False) if r.slot in refused else r for r in self.residents(slot)]
                p = plan(need, residents, self.budget)
                if not p.fits:
                    raise self._no_memory(slot, model, need, residents)
                if not p.evict:
                    return
                for name in p.evict:
                    victim = self._slots.get(name)
                    if victim is None:
                        continue
                    if name in p.wait:
                        self._events.publish("memory.wait", {"slot": name, "for": slot})
                    try:
                        outcome = await victim.evict(mem.drain_wait_s,
                                                     timeout=mem.drain_wait_s + self._deps.settings.stop_grace_s + 30)
                    except TimeoutError:
                        outcome = "late"
                    log.info("memory: %s for %s: %s", name, slot, outcome)
                    self._events.publish("memory.evict", {"slot": name, "for": slot, "outcome": outcome})
                    if outcome != "unloaded":
                        refused.add(name)
                        break  # plan again with what is held now

    def _no_memory(self, slot: str, model: str, need: Need, residents: list[Resident]) -> SlotNoMemory:
        held = sum((r.held for r in residents), Need())
        b = self.budget
        short = [f"{what} {(n + h) / 2**30:.2f} GiB of {lim / 2**30:.2f} GiB" for what, n, h, lim in
                 (("RAM", need.ram, held.ram, b.ram), ("GPU", need.gpu, held.gpu, b.gpu))
                 if lim is not None and n + h > lim]
        who = ", ".join(f"{r.slot} ({max(r.held.ram, r.held.gpu) / 2**20:.0f} MiB{', pinned' if r.pinned else ''}"
                        f"{', busy' if r.busy else ''})" for r in residents) or "nothing else"
        return SlotNoMemory(f"{slot} cannot load {model}: it needs {_gib(need)} and would bring the total to "
                            f"{'; '.join(short)}; held by {who}. Unload a slot (`hal0 slot unload NAME`), unpin "
                            "one, or raise [memory] budgets in hal0.toml", slot=slot, model=model,
                            needs=need.to_json(), budget=b.to_json(), held=[r.to_json() for r in residents])

    async def release(self) -> dict[str, Any]:
        """Unload every idle, unpinned slot at once (``hal0 gpu release``); pinned and busy ones stay."""
        slots = [self._slots[r.slot] for r in self.residents()]
        outcomes = await asyncio.gather(*(s.evict(0, timeout=self._deps.settings.stop_grace_s + 30) for s in slots),
                                        return_exceptions=True)
        released, kept = [], []
        for slot, outcome in zip(slots, outcomes, strict=True):
            reason = "late" if isinstance(outcome, BaseException) else outcome
            if reason == "unloaded":
                released.append(slot.name)
            elif reason != "not loaded":
                kept.append({"slot": slot.name, "reason": reason})
        return {"released": released, "kept": kept}

    async def _watch_outside(self, pci: str) -> None:
        """Every ``measure_interval_s`` (at least 1 s): when processes outside hal0 hold more than
        ``release_above_share`` of the GPU, release every idle, unpinned slot (once per crossing)."""
        mem = self._deps.memory
        above = False
        while True:  # polled: no driver announces another process's allocations
            await asyncio.sleep(max(mem.measure_interval_s, 1.0))
            try:
                found = await asyncio.to_thread(gpu_used, pci)
                if found is None:
                    continue
                share = outside_share(found[0], found[1], sum(r.held.gpu for r in self.residents()))
                if share > mem.release_above_share and not above:
                    out = await self.release()
                    log.warning("memory: processes outside hal0 hold %.0f %% of the GPU: released %s",
                                100 * share, ", ".join(out["released"]) or "nothing")
                    self._events.publish("memory.release", {"outside_share": share, **out})
                above = share > mem.release_above_share
            except Exception:  # a watcher's bug must not take the slots down with it
                log.exception("memory: watching the GPU failed")

    def memory(self) -> dict[str, Any]:
        """The budget and what each slot holds, for /api/status (display only)."""
        residents = self.residents()
        held = sum((r.held for r in residents), Need())
        return {"budget": self.budget.to_json(), "held": held.to_json(), "slots": [r.to_json() for r in residents]}

    async def forget_model(self, model_id: str) -> None:
        """A model was removed: drop its measured figure and its saved prompt caches."""
        await asyncio.to_thread(self.ledger.forget, model_id)
        await asyncio.to_thread(prompt_cache.forget, self._deps.paths.state_dir / "slots", model_id)

    # --- custom slots --------------------------------------------------------------

    async def create(self, spec: dict[str, Any], *, internal: bool = False) -> Slot:
        """Create and register a slot from an API body; ``internal`` allows reserved names.

        Raises SlotInvalidName, SlotExists, SlotPortInUse, SlotReservedArg or RequestInvalid.
        """
        name = spec.get("name")
        if not isinstance(name, str) or not SLOT_NAME_RE.match(name):
            raise SlotInvalidName(f"slot name {name!r} must match {SLOT_NAME_RE.pattern}", param="name")
        if not internal and (name in BUILTIN_SLOTS or name == RERANK_SLOT):
            raise SlotInvalidName(f"{name!r} is a reserved slot name", param="name")
        async with self._lock:
            if name in self._slots or self._deps.paths.slot_toml(name).exists():
                raise SlotExists(f"slot {name!r} already exists", slot=name)
            config = self._config_from_spec(name, spec)
            check_extra_args(name, config.provider, config.server.extra_args,
                             (*self._deps.registry.roots, self._deps.paths.slot_state_dir(name)))
            if _is_npu(config) and (other := next((s for s in self._slots.values() if _is_npu(s.config)), None)):
                raise SlotNpuExclusive(f"slot {other.name} already uses the NPU; only one NPU (FLM) process may "
                                       f"run at a time: give {other.name} the model instead", slot=other.name)
            file = self._deps.paths.slot_toml(name)
            await asyncio.to_thread(atomic_write, file, render_slot_toml(config))
            try:
                config = load_slot(file)  # the one validator, on exactly what was written
            except ConfigInvalid as e:
                file.unlink()
                raise RequestInvalid(e.message, **e.details) from None
            return self._start_owner(config)

    def _config_from_spec(self, name: str, spec: dict[str, Any]) -> SlotConfig:
        body = {k: v for k, v in spec.items() if k not in ("name", "model")}
        model = spec.get("model")
        if model is not None:
            body["model"] = {**body.get("model", {}), "default": model} if isinstance(model, str) else model
        try:
            config = parse_section(SlotConfig, {"name": name, **body}, "request body")
        except ConfigInvalid as e:
            raise RequestInvalid(e.message, param=e.details.get("key")) from None
        lo, hi = self._deps.settings.port_range
        used = {s.config.port for s in self._slots.values()}
        if "port" not in spec:
            start = USER_PORT_START if name != RERANK_SLOT else USER_PORT_START - 1
            return replace(config, port=allocate_port(used, lo, hi, start=start, avoid=(8081,)))
        if config.port in used or not port_is_free(config.port):
            raise SlotPortInUse(f"port {config.port} is already in use", port=config.port)
        return config

    async def delete(self, name: str) -> None:
        """Stop and remove a custom slot, its TOML, override and state. Raises SlotBuiltin."""
        slot = self.get(name)
        if name in BUILTIN_SLOTS:
            raise SlotBuiltin(f"{name} is a built-in slot and cannot be deleted; disable it instead",
                              slot=name)
        async with self._lock:
            await slot.shutdown()
            await self._tasks.pop(name)
            del self._slots[name]
            await asyncio.to_thread(self._remove_files, name)
            self.changes.publish(SlotChanged(name, None))

    def _remove_files(self, name: str) -> None:
        paths = self._deps.paths
        paths.slot_toml(name).unlink(missing_ok=True)
        paths.slot_env(name).unlink(missing_ok=True)
        shutil.rmtree(paths.slot_state_dir(name), ignore_errors=True)
