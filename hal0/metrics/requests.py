"""Per-request accounting on the hot path: plain integers, turned into metric families at scrape.

``RequestStats.finished()`` runs once per request a slot answered (or refused); it costs a dict
lookup, two ``bisect`` calls and a few integer additions, and, for an answer that carries
token usage, one small ``raw_decode`` of the usage object (never of the whole body).
Everything runs on the event loop, so no locks.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from hal0.dispatch.observe import Relay

__all__ = ["DURATION_BUCKETS", "TTFB_BUCKETS", "Histogram", "RequestStats", "usage_of"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DECODER = json.JSONDecoder()


class Histogram:
    """Bucket counts (not cumulative until exported) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: the first bound >= value
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class _Route:
    __slots__ = ("codes", "duration", "ttfb")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.duration = Histogram(DURATION_BUCKETS)
        self.ttfb = Histogram(TTFB_BUCKETS)


def _object_after(data: bytes, key: bytes) -> dict[str, object] | None:
    """The JSON object that follows the last ``"key":`` in ``data`` (None if there is none)."""
    at = data.rfind(key)
    if at <= 0 or data[at - 1] == 0x5C:  # absent, or inside a string (an escaped quote)
        return None
    start = at + len(key)
    while start < len(data) and data[start] in b" \t\r\n":
        start += 1
    if start >= len(data) or data[start] != 0x7B:  # "usage": null in an early stream chunk
        return None
    try:
        value, _ = _DECODER.raw_decode(data[start:start + 4096].decode("utf-8", "replace"))
    except (ValueError, RecursionError):  # a backend's garbage costs its usage, never the request
        return None
    return value if isinstance(value, dict) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_of(data: bytes) -> tuple[int, int] | None:
    """(tokens in, tokens out) from the end of an OpenAI answer: its ``usage`` object, else
    llama-server's ``timings`` (a stream's last chunk carries them even without
    ``stream_options.include_usage``). None when the answer reports neither."""
    usage = _object_after(data, b'"usage":')
    if usage is not None:
        return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    timings = _object_after(data, b'"timings":')
    if timings is not None:  # prompt_n excludes the tokens the cache already had
        return _count(timings.get("cache_n")) + _count(timings.get("prompt_n")), _count(timings.get("predicted_n"))
    return None


class RequestStats:
    """The ``Observer`` the dispatcher calls; ``families()`` exports what it counted."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], _Route] = {}
        self._tokens: dict[str, list[int]] = {}  # slot -> [in, out]

    def finished(self, slot: str, route: str, status: int, started: float, relay: Relay) -> None:
        now = time.perf_counter()
        stats = self._routes.get((slot, route))
        if stats is None:
            stats = self._routes[(slot, route)] = _Route()
        stats.codes[status] = stats.codes.get(status, 0) + 1
        stats.duration.observe(now - started)
        if relay.first_byte:
            stats.ttfb.observe(relay.first_byte - started)
        if relay.last and (usage := usage_of(relay.tail)) is not None:
            tokens = self._tokens.get(slot)
            if tokens is None:
                tokens = self._tokens[slot] = [0, 0]
            tokens[0] += usage[0]
            tokens[1] += usage[1]

    def families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("hal0_slot_requests", "Requests for a slot by route and status code "
                                       "(499: the client left first)", labels=("slot", "route", "code"))
        busy = CounterMetricFamily("hal0_slot_busy", "Requests a slot refused with 429 slot.busy (queue full)",
                                   labels=("slot",))
        duration = HistogramMetricFamily("hal0_slot_request_duration_seconds", "From dispatch to the end of the "
                                         "answer, queueing and waking included", labels=("slot", "route"))
        ttfb = HistogramMetricFamily("hal0_slot_time_to_first_byte_seconds", "From dispatch until the first "
                                     "byte of the answer's body was ready to go out", labels=("slot", "route"))
        tokens = CounterMetricFamily("hal0_slot_tokens", "Tokens in (prompt) and out (completion) where the "
                                     "backend reports usage", labels=("slot", "direction"))
        refused: dict[str, int] = {}
        for (slot, route), stats in sorted(self._routes.items()):
            for code, n in sorted(stats.codes.items()):
                requests.add_metric((slot, route, str(code)), n)
            refused[slot] = refused.get(slot, 0) + stats.codes.get(429, 0)
            duration.add_metric((slot, route), stats.duration.buckets(), stats.duration.sum)
            if stats.ttfb.counts != [0] * len(stats.ttfb.counts):
                ttfb.add_metric((slot, route), stats.ttfb.buckets(), stats.ttfb.sum)
        for slot, n in sorted(refused.items()):
            busy.add_metric((slot,), n)
        for slot, (t_in, t_out) in sorted(self._tokens.items()):
            tokens.add_metric((slot, "in"), t_in)
            tokens.add_metric((slot, "out"), t_out)
        yield from (requests, busy, duration, ttfb, tokens)
