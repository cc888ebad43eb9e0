"""The slot lifecycle as data: states, legal moves, and the snapshot readers see."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["DISPATCHABLE", "SETTLED", "TRANSITIONS", "SlotSnapshot", "SlotState", "is_legal"]


class SlotState(StrEnum):
    OFFLINE = "offline"
    PULLING = "pulling"
    STARTING = "starting"
    WARMING = "warming"
    READY = "ready"
    SERVING = "serving"
    IDLE = "idle"
    UNLOADING = "unloading"
    ERROR = "error"


S = SlotState
TRANSITIONS: dict[SlotState, frozenset[SlotState]] = {
    S.OFFLINE: frozenset({S.PULLING, S.STARTING}),
    S.PULLING: frozenset({S.STARTING, S.OFFLINE, S.ERROR}),
    S.STARTING: frozenset({S.WARMING, S.OFFLINE, S.ERROR}),
    S.WARMING: frozenset({S.READY, S.IDLE, S.OFFLINE, S.ERROR}),
    S.READY: frozenset({S.SERVING, S.IDLE, S.UNLOADING, S.ERROR}),
    S.SERVING: frozenset({S.READY, S.IDLE, S.UNLOADING, S.ERROR}),
    S.IDLE: frozenset({S.SERVING, S.READY, S.UNLOADING, S.ERROR}),
    S.UNLOADING: frozenset({S.OFFLINE, S.ERROR}),
    S.ERROR: frozenset({S.OFFLINE, S.PULLING, S.STARTING}),
}
DISPATCHABLE = frozenset({S.READY, S.SERVING, S.IDLE})
# States in which nothing is in progress: waiters are woken when one is reached.
SETTLED = frozenset({S.OFFLINE, S.READY, S.IDLE, S.ERROR})


def is_legal(src: SlotState, dst: SlotState) -> bool:
    return dst in TRANSITIONS[src]


@dataclass(frozen=True)
class SlotSnapshot:
    """What a slot looks like right now; safe to display, never to decide on."""

    name: str
    state: SlotState
    provider: str
    backend: str
    port: int
    enabled: bool
    model: str | None
    pid: int | None
    message: str
    inflight: int
    queued: int
    updated_at: float
    starts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": str(self.state), "provider": self.provider,
                "backend": self.backend, "port": self.port, "enabled": self.enabled,
                "model": self.model, "pid": self.pid, "message": self.message,
                "inflight": self.inflight, "queued": self.queued, "updated_at": self.updated_at,
                "starts": self.starts,
                **({"extra": self.extra} if self.extra else {})}
