"""One file from a URL to disk: resumable, verified while it streams, installed atomically.

Bytes go to ``<file>.partial`` beside the target, with ``<file>.partial.json`` remembering the
URL and the validator (ETag) they came with. A later attempt, in this process or after a
restart, asks for the rest with ``Range`` + ``If-Range``; a server that answers the whole body
instead (no range support, or the file changed) starts the file from zero. The sha256 is
computed as bytes arrive (the partial's own bytes are hashed once when a resume starts). A
mismatch deletes the partial; a full disk keeps it for a later resume.

Credentials go only to the host they are for: a redirect to another host drops them.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from hal0.atomic import atomic_write, install_file
from hal0.errors import ModelChecksumMismatch, ModelNoSpace, ModelPullFailed

__all__ = ["ATTEMPTS", "Fetched", "Source", "download"]

log = logging.getLogger("hal0.models")
ATTEMPTS = 5
RETRY_BASE_S = 0.5  # then 1, 2, 4 s
READ_TIMEOUT_S = 60.0  # a server that sends nothing for this long is retried
CHUNK = 1 << 20
_REDIRECTS = 8


@dataclass(frozen=True)
class Source:
    """Where one file comes from and what it must be."""

    url: str
    size: int | None = None  # expected bytes, when known
    sha256: str | None = None  # expected digest (lower-case hex), when known
    token_host: str | None = None  # the host the token is for
    token: str | None = None


@dataclass(frozen=True)
class Fetched:
    sha256: str
    size: int
    verified: bool  # the digest matched one the source promised (none promised: False)


@dataclass
class _Partial:
    file: Path
    meta: Path

    @classmethod
    def of(cls, dest: Path) -> _Partial:
        return cls(dest.with_name(dest.name + ".partial"), dest.with_name(dest.name + ".partial.json"))

    def resumable(self, url: str) -> tuple[int, str | None]:
        """Bytes already here for ``url`` and their validator; (0, None) to start afresh."""
        try:
            meta = json.loads(self.meta.read_text())
            have = self.file.stat().st_size
        except (OSError, ValueError):
            return 0, None
        if meta.get("url") != url or not meta.get("etag"):
            return 0, None
        return have, str(meta["etag"])

    def remember(self, url: str, etag: str | None) -> None:
        atomic_write(self.meta, json.dumps({"url": url, "etag": etag}))

    def discard(self) -> None:
        self.file.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)


def _already_here(dest: Path, sha256: str) -> Fetched | None:
    """``dest`` if it is there with the right digest (a model pulled before); makes its folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and _hash_file(dest).hexdigest() == sha256:
        return Fetched(sha256, dest.stat().st_size, True)
    return None


def _hash_file(path: Path) -> hashlib._Hash:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h


async def _open(session: aiohttp.ClientSession, src: Source, headers: dict[str, str],
                state: _State) -> aiohttp.ClientResponse:
    """GET ``src.url``, following redirects by hand so the token never leaves its host. The
    Hugging Face hub names a large file's sha256 in ``X-Linked-Etag`` on its redirect."""
    url = src.url
    for _ in range(_REDIRECTS):
        send = dict(headers)
        if src.token and urlsplit(url).hostname == src.token_host:
            send["Authorization"] = f"Bearer {src.token}"
        r = await session.get(url, headers=send, allow_redirects=False,
                              timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=READ_TIMEOUT_S))
        linked = r.headers.get("X-Linked-Etag", "").strip('"').removeprefix("W/").strip('"').lower()
        if len(linked) == 64 and all(c in "0123456789abcdef" for c in linked):
            state.linked_sha256 = linked
        if r.status in (301, 302, 303, 307, 308) and "Location" in r.headers:
            r.release()
            url = urljoin(url, r.headers["Location"])
            continue
        return r
    raise ModelPullFailed(f"{src.url}: too many redirects", url=src.url)


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ModelNoSpace(f"{folder} has {free / 1e9:.2f} GB free; this file needs {needed / 1e9:.2f} GB more",
                           needed=needed, free=free, folder=str(folder))


