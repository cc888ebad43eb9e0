"""Kill backends left behind by a hal0 that died without stopping them.

Each slot's state.json records the backend's pid and its start time; a live
process with both matching is ours (a reused pid will not match), so its process
group is terminated before hal0 reuses the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path

from hal0.slots.process import proc_start_time

__all__ = ["reap_orphans"]

log = logging.getLogger("hal0.slots")


async def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits (it is not our child, so through a pidfd). True if it did."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def _readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, _readable)
    try:
        await asyncio.wait_for(gone, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _kill(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    if not await _wait_gone(pid, grace):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        await _wait_gone(pid, 5)


async def reap_orphans(state_files: list[Path], grace: float) -> list[int]:
    """Terminate the recorded backends that still run; returns the pids killed."""
    killed = []
    for file in state_files:
        try:
            data = json.loads(file.read_text())
            pid, started = int(data["pid"]), data["extra"]["pid_start"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid > 0 and started is not None and proc_start_time(pid) == started:
            log.warning("killing backend pid %d left by a previous hal0 (%s)", pid, file.parent.name)
            await _kill(pid, grace)
            killed.append(pid)
    return killed
