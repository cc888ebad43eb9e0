"""Run ``hal0 serve`` as a real process and wait for it to say it listens."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai

from tests.helpers.env import HAL0, free_port, hal0_env


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str, home: Path, log: list[str],
                 drainer: threading.Thread | None = None) -> None:
        self.proc, self.url, self.home, self.log = proc, url, home, log
        self._drainer = drainer  # reads hal0's log into ``log`` while it runs (None: the test reads it)

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def post(self, path: str, token: str, body: Any, timeout: float = 180) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read())

    def load(self, slot: str, token: str, timeout: float = 180) -> dict[str, Any]:
        """Load a slot through the API; its state once it settled (raises if it did not load)."""
        req = urllib.request.Request(f"{self.url}/api/slots/{slot}/load", b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                state: dict[str, Any] = json.loads(r.read())
        except urllib.error.HTTPError as e:
            with e:
                raise RuntimeError(f"slot {slot} did not load: {e.read().decode()}") from None
        if state["state"] != "ready":
            raise RuntimeError(f"slot {slot} is {state['state']} after loading: {state.get('message')}")
        return state

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stderr is not None
        if self._drainer is None:
            self.log.extend(self.proc.stderr.readlines())
        else:
            self._drainer.join(timeout=60)
        return self.proc.wait(timeout=60)


@contextmanager
def serving(home: Path, argv: Sequence[str] = HAL0, port: int | None = None,
            env: dict[str, str] | None = None, host: str = "127.0.0.1", drain: bool = True) -> Iterator[Served]:
    """Start serve; yield once its log says it listens (raises if it exits first). With ``drain``, a
    thread keeps reading its log into ``Served.log``: a pipe nobody reads fills up (64 KiB of access
    log), and hal0 then queues its lines and, past 10,000, drops them. Without it, the test reads
    ``proc.stderr`` itself."""
    port = port or free_port()
    proc = subprocess.Popen([*argv, "serve", "--host", host, "--port", str(port)],
                            env=env or hal0_env(home), stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    log: list[str] = []
    drainer: threading.Thread | None = None
    try:
        for line in proc.stderr:
            log.append(line)
            if "hal0 listening on" in line:
                break
        else:
            raise RuntimeError("hal0 serve exited before listening:\n" + "".join(log))
        if drain:
            stream = proc.stderr
            drainer = threading.Thread(target=lambda: log.extend(stream), daemon=True, name="hal0-log")
            drainer.start()
        yield Served(proc, f"http://{host}:{port}", home, log, drainer)
    finally:
        if proc.poll() is None:  # a test that failed or did not stop it: stop it as an operator would
            proc.send_signal(signal.SIGTERM)  # hal0 stops its backends; a kill would orphan them
            try:
                if drainer is not None:
                    proc.wait(timeout=60)  # the drainer reads its log meanwhile
                else:
                    proc.communicate(timeout=60)  # drains its log meanwhile, so it cannot block on a full pipe
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if drainer is not None:
            drainer.join(timeout=10)
        proc.stderr.close()


@contextmanager
def sdk(served: Served, token: str) -> Iterator[openai.OpenAI]:
    """The official OpenAI SDK pointed at hal0 (no retries: tests want the first answer)."""
    with openai.OpenAI(base_url=served.url + "/v1", api_key=token, max_retries=0) as client:
        yield client


def setup_home(home: Path, provider_bin: str, model: str, *, also: dict[str, str] | None = None,
               **slots: float | int) -> None:
    """``hal0 init`` with ``model`` in primary on ``provider_bin`` (as llama-server), free ports,
    the other built-ins disabled except those ``also`` gives a model, and ``slots`` set in
    hal0.toml's ``[slots]``."""
    also = also or {}
    seeds = [arg for name, m in {"primary": model, **also}.items() for arg in ("--slot-model", f"{name}={m}")]
    subprocess.run([*HAL0, "init", *seeds, "--provider-bin", f"llama-server={provider_bin}"],
                   env=hal0_env(home), check=True, capture_output=True)
    lo = free_port(span=21)
    cfg = home / "etc/hal0.toml"
    text = cfg.read_text().replace("port_range = [\n    8081,\n    8099,\n]", f"port_range = [{lo}, {lo + 20}]")
    for key, value in slots.items():  # init wrote every key with its default
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    cfg.write_text(text)
    for name in ("primary", "embed", "stt", "tts", "img"):
        toml = home / f"etc/slots/{name}.toml"
        text = re.sub(r"^port = \d+$", f"port = {free_port()}", toml.read_text(), count=1, flags=re.M)
        text = text.replace('backend = "vulkan"', 'backend = "cpu"')
        if name != "primary" and name not in also:
            text = text.replace("enabled = true", "enabled = false")
        toml.write_text(text)
