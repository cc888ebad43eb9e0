"""The slot lifecycle as data: states, legal moves, and the snapshot readers see."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["DISPATCHABLE", "SETTLED", "TRANSITIONS", "SlotChanged", "SlotSnapshot", "SlotState", "is_legal"]


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
    kind: str  # hal0.roles.Modality: the one kind of request the slot serves
    provider: str
    backend: str
    port: int
    enabled: bool
    model: str | None  # the id the backend serves (None before a start)
    model_ref: str | None  # the reference that was loaded (a registry id or a path)
    configured: str | None  # what the next start loads: the swap override, else [model].default
    pid: int | None
    message: str
    last_error: str  # the reason of the latest failure, kept after recovery ("" if none)
    inflight: int
    queued: int
    updated_at: float
    starts: int = 0
    pull: dict[str, Any] | None = None  # the pull's progress while ``pulling``
    loaded_at: float | None = None  # wall time of the latest successful load (a start that became ready)
    expires_at: float | None = None  # wall time the backend unloads if no request comes (None: never)
    memory: dict[str, Any] | None = None  # the backend's latest measurement: rss_bytes, gpu_bytes, measured_at
    pinned: bool = False
    workers: dict[str, str] = field(default_factory=dict)  # RPC worker -> "up", "unknown" or why it is down

    @property
    def served(self) -> frozenset[str]:
        """What a live backend answers to: its model id and the loaded reference."""
        if self.pid is None or self.model is None:
            return frozenset()
        return frozenset({self.model, self.model_ref or self.model})

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": str(self.state), "kind": self.kind, "provider": self.provider,
                "backend": self.backend, "port": self.port, "enabled": self.enabled,
                "model": self.model, "model_ref": self.model_ref, "model_configured": self.configured,
                "pid": self.pid, "message": self.message, "last_error": self.last_error,
                "inflight": self.inflight, "queued": self.queued, "updated_at": self.updated_at,
                "starts": self.starts, "loaded_at": self.loaded_at, "expires_at": self.expires_at,
                "memory": self.memory, "pinned": self.pinned, **({"pull": self.pull} if self.pull else {}),
                **({"workers": self.workers} if self.workers else {})}


@dataclass(frozen=True)
class SlotChanged:
    """The one change notice: a slot moved or was reconfigured (``snapshot``), or was deleted
    (``snapshot`` None). ``hot``: a per-request serving <-> ready flip, which changes nothing
    about what the slot serves."""

    name: str
    snapshot: SlotSnapshot | None
    prev: SlotState | None = None  # the state before, for a state move
    hot: bool = False
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. the last log lines of a failure
