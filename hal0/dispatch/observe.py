"""What the dispatcher tells an observer (the metrics) about each request it forwards to a slot.

The dispatcher knows nothing of metrics: it is given an ``Observer`` (or None, which costs
nothing), hands ``forward()`` a ``Relay`` to note the first byte and the end of the answer in,
and calls ``finished()`` once per request, however it ended. Observers run on the event loop
inside the request and must be quick and must not raise.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Observer", "Relay"]


class Relay:
    """One answer as the relay saw it: when its first body byte was ready to go out
    (``time.perf_counter()``; 0: none came), and, for a JSON or SSE answer below 400, where
    the backend puts its token usage: the whole buffered body, or the last two chunks of a
    stream (references, never a copy of the stream). ``ended`` once the whole answer went out
    (every byte of the backend's, or an event stream's ``[DONE]``), with its ``status``: a client
    that leaves after that did not leave early (the OpenAI SDK closes its connection on ``[DONE]``)."""

    __slots__ = ("ended", "first_byte", "last", "prev", "status")

    def __init__(self) -> None:
        self.first_byte = 0.0
        self.prev = b""
        self.last = b""
        self.ended = False
        self.status = 0

    @property
    def tail(self) -> bytes:
        return self.prev + self.last if self.prev else self.last


class Observer(Protocol):
    def finished(self, slot: str, route: str, status: int, started: float, relay: Relay) -> None:
        """A request for ``slot`` on ``route`` ended with ``status`` (499: the client left,
        500: an unexpected error); ``started`` is its ``perf_counter()`` at dispatch."""
