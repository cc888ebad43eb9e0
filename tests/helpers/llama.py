"""Run the provisioned llama-server directly, for tests of the artifacts themselves."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.helpers.env import free_port, manifest


def post(url: str, body: dict[str, Any], timeout: float = 120) -> Any:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


@contextmanager
def llama_server(model: str, *args: str) -> Iterator[str]:
    """Start llama-server on ``model``; yield its base URL once /health answers 200."""
    m = manifest()["llama_server"]
    port = free_port()
    argv = [m["bin"], "-m", model, "--host", "127.0.0.1", "--port", str(port), "--threads", "1",
            "-ngl", "0", "-c", "2048", *args]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, env={**os.environ, **m["env"]}, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            delay = 0.05
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"llama-server exited {proc.returncode}: {log.read()[-2000:]!r}")
                try:
                    with urllib.request.urlopen(url + "/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError):
                    pass
                time.sleep(delay)  # waiting for a process we do not control to open its port
                delay = min(delay * 2, 1.0)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)
