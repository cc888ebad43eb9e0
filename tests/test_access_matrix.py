"""The route × scope matrix against a real ``hal0 serve``: every operation of /openapi.json (its
path parameters filled with the description's examples, no body) called with no token, a wrong
token, an inference token and an admin token answers exactly what its ``x-hal0-scope`` says.

The expectations come from the served description, so they cannot drift from it; the description
in turn is checked against each handler's declared access by tests/test_openapi.py."""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers.env import HAL0, hal0_env, manifest
from tests.helpers.serve import Served, serving, setup_home

# the answer to expect, by scope, for: no token, a wrong token, an inference token, an admin token
# ("ok": the handler ran, so anything but 401 and 403: a 400 for the missing body, a 404 for the
# example's slot that does not exist, a 503 for a disabled slot)
MATRIX: dict[str, tuple[int | str, int | str, int | str, int | str]] = {
    "public": ("ok", "ok", "ok", "ok"),
    "inference": (401, 401, "ok", "ok"),
    "admin": (401, 401, 403, "ok"),
    "metrics": (401, 401, 403, "ok"),  # an admin or a metrics token (tests/test_metrics.py has the metrics scope)
}
CODES = {401: ("auth.missing", "auth.invalid"), 403: ("auth.forbidden",)}
WRONG = "hal0_" + "x" * 40
pytestmark = [pytest.mark.backends, pytest.mark.slow]


class Hal0:
    def __init__(self, served: Served, inference: str, admin: str) -> None:
        self.served, self.inference, self.admin = served, inference, admin

    def call(self, method: str, path: str, token: str | None) -> tuple[int, Any]:
        """Status and JSON error body (None for a success; a stream is not read)."""
        url = urlsplit(self.served.url)
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=120)
        try:
            conn.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
            resp = conn.getresponse()
            if resp.status < 400:
                return resp.status, None
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def hal0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hal0]:
    home: Path = tmp_path_factory.mktemp("matrix")
    m = manifest()
    setup_home(home, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    made = subprocess.run([*HAL0, "token", "create", "matrix", "--scope", "inference", "--json"],
                          env=hal0_env(home), check=True, capture_output=True, text=True)
    with serving(home) as s:
        yield Hal0(s, json.loads(made.stdout)["token"], (home / "etc/admin.token").read_text().strip())
        s.stop()


def _operations() -> list[tuple[str, str, str]]:
    from hal0.server.openapi import document  # the same document hal0 serves (compared below)

    out = []
    for path, item in document()["paths"].items():
        for method, op in item.items():
            for p in op.get("parameters", ()):
                if p["in"] == "path":
                    path = path.replace("{" + p["name"] + "}", p["example"])
            out.append((method.upper(), path, op["x-hal0-scope"]))
    return out


def test_the_matrix_is_derived_from_the_served_description(hal0: Hal0) -> None:
    from hal0.server.openapi import document

    status, doc = hal0.served.get("/openapi.json")  # no token: public
    assert status == 200
    assert doc == json.loads(json.dumps(document()))
    assert {scope for _, _, scope in _operations()} == set(MATRIX)


@pytest.mark.parametrize(("method", "path", "scope"), _operations(), ids=lambda v: str(v))
def test_route_answers_each_token_as_documented(hal0: Hal0, method: str, path: str, scope: str) -> None:
    got = []
    for token in (None, WRONG, hal0.inference, hal0.admin):
        status, body = hal0.call(method, path, token)
        if status in CODES:
            err = body.get("error")
            code = err.get("code") if isinstance(err, dict) else None  # Ollama's routes: {"error": "..."}
            assert code is None or code in CODES[status], (method, path, token is None, body)
            got.append(status)
        else:
            assert status < 500 or status in (502, 503, 504), (method, path, status, body)
            got.append("ok")
    assert tuple(got) == MATRIX[scope], f"{method} {path} ({scope})"
