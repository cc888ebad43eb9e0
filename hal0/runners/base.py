"""What every runner shares: /health, /v1/models, the error envelope, loading off the event
loop, one job at a time, and a graceful shutdown."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web

from hal0.errors import RunnerNotReady
from hal0.web.http import json_response
from hal0.web.middleware import error_middleware, request_id_middleware

__all__ = ["ENGINE", "Engine", "run_runner"]

log = logging.getLogger("hal0.runner")
T = TypeVar("T")


class Engine(Protocol):
    """One engine behind a runner. ``load`` blocks (it runs in a thread)."""

    kind: str
    model_id: str

    def load(self) -> None: ...

    def add_routes(self, app: web.Application) -> None: ...


class _Runner:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loaded = False
        self.lock = asyncio.Lock()  # engines compute one job at a time

    def require_loaded(self) -> None:
        if not self.loaded:
            raise RunnerNotReady(f"the {self.engine.kind} runner is still loading its model", retry_after=2)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an engine call in a thread, one at a time; raises RunnerNotReady while loading."""
        self.require_loaded()
        async with self.lock:
            return await asyncio.to_thread(fn, *args)


ENGINE = web.AppKey("runner", _Runner)


async def _health(request: web.Request) -> web.Response:
    loaded = request.app[ENGINE].loaded
    return json_response({"status": "ok" if loaded else "loading", "model_loaded": loaded})


async def _models(request: web.Request) -> web.Response:
    return json_response({"object": "list", "data": [
        {"id": request.app[ENGINE].engine.model_id, "object": "model", "created": 0, "owned_by": "hal0"}]})


def _make_app(engine: Engine, fatal: Callable[[], None]) -> web.Application:
    app = web.Application(middlewares=[request_id_middleware, error_middleware], client_max_size=1024**3)
    runner = _Runner(engine)
    app[ENGINE] = runner

    async def load(app: web.Application) -> AsyncIterator[None]:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_load(runner, fatal))
            yield

    app.cleanup_ctx.append(load)
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/models", _models)
    engine.add_routes(app)
    return app


async def _load(runner: _Runner, fatal: Callable[[], None]) -> None:
    """Load the model off the event loop. A model that cannot load ends the runner (exit 3):
    hal0 sees the exit while warming, with this message in the slot's log."""
    try:
        await asyncio.to_thread(runner.engine.load)
    except Exception as e:
        print(f"hal0 runner: cannot load {runner.engine.model_id}: {e}", file=sys.stderr, flush=True)
        fatal()
        return
    runner.loaded = True
    log.info("%s model %s loaded", runner.engine.kind, runner.engine.model_id)


async def _serve(engine: Engine, host: str, port: int) -> int:
    stop, code = asyncio.Event(), [0]

    def fatal() -> None:
        code[0] = 3
        stop.set()

    web_runner = web.AppRunner(_make_app(engine, fatal), handle_signals=False, access_log=None)
    await web_runner.setup()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(web_runner, host, port).start()
        log.info("%s runner listening on %s:%d", engine.kind, host, port)
        await stop.wait()
    finally:
        await web_runner.cleanup()
    return code[0]


def run_runner(engine_factory: Callable[[argparse.Namespace], Engine], args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(engine_factory(args), args.host, args.port))
