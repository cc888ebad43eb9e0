"""``hal0 serve``: load config once, bind, run until SIGTERM/SIGINT, shut down in order."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hal0.atomic import atomic_write
from hal0.auth import check_secret_file, list_tokens
from hal0.config import Hal0Config, is_loopback, load_config, load_slots
from hal0.errors import ConfigInvalid
from hal0.paths import Paths
from hal0.server.app import build_app
from hal0.server.guard import GUARD, OVERFLOW
from hal0.server.keys import SLOTS
from hal0.server.middleware import AccessLogger
from hal0.server.systemd import Notifier, journal_logging
from hal0.slots import DISPATCHABLE, SlotSnapshot
from hal0.web.logs import configure_logging

__all__ = ["serve"]

log = logging.getLogger("hal0")


def _warn_auth(host: str, auth: str, paths: Paths) -> None:
    if auth == "off" and not is_loopback(host):
        bar = "!" * 72
        log.warning("\n%s\n!! AUTHENTICATION IS OFF and hal0 listens on %s: anyone who can reach\n"
                    "!! this port can use every model and change every slot.\n"
                    "!! Set [api] auth = \"on\" in %s, or bind 127.0.0.1.\n%s",
                    bar, host, paths.hal0_toml, bar)
    elif auth == "on" and not list_tokens(paths.tokens_toml):
        log.warning("no API tokens exist yet, so every request but /health and /v1/models "
                    "will get 401: run `hal0 init` or `hal0 token create NAME`")


def _handler_kwargs(config: Hal0Config) -> dict[str, Any]:
    """aiohttp's per-connection settings: the access log and the request head's limits. The
    keep-alive timer is the head's deadline (hal0.server.guard says how)."""
    api = config.api
    return {"access_log_class": AccessLogger,
            "access_log": logging.getLogger("hal0.access") if api.access_log else None,
            "keepalive_timeout": api.header_timeout_s, "max_line_size": api.max_header_bytes,
            "max_field_size": api.max_header_bytes, "max_headers": api.max_headers,
            "lingering_time": 2.0}  # a refused body is drained this long at most, then the socket closes


def _raise_fd_limit(config: Hal0Config) -> None:
    """Room for every allowed connection besides the backends' pipes, logs and sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = config.api.max_connections + OVERFLOW + 512
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            log.warning("only %d file descriptors are allowed (ulimit -n); [api].max_connections = %d may "
                        "not fit", new, config.api.max_connections)


async def _run(paths: Paths, host: str | None, port: int | None) -> int:
    config = load_config(paths)
    configure_logging(config.log.format, journal=journal_logging(os.environ))
    check_secret_file(paths.admin_token)
    check_secret_file(paths.tokens_toml)
    slots = load_slots(paths)
    host = host or config.api.host
    port = port if port is not None else config.api.port
    _warn_auth(host, config.api.auth, paths)
    # what the app is told is where it listens (Open WebUI is pointed at it)
    config = dataclasses.replace(config, api=dataclasses.replace(config.api, host=host, port=port))
    _raise_fd_limit(config)
    app = build_app(paths, config, slots)
    # handler_cancellation: a client that disconnects cancels its handler, which aborts the
    # upstream request (the backend stops generating). Slot actions survive it: the owner
    # task carries on with a command whose caller has left.
    kwargs = _handler_kwargs(config)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=config.api.shutdown_timeout_s,
                           handle_signals=False, **kwargs)
    notifier = Notifier(os.environ)
    await runner.setup()
    watchdog = asyncio.ensure_future(notifier.watchdog())  # pings from this loop: a hung loop stops them
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)  # the handler only sets a flag
    listener: asyncio.Server | None = None
    extra: list[asyncio.Server] = []  # the Ollama listener
    try:
        assert runner.server is not None
        # hal0's own listener instead of a TCPSite: each connection gets the guarded handler.
        factory = app[GUARD].factory(runner.server, loop, **kwargs)
        try:
            listener = await loop.create_server(factory, host or None, port, reuse_address=True, backlog=256)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                log.error("port %d on %s is already in use (another hal0 or program?); "
                          "pick another with --port or [api].port in %s", port, host, paths.hal0_toml)
            else:
                log.error("cannot listen on %s:%d: %s", host, port, e.strerror or e)
            return 1
        if config.ollama.enabled:
            ollama = await _ollama_listener(loop, factory, config.ollama.host, config.ollama.port, paths)
            if ollama is None:
                return 1
            extra.append(ollama)
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        atomic_write(paths.pid_file, f"{os.getpid()}\nhttp://{local}:{port}\n")  # where CLI clients find it
        log.info("hal0 listening on http://%s:%d (config %s, %s mode)", host, port,
                 paths.config_dir, paths.mode)
        notifier.send("READY=1")
        manager = app[SLOTS]
        notifier.status(_summary(manager.snapshots()))
        unsubscribe = manager.changes.subscribe(lambda _: notifier.status(_summary(manager.snapshots())))
        await stop.wait()
        unsubscribe()
        log.info("shutting down")
        notifier.send("STOPPING=1")
    finally:
        for server in (listener, *extra):
            if server is not None:
                server.close()  # stop accepting first, then aiohttp's shutdown order
        await runner.cleanup()
        paths.pid_file.unlink(missing_ok=True)
        watchdog.cancel()
    log.info("stopped")
    return 0


async def _ollama_listener(loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol], host: str,
                           port: int, paths: Paths) -> asyncio.Server | None:
    """The optional second listener on Ollama's port (``[ollama]``): the same application, which
    serves only the Ollama routes there (hal0.server.access), behind the same connection guard."""
    try:
        server = await loop.create_server(factory, host or None, port, reuse_address=True, backlog=256)
    except OSError as e:
        log.error("cannot listen for Ollama clients on %s:%d: %s (is Ollama itself running? change "
                  "[ollama].port in %s or stop it)", host, port, e.strerror or e, paths.hal0_toml)
        return None
    log.info("Ollama API listening on http://%s:%d", host, port)
    return server


def _summary(snaps: list[SlotSnapshot]) -> str:
    """What ``systemctl status hal0`` shows: each enabled slot's state."""
    ready = sum(s.state in DISPATCHABLE for s in snaps)
    states = ", ".join(f"{s.name} {s.state}" for s in snaps if s.enabled)
    return f"{ready} of {len(snaps)} slots ready: {states}" if states else "no slot is enabled"


def serve(paths: Paths, host: str | None = None, port: int | None = None) -> int:
    """Run the server in the foreground; returns the process exit code."""
    configure_logging("text", journal=journal_logging(os.environ))  # until hal0.toml says otherwise
    try:
        return asyncio.run(_run(paths, host, port))
    except ConfigInvalid as e:
        print(f"hal0: {e.code}: {e.message}", file=sys.stderr)
        return 2
