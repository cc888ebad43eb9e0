"""Slot lifecycle and pull metrics, derived from what already flows: the slot change channel
(moves with their ``cause``/``lost`` details, swap outcomes) and the pulls' job reports.

Both listeners run synchronously where the change happens (a slot's owner, a pull's progress
report): a few dict operations, never a wait. Per-request ``serving`` flips never reach them.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram

from hal0.models.pulls import PullJob
from hal0.slots import SlotChanged, SlotState

__all__ = ["LOAD_BUCKETS", "PullMetrics", "SlotLifecycle"]

S = SlotState
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_LOADING = frozenset({S.PULLING, S.STARTING, S.WARMING})
_RESTARTS = {"autorestart": "auto", "restart": "operator"}


class SlotLifecycle:
    """Listens on the change channel: loads (and how long they took), swaps, restarts and
    live backends given up on."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.loads = Counter("hal0_slot_loads", "Backend starts by outcome: ok (ready), failed (error), "
                             "cancelled (stopped while starting)", ("slot", "result"), registry=registry)
        self.load_seconds = Histogram("hal0_slot_load_duration_seconds", "From starting to ready, for loads "
                                      "that succeeded (a pull before the start not included)", ("slot",),
                                      buckets=LOAD_BUCKETS, registry=registry)
        self.swaps = Counter("hal0_slot_swaps", "Swaps that began, by outcome: ok, rolled_back (the old "
                             "model serves again), failed, cancelled", ("slot", "result"), registry=registry)
        self.restarts = Counter("hal0_slot_restarts", "Restarts: auto (after a failure, under the restart "
                                "policy) and operator (hal0 slot restart)", ("slot", "trigger"), registry=registry)
        self.liveness = Counter("hal0_slot_liveness_failures", "Live backends given up on: unresponsive "
                                "(missed health checks) or exited", ("slot", "reason"), registry=registry)
        self._starting: dict[str, float] = {}

    def __call__(self, change: SlotChanged) -> None:
        snap, name = change.snapshot, change.name
        if snap is None:
            self._starting.pop(name, None)
            return
        if (swap := change.detail.get("swap")) is not None:
            self.swaps.labels(name, swap).inc()
        prev = change.prev
        if prev is None:
            return
        new = snap.state
        if new is S.STARTING:
            self._starting[name] = time.monotonic()
            if (trigger := _RESTARTS.get(change.detail.get("cause", ""))) is not None:
                self.restarts.labels(name, trigger).inc()
        elif prev is S.WARMING and new in (S.READY, S.IDLE):
            self.loads.labels(name, "ok").inc()
            if (began := self._starting.pop(name, None)) is not None:
                self.load_seconds.labels(name).observe(time.monotonic() - began)
        elif prev in _LOADING and new in (S.ERROR, S.OFFLINE):
            self.loads.labels(name, "failed" if new is S.ERROR else "cancelled").inc()
            self._starting.pop(name, None)
        if new is S.ERROR and (lost := change.detail.get("lost")):
            self.liveness.labels(name, lost).inc()


class PullMetrics:
    """Listens to the pulls: bytes as their progress grows, and each job's outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.bytes = Counter("hal0_pull_bytes", "Bytes of model files pulls have brought in (a resumed "
                             "file's earlier part and a file already on disk count as done)", registry=registry)
        self.results = Counter("hal0_pulls", "Finished pulls by result: done, failed, cancelled", ("result",),
                               registry=registry)
        self._done: dict[str, int] = {}  # running job -> bytes counted so far

    def __call__(self, job: PullJob) -> None:
        counted = self._done.get(job.id, 0)
        if job.done > counted:
            self.bytes.inc(job.done - counted)
        if job.state == "running":
            self._done[job.id] = max(counted, job.done)
        else:
            self._done.pop(job.id, None)
            self.results.labels(job.state).inc()
