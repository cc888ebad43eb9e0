"""Remote servers and their model lists: ``[upstreams.NAME]`` (any OpenAI-compatible server) and
``[peers.NAME]`` (another hal0).

A peer is an upstream whose model list is the other hal0's own models (its ``/v1/models``,
without what *it* forwards elsewhere) and whose health is its ``/health``. Both are checked on
a schedule (``health_interval_s``); one that fails a check is *down* and its models answer 503
``upstream.unavailable`` at once, until a check succeeds again. Requests go through the one
forwarding path in ``hal0.dispatch.dispatcher``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from hal0.config.schema import PeerConfig, UpstreamConfig
from hal0.errors import UpstreamDown

__all__ = ["Remote", "Upstream", "Upstreams"]

log = logging.getLogger("hal0.dispatch")
MISS_REFRESH_S = 2.0


@dataclass(frozen=True)
class Remote:
    """What an upstream or peer is, whichever table it came from."""

    kind: Literal["upstream", "peer"]
    url: str
    key_env: str  # the environment variable of its bearer token ("" for none)
    models: tuple[str, ...]  # fixed model ids; () to discover them from /v1/models
    models_ttl_s: float
    health_interval_s: float

    @classmethod
    def of(cls, config: UpstreamConfig | PeerConfig) -> Remote:
        if isinstance(config, PeerConfig):
            return cls("peer", config.url, config.token_env, (), config.models_ttl_s, config.health_interval_s)
        return cls("upstream", config.url, config.api_key_env, config.models, config.models_ttl_s,
                   config.health_interval_s)

    @property
    def health_path(self) -> str:
        return "/health" if self.kind == "peer" else "/v1/models"  # OpenAI servers need not have /health


class Upstream:
    def __init__(self, name: str, config: UpstreamConfig | PeerConfig) -> None:
        self.name = name
        self.config = Remote.of(config)
        self.kind = self.config.kind
        self.url = self.config.url.rstrip("/").removesuffix("/v1")
        self._models: tuple[str, ...] = self.config.models
        self._fetched_at = 0.0
        self._refresh: asyncio.Task[None] | None = None
        self.down_reason = ""  # why the latest health check failed; "" while up
        self.checked_at: float | None = None
        self.on_models: list[Callable[[], None]] = []  # called after a new model list (the Upstreams' cache)

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.key_env, "") if self.config.key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def models(self) -> tuple[str, ...]:
        return self._models

    @property
    def up(self) -> bool:
        return not self.down_reason

    @property
    def stale(self) -> bool:
        return not self.config.models and time.monotonic() - self._fetched_at > self.config.models_ttl_s

    @property
    def stale_for_miss(self) -> bool:
        """A peer's models change when its slots load and unload: refetch on a miss, at most every
        ``MISS_REFRESH_S``."""
        return self.kind == "peer" and time.monotonic() - self._fetched_at > MISS_REFRESH_S

    def require_up(self) -> None:
        """Raise UpstreamDown (503, at once) when the latest health check failed."""
        if self.down_reason:
            raise UpstreamDown(f"{self.kind} {self.name} is down ({self.down_reason}); hal0 checks it every "
                               f"{self.config.health_interval_s:g}s", retry_after=self.config.health_interval_s,
                               upstream=self.name, kind=self.kind)

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
            entries = data.get("data", [])
            if self.kind == "peer":  # only its own: what it forwards elsewhere is not ours to forward again
                entries = [m for m in entries if "upstream" not in m and "peer" not in m]
            models = tuple(str(m["id"]) for m in entries)
            if models != self._models:
                self._models = models
                for callback in self.on_models:
                    callback()
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("%s %s: cannot list models at %s: %s", self.kind, self.name, self.url, e)
        self._fetched_at = time.monotonic()

    async def check(self, session: aiohttp.ClientSession) -> None:
        """One health check: GET the health path within the interval (at most 5 s)."""
        timeout = max(1.0, min(5.0, self.config.health_interval_s))
        try:
            async with session.get(self.url + self.config.health_path, headers=self.headers(),
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                reason = "" if r.status == 200 else f"{self.config.health_path} answered {r.status}"
        except TimeoutError:
            reason = f"no answer from {self.url} within {timeout:g}s"
        except aiohttp.ClientError as e:
            reason = f"{self.url}: {e}"
        was_down, self.down_reason, self.checked_at = bool(self.down_reason), reason, time.time()
        if reason and not was_down:
            log.warning("%s %s is down: %s", self.kind, self.name, reason)
        elif was_down and not reason:
            log.info("%s %s is up again", self.kind, self.name)
            self._fetched_at = 0.0  # it may have changed its models meanwhile

    async def watch(self, session: aiohttp.ClientSession) -> None:
        """Forever: check health every interval; while up, refresh a stale model list."""
        interval = self.config.health_interval_s
        while True:
            await self.check(session)
            if self.up and self.stale:
                await self.refresh(session)
            await asyncio.sleep(interval)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "url": self.url, "state": "up" if self.up else "down",
                "reason": self.down_reason, "checked_at": self.checked_at, "models": list(self._models)}


class Upstreams:
    def __init__(self, configs: dict[str, UpstreamConfig], peers: dict[str, PeerConfig] | None = None) -> None:
        self.by_name: dict[str, Upstream] = {name: Upstream(name, cfg) for name, cfg in configs.items()}
        self.by_name.update((name, Upstream(name, cfg)) for name, cfg in (peers or {}).items())
        self._map: dict[str, str] | None = None
        for up in self.by_name.values():
            up.on_models.append(self._invalidate)

    def _invalidate(self) -> None:
        self._map = None

    def model_map(self) -> dict[str, str]:
        """Model id -> upstream name; the first upstream listing an id wins."""
        if self._map is None:
            out: dict[str, str] = {}
            for up in self.by_name.values():
                for model in up.models:
                    out.setdefault(model, up.name)
            self._map = out
        return self._map

    async def refresh_stale(self, session: aiohttp.ClientSession, *, miss: bool = False) -> bool:
        """Refresh the stale lists of the upstreams that are up; True if any was refreshed. ``miss``
        (a request named a model nobody lists): a peer's list counts as stale after a few seconds."""
        stale = [u for u in self.by_name.values() if u.up and (u.stale or (miss and u.stale_for_miss))]
        await asyncio.gather(*(u.refresh(session) for u in stale))
        return bool(stale)

    async def watch(self, session: aiohttp.ClientSession) -> None:
        """Health checks of every upstream with a ``health_interval_s``; runs until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for up in self.by_name.values():
                if up.config.health_interval_s > 0:
                    tg.create_task(up.watch(session))
