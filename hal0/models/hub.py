"""The Hugging Face hub as a source of files: its conventions, nothing more.

``HF_ENDPOINT`` (default the public hub) and ``HF_TOKEN`` come from the environment. A file is
``{endpoint}/{repo}/resolve/{revision}/{path}``; a repository's files, with sizes and LFS
sha256s, come from ``{endpoint}/api/models/{repo}/revision/{revision}?blobs=true``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aiohttp

from hal0.errors import ModelNotFound, ModelPullFailed, RequestInvalid

__all__ = ["DEFAULT_ENDPOINT", "Hub", "HubFile", "HubRef", "parse_hf", "pick_quant"]

DEFAULT_ENDPOINT = "https://huggingface.co"
_REPO = r"[A-Za-z0-9][\w.-]*/[\w.-]+"
_HF_FILE = re.compile(rf"hf://({_REPO})/([^@:\s]+?)(?:@([\w./-]+))?")
_HF_QUANT = re.compile(rf"hf://({_REPO}):([\w.-]+?)(?:@([\w./-]+))?")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.I)


@dataclass(frozen=True)
class HubRef:
    repo: str
    path: str | None  # a file, or None with ``quant``
    quant: str | None
    revision: str


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int | None
    sha256: str | None


def parse_hf(ref: str) -> HubRef:
    """``hf://OWNER/REPO/PATH[@REV]`` or ``hf://OWNER/REPO:QUANT[@REV]``; raises RequestInvalid."""
    if m := _HF_QUANT.fullmatch(ref):
        return HubRef(m[1], None, m[2], m[3] or "main")
    if (m := _HF_FILE.fullmatch(ref)) and ".." not in m[2].split("/"):
        return HubRef(m[1], m[2], None, m[3] or "main")
    raise RequestInvalid(f"{ref!r} is not hf://OWNER/REPO/PATH[@REV] nor hf://OWNER/REPO:QUANT[@REV]", param="ref")


def pick_quant(files: list[HubFile], quant: str) -> list[HubFile]:
    """The GGUF file of quantisation ``quant`` (every part of it when it is split), or ModelNotFound."""
    token = re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9])", re.I)
    found = sorted((f for f in files if f.path.lower().endswith(".gguf") and token.search(f.path.rsplit("/", 1)[-1])),
                   key=lambda f: f.path)
    if not found:
        have = sorted({m[0] for f in files for m in [re.findall(r"(?:IQ|Q|BF|F)\d\w*", f.path, re.I)] if m})
        raise ModelNotFound(f"no {quant} GGUF in the repository; it has {', '.join(have) or 'no GGUF files'}",
                            quant=quant, available=have)
    first = found[0]
    if m := _SPLIT.search(first.path):
        stem = first.path[:m.start()]
        parts = [f for f in found if f.path.startswith(stem) and _SPLIT.search(f.path)]
        if len(parts) != int(m[2]):
            raise ModelPullFailed(f"{first.path} is part of {int(m[2])} but the repository has {len(parts)}")
        return parts
    return [first]


@dataclass(frozen=True)
class Hub:
    endpoint: str = DEFAULT_ENDPOINT
    token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Hub:
        return cls(env.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT, env.get("HF_TOKEN") or None)

    @property
    def host(self) -> str | None:
        return urlsplit(self.endpoint).hostname

    def file_url(self, repo: str, path: str, revision: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    async def files(self, session: aiohttp.ClientSession, repo: str, revision: str) -> tuple[str, list[HubFile]]:
        """The repository's commit and files (sizes and LFS sha256s where the hub gives them)."""
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with session.get(url, params={"blobs": "true"}, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=60)) as r:
                if r.status in (401, 404):
                    raise ModelNotFound(f"{repo}@{revision} is not on {self.endpoint} (or needs HF_TOKEN)", repo=repo)
                if r.status != 200:
                    raise ModelPullFailed(f"{self.endpoint} answered {r.status} listing {repo}", repo=repo)
                info = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise ModelPullFailed(f"cannot list {repo} on {self.endpoint}: {e}", repo=repo) from None
        files = []
        for s in info.get("siblings") or []:
            lfs = s.get("lfs") or {}
            sha = lfs.get("sha256") or lfs.get("oid")
            files.append(HubFile(str(s["rfilename"]), s.get("size") or lfs.get("size"), sha or None))
        return str(info.get("sha") or revision), files
