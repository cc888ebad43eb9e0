"""What a slot's owner task is asked to do: one frozen dataclass per command.

Callers send a command and await its answer; timers and the process watcher send the
internal ones with nobody waiting. ``interrupts``: the command cancels an operation in
progress (a start stuck in ``warming``) instead of waiting its turn behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hal0.hardware.usage import Usage
from hal0.slots.process import BackendProcess

__all__ = [
    "Autorestart", "Autostart", "BackendLost", "Command", "Disable", "Enable", "EnsureReady", "Evict", "IdleCheck",
    "KeepAlive", "Load", "MemoryMeasured", "Restart", "SetBackend", "Shutdown", "Swap", "Unload", "UnloadIdle",
    "WorkerCheck",
]


@dataclass(frozen=True)
class Command:
    interrupts: ClassVar[bool] = False

    @property
    def label(self) -> str:
        return type(self).__name__.lower()


# --- from callers -----------------------------------------------------------------------

@dataclass(frozen=True)
class EnsureReady(Command):
    """Start the slot if it is offline; answer once it is dispatchable."""


@dataclass(frozen=True)
class Load(Command):
    """Operator load: start (clearing an error), or swap when ``model`` differs."""

    model: str | None = None
    force: bool = False  # load even if the fit check says it will not fit


@dataclass(frozen=True)
class Unload(Command):
    interrupts: ClassVar[bool] = True


@dataclass(frozen=True)
class Restart(Command):
    pass


@dataclass(frozen=True)
class Swap(Command):
    model: str
    force: bool = False


@dataclass(frozen=True)
class Enable(Command):
    pass


@dataclass(frozen=True)
class Disable(Command):
    interrupts: ClassVar[bool] = True


@dataclass(frozen=True)
class SetBackend(Command):
    backend: str


@dataclass(frozen=True)
class KeepAlive(Command):
    """Keep the running model loaded ``seconds`` after its last request, then unload it (Ollama's
    ``keep_alive``): 0 unloads once no request is in flight, a negative value never unloads. It
    replaces ``idle_timeout_s``/``unload_after_s`` until the backend stops."""

    seconds: float


@dataclass(frozen=True)
class Shutdown(Command):
    """Stop the backend and end the owner task."""

    interrupts: ClassVar[bool] = True


# --- internal: timers and the process watcher -------------------------------------------

@dataclass(frozen=True)
class Autostart(Command):
    pass


@dataclass(frozen=True)
class IdleCheck(Command):
    """``idle_timeout_s`` may have passed without a request."""


@dataclass(frozen=True)
class UnloadIdle(Command):
    """``unload_after_s`` passed in ``idle``."""


@dataclass(frozen=True)
class Autorestart(Command):
    """The supervision backoff after a failure ran out: try again."""


@dataclass(frozen=True)
class BackendLost(Command):
    """``proc`` exited, or stopped answering its health check (``reason`` says which)."""

    proc: BackendProcess
    reason: str


@dataclass(frozen=True)
class Evict(Command):
    """Unload to free memory for another slot, unless pinned or still busy after ``wait_s``
    (answers "unloaded", "pinned", "busy" or "not loaded")."""

    wait_s: float = 0.0
    until: float = float("inf")  # monotonic time after which the sender no longer waits: then do nothing


@dataclass(frozen=True)
class MemoryMeasured(Command):
    """What ``proc`` held at the latest measurement."""

    proc: BackendProcess
    usage: Usage


@dataclass(frozen=True)
class WorkerCheck(Command):
    """In ``error`` because an RPC worker was unreachable: look again, start once all answer."""
