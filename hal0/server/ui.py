"""The dashboard's static files (``hal0/ui/``) at ``/`` and ``/ui/…``, and ``/`` for Ollama clients.

The files are package data, read once when the app is built: a few tens of KB, kept in memory
with a gzip copy and an ETag, so a request never touches the disk (nor a zipapp). ``GET /``
negotiates: a browser (``Accept`` names text/html) gets the dashboard, anything else the
plain-text line Ollama clients probe for. The files are public; every call the page makes
carries the operator's token in a header (docs/api.md says why that is safe).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

from aiohttp import web

from hal0.errors import RouteNotFound
from hal0.server.access import public

__all__ = ["UI_FILES", "UI_SUFFIXES", "StaticFile", "load_ui", "routes"]

routes = web.RouteTableDef()
UI_SUFFIXES = (".html", ".js", ".css", ".svg")  # keep in step with pyproject's package-data
OLLAMA_BANNER = "Ollama is running"
# The page loads nothing from elsewhere and is never framed; media comes from blob: URLs the
# playground makes, images from hal0's own /v1/files or data: URLs.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                               "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes
    etag: str  # of the body; the gzipped copy is another representation with its own tag
    content_type: str

    @property
    def etag_gzip(self) -> str:
        return self.etag[:-1] + '-gz"'


def _static(data: bytes, name: str) -> StaticFile:
    ctype = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}.get(
        name[name.rfind("."):], mimetypes.guess_type(name)[0] or "application/octet-stream")
    if ctype.startswith("text/"):
        ctype += "; charset=utf-8"
    etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
    return StaticFile(data, gzip.compress(data, 9, mtime=0), etag, ctype)


def load_ui(folder: Traversable | None = None) -> dict[str, StaticFile]:
    """Every file of the dashboard by name (flat folder). Raises OSError if the folder is missing."""
    folder = folder or resources.files("hal0").joinpath("ui")
    return {f.name: _static(f.read_bytes(), f.name) for f in folder.iterdir()
            if f.is_file() and f.name.endswith(UI_SUFFIXES)}


UI_FILES = web.AppKey("ui_files", dict[str, StaticFile])


def _file(request: web.Request, name: str) -> StaticFile:
    found = request.app[UI_FILES].get(name)
    if found is None:
        raise RouteNotFound(f"the dashboard has no file {name!r}")
    return found


def _serve(request: web.Request, f: StaticFile) -> web.Response:
    """``f`` gzipped when the client takes gzip; 304 when it already has this version."""
    gz = "gzip" in request.headers.get("Accept-Encoding", "")
    etag = f.etag_gzip if gz else f.etag
    # no-cache: the browser revalidates each time, so a new hal0's page is picked up at once
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept, Accept-Encoding", **_PAGE_HEADERS}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = f.content_type
    if gz:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=f.gzipped if gz else f.body, headers=headers)


@routes.get("/")
@public
async def root(request: web.Request) -> web.Response:
    """The dashboard for a browser; "Ollama is running" for everything else (Ollama clients probe it)."""
    if "text/html" in request.headers.get("Accept", ""):
        return _serve(request, _file(request, "index.html"))
    return web.Response(text=OLLAMA_BANNER, content_type="text/plain", headers={"Vary": "Accept"})


@routes.get("/ui/")
@public
async def ui_index(request: web.Request) -> web.Response:
    return _serve(request, _file(request, "index.html"))


@routes.get("/ui/{name}")
@public
async def ui_file(request: web.Request) -> web.Response:
    return _serve(request, _file(request, request.match_info["name"]))
