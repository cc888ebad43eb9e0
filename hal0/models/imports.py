"""Models already on the box: found where other tools keep them, registered without copying.

- the Hugging Face hub cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``):
  ``models--OWNER--REPO/snapshots/REV/FILE``, symlinks into ``blobs/``;
- Ollama's store (``$OLLAMA_MODELS``, ``~/.ollama/models``, the service's
  ``/usr/share/ollama/.ollama/models``): a manifest per ``NAME:TAG`` naming the GGUF blob;
- LM Studio (``~/.lmstudio/models``, ``~/.cache/lm-studio/models``): ``PUBLISHER/REPO/FILE.gguf``;
- llama.cpp's download cache (``$LLAMA_CACHE``, ``~/.cache/llama.cpp``).

Only GGUF files are looked for (that is what these stores hold for llama-server); projector
files (``mmproj``) are left out. Stdlib only: the CLI runs this as the user who owns the files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Found", "candidate_id", "scan"]

_OLLAMA_MODEL = "application/vnd.ollama.image.model"
_ID_CHARS = re.compile(r"[^A-Za-z0-9._:-]+")


@dataclass(frozen=True)
class Found:
    id: str  # a suggested model id
    path: Path  # what a backend opens (symlinks kept: their names say what the file is)
    origin: str  # where it was found, for the registry's ``source``


def candidate_id(name: str) -> str:
    """A registry id from a file or tag name: lower case, no suffix, safe characters only."""
    stem = re.sub(r"\.gguf$", "", name, flags=re.I).lower()
    return _ID_CHARS.sub("-", stem).strip("-.")[:128] or "model"


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _wanted(path: Path) -> bool:
    return path.name.lower().endswith(".gguf") and "mmproj" not in path.name.lower() and _is_gguf(path)


def _hub_cache(root: Path) -> Iterator[Found]:
    for repo in sorted(root.glob("models--*--*")):
        owner_repo = repo.name.removeprefix("models--").replace("--", "/", 1)
        for snap in sorted((repo / "snapshots").glob("*")):
            for f in sorted(snap.rglob("*.gguf")):
                if _wanted(f):
                    rel = f.relative_to(snap).as_posix()
                    yield Found(candidate_id(f.name), f, f"hf-cache:{owner_repo}/{rel}@{snap.name}")


def _ollama(root: Path) -> Iterator[Found]:
    manifests = root / "manifests"
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        parts = manifest.relative_to(manifests).parts  # HOST / NAMESPACE / NAME / TAG
        if len(parts) != 4:
            continue
        host, namespace, name, tag = parts
        try:
            layers = json.loads(manifest.read_text()).get("layers") or []
        except (OSError, ValueError, AttributeError):
            continue
        digest = next((str(x.get("digest", "")) for x in layers if isinstance(x, dict)
                       and x.get("mediaType") == _OLLAMA_MODEL), "")
        blob = root / "blobs" / digest.replace(":", "-")
        if digest.startswith("sha256:") and _is_gguf(blob):
            full = name if namespace == "library" else f"{namespace}-{name}"
            yield Found(f"ollama:{candidate_id(full)}:{candidate_id(tag)}", blob,
                        f"ollama:{host}/{namespace}/{name}:{tag}")


def _gguf_tree(root: Path, origin: str) -> Iterator[Found]:
    for f in sorted(root.rglob("*.gguf")):
        if _wanted(f):
            yield Found(candidate_id(f.name), f, f"{origin}:{f.relative_to(root).as_posix()}")


def scan(home: Path, env: Mapping[str, str]) -> list[Found]:
    """Every GGUF model in the stores above, once per path (the first store that names it)."""
    hub = Path(env["HF_HUB_CACHE"]) if env.get("HF_HUB_CACHE") else \
        Path(env.get("HF_HOME") or home / ".cache/huggingface") / "hub"
    ollama = [Path(env["OLLAMA_MODELS"])] if env.get("OLLAMA_MODELS") else \
        [home / ".ollama/models", Path("/usr/share/ollama/.ollama/models")]
    llama_cache = Path(env.get("LLAMA_CACHE") or home / ".cache/llama.cpp")
    sources: list[Iterator[Found]] = [_hub_cache(hub), *(_ollama(r) for r in ollama),
                                      _gguf_tree(home / ".lmstudio/models", "lmstudio"),
                                      _gguf_tree(home / ".cache/lm-studio/models", "lmstudio"),
                                      _gguf_tree(llama_cache, "llama.cpp")]
    found: dict[Path, Found] = {}
    for source in sources:
        try:
            for item in source:
                found.setdefault(item.path.resolve(), item)
        except OSError:
            continue  # a store we may not read: the others still count
    return list(found.values())
