"""The one change channel: every slot move and reconfiguration goes out as a ``SlotChanged``.

Listeners are plain callables run synchronously, in order, by the slot's owner (or by the
request that flipped ``serving``); they must be quick and must not raise. The dispatch view,
the slot directory behind ``/v1/models`` and the cards, and the ``/api/events`` bridge listen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hal0.slots.state import SlotChanged

__all__ = ["ChangeChannel", "Listener"]

log = logging.getLogger("hal0.slots")
Listener = Callable[[SlotChanged], None]


class ChangeChannel:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every change from now on; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, change: SlotChanged) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # one broken listener must not stop a slot's state machine
                log.exception("a slot change listener failed on %s", change.name)
