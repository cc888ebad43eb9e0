"""``registry.toml``: the index of models on disk (id -> files, capabilities).

A registry that cannot be read is never overwritten: dispatch keeps the last good index,
reads through the API answer ``config.invalid`` naming the file, and writes are refused.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from hal0.atomic import atomic_write
from hal0.errors import ConfigInvalid, ModelFilesMissing, ModelInvalid, ModelNotFound
from hal0.models.kinds import model_kind
from hal0.paths import Paths

__all__ = ["CAPABILITIES", "MODEL_ID_RE", "ModelEntry", "ModelFile", "Registry", "ResolvedModel", "resolve_model"]

log = logging.getLogger("hal0.models")
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CAPABILITIES = ("chat", "embed", "rerank", "stt", "tts", "image", "vision")


@dataclass(frozen=True)
class ModelFile:
    """One file of a pulled model: where it is, where it came from, and its verified digest."""

    path: str
    size: int
    sha256: str
    source: str = ""


@dataclass(frozen=True)
class ModelEntry:
    id: str
    path: str
    capabilities: tuple[str, ...] = ()
    size: int = 0
    added_at: str = ""
    source: str = ""  # a catalogue id, hf:// reference or URL; "" for a file registered as it was
    revision: str = ""
    files: tuple[ModelFile, ...] = ()  # pulled files, each with the sha256 it was verified against

    @property
    def verified(self) -> bool:
        return bool(self.files) and all(f.sha256 for f in self.files)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "path": self.path, "capabilities": list(self.capabilities), "size": self.size,
                "added_at": self.added_at, "source": self.source, "revision": self.revision,
                "verified": self.verified, "files": [f.__dict__ for f in self.files]}

    def to_toml(self) -> dict[str, object]:
        body: dict[str, object] = {"path": self.path, "capabilities": list(self.capabilities), "size": self.size,
                                   "added_at": self.added_at}
        if self.source:
            body.update(source=self.source, revision=self.revision)
        if self.files:
            body["files"] = [f.__dict__ for f in self.files]
        return body


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete: the id clients see and the file a backend loads."""

    id: str
    path: Path


