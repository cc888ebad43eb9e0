"""Open WebUI managed by hal0: a service of ``hal0 serve`` (a ``cleanup_ctx`` of the app), never a
``/v1`` target.

It runs the ``open-webui`` command that ``hal0 backend install openwebui`` put in its own virtualenv
(or ``[openwebui].bin``) as a ``BackendProcess``, waits for its ``/ready``, watches its ``/health``
and restarts it with the slots' ``RestartPolicy`` backoff. Everything it needs comes through its
environment (``environment``), with ``ENABLE_PERSISTENT_CONFIG=False`` so that what hal0 sets wins
over what Open WebUI saved in its database on an earlier start:

- hal0's ``/v1`` as its only OpenAI connection, with an inference token hal0 mints for it once and
  keeps in ``<state>/openwebui/hal0.token`` (0600; minted again if it was revoked); no Ollama.
- Only hal0's chat slots offered as models: Open WebUI cannot ask ``/v1/models?capability=chat``,
  so its connection gets a model allow-list (``OPENAI_API_CONFIGS`` ``model_ids``) of the enabled
  chat slots' names; when that set changes (a chat slot created, deleted, enabled or disabled) Open
  WebUI is restarted. Each state change is published as an ``openwebui.state`` event.
- hal0's speech, transcription, image and embedding routes for its audio, image and RAG features.
- Its data in ``<state>/openwebui/data``; ``WEBUI_SECRET_KEY`` generated once into
  ``<state>/openwebui/secret_key`` (0600); telemetry, update checks and model downloads off.

One owner task runs the process while the service is enabled; ``set_enabled`` starts or ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from hal0.atomic import atomic_write
from hal0.auth import TokenStore, create_token
from hal0.backends import engine_settings
from hal0.config.schema import OpenWebUIConfig
from hal0.errors import AuthInvalid, Hal0Error, ProviderUnavailable
from hal0.events import EventBus
from hal0.paths import Paths
from hal0.providers import Readiness
from hal0.roles import Modality
from hal0.slots import SlotChanged, SlotManager, Supervision
from hal0.slots.policy import RestartPolicy
from hal0.slots.process import BackendProcess, LogRing
from hal0.slots.readiness import wait_ready, watch

__all__ = ["CARD", "TOKEN_NAME", "OpenWebUIService", "chat_models", "environment", "local_url"]

log = logging.getLogger("hal0.openwebui")
CARD = ("webui", "webui")  # the capability card and child that turn it on
TOKEN_NAME = "openwebui"  # the name of hal0's token for it in tokens.toml
_MODELS_CHANGED = "hal0's chat slots changed"


def local_url(host: str, port: int) -> str:
    """How a process on this machine reaches a listener bound to ``host``:``port``."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def chat_models(snapshots: list[Any]) -> list[str]:
    """What Open WebUI offers for chat: the names of hal0's enabled chat slots (each answers as a model)."""
    return [s.name for s in snapshots if s.kind == Modality.CHAT and s.enabled]


def environment(hal0_v1: str, token: str, secret_key: str, data_dir: Path, models: list[str]) -> dict[str, str]:
    """Open WebUI 0.12.4's configuration (the names its ``open_webui/config.py`` and ``env.py`` read)."""
    hal0 = {"OPENAI_API_BASE_URL": hal0_v1, "OPENAI_API_KEY": token}
    return {
        "DATA_DIR": str(data_dir),
        "WEBUI_SECRET_KEY": secret_key,
        "ENV": "prod",  # no /docs
        "ENABLE_PERSISTENT_CONFIG": "False",  # this environment wins over the database, every start
        # chat: hal0's /v1 is the one connection; its chat slots are the models
        "ENABLE_OPENAI_API": "True",
        **hal0,
        "OPENAI_API_BASE_URLS": hal0_v1,
        "OPENAI_API_KEYS": token,
        "OPENAI_API_CONFIGS": json.dumps({"0": {"enable": True, "model_ids": models}}),
        "ENABLE_OLLAMA_API": "False",
        "ENABLE_DIRECT_CONNECTIONS": "False",
        # speech and transcription: hal0's tts and stt slots (OpenAI's voice names map to the default voice)
        "AUDIO_TTS_ENGINE": "openai",
        "AUDIO_TTS_OPENAI_API_BASE_URL": hal0_v1,
        "AUDIO_TTS_OPENAI_API_KEY": token,
        "AUDIO_TTS_MODEL": "tts",
        "AUDIO_TTS_VOICE": "alloy",
        "AUDIO_STT_ENGINE": "openai",
        "AUDIO_STT_OPENAI_API_BASE_URL": hal0_v1,
        "AUDIO_STT_OPENAI_API_KEY": token,
        "AUDIO_STT_MODEL": "stt",
        # images: hal0's img slot
        "ENABLE_IMAGE_GENERATION": "True",
        "IMAGE_GENERATION_ENGINE": "openai",
        "IMAGES_OPENAI_API_BASE_URL": hal0_v1,
        "IMAGES_OPENAI_API_KEY": token,
        "IMAGE_GENERATION_MODEL": "img",
        # documents (RAG): hal0's embed slot, so no sentence-transformers model is loaded or fetched
        "RAG_EMBEDDING_ENGINE": "openai",
        "RAG_EMBEDDING_MODEL": "embed",
        "RAG_OPENAI_API_BASE_URL": hal0_v1,
        "RAG_OPENAI_API_KEY": token,
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False",
        "RAG_RERANKING_MODEL_AUTO_UPDATE": "False",
        "WHISPER_MODEL_AUTO_UPDATE": "False",
        # nothing fetched from outside, nothing reported
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ENABLE_VERSION_UPDATE_CHECK": "False",
        "SCARF_NO_ANALYTICS": "true",
        "DO_NOT_TRACK": "true",
        "ANONYMIZED_TELEMETRY": "false",
        "ENABLE_OTEL": "False",
    }


