"""``registry.toml``: the index of models on disk (id -> files, capabilities).

This is the minimal registry slots need; pulls, checksums and the curated
catalogue extend the same file later.
"""

from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from hal0.atomic import atomic_write
from hal0.errors import ConfigInvalid, ModelFilesMissing, ModelInvalid, ModelNotFound
from hal0.paths import Paths

__all__ = ["CAPABILITIES", "MODEL_ID_RE", "ModelEntry", "Registry", "ResolvedModel", "resolve_model"]

MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CAPABILITIES = ("chat", "embed", "rerank", "stt", "tts", "image", "vision")


@dataclass(frozen=True)
class ModelEntry:
    id: str
    path: str
    capabilities: tuple[str, ...] = ()
    size: int = 0
    added_at: str = ""


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete: the id clients see and the file a backend loads."""

    id: str
    path: Path


class Registry:
    """Read and update registry.toml; every write is atomic."""

    def __init__(self, paths: Paths) -> None:
        self.file = paths.registry_toml
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, ModelEntry] = {}
        self._checked = -1.0

    def entries(self) -> dict[str, ModelEntry]:
        """The index. It is consulted per request, so the file is looked at (stat) at most
        once a second and re-read only when it changed; this process's own writes show at once."""
        now = time.monotonic()
        if now - self._checked < 1.0:
            return self._entries
        self._checked = now
        try:
            st = self.file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            self._entries, self._stamp = {}, None
            return self._entries
        if stamp != self._stamp:
            self._entries, self._stamp = self._read(), stamp
        return self._entries

    def _read(self) -> dict[str, ModelEntry]:
        try:
            data = tomllib.loads(self.file.read_text())
            return {mid: ModelEntry(id=mid, path=m["path"], capabilities=tuple(m.get("capabilities", ())),
                                    size=m.get("size", 0), added_at=m.get("added_at", ""))
                    for mid, m in data.get("models", {}).items()}
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as e:
            raise ConfigInvalid(str(self.file), "models", f"unreadable registry ({e})") from None

    def get(self, model_id: str) -> ModelEntry | None:
        return self.entries().get(model_id)

    def register(self, model_id: str, path: Path, capabilities: tuple[str, ...] = ()) -> ModelEntry:
        """Add or replace ``model_id``. Raises ModelInvalid or ModelFilesMissing."""
        if not MODEL_ID_RE.match(model_id):
            raise ModelInvalid(f"model id {model_id!r} must match {MODEL_ID_RE.pattern}", param="id")
        bad = [c for c in capabilities if c not in CAPABILITIES]
        if bad:
            raise ModelInvalid(f"unknown capabilities {bad}; known: {', '.join(CAPABILITIES)}")
        path = path.expanduser().absolute()
        if not path.exists():
            raise ModelFilesMissing(f"{path} does not exist", path=str(path))
        entry = ModelEntry(model_id, str(path), capabilities, path.stat().st_size,
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        models = dict(self.entries())
        models[model_id] = entry
        body = {"models": {m.id: {"path": m.path, "capabilities": list(m.capabilities), "size": m.size,
                                  "added_at": m.added_at} for m in models.values()}}
        atomic_write(self.file, "# hal0 model registry. Manage with `hal0 model`.\n" + tomli_w.dumps(body))
        self._entries, self._checked = models, -1.0
        return entry


def resolve_model(ref: str, registry: Registry) -> ResolvedModel:
    """A registry id, or an absolute path to a model file, made concrete.

    Raises ModelInvalid (malformed), ModelNotFound (unknown id) or ModelFilesMissing.
    """
    if ref.startswith("/"):
        path = Path(ref)
        if ".." in path.parts:
            raise ModelInvalid(f"model path {ref!r} must not contain '..'")
        if not path.exists():
            raise ModelFilesMissing(f"model file {ref} does not exist", model=ref)
        return ResolvedModel(path.stem if path.is_file() else path.name, path)
    if not MODEL_ID_RE.match(ref):
        raise ModelInvalid(f"{ref!r} is neither a model id nor an absolute path", model=ref)
    entry = registry.get(ref)
    if entry is None:
        raise ModelNotFound(f"model {ref!r} is not in the registry; add it with "
                            f"`hal0 model register {ref} /path/to/file`", model=ref)
    if not Path(entry.path).exists():
        raise ModelFilesMissing(f"model {ref!r} is registered but {entry.path} is missing", model=ref)
    return ResolvedModel(ref, Path(entry.path))
