"""Talking to systemd when it runs hal0 (``Type=notify``): stdlib only, a no-op elsewhere.

``READY=1`` once hal0 listens, ``STATUS=`` with the slots' summary whenever a slot moves,
``STOPPING=1`` at shutdown, and ``WATCHDOG=1`` from the event loop every half ``WatchdogSec``,
so a hal0 whose loop hangs stops pinging and is restarted. Messages go to ``$NOTIFY_SOCKET``
(a path, or ``@name`` in the abstract namespace) as datagrams.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "journal_logging"]

log = logging.getLogger("hal0")


class Notifier:
    def __init__(self, env: Mapping[str, str]) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        owner = not pid or pid == str(os.getpid())  # the watchdog may be meant for another process
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and owner else 0.0
        self._status = ""

    @property
    def active(self) -> bool:
        return bool(self._address)

    def send(self, message: str) -> None:
        """One notification; never raises (systemd going away must not take hal0 down)."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message.encode(), self._address)
        except OSError as e:
            log.warning("cannot notify systemd at %s: %s", self._address.lstrip("\0"), e)

    def status(self, text: str) -> None:
        """``STATUS=``, sent only when it changed."""
        if text != self._status:
            self._status = text
            self.send(f"STATUS={text}")

    async def watchdog(self) -> None:
        """Ping every half interval while the loop runs; returns at once without a watchdog."""
        if not self.watchdog_s:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)


def journal_logging(env: Mapping[str, str]) -> bool:
    """Whether stderr goes to the journal (``$JOURNAL_STREAM``), which stamps every line itself."""
    return bool(env.get("JOURNAL_STREAM"))
