"""The one change channel: every slot move and reconfiguration goes out as a ``SlotChanged``.

Listeners are plain callables run synchronously, in order, by the slot's owner (or by the
request that flipped ``serving``); they must be quick and must not raise. The dispatch view,
the slot directory behind ``/v1/models`` and the cards, and the ``/api/events`` bridge listen.
The per-request ``serving`` flips (``hot``) go only to listeners that ask for them while they
want them (the events bridge, while someone follows ``/api/events``): a request pays for no
snapshot nobody reads.
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
        self._hot: list[tuple[Listener, Callable[[], bool]]] = []

    def subscribe(self, listener: Listener, *, hot: Callable[[], bool] | None = None) -> Callable[[], None]:
        """Call ``listener`` with every change from now on; returns the unsubscribe function.

        The per-request serving <-> ready flips reach only listeners that pass ``hot``, and only
        while ``hot()`` says they want them: a flip's snapshot is built for nobody else.
        """
        if hot is None:
            self._listeners.append(listener)
            return lambda: self._listeners.remove(listener)
        self._hot.append((listener, hot))
        return lambda: self._hot.remove((listener, hot))

    def wants_hot(self) -> bool:
        return any(wanted() for _, wanted in self._hot)

    def publish(self, change: SlotChanged) -> None:
        """Run the listeners (a hot change only the hot ones that want it now)."""
        listeners = [fn for fn, wanted in self._hot if wanted()]
        if not change.hot:
            listeners = self._listeners + listeners
        for listener in listeners:
            try:
                listener(change)
            except Exception:  # one broken listener must not stop a slot's state machine
                log.exception("a slot change listener failed on %s", change.name)
