"""The restart policy after a failure: a pure function of the failure times (no I/O, no loop)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["RestartPolicy", "Supervision"]


@dataclass(frozen=True)
class Supervision:
    """Restart and readiness-probe timing (tests shrink the delays)."""

    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    max_failures: int = 5
    window_s: float = 600.0
    probe_backoff_s: float = 0.5
    probe_backoff_max_s: float = 10.0


class RestartPolicy:
    """Counts failures within ``window_s``; says when to restart and when to give up."""

    def __init__(self, sup: Supervision) -> None:
        self._sup = sup
        self._failures: deque[float] = deque()

    def record(self, now: float) -> float | None:
        """Count a failure at ``now``: the delay before the next restart, or None once
        ``max_failures`` is reached within ``window_s`` (an operator must act)."""
        sup = self._sup
        self._failures.append(now)
        while self._failures and now - self._failures[0] > sup.window_s:
            self._failures.popleft()
        n = len(self._failures)
        if n >= sup.max_failures:
            return None
        return float(min(sup.backoff_s * 2.0 ** (n - 1), sup.backoff_max_s))

    def given_up(self) -> str:
        return f"{len(self._failures)} failures in {self._sup.window_s / 60:g} min: not restarting"

    def reset(self) -> None:
        """An operator acted (load, restart): start counting afresh."""
        self._failures.clear()
