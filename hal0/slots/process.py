"""One backend child process: its own process group, drained output, certain reaping.

``BackendProcess.spawn`` starts the command without a shell in a new session
(so the group id equals its pid). Output (stdout and stderr merged) is drained
line by line into the slot's ``LogRing`` and a size-rotated ``backend.log``.
``stop()`` sends SIGTERM to the whole group, waits ``grace`` seconds, then
SIGKILL, and always reaps, also when the caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["BackendProcess", "LogRing", "proc_start_time"]

LOG_ROTATE_BYTES = 5 * 1024 * 1024


class LogRing:
    """The last lines a slot's backends printed, with a sequence number for followers."""

    def __init__(self, maxlen: int = 500) -> None:
        self._lines: deque[tuple[int, str]] = deque(maxlen=maxlen)
        self._seq = 0
        self._changed = asyncio.Event()

    def append(self, line: str) -> None:
        self._seq += 1
        self._lines.append((self._seq, line))
        self._changed.set()

    def tail(self, n: int) -> list[str]:
        return [line for _, line in list(self._lines)[-n:]] if n > 0 else []

    def since(self, seq: int) -> tuple[int, list[str]]:
        """Lines after sequence number ``seq`` and the newest sequence number."""
        return self._seq, [line for s, line in self._lines if s > seq]

    async def wait_changed(self) -> None:
        """Block until a line is appended."""
        self._changed.clear()
        await self._changed.wait()


def proc_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


class BackendProcess:
    def __init__(self, proc: asyncio.subprocess.Process, ring: LogRing, log_path: Path) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.start_time = proc_start_time(proc.pid)
        self._ring = ring
        self._log_path = log_path
        self.output = asyncio.Event()  # set on every line; readiness probes listen to it
        # Both tasks belong to this object: ``wait()`` (which ``stop()`` always reaches) awaits them.
        self.exited: asyncio.Future[int] = asyncio.ensure_future(proc.wait())  # done when the leader exits
        self._drain = asyncio.ensure_future(self._drain_output())

    @classmethod
    async def spawn(cls, argv: Sequence[str], env: Mapping[str, str], ring: LogRing,
                    log_path: Path, cwd: Path | None = None) -> BackendProcess:
        """Start ``argv`` in its own process group. Raises OSError if it cannot be executed."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        ring.append(f"[hal0] started pid {proc.pid}: {' '.join(argv)}")
        return cls(proc, ring, log_path)

    async def _drain_output(self) -> None:
        """Every line into the ring and backend.log until the pipe closes. The file is best effort:
        a full disk must not stop the draining (a backend whose pipe fills up stops answering)."""
        assert self._proc.stdout is not None
        log: BinaryIO | None = self._open_log()
        try:
            while line := await self._proc.stdout.readline():
                self._ring.append(line.decode(errors="replace").rstrip("\n"))
                self.output.set()
                if log is not None:
                    try:
                        log.write(line)
                        if log.tell() > LOG_ROTATE_BYTES:
                            log.close()
                            self._log_path.replace(self._log_path.with_suffix(".log.1"))
                            log = self._open_log()
                    except OSError as e:
                        self._drop_log(log, e)
                        log = None
        finally:
            if log is not None:
                self._drop_log(log, None)

    def _open_log(self) -> BinaryIO | None:
        try:
            return self._log_path.open("ab")
        except OSError as e:
            self._drop_log(None, e)
            return None

    def _drop_log(self, log: BinaryIO | None, error: OSError | None) -> None:
        """Close the file (a failing close is one more error); the ring keeps the lines."""
        if log is not None:
            try:
                log.close()
            except OSError as e:
                error = error or e
        if error is not None:
            self._ring.append(f"[hal0] cannot write {self._log_path}: {error.strerror or error}; "
                              "the output is kept in memory only")
        return None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        """Block until the process exited and its output is drained; returns the exit code.

        Cancelling the caller cancels only the wait, never the watchers other callers share."""
        code = await asyncio.shield(self.exited)
        await asyncio.wait({self._drain})  # its own failure is not the caller's; a cancel still propagates
        return code

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace: float) -> int:
        """SIGTERM to the group, SIGKILL after ``grace`` s; always reaps, even if cancelled."""
        try:
            if self._proc.returncode is None:
                self._signal_group(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(self.exited), grace)
                except TimeoutError:
                    self._ring.append(f"[hal0] no exit {grace:g}s after SIGTERM: SIGKILL")
            # Grandchildren may outlive the leader; the group is killed either way.
            self._signal_group(signal.SIGKILL)
        finally:
            if self._proc.returncode is None:
                self._signal_group(signal.SIGKILL)
            await asyncio.shield(self.wait())
        return self._proc.returncode if self._proc.returncode is not None else -9