def _secret(file: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``file`` (0600), made and written once."""
    try:
        value = file.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = make()
    atomic_write(file, value + "\n", mode=0o600)
    return value


def _token(paths: Paths) -> str:
    """hal0's inference token for Open WebUI: the kept one while tokens.toml still accepts it."""
    file = paths.openwebui_dir / "hal0.token"
    with contextlib.suppress(FileNotFoundError):
        token = file.read_text().strip()
        try:
            TokenStore(paths.tokens_toml).verify(token)
            return token
        except AuthInvalid:
            log.warning("Open WebUI's hal0 token was revoked: minting a new one")
    _, token = create_token(paths.tokens_toml, TOKEN_NAME, "inference")
    atomic_write(file, token + "\n", mode=0o600)
    return token


def _card_choice(paths: Paths) -> bool | None:
    """What the operator chose on the webui card (capabilities.toml), if anything."""
    try:
        data = tomllib.loads(paths.capabilities_toml.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    choice = data.get(CARD[0], {}).get(CARD[1], {}).get("enabled")
    return choice if isinstance(choice, bool) else None


class OpenWebUIService:
    """``async with OpenWebUIService(...) as webui:`` Open WebUI, while it is enabled."""

    def __init__(self, config: OpenWebUIConfig, paths: Paths, slots: SlotManager, session: aiohttp.ClientSession,
                 events: EventBus, hal0_v1: str, supervision: Supervision, stop_grace_s: float) -> None:
        self._config, self._paths, self._slots, self._session = config, paths, slots, session
        self._events = events
        self._hal0_v1, self._sup, self._stop_grace = hal0_v1, supervision, stop_grace_s
        self.log = LogRing()
        self._tg = asyncio.TaskGroup()
        self._owner: asyncio.Task[None] | None = None
        self._models: list[str] = []  # what the running process offers
        self._models_changed = asyncio.Event()
        self._settled = asyncio.Event()  # set when a start became ready or failed
        self._unsubscribe: Callable[[], None] | None = None
        self.state, self.message = "off", ""
        self.pid: int | None = None
        self.enabled = False

    async def __aenter__(self) -> OpenWebUIService:
        await self._tg.__aenter__()
        choice = await asyncio.to_thread(_card_choice, self._paths)
        self.enabled = self._config.enabled if choice is None else choice
        self._unsubscribe = self._slots.changes.subscribe(self._on_change)
        if self.enabled:
            self._start_owner()
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._owner is not None:
            self._owner.cancel()  # its finally stops the process
        await self._tg.__aexit__(et, exc, tb)

    # --- the card ------------------------------------------------------------------

    def bin(self) -> str | None:
        """The ``open-webui`` command: ``[openwebui].bin``, else the installed virtualenv's."""
        command = self._config.bin or engine_settings(self._paths, "openwebui").get("bin")
        return command if command and os.access(command, os.X_OK) else None

    @property
    def url(self) -> str:
        return local_url(self._config.host, self._config.port)

    def card_json(self) -> dict[str, Any]:
        return {"slot": None, "service": "openwebui", "exists": self.bin() is not None, "enabled": self.enabled,
                "state": self.state, "provider": "openwebui", "backend": None, "model": None,
                "url": self.url, "host": self._config.host, "port": self._config.port, "pid": self.pid,
                "message": self.message, "models": list(self._models), "log": str(self._log_path)}

    async def set_enabled(self, enabled: bool) -> None:
        """Start Open WebUI and wait until that start became ready or failed (ProviderUnavailable when
        it is not installed), or stop it."""
        if enabled and self.bin() is None:
            raise ProviderUnavailable("Open WebUI is not installed: run `hal0 backend install openwebui` "
                                      "(or set [openwebui].bin to its `open-webui` command)", service="openwebui")
        self.enabled = enabled
        if enabled and (self._owner is None or self._owner.done()):  # not running, or given up: start afresh
            self._start_owner()
            await self._settled.wait()
        elif not enabled and self._owner is not None:
            owner, self._owner = self._owner, None
            owner.cancel()
            await asyncio.wait({owner})
            self._models = []
            self._set("off")

    # --- the owner -----------------------------------------------------------------

    @property
    def _log_path(self) -> Path:
        return self._paths.openwebui_dir / "backend.log"

    def _start_owner(self) -> None:
        self._settled.clear()
        self._owner = self._tg.create_task(self._supervise(), name="openwebui")

    def _on_change(self, change: SlotChanged) -> None:
        if self.state in ("starting", "ready") and chat_models(self._slots.snapshots()) != self._models:
            self._models_changed.set()

    def _set(self, state: str, message: str = "") -> None:
        self.state, self.message = state, message
        if state in ("ready", "backoff", "failed"):
            self._settled.set()
        self._events.publish("openwebui.state", self.card_json())
        log.log(logging.WARNING if state in ("backoff", "failed") else logging.INFO,
                "Open WebUI: %s%s", state, f": {message}" if message else "")

    async def _prepare(self) -> dict[str, str]:
        """The environment of one start: secrets from the state folder, the chat slots now."""
        directory = self._paths.openwebui_dir

        def files() -> tuple[str, str]:
            (directory / "data").mkdir(parents=True, exist_ok=True)
            return _token(self._paths), _secret(directory / "secret_key", lambda: secrets.token_urlsafe(32))

        token, secret = await asyncio.to_thread(files)
        self._models = chat_models(self._slots.snapshots())
        self._models_changed.clear()
        ours = environment(self._hal0_v1, token, secret, directory / "data", self._models)
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith("HAL0_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        return {**inherited, **ours}

    async def _supervise(self) -> None:
        """Run Open WebUI until cancelled: start, readiness, watch, restart with backoff."""
        policy = RestartPolicy(self._sup)
        cfg = self._config
        while True:
            command = self.bin()
            if command is None:
                self._set("failed", "Open WebUI is not installed: run `hal0 backend install openwebui`")
                return
            self._set("starting")
            try:
                env = await self._prepare()
                proc = await BackendProcess.spawn([command, "serve", "--host", cfg.host, "--port", str(cfg.port)],
                                                  env, self.log, self._log_path, cwd=self._paths.openwebui_dir)
            except (OSError, Hal0Error) as e:
                self._set("failed", f"cannot start {command}: {e}")
                return
            self.pid = proc.pid
            try:
                reason = await self._run(proc)
            finally:
                await proc.stop(self._stop_grace)
                self.pid = None
            if reason == _MODELS_CHANGED:
                log.info("Open WebUI: restarting: %s", reason)
                continue
            delay = policy.record(time.monotonic())
            if delay is None:
                self._set("failed", f"{reason}; {policy.given_up()} (disable and enable the webui card again to retry)")
                return
            self._set("backoff", f"{reason}; restarting in {delay:g}s")
            await asyncio.sleep(delay)

    async def _run(self, proc: BackendProcess) -> str:
        """Wait for readiness, then watch; why it ended (it is stopped by the caller)."""
        sup = self._sup
        try:
            await wait_ready(self._probe("/ready"), proc, self.log, slot="openwebui",
                             grace_s=self._config.start_timeout_s, backoff_s=sup.probe_backoff_s,
                             backoff_max_s=sup.probe_backoff_max_s)
        except Hal0Error as e:
            return e.message
        self._set("ready", f"{self.url}, offering {', '.join(self._models) or 'no chat slot'}")
        watcher = asyncio.ensure_future(watch(self._probe("/health"), proc, interval_s=5.0, failures=6))
        changed = asyncio.ensure_future(self._models_changed.wait())
        try:
            await asyncio.wait({watcher, changed}, return_when=asyncio.FIRST_COMPLETED)
            return watcher.result() if watcher.done() else _MODELS_CHANGED
        finally:
            for task in (watcher, changed):
                task.cancel()
            await asyncio.wait({watcher, changed})

    def _probe(self, path: str) -> Callable[[], Any]:
        url = self.url + path

        async def probe() -> Readiness:
            try:
                async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    await r.read()
                    if r.status == 200:
                        return Readiness.READY
                    return Readiness.LOADING if r.status == 503 else Readiness.DOWN
            except (aiohttp.ClientError, TimeoutError):
                return Readiness.DOWN
        return probe
