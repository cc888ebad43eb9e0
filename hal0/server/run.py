"""``hal0 serve``: load config once, bind, run until SIGTERM/SIGINT, shut down in order."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import signal
import sys

from aiohttp import web

from hal0.atomic import atomic_write
from hal0.auth import list_tokens
from hal0.config import is_loopback, load_config, load_slots
from hal0.errors import ConfigInvalid
from hal0.paths import Paths
from hal0.server.app import build_app
from hal0.server.keys import SLOTS
from hal0.server.middleware import AccessLogger
from hal0.server.systemd import Notifier, journal_logging
from hal0.slots import DISPATCHABLE, SlotSnapshot

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


async def _run(paths: Paths, host: str | None, port: int | None) -> int:
    config = load_config(paths)
    slots = load_slots(paths)
    host = host or config.api.host
    port = port if port is not None else config.api.port
    _warn_auth(host, config.api.auth, paths)
    # what the app is told is where it listens (Open WebUI is pointed at it)
    config = dataclasses.replace(config, api=dataclasses.replace(config.api, host=host, port=port))
    app = build_app(paths, config, slots)
    # handler_cancellation: a client that disconnects cancels its handler, which aborts the
    # upstream request (the backend stops generating). Slot actions survive it: the owner
    # task carries on with a command whose caller has left.
    runner = web.AppRunner(app, access_log_class=AccessLogger, handler_cancellation=True,
                           access_log=logging.getLogger("hal0.access") if config.api.access_log else None,
                           shutdown_timeout=config.api.shutdown_timeout_s, handle_signals=False)
    notifier = Notifier(os.environ)
    await runner.setup()
    watchdog = asyncio.ensure_future(notifier.watchdog())  # pings from this loop: a hung loop stops them
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)  # the handler only sets a flag
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                log.error("port %d on %s is already in use (another hal0 or program?); "
                          "pick another with --port or [api].port in %s", port, host, paths.hal0_toml)
            else:
                log.error("cannot listen on %s:%d: %s", host, port, e.strerror or e)
            return 1
        if config.ollama.enabled and not await _ollama_site(runner, config.ollama.host, config.ollama.port, paths):
            return 1
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
        await runner.cleanup()
        paths.pid_file.unlink(missing_ok=True)
        watchdog.cancel()
    log.info("stopped")
    return 0


async def _ollama_site(runner: web.AppRunner, host: str, port: int, paths: Paths) -> bool:
    """The optional second listener on Ollama's port (``[ollama]``): the same application, which
    serves only the Ollama routes there (hal0.server.access)."""
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as e:
        log.error("cannot listen for Ollama clients on %s:%d: %s (is Ollama itself running? change "
                  "[ollama].port in %s or stop it)", host, port, e.strerror or e, paths.hal0_toml)
        return False
    log.info("Ollama API listening on http://%s:%d", host, port)
    return True


def _summary(snaps: list[SlotSnapshot]) -> str:
    """What ``systemctl status hal0`` shows: each enabled slot's state."""
    ready = sum(s.state in DISPATCHABLE for s in snaps)
    states = ", ".join(f"{s.name} {s.state}" for s in snaps if s.enabled)
    return f"{ready} of {len(snaps)} slots ready: {states}" if states else "no slot is enabled"


def serve(paths: Paths, host: str | None = None, port: int | None = None) -> int:
    """Run the server in the foreground; returns the process exit code."""
    stamp = "" if journal_logging(os.environ) else "%(asctime)s "  # the journal stamps each line itself
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=stamp + "%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_run(paths, host, port))
    except ConfigInvalid as e:
        print(f"hal0: {e.code}: {e.message}", file=sys.stderr)
        return 2
