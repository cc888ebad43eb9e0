"""The small local API client the CLI uses (stdlib only, so the CLI starts fast).

urllib and the config loader are imported when first needed: every CLI command imports this
module (through ``hal0.cli.output``) while building its parser, ``hal0 version`` included, and
a client that finds the running server in ``hal0.pid`` never reads ``hal0.toml``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from hal0.paths import Paths

__all__ = ["ApiClient", "ApiError"]


class ApiError(Exception):
    """An error answer from hal0 (its envelope) or no answer at all."""

    def __init__(self, message: str, code: str = "system.unreachable", status: int = 0,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status
        self.details = details or {}


def _running_url(paths: Paths) -> str | None:
    """The address a running ``hal0 serve`` recorded in hal0.pid (it may be on --port)."""
    try:
        pid, url = paths.pid_file.read_text().split()[:2]
        os.kill(int(pid), 0)
    except PermissionError:
        return url  # alive, run by another user (the system service)
    except (OSError, ValueError):
        return None
    return url


class ApiClient:
    def __init__(self, paths: Paths, base_url: str | None = None, token: str | None = None) -> None:
        base_url = base_url or os.environ.get("HAL0_URL") or _running_url(paths)
        if base_url is None:
            from hal0.config import load_config

            api = load_config(paths).api
            host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host
            base_url = f"http://{host}:{api.port}"
        self.base_url = base_url.rstrip("/")
        if token is None and paths.admin_token.exists():
            token = paths.admin_token.read_text().strip()
        self.token = token

    def _request(self, method: str, path: str, body: Any = None,
                 timeout: float | None = 30) -> Any:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read())["error"]
                raise ApiError(err["message"], err["code"], e.code, err.get("details")) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(f"HTTP {e.code} from {self.base_url}{path}", "system.http", e.code) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise ApiError(f"hal0 is not answering on {self.base_url} ({getattr(e, 'reason', e)}); "
                           "is `hal0 serve` running?") from None

    def call(self, method: str, path: str, body: Any = None, timeout: float | None = 30) -> Any:
        """One JSON request; returns the decoded answer or raises ApiError."""
        with self._request(method, path, body, timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def events(self, path: str = "/api/events") -> Iterator[tuple[str, dict[str, Any]]]:
        """Follow a server-sent event stream; yields ("open", {}) once connected, then (event, data)."""
        with self._request("GET", path, timeout=None) as resp:
            yield "open", {}
            kind, data = "message", ""
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if not line:
                    if data:
                        yield kind, json.loads(data)
                    kind, data = "message", ""
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
