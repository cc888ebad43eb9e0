"""``memory.json`` in the state dir: the largest memory each model was measured to hold during its
latest load, so the next decision about it uses a real number instead of the fit estimate
(``expected_need``).

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
from hal0.config.schema import SlotConfig
from hal0.errors import Hal0Error
from hal0.models.fit import estimate
from hal0.models.gguf import read_gguf
from hal0.models.registry import ResolvedModel
from hal0.slots.residency import Need

__all__ = ["Measured", "MemoryLedger", "expected_need"]

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


def expected_need(ledger: MemoryLedger | None, slot: SlotConfig, model: ResolvedModel) -> Need:
    """What ``model`` will hold in ``slot``: its last measured figure for the same backend, context
    and parallel setting, else the fit estimate (weights + KV cache + overhead) of a GGUF on
    llama-server (RAM on the CPU backend, GPU memory otherwise), else nothing known. Blocks (reads)."""
    gpu_backend = slot.backend != "cpu"
    figure = ledger.get(model.id) if ledger is not None else None
    setup = (slot.backend, slot.model.context_size, slot.server.parallel)
    if (figure is not None and (figure.backend, figure.context_size, figure.parallel) == setup
            and (not gpu_backend or figure.gpu_bytes is not None)):
        return Need(figure.rss_bytes, figure.gpu_bytes or 0)
    if slot.provider != "llama-server" or model.path.suffix.lower() != ".gguf":
        return Need()
    try:
        est = estimate(read_gguf(model.path), slot.model.context_size,
                       parallel=max(slot.server.parallel, 1)).total_bytes
    except (Hal0Error, OSError, ValueError):
        return Need()
    return Need(0, est) if gpu_backend else Need(est, 0)
