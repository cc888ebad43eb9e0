"""The curated model catalogue (SPEC section 8): the models hal0 knows how to fetch.

``catalog.toml`` ships inside the zipapp beside this module. It is read and validated once
into frozen dataclasses; every problem is a ``ConfigInvalid`` naming the catalogue and the
entry. Nothing here touches the network or the disk beyond reading that one file.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from hal0.errors import ConfigInvalid, RequestInvalid
from hal0.models.hub import parse_hf

__all__ = ["CATALOG_FILE", "KINDS", "PROVIDERS", "CatalogEntry", "CatalogFile", "catalog_entry",
           "load_catalog", "parse_catalog"]

CATALOG_FILE = "catalog.toml"
# Each kind of model and the providers that can serve it.
PROVIDERS: dict[str, tuple[str, ...]] = {
    "chat": ("llama-server",), "embed": ("llama-server",), "rerank": ("llama-server",),
    "stt": ("moonshine", "whisper"), "tts": ("kokoro",), "image": ("comfyui",),
}
KINDS: tuple[str, ...] = tuple(PROVIDERS)
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CatalogFile:
    source: str  # hf://OWNER/REPO/PATH[@REV] or an https:// URL
    path: str  # relative path inside the model's folder
    size: int  # bytes
    sha256: str | None = None


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    kind: str
    family: str
    provider: str
    license: str
    context_length: int | None
    quantization: str | None
    memory_gb: float
    description: str
    checked: str
    chat_template: str | None
    files: tuple[CatalogFile, ...]

    @property
    def size(self) -> int:
        """Bytes to download: the sum of the files' sizes."""
        return sum(f.size for f in self.files)


# key -> (accepted types, required)
_ENTRY_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "id": (str, True), "kind": (str, True), "family": (str, True), "provider": (str, True), "license": (str, True),
    "context_length": (int, False), "quantization": (str, False), "memory_gb": ((int, float), True),
    "description": (str, True), "checked": (str, True), "chat_template": (str, False), "files": (list, True),
}
_FILE_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "source": (str, True), "path": (str, True), "size": (int, True), "sha256": (str, False),
}


def _fields(raw: Any, spec: dict[str, tuple[type | tuple[type, ...], bool]], name: str, where: str) -> dict[str, Any]:
    """``raw`` checked against ``spec``: a table, no unknown keys, required keys present, right types."""
    if not isinstance(raw, dict):
        raise ConfigInvalid(name, where, f"expected a table, got {raw!r}")
    for key in raw:
        if key not in spec:
            raise ConfigInvalid(name, f"{where}.{key}", "unknown key")
    for key, (types, required) in spec.items():
        if key not in raw:
            if required:
                raise ConfigInvalid(name, f"{where}.{key}", "required key is missing")
        elif isinstance(raw[key], bool) or not isinstance(raw[key], types):
            want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise ConfigInvalid(name, f"{where}.{key}", f"expected {want}, got {raw[key]!r}")
    return raw


def _file(raw: Any, name: str, where: str) -> CatalogFile:
    v = _fields(raw, _FILE_KEYS, name, where)
    source, path, sha = v["source"], v["path"], v.get("sha256")
    if source.startswith("hf://"):
        try:
            ref = parse_hf(source)
        except RequestInvalid as e:
            raise ConfigInvalid(name, f"{where}.source", e.message) from None
        if ref.path is None:
            raise ConfigInvalid(name, f"{where}.source", "must name a file, not a quantisation")
    elif not source.startswith("https://"):
        raise ConfigInvalid(name, f"{where}.source", "must be hf://OWNER/REPO/PATH[@REV] or an https:// URL")
    pure = PurePosixPath(path)
    if not pure.parts or pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise ConfigInvalid(name, f"{where}.path", f"must be a relative path without '..', got {path!r}")
    if v["size"] <= 0:
        raise ConfigInvalid(name, f"{where}.size", "must be a positive number of bytes")
    if sha is not None and not _SHA256_RE.match(sha):
        raise ConfigInvalid(name, f"{where}.sha256", "must be 64 lowercase hex characters")
    return CatalogFile(source, str(pure), v["size"], sha)


def _entry(raw: Any, name: str, index: int) -> CatalogEntry:
    where = f"model[{index}]"
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        where += f" ({raw['id']})"
    v = _fields(raw, _ENTRY_KEYS, name, where)
    kind, provider, context = v["kind"], v["provider"], v.get("context_length")
    problems = {
        "id": None if _ID_RE.match(v["id"]) else "must match ^[a-z0-9][a-z0-9._-]{0,63}$",
        "kind": None if kind in PROVIDERS else f"unknown kind {kind!r}; known: {', '.join(KINDS)}",
        "provider": None if kind not in PROVIDERS or provider in PROVIDERS[kind]
        else f"a {kind} model is served by {' or '.join(PROVIDERS[kind])}, not {provider!r}",
        "memory_gb": None if v["memory_gb"] > 0 else "must be positive",
        "context_length": None if context is None or context > 0 else "must be positive",
        "files": None if v["files"] else "an entry needs at least one file",
    }
    for key, problem in problems.items():
        if problem:
            raise ConfigInvalid(name, f"{where}.{key}", problem)
    files = tuple(_file(f, name, f"{where}.files[{i}]") for i, f in enumerate(v["files"]))
    if len({f.path for f in files}) != len(files):
        raise ConfigInvalid(name, f"{where}.files", "two files share a path")
    return CatalogEntry(v["id"], kind, v["family"], provider, v["license"], context, v.get("quantization"),
                        float(v["memory_gb"]), v["description"], v["checked"], v.get("chat_template"), files)


def parse_catalog(data: dict[str, Any], name: str) -> dict[str, CatalogEntry]:
    """Validate parsed catalogue TOML; ``name`` is what errors call it. Raises ConfigInvalid."""
    for key in data:
        if key != "model":
            raise ConfigInvalid(name, key, "unknown key")
    models = data.get("model", [])
    if not isinstance(models, list):
        raise ConfigInvalid(name, "model", "expected [[model]] tables")
    entries: dict[str, CatalogEntry] = {}
    for index, raw in enumerate(models):
        entry = _entry(raw, name, index)
        if entry.id in entries:
            raise ConfigInvalid(name, f"model[{index}] ({entry.id})", "duplicate id")
        entries[entry.id] = entry
    return entries


def _parse_text(text: str, name: str) -> dict[str, CatalogEntry]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigInvalid(name, "", f"not valid TOML ({e})") from None
    return parse_catalog(data, name)


@functools.cache
def _catalog() -> Mapping[str, CatalogEntry]:
    text = resources.files("hal0.models").joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    return MappingProxyType(_parse_text(text, CATALOG_FILE))


def load_catalog(extra: Path | None = None) -> dict[str, CatalogEntry]:
    """The shipped catalogue by id, with the operator's own entries from ``extra`` (the config
    dir's catalog.toml, same shape; its ids win) when that file exists. Raises ConfigInvalid."""
    entries = dict(_catalog())
    if extra is not None and extra.is_file():
        entries.update(_parse_text(extra.read_text(encoding="utf-8"), str(extra)))
    return entries


def catalog_entry(model_id: str, extra: Path | None = None) -> CatalogEntry | None:
    """The catalogue entry called ``model_id`` (the operator's file first), or None. Raises ConfigInvalid."""
    if extra is not None and extra.is_file():
        return load_catalog(extra).get(model_id)
    return _catalog().get(model_id)
