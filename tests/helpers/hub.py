"""A local stand-in for the Hugging Face hub: the model API, ``resolve`` redirects to a second
host that serves the bytes with ETag, ranges and the hub's ``X-Linked-*`` headers. Faults are
switched on per file; every request is recorded so tests can see ranges and credentials."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Seen:
    host: str
    path: str
    headers: dict[str, str]


@dataclass
class Faults:
    drop_at: int | None = None  # the first answer breaks off after this many bytes
    stall_at: int | None = None  # the first answer stops sending after this many bytes (the client times out)
    resume: asyncio.Event | None = None  # with stall_at: send the rest once this is set
    corrupt: bool = False  # serve a flipped byte (the hub still names the real sha256)
    no_range: bool = False  # ignore Range: always the whole file
    new_etag_after_first: bool = False  # the file "changes" after the first request
    status: int | None = None  # answer this status instead
    chunked: bool = False  # no Content-Length (and no X-Linked-Size): the size is unknown until the end


@dataclass
class FakeHub:
    repos: dict[str, dict[str, Path]] = field(default_factory=dict)  # repo -> file path -> local file
    faults: dict[str, Faults] = field(default_factory=dict)  # file path -> faults
    seen: list[Seen] = field(default_factory=list)
    hub_url: str = ""
    cdn_url: str = ""
    _requests: dict[str, int] = field(default_factory=dict)

    def add(self, repo: str, path: str, file: Path) -> str:
        self.repos.setdefault(repo, {})[path] = file
        return sha256_of(file)

    def cdn_requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.host == "cdn" and s.path.endswith("/" + path)]

    async def _listing(self, request: web.Request) -> web.Response:
        self.seen.append(Seen("hub", request.path, dict(request.headers)))
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        if repo not in self.repos:
            return web.json_response({"error": "Repository not found"}, status=404)
        siblings = [{"rfilename": p, "size": f.stat().st_size,
                     "lfs": {"sha256": sha256_of(f), "size": f.stat().st_size}} for p, f in self.repos[repo].items()]
        return web.json_response({"id": repo, "sha": COMMIT, "siblings": siblings})

    async def _resolve(self, request: web.Request) -> web.Response:
        self.seen.append(Seen("hub", request.path, dict(request.headers)))
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        path = request.match_info["path"]
        file = self.repos.get(repo, {}).get(path)
        if file is None:
            return web.json_response({"error": "Entry not found"}, status=404)
        headers = {"Location": f"{self.cdn_url}/blobs/{repo}/{path}", "X-Linked-Etag": f'"{sha256_of(file)}"',
                   "X-Repo-Commit": COMMIT}
        if not self.faults.get(path, Faults()).chunked:
            headers["X-Linked-Size"] = str(file.stat().st_size)
        return web.Response(status=302, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen("cdn", request.path, dict(request.headers)))
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        path = request.match_info["path"]
        file = self.repos[repo][path]
        fault = self.faults.get(path, Faults())
        n = self._requests[path] = self._requests.get(path, 0) + 1
        if fault.status:
            return web.Response(status=fault.status, text="no")
        data = bytearray(file.read_bytes())
        if fault.corrupt:
            data[len(data) // 2] ^= 0xFF
        etag = f'"{sha256_of(file)[:16]}{"-v2" if fault.new_etag_after_first and n > 1 else ""}"'
        start = 0
        rng, if_range = request.headers.get("Range"), request.headers.get("If-Range")
        if rng and not fault.no_range and (if_range is None or if_range == etag):
            start = int(rng.removeprefix("bytes=").split("-")[0])
        headers = {"ETag": etag, "Accept-Ranges": "none" if fault.no_range else "bytes",
                   "Content-Type": "application/octet-stream"}
        status = 200
        if start:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        resp = web.StreamResponse(status=status, headers=headers)
        if not fault.chunked:
            resp.content_length = len(data) - start
        await resp.prepare(request)
        body = bytes(data[start:])
        if fault.drop_at is not None and n == 1:
            await resp.write(body[:fault.drop_at])
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-file
            return resp
        if fault.stall_at is not None and n == 1:
            await resp.write(body[:fault.stall_at])
            await (fault.resume or asyncio.Event()).wait()  # silence until the test says, or the client gives up
            await resp.write(body[fault.stall_at:])
            return resp
        await resp.write(body)
        return resp


def sha256_of(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


@asynccontextmanager
async def fake_hub() -> AsyncIterator[FakeHub]:
    """The hub on 127.0.0.1 and its file host on ``localhost``: two hosts, as on the real hub."""
    hub = FakeHub()
    hub_app, cdn_app = web.Application(), web.Application()
    hub_app.router.add_get("/api/models/{owner}/{repo}/revision/{rev}", hub._listing)
    hub_app.router.add_get("/{owner}/{repo}/resolve/{rev}/{path:.+}", hub._resolve)
    cdn_app.router.add_get("/blobs/{owner}/{repo}/{path:.+}", hub._blob)
    async with TestServer(hub_app, host="127.0.0.1") as hs, TestServer(cdn_app, host="localhost") as cs:
        hub.hub_url = str(hs.make_url("")).rstrip("/")
        hub.cdn_url = str(cs.make_url("")).rstrip("/")
        yield hub
