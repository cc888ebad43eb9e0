"""hal0's Wyoming server: speech-to-text and text-to-speech for Home Assistant on two TCP ports,
run inside ``hal0 serve`` (a ``cleanup_ctx`` service of the app).

Wyoming has no authentication, so the listeners admit only clients in ``[wyoming].allow`` (or, with
no ``allow``, loopback clients on a loopback host) and refuse to listen on any other host without
an ``allow``. Every connection is a task of the service's TaskGroup and ends when hal0 stops.
A tts model's voices are asked from its slot once it is ready, kept by model, and asked again
when a slot swaps to a model not seen yet; ``describe`` answers from memory at once (Home
Assistant waits one second for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from wyoming.info import Info

from hal0.config.schema import WyomingConfig
from hal0.dispatch.dispatcher import Dispatcher
from hal0.dispatch.h1 import BackendError
from hal0.errors import Hal0Error
from hal0.roles import Modality
from hal0.slots import SlotChanged, SlotManager
from hal0.slots.state import DISPATCHABLE
from hal0.wyoming.handlers import MAX_LINE, Context, SttConnection, TtsConnection
from hal0.wyoming.info import Voices, asr_info, known_voices, tts_info

__all__ = ["MAX_CONNECTIONS", "VOICES_WAIT_S", "WyomingService", "allowed"]

log = logging.getLogger("hal0.wyoming")
VOICES_WAIT_S = 0.8  # Home Assistant gives describe one second
MAX_CONNECTIONS = 64  # open connections across both ports; beyond it a new one is closed at once
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_KINDS = {"stt": Modality.TRANSCRIPTION, "tts": Modality.SPEECH}


def allowed(peer: str, networks: tuple[Network, ...]) -> bool:
    """Whether a client at ``peer`` may connect: in one of ``networks``, or loopback when there are none."""
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not networks:
        return ip.is_loopback
    return any(ip.version == net.version and ip in net for net in networks)


def _address(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class WyomingService:
    """``async with WyomingService(...) as wyoming:`` the listeners, if ``[wyoming]`` turns them on."""

    def __init__(self, config: WyomingConfig, dispatcher: Dispatcher, slots: SlotManager,
                 max_audio_bytes: int) -> None:
        self._config, self._slots = config, slots
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in config.allow)
        self._ctx = Context(dispatcher, self.stt_info, self.tts_info, max_audio_bytes, config.idle_timeout_s,
                            self._slot_for)
        self._servers: dict[str, asyncio.Server] = {}
        self._conns: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # every task of the group, cancelled at exit
        self._voices: dict[str, Voices] = {}  # by model name
        self._want_voices = asyncio.Event()
        self._wake_for_voices = False
        self._tg = asyncio.TaskGroup()
        self._unsubscribe: Callable[[], None] | None = None
        self.state, self.message = "off", "[wyoming] enabled = false"

    async def __aenter__(self) -> WyomingService:
        await self._tg.__aenter__()
        cfg = self._config
        if not cfg.enabled:
            return self
        if not ipaddress.ip_address(cfg.host).is_loopback and not self._networks:
            self.state = "refused"
            self.message = (f"not listening: host {cfg.host} is not a loopback address and [wyoming].allow is empty; "
                            "Wyoming has no authentication, so list the networks that may use it, e.g. "
                            'allow = ["192.168.1.0/24"]')
            log.error("!!! WYOMING REFUSED: %s !!!", self.message)
            return self
        try:
            for name, port in (("stt", cfg.stt_port), ("tts", cfg.tts_port)):
                self._servers[name] = await asyncio.start_server(self._acceptor(name), cfg.host, port, limit=MAX_LINE)
        except OSError as e:
            self.state, self.message = "error", f"cannot listen on {cfg.host}: {e.strerror or e}"
            log.error("Wyoming: %s", self.message)
            await self._close_servers()
            return self
        self.state, self.message = "listening", ""
        self._unsubscribe = self._slots.changes.subscribe(self._on_change)
        self._tasks.add(self._tg.create_task(self._voices_loop(), name="wyoming-voices"))
        self._want_voices.set()
        log.info("Wyoming listening: speech-to-text on %s, text-to-speech on %s, for %s",
                 _address(cfg.host, cfg.stt_port), _address(cfg.host, cfg.tts_port),
                 ", ".join(cfg.allow) or "loopback clients")
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Stop listening and end every connection (an exchange in progress is cancelled)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        for server in self._servers.values():
            server.close()
        for task in self._tasks:
            task.cancel()
        try:
            await self._tg.__aexit__(et, exc, tb)
        finally:
            await self._close_servers()  # after the connections ended: wait_closed may wait for them

    async def _close_servers(self) -> None:
        for server in self._servers.values():
            server.close()
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()

    # --- connections ---------------------------------------------------------------

    def _acceptor(self, name: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]:
        factory = SttConnection if name == "stt" else TtsConnection

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            if not allowed(host, self._networks):
                log.warning("Wyoming: refused %s (not in [wyoming].allow)", host or "a client")
                writer.close()
                return
            if len(self._conns) >= MAX_CONNECTIONS:
                log.warning("Wyoming: refused %s: %d connections are open already", host, MAX_CONNECTIONS)
                writer.close()
                return
            try:
                task = self._tg.create_task(factory(reader, writer, self._ctx).run(), name=f"wyoming-{name}")
            except RuntimeError:  # the group is shutting down: hal0 is stopping
                writer.close()
                return
            self._conns.add(task)
            self._tasks.add(task)
            task.add_done_callback(self._forget)
        return accept

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._conns.discard(task)
        self._tasks.discard(task)

    # --- what describe answers -----------------------------------------------------

    async def stt_info(self) -> Info:
        return asr_info(self._slots.snapshots())

    async def tts_info(self) -> Info:
        """From memory. A ready tts slot whose voices are not known yet is asked for them (for
        up to VOICES_WAIT_S); one that is not running is woken and asked in the background, so a
        later describe lists them."""
        for snap in self._slots.snapshots():
            if snap.kind != Modality.SPEECH or not snap.enabled or known_voices(snap, self._voices):
                continue
            if snap.state in DISPATCHABLE:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(VOICES_WAIT_S):
                        await self._fetch_voices(snap.name)
            else:
                self._wake_for_voices = True
                self._want_voices.set()
        return tts_info(self._slots.snapshots(), self._voices)

    def _slot_for(self, name: str, kind: Modality) -> str | None:
        for snap in self._slots.snapshots():
            if snap.kind == kind and name in (snap.name, snap.model, snap.model_ref, snap.configured):
                return snap.name
        return None

    def _on_change(self, change: SlotChanged) -> None:
        snap = change.snapshot
        if snap is not None and snap.kind == Modality.SPEECH and snap.state in DISPATCHABLE \
                and not known_voices(snap, self._voices):
            self._want_voices.set()

    async def _voices_loop(self) -> None:
        """Ask each tts slot for its model's voices when one is wanted (runs until cancelled)."""
        while True:
            await self._want_voices.wait()
            self._want_voices.clear()
            wake, self._wake_for_voices = self._wake_for_voices, False
            for snap in self._slots.snapshots():
                if snap.kind != Modality.SPEECH or not snap.enabled or known_voices(snap, self._voices):
                    continue
                if snap.state in DISPATCHABLE or wake:
                    await self._fetch_voices(snap.name)

    async def _fetch_voices(self, slot: str) -> None:
        try:
            async with self._ctx.dispatcher.open("/v1/audio/voices", slot, None, "application/json") as answer:
                snap = self._slots.get(slot).snapshot()  # what answers, while it is held
                body = json.loads(await answer.read())
            names = tuple(str(v["id"]) for v in body["data"])
            default = body.get("default")
        except (Hal0Error, BackendError, ValueError, KeyError, TypeError) as e:
            log.warning("Wyoming: cannot list the voices of slot %s: %s", slot, e)
            return
        for key in (snap.model, snap.model_ref):
            if key:
                self._voices[key] = Voices(names, default if isinstance(default, str) else None)

    # --- status ----------------------------------------------------------------------

    def address(self, kind: str) -> str | None:
        """``tcp://host:port`` of the stt or tts listener while it listens."""
        if kind not in self._servers:
            return None
        return _address(self._config.host, self._config.stt_port if kind == "stt" else self._config.tts_port)

    def status(self) -> dict[str, Any]:
        cfg = self._config
        return {"enabled": cfg.enabled, "state": self.state, "message": self.message, "host": cfg.host,
                "stt": self.address("stt"), "tts": self.address("tts"), "stt_port": cfg.stt_port,
                "tts_port": cfg.tts_port, "allow": list(cfg.allow), "connections": len(self._conns)}

    def card_detail(self, kind: str) -> dict[str, Any]:
        """What the voice card shows of Wyoming for a child slot of ``kind`` (a Modality)."""
        for name, modality in _KINDS.items():
            if kind == modality:
                return {"wyoming": self.address(name)}
        return {}
