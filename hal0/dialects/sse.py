"""Server-sent events as the dialects read and write them: a tolerant incremental parser (a
backend's stream arrives in arbitrary chunks) and one formatter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_EVENT", "SseEvent", "SseParser", "sse"]

MAX_EVENT = 16 << 20  # one event larger than this is a broken backend: the parser gives up on it


@dataclass(frozen=True)
class SseEvent:
    event: str | None
    data: str

    def json(self) -> Any:
        """The data as JSON; None for ``[DONE]`` or data that is not JSON."""
        try:
            return json.loads(self.data)
        except ValueError:
            return None


class SseParser:
    """Feed chunks, get whole events (``\\n\\n`` or ``\\r\\n\\r\\n`` separated); comments are skipped."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buf += chunk.replace(b"\r\n", b"\n")
        out: list[SseEvent] = []
        while b"\n\n" in self._buf:
            block, self._buf = self._buf.split(b"\n\n", 1)
            event, data = None, []
            for line in block.decode("utf-8", "replace").split("\n"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
            if data or event:
                out.append(SseEvent(event, "\n".join(data)))
        if len(self._buf) > MAX_EVENT:
            self._buf = b""
        return out


def sse(data: Any, event: str | None = None) -> bytes:
    """One event; ``data`` is JSON-encoded unless it is already a string (``[DONE]``)."""
    text = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + b"data: " + text.encode() + b"\n\n"