class Registry:
    """Read and update registry.toml; every write is atomic and starts from what is on disk.

    ``roots`` are the folders models may live in when registered through the API (the state
    dir's ``models/`` and ``[models].roots``); the CLI may vouch for a path elsewhere.
    """

    def __init__(self, paths: Paths, roots: tuple[Path, ...] = ()) -> None:
        self.file = paths.registry_toml
        self.roots = (paths.models_dir, *roots)
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, ModelEntry] = {}
        self._broken: ConfigInvalid | None = None
        self._checked = -1.0
        self._write_lock = threading.Lock()  # register() runs in worker threads

    def entries(self) -> dict[str, ModelEntry]:
        """The index as last read. It is consulted per request, so the file is looked at (stat)
        at most once a second and re-read only when it changed; this process's own writes show
        at once. A file that cannot be read keeps the last good index for dispatch (``check()``
        says why it is broken) and refuses every write until it is fixed."""
        now = time.monotonic()
        if now - self._checked < 1.0:
            return self._entries
        self._checked = now
        try:
            st = self.file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            self._entries, self._stamp, self._broken = {}, None, None
            return self._entries
        if stamp != self._stamp:
            try:
                self._entries, self._broken = self._read(), None
            except ConfigInvalid as e:
                self._broken = e
                log.error("%s", e.message)
            self._stamp = stamp
        return self._entries

    def check(self) -> None:
        """Raise ConfigInvalid (naming the file) if registry.toml cannot be read."""
        self._checked = -1.0
        self.entries()
        if self._broken is not None:
            raise self._broken

    def _read(self) -> dict[str, ModelEntry]:
        try:
            raw = self.file.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            data = tomllib.loads(raw.decode())
            return {mid: ModelEntry(id=mid, path=m["path"], capabilities=tuple(m.get("capabilities", ())),
                                    size=m.get("size", 0), added_at=m.get("added_at", ""),
                                    source=m.get("source", ""), revision=m.get("revision", ""),
                                    files=tuple(ModelFile(**f) for f in m.get("files", ())))
                    for mid, m in data.get("models", {}).items()}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError,
                AttributeError) as e:
            raise ConfigInvalid(str(self.file), "models", f"unreadable registry ({e}); fix or remove the file: "
                                "hal0 changes nothing in it until then") from None

    def get(self, model_id: str) -> ModelEntry | None:
        return self.entries().get(model_id)

    def remove(self, model_id: str) -> ModelEntry:
        """Drop ``model_id`` and delete the files hal0 pulled for it (blocks: call it off the loop).
        Raises ModelNotFound, or ConfigInvalid when the registry on disk cannot be read."""
        with self._write_lock:
            models = self._read()
            entry = models.pop(model_id, None)
            if entry is None:
                raise ModelNotFound(f"model {model_id!r} is not in the registry", model=model_id)
            body = {"models": {m.id: m.to_toml() for m in models.values()}}
            atomic_write(self.file, "# hal0 model registry. Manage with `hal0 model`.\n" + tomli_w.dumps(body))
            self._entries, self._broken, self._checked = models, None, -1.0
        _remove_files(entry, self.roots[0])
        return entry

    def inside_roots(self, path: Path) -> bool:
        resolved = path.resolve()
        return any(resolved.is_relative_to(root.resolve()) for root in self.roots)

    def register(self, model_id: str, path: Path, capabilities: tuple[str, ...] = (), *,
                 outside_roots: bool = False, source: str = "", revision: str = "",
                 files: tuple[ModelFile, ...] = ()) -> ModelEntry:
        """Add or replace ``model_id`` (blocks on disk I/O: call it off the event loop).

        Raises ModelInvalid (a bad id or capability, a path that holds no model, or one outside
        the roots without ``outside_roots``), ModelFilesMissing, or ConfigInvalid when the
        registry on disk cannot be read (nothing is written then).
        """
        if not MODEL_ID_RE.match(model_id):
            raise ModelInvalid(f"model id {model_id!r} must match {MODEL_ID_RE.pattern}", param="id")
        bad = [c for c in capabilities if c not in CAPABILITIES]
        if bad:
            raise ModelInvalid(f"unknown capabilities {bad}; known: {', '.join(CAPABILITIES)}")
        path = path.expanduser().absolute()
        if ".." in path.parts:
            raise ModelInvalid(f"model path {path} must not contain '..'", param="path")
        model_kind(path)  # a readable model file or folder of a known kind, or ModelInvalid
        if not outside_roots and not self.inside_roots(path):
            raise ModelInvalid(f"{path} is outside the model folders ({', '.join(map(str, self.roots))}); "
                               "add its folder to [models].roots in hal0.toml, or vouch for it with "
                               "`hal0 model register ID PATH --outside-roots`",
                               param="path", roots=[str(r) for r in self.roots])
        size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        entry = ModelEntry(model_id, str(path), capabilities, size, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           source, revision, files)
        with self._write_lock:
            models = self._read()  # from disk, never from a cache: nothing on disk is ever dropped
            models[model_id] = entry
            body = {"models": {m.id: m.to_toml() for m in models.values()}}
            atomic_write(self.file, "# hal0 model registry. Manage with `hal0 model`.\n" + tomli_w.dumps(body))
            self._entries, self._broken, self._checked = models, None, -1.0
        return entry


def _remove_files(entry: ModelEntry, models_dir: Path) -> None:
    """The files hal0 pulled into ``models_dir`` for ``entry``; files registered from elsewhere stay."""
    root = models_dir.resolve()
    for f in entry.files:
        path = Path(f.path).resolve()
        if path.is_relative_to(root):
            path.unlink(missing_ok=True)
    folder = Path(entry.path).resolve()
    folder = folder if folder.is_dir() else folder.parent
    if folder.is_relative_to(root) and folder != root and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


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
