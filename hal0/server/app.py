"""Build the aiohttp application; services live in ``cleanup_ctx`` generators.

Shutdown order (aiohttp ``AppRunner.cleanup``): stop accepting connections,
``on_shutdown`` (close the event bus so SSE streams end), wait for in-flight
handlers up to ``api.shutdown_timeout_s``, then the ``cleanup_ctx`` exits in
reverse order of registration.
"""

from __future__ import annotations

import time

from aiohttp import web

from hal0.auth import TokenStore
from hal0.config import Hal0Config, SlotConfig
from hal0.events import EventBus
from hal0.paths import Paths
from hal0.server import api
from hal0.server.keys import CONFIG, EVENTS, PATHS, SLOT_CONFIGS, STARTED_AT, TOKENS
from hal0.server.middleware import auth_middleware, error_middleware, request_id_middleware

__all__ = ["build_app"]


async def _close_events(app: web.Application) -> None:
    app[EVENTS].close()


def build_app(paths: Paths, config: Hal0Config, slots: dict[str, SlotConfig]) -> web.Application:
    """The hal0 application for an already validated configuration."""
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, auth_middleware],
        client_max_size=config.api.max_body_mb * 1024 * 1024,
    )
    app[PATHS] = paths
    app[CONFIG] = config
    app[SLOT_CONFIGS] = slots
    app[EVENTS] = EventBus()
    app[TOKENS] = TokenStore(paths.tokens_toml)
    app[STARTED_AT] = time.monotonic()
    app.add_routes(api.routes)
    app.on_shutdown.append(_close_events)
    return app
