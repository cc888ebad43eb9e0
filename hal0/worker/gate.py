"""The TCP gate in front of ``rpc-server``, which has no authentication of its own.

hal0 listens where the operator asked; ``rpc-server`` listens on 127.0.0.1 only. A
connection from an address outside the allow-list is reset at once, before a byte reaches
``rpc-server``; an allowed one is spliced to it byte for byte, but only after the client sent
its first bytes (a bare TCP connect, such as a slot's reachability check, never occupies
``rpc-server``, which serves one client at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Sequence

__all__ = ["Gate", "Network", "parse_allow"]

log = logging.getLogger("hal0.worker")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_CHUNK = 1 << 16


def parse_allow(items: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) -> networks. Raises ValueError naming the bad one."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"--allow {item!r} is not an address or a CIDR such as 192.168.1.0/24") from None
    return tuple(out)


def _pump_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a reset connection is an ordinary end of a splice


class Gate:
    """An asyncio server callback: check the peer, then splice it to ``target`` (127.0.0.1)."""

    def __init__(self, allow: tuple[Network, ...], target_port: int) -> None:
        self.allow = allow
        self.target_port = target_port
        self.refused = 0
        self._open: set[asyncio.StreamWriter] = set()

    def allowed(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.allow)

    def close_all(self) -> None:
        """Reset every open connection (rpc-server went away: its clients must notice)."""
        for w in list(self._open):
            w.transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        if not self.allowed(host):
            self.refused += 1
            log.warning("refused a connection from %s: not in the allow-list", host)
            writer.transport.abort()  # RST: nothing of the client reaches rpc-server
            return
        self._open.add(writer)
        try:
            first = await reader.read(_CHUNK)
            if not first:
                return  # a reachability check
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError as e:
                log.warning("rpc-server does not answer (%s); dropping the client %s", e, host)
                return
            self._open.add(up_writer)
            try:
                up_writer.write(first)
                pumps = [asyncio.ensure_future(_pump(reader, up_writer)),
                         asyncio.ensure_future(_pump(up_reader, writer))]
                for p in pumps:
                    p.add_done_callback(_pump_done)
                try:
                    await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for p in pumps:
                        p.cancel()
                    await asyncio.wait(pumps)
            finally:
                self._open.discard(up_writer)
                up_writer.transport.abort()
        finally:
            self._open.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    while data := await src.read(_CHUNK):
        dst.write(data)
        await dst.drain()
