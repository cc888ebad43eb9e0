"""An owner task: the one writer of some state, driven by commands (STYLE.md, rule 1).

Callers ``send`` a command (``hal0.slots.commands``) and await its answer; nothing else touches
the owner's state. The owner runs one operation at a time as a child task, so that a command
whose class ``interrupts`` (unload, disable, shutdown) can cancel it, while every other command
waits its turn: a hundred wake-ups during one start find it done and cause one spawn. A handler's
error is its caller's, never the owner's: an unknown command fails the sender only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, TypeVar

from hal0.errors import Hal0Error, SlotCancelled
from hal0.slots.commands import Command, Shutdown

__all__ = ["Owner"]

log = logging.getLogger("hal0.slots")
T = TypeVar("T")
_Pending = tuple[Command, "asyncio.Future[Any] | None"]


class Owner:
    """The command loop; a subclass says what each command does (``_handle``) and how to stop."""

    name: str

    def __init__(self) -> None:
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def _handle(self, cmd: Command) -> Any:
        """Run one command (the subclass's ``match``); raise InternalError for one it does not know."""
        raise NotImplementedError

    async def _on_shutdown(self) -> None:
        """What ``Shutdown`` does before the loop ends."""

    async def send(self, cmd: Command, result: type[T]) -> T:
        """Send ``cmd`` to the owner and await its answer (of type ``result``); raises what the
        handler raised. Cancelling the caller does not cancel the command."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((self._checked(cmd), fut))
        return await fut

    def _submit(self, cmd: Command) -> asyncio.Future[Any]:
        """``send`` without awaiting: the answer's future (no task is made for it)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((self._checked(cmd), fut))
        return fut

    def send_nowait(self, cmd: Command) -> None:
        """Queue a command nobody waits for (autostart, timers, the process watcher)."""
        self._queue.put_nowait((self._checked(cmd), None))

    @staticmethod
    def _checked(cmd: Command) -> Command:
        """Only commands reach the owner: anything else fails the sender (TypeError), at once."""
        if not isinstance(cmd, Command):
            raise TypeError(f"a slot command must be a hal0.slots.commands.Command, not {cmd!r}")
        return cmd

    async def _loop(self, tg: asyncio.TaskGroup) -> None:
        """Read commands until ``Shutdown``: one operation at a time as a child task of ``tg``;
        an interrupting command cancels it, any other waits its turn."""
        deferred: deque[_Pending] = deque()
        op: asyncio.Task[tuple[bool, Any]] | None = None
        op_item: _Pending | None = None
        getter: asyncio.Task[_Pending] | None = None
        try:
            while True:
                if op is None and deferred:
                    item = deferred.popleft()
                else:
                    getter = getter or tg.create_task(self._queue.get())
                    waiting: set[asyncio.Future[Any]] = {getter} if op is None else {getter, op}
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if op is not None and op in done:
                        self._answer(op_item, op)
                        op = op_item = None
                        continue
                    item, getter = getter.result(), None
                    if op is not None:
                        if not item[0].interrupts:
                            deferred.append(item)
                            continue
                        op.cancel()
                        with contextlib.suppress(BaseException):
                            await op
                        self._answer(op_item, op)
                        op = op_item = None
                if isinstance(item[0], Shutdown):
                    await self._on_shutdown()
                    for waiting_item in deferred:
                        self._fail(waiting_item, SlotCancelled(f"{self.name} is shutting down"))
                    self._settle(item, None)
                    return
                op, op_item = tg.create_task(self._dispatch(item[0])), item
        finally:
            if getter is not None:
                getter.cancel()
            if op is not None:
                op.cancel()
                with contextlib.suppress(BaseException):
                    await op

    async def _dispatch(self, cmd: Command) -> tuple[bool, Any]:
        """Run one command's handler; its error is returned, not raised (it must not end the
        owner's TaskGroup: a command nobody knows fails its caller, not the owner)."""
        try:
            return True, await self._handle(cmd)
        except Exception as e:
            return False, e

    def _answer(self, item: _Pending | None, op: asyncio.Task[tuple[bool, Any]]) -> None:
        if item is None:
            return
        if op.cancelled():
            self._fail(item, SlotCancelled(f"{item[0].label} of {self.name} was cancelled by another command"))
            return
        ok, value = op.result()
        if ok:
            self._settle(item, value)
        else:
            self._fail(item, value)

    @staticmethod
    def _settle(item: _Pending, value: Any) -> None:
        fut = item[1]
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _fail(self, item: _Pending, exc: BaseException) -> None:
        cmd, fut = item
        if fut is not None:
            if not fut.done():
                fut.set_exception(exc)
        elif not isinstance(exc, Hal0Error):
            log.error("%s: %s failed", self.name, cmd.label, exc_info=exc)
        else:
            log.warning("%s: %s: %s", self.name, cmd.label, exc)
