"""``memory.json`` in the state dir: the largest memory each model was measured to hold during its
latest load, so the next decision about it uses a real number instead of the fit estimate.

One writer (``MemoryLedger``, shared by the slots through their deps), atomic writes, called off
the event loop (it reads and writes a small file under a thread lock).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hal0.atomic import atomic_write

__all__ = ["Measured", "MemoryLedger"]

log = logging.getLogger("hal0.slots")


@dataclass(frozen=True)
class Measured:
    """A model's figure, and how it was loaded (a figure is reused only for the same setup)."""

    rss_bytes: int
    gpu_bytes: int | None
    measured_at: float
    backend: str
    context_size: int
    parallel: int

    def to_json(self) -> dict[str, Any]:
        return {"rss_bytes": self.rss_bytes, "gpu_bytes": self.gpu_bytes, "measured_at": self.measured_at,
                "backend": self.backend, "context_size": self.context_size, "parallel": self.parallel}


class MemoryLedger:
    def __init__(self, file: Path) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._data: dict[str, Measured] | None = None

    def _load(self) -> dict[str, Measured]:
        if self._data is None:
            self._data = {}
            try:
                raw = json.loads(self._file.read_text())
                for model, v in raw.get("models", {}).items():
                    self._data[model] = Measured(int(v["rss_bytes"]), v.get("gpu_bytes"), float(v["measured_at"]),
                                                 str(v["backend"]), int(v["context_size"]), int(v["parallel"]))
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                log.warning("ignoring %s: %s", self._file, e)  # a figure is an optimisation, not a truth
        return self._data

    def get(self, model: str) -> Measured | None:
        with self._lock:
            return self._load().get(model)

    def record(self, model: str, figure: Measured) -> None:
        """Keep ``figure`` for ``model`` (written at once, atomically)."""
        with self._lock:
            data = self._load()
            if data.get(model) == figure:
                return
            data[model] = figure
            body = {"models": {k: v.to_json() for k, v in sorted(data.items())}}
            atomic_write(self._file, json.dumps(body, indent=2) + "\n")

    def forget(self, model: str) -> None:
        with self._lock:
            data = self._load()
            if data.pop(model, None) is not None:
                body = {"models": {k: v.to_json() for k, v in sorted(data.items())}}
                atomic_write(self._file, json.dumps(body, indent=2) + "\n")
