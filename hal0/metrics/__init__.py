"""Prometheus metrics for ``GET /metrics`` (docs/api.md lists them).

``Metrics`` owns one ``CollectorRegistry`` per application (never prometheus_client's global
one, so several apps in one process keep their own counts): the process collectors, the
lifecycle counters fed by the slot change channel and the pulls, the per-request counts the
dispatcher reports, and gauges read from the slots at scrape time. ``render()`` adds each
ready llama-server slot's own metrics with a ``slot`` label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import aiohttp
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from hal0.config.schema import MetricsConfig
from hal0.metrics import llama
from hal0.metrics.lifecycle import PullMetrics, SlotLifecycle
from hal0.metrics.requests import RequestStats, usage_of
from hal0.models.pulls import Pulls
from hal0.slots import DISPATCHABLE, SlotManager, SlotState

__all__ = ["CONTENT_TYPE", "Metrics", "RequestStats", "usage_of"]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class _Live:
    """Gauges read from the slots when Prometheus asks, and the per-request counts."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        yield from m.requests.families()
        if m.slots is None:
            return
        state = GaugeMetricFamily("hal0_slot_state", "1 for the state a slot is in, 0 for the others",
                                  labels=("slot", "state"))
        info = GaugeMetricFamily("hal0_slot_info", "A slot's provider, backend, kind and running model (\"\" "
                                 "when none)", labels=("slot", "provider", "backend", "kind", "model"))
        inflight = GaugeMetricFamily("hal0_slot_inflight", "Requests being forwarded to the slot now",
                                     labels=("slot",))
        queued = GaugeMetricFamily("hal0_slot_queued", "Requests waiting for a place at the slot's gate",
                                   labels=("slot",))
        memory = GaugeMetricFamily("hal0_slot_memory_bytes", "What a running slot's backend holds, as last "
                                   "measured ([memory].measure_interval_s): rss (its process tree) and gpu",
                                   labels=("slot", "kind"))
        up = GaugeMetricFamily("hal0_slot_backend_metrics_up", "Whether a ready llama-server slot answered "
                               "this scrape's request for its own metrics", labels=("slot",))
        for snap in m.slots.snapshots():
            for s in SlotState:
                state.add_metric((snap.name, str(s)), 1.0 if s is snap.state else 0.0)
            info.add_metric((snap.name, snap.provider, snap.backend, snap.kind, snap.model or ""), 1.0)
            inflight.add_metric((snap.name,), snap.inflight)
            queued.add_metric((snap.name,), snap.queued)
            for kind in ("rss", "gpu"):  # a backend that is not running has no measurement: no series
                if snap.memory and isinstance(held := snap.memory.get(f"{kind}_bytes"), int):
                    memory.add_metric((snap.name, kind), held)
        for name, answered in m.backend_up.items():
            up.add_metric((name,), 1.0 if answered else 0.0)
        yield from (state, info, inflight, queued, memory, up)


class Metrics:
    def __init__(self, config: MetricsConfig) -> None:
        # No *_created series beside every counter (a process-wide switch; hal0 is the process).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.config = config
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = RequestStats()  # the dispatcher's observer
        self.lifecycle = SlotLifecycle(self.registry)
        self.pulls = PullMetrics(self.registry)
        self.slots: SlotManager | None = None
        self.backend_up: dict[str, bool] = {}
        self.registry.register(_Live(self))

    def watch_pulls(self, pulls: Pulls) -> Callable[[], None]:
        """Count pulls from now on; returns the function that stops it."""
        return pulls.subscribe(self.pulls)

    def watch_slots(self, slots: SlotManager) -> Callable[[], None]:
        """Follow the slots' change channel; returns the function that stops it."""
        self.slots = slots
        unsubscribe = slots.changes.subscribe(self.lifecycle)

        def stop() -> None:
            unsubscribe()
            self.slots = None
        return stop

    async def render(self, session: aiohttp.ClientSession) -> bytes:
        """The exposition: hal0's registry, then the llama-server slots' own metrics."""
        targets = [(s.name, s.port) for s in (self.slots.snapshots() if self.slots else [])
                   if s.provider == "llama-server" and s.state in DISPATCHABLE and s.pid is not None]
        texts = await llama.fetch(session, targets, self.config.backend_timeout_s)
        self.backend_up = {name: text is not None for name, text in texts.items()}
        own = generate_latest(self.registry)  # synchronous: no other scrape can interleave
        return own + llama.relabel({name: text for name, text in texts.items() if text is not None})
