"""Build the aiohttp application; services live in ``cleanup_ctx`` generators.

Shutdown order (aiohttp ``AppRunner.cleanup``): stop accepting connections,
``on_shutdown`` (close the event bus so SSE streams end), wait for in-flight
handlers up to ``api.shutdown_timeout_s``, then the ``cleanup_ctx`` exits in
reverse order: Open WebUI stops, the Wyoming listeners close (ending their connections), the slots stop in
parallel (bounded), then the HTTP client closes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from hal0.auth import TokenStore
from hal0.capabilities import CapabilityService
from hal0.config import Hal0Config, SlotConfig
from hal0.dialects.responses import Responses
from hal0.dialects.responses_store import ResponseStore
from hal0.dispatch.dispatcher import Dispatcher
from hal0.dispatch.upstreams import Upstreams
from hal0.events import EventBus
from hal0.images.service import ImageService
from hal0.metrics import Metrics
from hal0.models.pulls import Pulls
from hal0.models.registry import Registry
from hal0.openwebui import CARD, OpenWebUIService, local_url
from hal0.paths import Paths
from hal0.server import (
    anthropic_api,
    api,
    capabilities_api,
    dashboard_api,
    gpu_api,
    hardware_api,
    metrics_api,
    model_status_api,
    models_api,
    ollama_api,
    openapi,
    responses_api,
    slots_api,
    ui,
    v1_api,
)
from hal0.server.cors import add_cors_headers, cors_middleware
from hal0.server.guard import GUARD, ConnectionGuard, body_middleware, connection_middleware
from hal0.server.keys import (
    CAPABILITIES,
    CONFIG,
    DISPATCHER,
    EVENTS,
    HTTP,
    IMAGES,
    METRICS,
    OPENWEBUI,
    PATHS,
    PULLS,
    REGISTRY,
    RESPONSES,
    SLOT_CONFIGS,
    SLOTS,
    STARTED_AT,
    STARTED_WALL,
    TOKENS,
    WYOMING,
)
from hal0.server.middleware import auth_middleware
from hal0.slots import SlotDeps, SlotManager, Supervision
from hal0.web.http import JSON_LIMITS, JsonLimits
from hal0.web.middleware import error_middleware, request_id_middleware
from hal0.wyoming import WyomingService

__all__ = ["build_app"]


async def _close_events(app: web.Application) -> None:
    app[EVENTS].close()


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=5),
                                     auto_decompress=False) as session:
        app[HTTP] = session
        app[IMAGES] = ImageService(app[PATHS], app[CONFIG].images, session, app[EVENTS])
        async with Pulls(app[PATHS], app[REGISTRY], session, app[EVENTS], os.environ) as pulls:
            app[PULLS] = pulls
            metrics = app.get(METRICS)
            unwatch = metrics.watch_pulls(pulls) if metrics is not None else None
            try:
                yield
            finally:
                if unwatch is not None:
                    unwatch()


def _slots_ctx(autostart: bool, supervision: Supervision):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app[CONFIG]
        deps = SlotDeps(paths=app[PATHS], settings=cfg.slots, registry=app[REGISTRY],
                        providers=cfg.providers, session=app[HTTP], supervision=supervision,
                        pulls=app[PULLS] if cfg.models.autopull else None, memory=cfg.memory)
        metrics = app.get(METRICS)
        async with SlotManager(deps, app[SLOT_CONFIGS], app[EVENTS], autostart=autostart) as manager:
            app[SLOTS] = manager
            unwatch = metrics.watch_slots(manager) if metrics is not None else None
            app[CAPABILITIES] = CapabilityService(app[PATHS], cfg, app[REGISTRY], manager)
            upstreams = Upstreams(cfg.upstreams, cfg.peers)
            app[DISPATCHER] = Dispatcher(cfg, manager, app[REGISTRY], upstreams, app[HTTP],
                                         observer=metrics.requests if metrics is not None else None)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(upstreams.refresh_stale(app[HTTP]))  # first model lists, in the background
                    health = tg.create_task(upstreams.watch(app[HTTP]))  # runs until the app stops
                    try:
                        yield
                    finally:
                        health.cancel()
            finally:
                app[DISPATCHER].close()
                if unwatch is not None:
                    unwatch()
    return ctx


async def _wyoming(app: web.Application) -> AsyncIterator[None]:
    """The Wyoming listeners (when ``[wyoming]`` turns them on), on the dispatcher's path."""
    cfg = app[CONFIG]
    async with WyomingService(cfg.wyoming, app[DISPATCHER], app[SLOTS], cfg.api.max_body_mb * 1024 * 1024) as wy:
        app[WYOMING] = wy
        stop_showing = app[CAPABILITIES].add_child_detail(lambda snap: wy.card_detail(snap.kind))
        try:
            yield
        finally:
            stop_showing()


