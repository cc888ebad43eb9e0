"""Who must make room for a slot that wants to load: a pure decision (no I/O, no loop).

The manager gathers a ``Resident`` for every other slot holding (or about to hold) memory, and
the ``Budget``; ``plan()`` says which slots to unload, least recently used first, or that the
load cannot fit even with every evictable slot gone. Slots with requests in flight are taken
only after every idle one, and the manager waits for them to drain (with a bound) before
their owner unloads them; pinned slots are never taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from hal0.config.schema import MemoryConfig
from hal0.config.sizes import parse_size
from hal0.hardware.seeding import memory_for

__all__ = ["Budget", "Need", "Plan", "Resident", "RoomKeeper", "budget_from", "outside_share", "plan"]

@dataclass(frozen=True)
class Need:
    """Bytes of system memory and of GPU memory."""

    ram: int = 0
    gpu: int = 0

    def __add__(self, other: Need) -> Need:
        return Need(self.ram + other.ram, self.gpu + other.gpu)

    def to_json(self) -> dict[str, int]:
        return {"ram_bytes": self.ram, "gpu_bytes": self.gpu}


@dataclass(frozen=True)
class Budget:
    """Bytes hal0's slots may hold together; None: no limit."""

    ram: int | None = None
    gpu: int | None = None

    def over(self, held: Need) -> bool:
        return (self.ram is not None and held.ram > self.ram) or (self.gpu is not None and held.gpu > self.gpu)

    def to_json(self) -> dict[str, int | None]:
        return {"ram_bytes": self.ram, "gpu_bytes": self.gpu}


@dataclass(frozen=True)
class Resident:
    """A slot that holds memory (measured, or its estimate while it loads)."""

    slot: str
    model: str | None
    held: Need
    pinned: bool
    busy: bool  # requests in flight or queued
    evictable: bool  # loaded and settled (ready, serving, idle): its owner can unload it
    last_used: float  # monotonic time of its last request

    def to_json(self) -> dict[str, object]:
        return {"slot": self.slot, "model": self.model, **self.held.to_json(), "pinned": self.pinned,
                "busy": self.busy}


@dataclass(frozen=True)
class Plan:
    """``fits``: after unloading ``evict`` (in order) the need fits; ``wait``: those of them
    with requests in flight (to drain first). When not ``fits``, ``evict`` is empty."""

    fits: bool
    evict: tuple[str, ...] = ()
    wait: tuple[str, ...] = ()
    held: Need = Need()


def plan(need: Need, residents: list[Resident], budget: Budget) -> Plan:
    """Unload idle unpinned slots, least recently used first, then busy ones, until ``need`` fits."""
    held = sum((r.held for r in residents), Need())
    if not budget.over(held + need):
        return Plan(True, held=held)
    candidates = sorted((r for r in residents if r.evictable and not r.pinned),
                        key=lambda r: (r.busy, r.last_used))
    evict: list[Resident] = []
    for r in candidates:
        over_ram = budget.ram is not None and held.ram + need.ram > budget.ram
        over_gpu = budget.gpu is not None and held.gpu + need.gpu > budget.gpu
        if not ((over_ram and r.held.ram > 0) or (over_gpu and r.held.gpu > 0)):
            continue  # unloading it would free nothing that is short
        evict.append(r)
        held = Need(held.ram - r.held.ram, held.gpu - r.held.gpu)
        if not budget.over(held + need):
            return Plan(True, tuple(e.slot for e in evict), tuple(e.slot for e in evict if e.busy), held)
    return Plan(False, held=sum((r.held for r in residents), Need()))


def budget_from(mem: MemoryConfig, hw: dict[str, Any] | None) -> Budget:
    """The budget ``[memory]`` asks for: "auto" is what the probe found (``hardware.json``: RAM or
    the cgroup limit; the primary GPU's memory) minus ``reserve`` (at most a quarter of it), no
    limit when it found nothing; "off" is no limit."""
    reserve = parse_size(mem.reserve)

    def one(value: int | str, backend: str) -> int | None:
        if value == "off":
            return None
        if value == "auto":
            found = memory_for(hw, backend) if hw else None
            return found - min(reserve, found // 4) if found else None  # a small box keeps most of its memory
        return parse_size(value)
    return Budget(one(mem.ram_budget, "cpu"), one(mem.gpu_budget, "vulkan"))


def outside_share(used: int, total: int, ours: int) -> float:
    """The share of a GPU's memory that processes outside hal0 hold: what the driver counts as
    used, less what hal0's slots were measured to hold."""
    return max(used - ours, 0) / total if total > 0 else 0.0


class RoomKeeper(Protocol):
    async def make_room(self, slot: str, model: str, need: Need) -> None:
        """Unload idle, unpinned slots until ``need`` fits the budget; raises SlotNoMemory."""
        ...
