"""The shape of hal0's configuration as frozen dataclasses (SPEC sections 2-3).

Field types drive validation in ``hal0.config.load``: only ``int``, ``float``,
``str``, ``bool``, ``Literal``, ``tuple[str, ...]``, ``tuple[int, int]``,
``dict[str, str]`` and nested dataclasses are used, so the loader stays small.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BUILTIN_SLOTS",
    "PROVIDER_NAMES",
    "RERANK_SLOT",
    "ApiConfig",
    "DispatcherConfig",
    "Hal0Config",
    "ImagesConfig",
    "ModelSection",
    "ModelsConfig",
    "OllamaConfig",
    "OpenWebUIConfig",
    "ProviderConfig",
    "ServerSection",
    "SlotConfig",
    "SlotsConfig",
    "UpstreamConfig",
    "WyomingConfig",
]

BUILTIN_SLOTS: tuple[str, ...] = ("primary", "embed", "stt", "tts", "img")
RERANK_SLOT = "embed-rerank"

Provider = Literal["llama-server", "moonshine", "whisper", "kokoro", "comfyui", "flm"]
PROVIDER_NAMES: tuple[str, ...] = typing.get_args(Provider)
Backend = Literal["vulkan", "rocm", "cuda", "cpu", "npu"]


@dataclass(frozen=True)
class ApiConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    auth: Literal["on", "off"] = "on"
    max_body_mb: int = 100
    shutdown_timeout_s: float = 10.0
    access_log: bool = True


@dataclass(frozen=True)
class SlotsConfig:
    port_range: tuple[int, int] = (8081, 8099)
    health_grace_s: float = 180.0
    stop_grace_s: float = 10.0
    wait_ready_s: float = 120.0
    # Liveness: a ready backend is probed every interval (each probe limited to the interval);
    # this many misses in a row and it is killed and restarted. 0 s: never probed.
    liveness_interval_s: float = 2.0
    liveness_failures: int = 3
    # How long a slot may take to start its answer (the prompt is processed before the head).
    response_head_timeout_s: float = 600.0


@dataclass(frozen=True)
class DispatcherConfig:
    unknown_model: Literal["default", "reject"] = "default"


@dataclass(frozen=True)
class UpstreamConfig:
    url: str
    api_key_env: str = ""
    models: tuple[str, ...] = ()
    models_ttl_s: float = 300.0


@dataclass(frozen=True)
class ProviderConfig:
    """``[providers.<name>]``: where a provider's engine lives on this box."""

    bin: str = ""  # the engine's executable (llama-server, flm)
    python: str = ""  # the interpreter of the engine's virtualenv (runners, comfyui)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImagesConfig:
    """``[images]``: where generated images are kept for ``response_format: url``."""

    public_url: str = ""  # e.g. https://hal0.example.lan; empty: built from each request's Host
    cache_max_files: int = 256
    cache_max_mb: int = 512


@dataclass(frozen=True)
class ModelsConfig:
    """``[models]``: where model files may be registered from, besides the state dir's models/."""

    roots: tuple[str, ...] = ()
    autopull: bool = True  # a slot whose catalogue model is not on disk pulls it when it starts


@dataclass(frozen=True)
class OllamaConfig:
    """``[ollama]``: a second listener on Ollama's port serving only the Ollama routes (and ``/``),
    for clients that cannot set a base path or a token. ``auth = "off"`` (no token there) is
    allowed on a loopback host only."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 11434
    auth: Literal["on", "off"] = "off"


@dataclass(frozen=True)
class WyomingConfig:
    """``[wyoming]``: Home Assistant's speech protocol on two TCP ports (it has no authentication,
    so clients are limited to ``allow``; a non-loopback ``host`` without ``allow`` is refused)."""

    enabled: bool = False
    host: str = "127.0.0.1"  # an IP address; 0.0.0.0 or :: for every interface (needs `allow`)
    stt_port: int = 10300
    tts_port: int = 10200
    allow: tuple[str, ...] = ()  # client networks (CIDR or single addresses); empty: loopback clients only
    idle_timeout_s: float = 300.0  # a connection that sends no event for this long is closed


@dataclass(frozen=True)
class OpenWebUIConfig:
    """``[openwebui]``: Open WebUI run and configured by hal0 (``hal0 backend install openwebui``).
    The ``webui`` capability card's choice, once made, overrides ``enabled``."""

    enabled: bool = False
    host: str = "0.0.0.0"  # an IP address; the public interface by default (it has accounts of its own)
    port: int = 3001
    bin: str = ""  # its `open-webui` command; empty: the one `hal0 backend install openwebui` made
    start_timeout_s: float = 300.0  # its first start migrates a database and copies its frontend


@dataclass(frozen=True)
class Hal0Config:
    """``hal0.toml``."""

    api: ApiConfig = field(default_factory=ApiConfig)
    slots: SlotsConfig = field(default_factory=SlotsConfig)
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    upstreams: dict[str, UpstreamConfig] = field(default_factory=dict)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    ollama: OllamaConfig = field(default_factory=OllamaConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    openwebui: OpenWebUIConfig = field(default_factory=OpenWebUIConfig)


@dataclass(frozen=True)
class ModelSection:
    default: str = ""
    context_size: int = 8192
    gpu_layers: int = -1


@dataclass(frozen=True)
class ServerSection:
    extra_args: tuple[str, ...] = ()
    threads: int = 0  # 0: let the backend decide
    # /v1/embeddings with token ids: refused (they are the client's tokenizer's) unless the operator
    # knows the clients send this model's own ids
    accept_token_ids: bool = False


@dataclass(frozen=True)
class SlotConfig:
    """``slots/<name>.toml``: one flat shape, the only shape."""

    name: str
    provider: Provider = "llama-server"
    backend: Backend = "cpu"
    port: int = 0
    enabled: bool = True
    idle_timeout_s: float = 300.0
    unload_after_s: float = 0.0
    max_queue: int = 64
    max_inflight: int = 4
    model: ModelSection = field(default_factory=ModelSection)
    server: ServerSection = field(default_factory=ServerSection)
    env: dict[str, str] = field(default_factory=dict)
