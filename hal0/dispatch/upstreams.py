"""Remote OpenAI-compatible servers (``[upstreams.NAME]``) and their model lists."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import aiohttp

from hal0.config.schema import UpstreamConfig

__all__ = ["Upstream", "Upstreams"]

log = logging.getLogger("hal0.dispatch")


class Upstream:
    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name, self.config = name, config
        self.url = config.url.rstrip("/").removesuffix("/v1")
        self._models: tuple[str, ...] = config.models
        self._fetched_at = 0.0
        self._refresh: asyncio.Task[None] | None = None

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env, "") if self.config.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def models(self) -> tuple[str, ...]:
        return self._models

    @property
    def stale(self) -> bool:
        return not self.config.models and time.monotonic() - self._fetched_at > self.config.models_ttl_s

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """Fetch /v1/models; concurrent callers share one fetch. Failures keep the old list."""
        if self.config.models:
            return
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._fetch(session))  # awaited by every caller below
        await asyncio.shield(self._refresh)

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.url + "/v1/models", headers=self.headers(),
                                   timeout=aiohttp.ClientTimeout(total=10)) as r:
                r.raise_for_status()
                data = await r.json()
            self._models = tuple(str(m["id"]) for m in data.get("data", []))
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as e:
            log.warning("upstream %s: cannot list models at %s: %s", self.name, self.url, e)
        self._fetched_at = time.monotonic()


class Upstreams:
    def __init__(self, configs: dict[str, UpstreamConfig]) -> None:
        self.by_name = {name: Upstream(name, cfg) for name, cfg in configs.items()}
        self._map: dict[str, str] | None = None

    def model_map(self) -> dict[str, str]:
        """Model id -> upstream name; the first upstream listing an id wins."""
        if self._map is None:
            out: dict[str, str] = {}
            for up in self.by_name.values():
                for model in up.models:
                    out.setdefault(model, up.name)
            self._map = out
        return self._map

    async def refresh_stale(self, session: aiohttp.ClientSession) -> bool:
        """Refresh the stale lists; True if any was stale."""
        stale = [u for u in self.by_name.values() if u.stale]
        await asyncio.gather(*(u.refresh(session) for u in stale))
        if stale:
            self._map = None
        return bool(stale)