def _openwebui(supervision: Supervision):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        """Open WebUI (when ``[openwebui]`` or the webui card turns it on), pointed at this server's /v1."""
        cfg = app[CONFIG]
        hal0_v1 = local_url(cfg.api.host, cfg.api.port) + "/v1"
        async with OpenWebUIService(cfg.openwebui, app[PATHS], app[SLOTS], app[HTTP], app[EVENTS], hal0_v1,
                                    supervision, cfg.slots.stop_grace_s) as webui:
            app[OPENWEBUI] = webui
            remove = app[CAPABILITIES].add_service(*CARD, webui)
            try:
                yield
            finally:
                remove()
    return ctx


def build_app(paths: Paths, config: Hal0Config, slots: dict[str, SlotConfig], *,
              autostart: bool = True, supervision: Supervision | None = None) -> web.Application:
    """The hal0 application for an already validated configuration."""
    # Order: the id, the envelope, the connection's limits, CORS preflights (no token), the token,
    # then the body (read only for a caller that may send one).
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, connection_middleware, cors_middleware,
                     auth_middleware, body_middleware],
        client_max_size=config.api.max_body_mb * 1024 * 1024,
    )
    app[PATHS] = paths
    app[CONFIG] = config
    app[GUARD] = ConnectionGuard(config.api)
    app[JSON_LIMITS] = JsonLimits(max_depth=config.api.max_json_depth)
    app[SLOT_CONFIGS] = slots
    app[EVENTS] = EventBus()
    app[TOKENS] = TokenStore(paths.tokens_toml)
    app[REGISTRY] = Registry(paths, tuple(Path(r) for r in config.models.roots))
    app[STARTED_AT] = time.monotonic()
    app[STARTED_WALL] = time.time()
    app[RESPONSES] = Responses(ResponseStore(paths.responses_dir))
    if config.metrics.enabled:
        app[METRICS] = Metrics(config.metrics)
    app.add_routes(api.routes)
    app.add_routes(slots_api.routes)
    app.add_routes(models_api.routes)
    app.add_routes(v1_api.routes)
    app.add_routes(anthropic_api.routes)
    app.add_routes(responses_api.routes)
    app.add_routes(model_status_api.routes)
    app.add_routes(hardware_api.routes)
    app.add_routes(capabilities_api.routes)
    app.add_routes(ollama_api.routes)
    app.add_routes(dashboard_api.routes)
    app.add_routes(openapi.routes)
    app[ui.UI_FILES] = ui.load_ui()
    app.add_routes(ui.routes)
    app.add_routes(metrics_api.routes)
    app.on_response_prepare.append(add_cors_headers)
    app.add_routes(gpu_api.routes)
    app.on_shutdown.append(_close_events)
    app.cleanup_ctx.append(_http_client)
    supervision = supervision or Supervision()
    app.cleanup_ctx.append(_slots_ctx(autostart, supervision))
    app.cleanup_ctx.append(_wyoming)
    app.cleanup_ctx.append(_openwebui(supervision))
    return app
