"""``slots/<name>/state.json``: written atomically, off the event loop, coalescing bursts.

Most moves are written at once. The per-request ``serving`` <-> ``ready``/``idle`` flips
(``hot``) are written at most once per ``hot_delay_s``, and a move made while a hot write
waits its turn is written at once instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hal0.atomic import atomic_write

__all__ = ["HOT_PERSIST_S", "StateWriter"]

log = logging.getLogger("hal0.slots")
HOT_PERSIST_S = 1.0


class StateWriter:
    """Owned by one slot; its write task lives in the slot's TaskGroup (``bind``)."""

    def __init__(self, file: Path, render: Callable[[], dict[str, Any]], *, hot_delay_s: float | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 write: Callable[[Path, str], None] | None = None) -> None:
        """``sleep`` and ``write`` are the clock and the disk (tests give their own)."""
        self._file, self._render, self._sleep = file, render, sleep
        self._write = write or atomic_write
        self._hot_delay = HOT_PERSIST_S if hot_delay_s is None else hot_delay_s
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = False
        self._urgent = False  # a move that must not wait out the hot delay is pending
        self._waiting = False  # the task is waiting out the hot delay (not writing)

    def bind(self, tg: asyncio.TaskGroup | None) -> None:
        self._tg = tg

    def mark(self, *, hot: bool = False) -> None:
        """Something changed: write it (now, or within ``hot_delay_s`` for a hot move)."""
        self._dirty = True
        if not hot:
            self._urgent = True
        pending = self._task is not None and not self._task.done()
        if pending and not hot and self._waiting:
            assert self._task is not None
            self._task.cancel()  # still waiting out the hot delay: write now instead
            pending = False
        if not pending and self._tg is not None:
            self._task = self._tg.create_task(self._run(self._hot_delay if hot else 0.0))

    async def _run(self, delay: float) -> None:
        while True:  # a failed write is logged: it must not end the owner
            if delay:
                self._waiting = True
                try:
                    await self._sleep(delay)
                finally:
                    self._waiting = False
            if not self._dirty:
                return
            self._dirty = self._urgent = False
            text = json.dumps(self._render(), indent=2) + "\n"
            try:
                await asyncio.shield(asyncio.to_thread(self._write, self._file, text))
            except OSError as e:
                log.error("cannot write %s: %s", self._file, e)
            if not self._dirty:
                return
            # Moves made during the write: an urgent one goes out at once, flips wait their turn.
            delay = 0.0 if self._urgent else self._hot_delay