async def download(session: aiohttp.ClientSession, src: Source, dest: Path,
                   progress: Callable[[int, int | None], None]) -> Fetched:
    """Fetch ``src`` into ``dest``; returns its sha256 and size. ``progress(bytes_here, total)`` is called
    as bytes arrive. Retries a dropped connection, a timeout or a 5xx with backoff, resuming.

    Raises ModelNoSpace (partial kept), ModelChecksumMismatch (partial deleted), ModelPullFailed.
    Cancellable: the partial stays for the next attempt.
    """
    if src.sha256 and (done := await asyncio.to_thread(_already_here, dest, src.sha256.lower())):
        progress(done.size, done.size)
        return done
    partial = _Partial.of(dest)
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    have, etag = await asyncio.to_thread(partial.resumable, src.url)
    state = _State(have, etag, await asyncio.to_thread(_hash_file, partial.file) if have else hashlib.sha256())
    if src.size is not None:
        _check_space(dest.parent, src.size - have)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            await _attempt(session, src, partial, state, progress)
            break
        except (aiohttp.ClientError, TimeoutError, _Retry) as e:
            if attempt == ATTEMPTS:
                raise ModelPullFailed(f"{src.url}: {e} (gave up after {ATTEMPTS} attempts; pulling again resumes)",
                                      url=src.url) from None
            delay = min(RETRY_BASE_S * 2.0 ** (attempt - 1), 30.0) * random.uniform(0.8, 1.2)
            log.warning("download of %s: %s; attempt %d in %.1fs", src.url, e, attempt + 1, delay)
            await asyncio.sleep(delay)
    digest = state.hasher.hexdigest()
    if src.size is not None and state.have != src.size:
        await asyncio.to_thread(partial.discard)
        raise ModelPullFailed(f"{src.url}: got {state.have} bytes, expected {src.size}", url=src.url)
    expected = (src.sha256 or state.linked_sha256 or "").lower()
    if expected and digest != expected:
        await asyncio.to_thread(partial.discard)
        raise ModelChecksumMismatch(f"{dest.name}: sha256 {digest} is not the expected {expected}; the file was "
                                    "deleted", expected=expected, actual=digest, url=src.url)
    await asyncio.to_thread(install_file, partial.file, dest)
    partial.meta.unlink(missing_ok=True)
    return Fetched(digest, state.have, bool(expected))


class _Retry(Exception):
    """A failure worth another attempt (a 5xx, a stream cut short)."""


@dataclass
class _State:
    """What is on disk so far: kept across attempts, so a retry resumes where the last one ended."""

    have: int
    etag: str | None
    hasher: hashlib._Hash
    linked_sha256: str | None = None  # what the hub says the file's sha256 is


async def _attempt(session: aiohttp.ClientSession, src: Source, partial: _Partial, state: _State,
                   progress: Callable[[int, int | None], None]) -> None:
    """One request for the rest of the file (or all of it); ``state`` follows every byte written."""
    headers = {"Accept-Encoding": "identity"}
    if state.have and state.etag:
        headers.update({"Range": f"bytes={state.have}-", "If-Range": state.etag})
    r = await _open(session, src, headers, state)
    try:
        if r.status == 416 and src.size is not None and state.have == src.size:
            return  # it was all here already
        if r.status >= 500:
            raise _Retry(f"the server answered {r.status}")
        if r.status not in (200, 206):
            raise ModelPullFailed(f"{src.url}: the server answered {r.status} {r.reason or ''}".strip(),
                                  url=src.url, status=r.status)
        if r.status == 200 or _range_start(r) != state.have:  # no range, or the file changed: from zero
            state.have, state.hasher = 0, hashlib.sha256()
            if r.status == 206:
                state.etag = None
                raise _Retry("the server resumed at another offset")
        state.etag = r.headers.get("ETag") or None
        total = (state.have + r.content_length) if r.content_length is not None else src.size
        if total is not None and total > state.have:
            _check_space(partial.file.parent, total - state.have)
        await asyncio.to_thread(partial.remember, src.url, state.etag)
        try:
            with partial.file.open("r+b" if state.have else "wb", buffering=0) as f:  # unbuffered: ENOSPC here
                f.seek(state.have)
                f.truncate()
                async for block in r.content.iter_any():  # as it arrives: a cut keeps every byte that came
                    await asyncio.to_thread(_write_all, f, block)
                    state.hasher.update(block)
                    state.have += len(block)
                    progress(state.have, total)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise ModelNoSpace(f"the disk filled up while downloading {partial.file.name}; free some space and "
                               "pull again: it resumes", folder=str(partial.file.parent),
                               needed=(total or 0) - state.have, free=shutil.disk_usage(partial.file.parent).free
                               ) from None
        if total is not None and state.have < total:
            raise _Retry(f"the connection ended at {state.have} of {total} bytes")
    finally:
        r.release()


def _write_all(f: io.FileIO, data: bytes) -> None:
    view = memoryview(data)
    while view:  # an unbuffered write may take only part (a disk filling up)
        n = f.write(view)
        if not n:
            raise OSError(errno.ENOSPC, "no space left on device")
        view = view[n:]


def _range_start(r: aiohttp.ClientResponse) -> int:
    """The first byte of a 206 (``Content-Range: bytes START-END/TOTAL``)."""
    value = r.headers.get("Content-Range", "")
    try:
        return int(value.split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return -1
