"""Typed application state keys: the only way handlers reach services."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from hal0.auth import TokenRecord, TokenStore
from hal0.capabilities import CapabilityService
from hal0.config import Hal0Config, SlotConfig
from hal0.dialects.responses import Responses
from hal0.dispatch.dispatcher import Dispatcher
from hal0.events import EventBus
from hal0.images.service import ImageService
from hal0.metrics import Metrics
from hal0.models.pulls import Pulls
from hal0.models.registry import Registry
from hal0.openwebui import OpenWebUIService
from hal0.paths import Paths
from hal0.slots import SlotManager
from hal0.web.http import REQUEST_ID
from hal0.wyoming import WyomingService

__all__ = [
    "CAPABILITIES",
    "CONFIG",
    "DISPATCHER",
    "EVENTS",
    "HTTP",
    "IMAGES",
    "METRICS",
    "OPENWEBUI",
    "PATHS",
    "PULLS",
    "REGISTRY",
    "REQUEST_ID",
    "REQUEST_TOKEN",
    "RESPONSES",
    "SLOTS",
    "SLOT_CONFIGS",
    "STARTED_AT",
    "STARTED_WALL",
    "TOKENS",
    "WYOMING",
]

CONFIG = web.AppKey("config", Hal0Config)
PATHS = web.AppKey("paths", Paths)
SLOT_CONFIGS = web.AppKey("slot_configs", dict[str, SlotConfig])
EVENTS = web.AppKey("events", EventBus)
TOKENS = web.AppKey("tokens", TokenStore)
STARTED_AT = web.AppKey("started_at", float)
REGISTRY = web.AppKey("registry", Registry)
HTTP = web.AppKey("http", aiohttp.ClientSession)  # pooled connections to slots and upstreams
SLOTS = web.AppKey("slots", SlotManager)
STARTED_WALL = web.AppKey("started_wall", float)  # wall-clock start, for /v1/models "created"
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
IMAGES = web.AppKey("images", ImageService)
CAPABILITIES = web.AppKey("capabilities", CapabilityService)
PULLS = web.AppKey("pulls", Pulls)
RESPONSES = web.AppKey("responses", Responses)  # stored OpenAI Responses (previous_response_id)
WYOMING = web.AppKey("wyoming", WyomingService)
METRICS = web.AppKey("metrics", Metrics)  # absent when [metrics] enabled = false
OPENWEBUI = web.AppKey("openwebui", OpenWebUIService)

REQUEST_TOKEN = web.RequestKey("token", TokenRecord)
