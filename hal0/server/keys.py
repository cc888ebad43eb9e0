"""Typed application state keys: the only way handlers reach services."""

from __future__ import annotations

from aiohttp import web

from hal0.auth import TokenRecord, TokenStore
from hal0.config import Hal0Config, SlotConfig
from hal0.events import EventBus
from hal0.paths import Paths

__all__ = ["CONFIG", "EVENTS", "PATHS", "REQUEST_ID", "REQUEST_TOKEN", "SLOT_CONFIGS", "STARTED_AT", "TOKENS"]

CONFIG = web.AppKey("config", Hal0Config)
PATHS = web.AppKey("paths", Paths)
SLOT_CONFIGS = web.AppKey("slot_configs", dict[str, SlotConfig])
EVENTS = web.AppKey("events", EventBus)
TOKENS = web.AppKey("tokens", TokenStore)
STARTED_AT = web.AppKey("started_at", float)

REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_TOKEN = web.RequestKey("token", TokenRecord)
