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
    "LogConfig",
    "MemoryConfig",
    "MetricsConfig",
    "ModelSection",
    "ModelsConfig",
    "OllamaConfig",
    "OpenWebUIConfig",
    "PeerConfig",
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
Flavor = Literal["", "cpu", "vulkan", "cuda", "rocm"]


@dataclass(frozen=True)
class ApiConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    auth: Literal["on", "off"] = "on"
    max_body_mb: int = 100
    shutdown_timeout_s: float = 10.0
    access_log: bool = True
    # Limits against slow and hostile clients (docs/security.md).
    header_timeout_s: float = 10.0  # a whole request head within this long of connecting or of the last answer
    body_timeout_s: float = 120.0  # a whole request body within this long of its head
    send_timeout_s: float = 60.0  # a client that takes none of an answer for this long is dropped
    max_connections: int = 512  # open client connections; beyond: idle ones closed, or 503 system.busy
    max_header_bytes: int = 8190  # one request line or header field
    max_headers: int = 128  # header fields in one request
    max_json_depth: int = 64  # nesting of a JSON body
    max_messages: int = 2048  # `messages` of a chat request
    max_inputs: int = 2048  # items of `input` (embeddings), `prompt` (completions), `documents` (rerank)
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API; empty: no CORS at all


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
    # Health: GET /v1/models every interval (0: never); a failure marks it down, and its models
    # answer 503 upstream.unavailable at once until a check succeeds again.
    health_interval_s: float = 10.0


@dataclass(frozen=True)
class PeerConfig:
    """``[peers.NAME]``: another hal0, whose models (its ``/v1/models``) this one serves too."""

    url: str
    token_env: str = ""  # the environment variable holding a token of the peer (inference scope)
    models_ttl_s: float = 60.0  # its model list is fetched again this often, and on a miss
    health_interval_s: float = 2.0  # GET /health this often; a failure marks the peer down


@dataclass(frozen=True)
class ProviderConfig:
    """``[providers.<name>]``: where a provider's engine lives on this box."""

    bin: str = ""  # the engine's executable (llama-server, flm)
    python: str = ""  # the interpreter of the engine's virtualenv (runners, comfyui)
    flavor: Flavor = ""  # llama-server: the build `hal0 backend install` put there (cpu, vulkan, cuda, rocm)
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


def _idle_unload_defaults() -> dict[str, float]:
    return {"images": 900.0}  # ComfyUI holds GPU memory for minutes of nothing; chat stays warm


@dataclass(frozen=True)
class MemoryConfig:
    """``[memory]``: what the slots may hold together, and how long an idle one keeps its model.

    Budgets are bytes (an integer) or a size string ("12GiB", "512MiB"); "auto" is what the
    probe found (hardware.json) minus ``reserve``; "off" means no limit.
    """

    ram_budget: int | str = "auto"
    gpu_budget: int | str = "auto"
    reserve: int | str = "2GiB"
    # How long a load waits for a slot that has requests in flight to drain before giving up on it.
    drain_wait_s: float = 30.0
    measure_interval_s: float = 10.0  # how often a loaded slot's memory is measured; 0 = only after loading
    # By slot kind (chat, embeddings, rerank, audio.transcriptions, audio.speech, images): seconds
    # idle before the model is unloaded, for slots whose own unload_after_s is 0 and not pinned.
    idle_unload_s: dict[str, float] = field(default_factory=_idle_unload_defaults)
    # Opt-in: when processes outside hal0 hold more than this share of the GPU's memory (a game, a
    # render), every idle, unpinned slot is unloaded. 0 = off.
    release_above_share: float = 0.0
    prompt_cache: bool = True  # llama-server chat slots keep their prompt cache across unloads
    prompt_cache_max: int | str = "4GiB"  # disk used by saved prompt caches, oldest removed first


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
class MetricsConfig:
    """``[metrics]``: ``GET /metrics`` in the Prometheus text format."""

    enabled: bool = True  # false: no route answers (404) and no request pays for accounting
    loopback_without_token: bool = False  # true: a scrape from 127.0.0.1/::1 needs no token
    backend_timeout_s: float = 1.0  # how long a scrape waits for each llama-server slot's own /metrics


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: how hal0 writes its log (stderr, the journal under systemd)."""

    format: Literal["text", "json"] = "text"


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
    peers: dict[str, PeerConfig] = field(default_factory=dict)
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    ollama: OllamaConfig = field(default_factory=OllamaConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
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
    parallel: int = 0  # llama-server: sequences decoded at once (--parallel); 0: the backend decides


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
    max_inflight: int = 4  # a llama-server slot with [server].parallel N admits N at once instead
    pinned: bool = False  # never unloaded to make room for another slot, nor by `hal0 gpu release`
    model: ModelSection = field(default_factory=ModelSection)
    server: ServerSection = field(default_factory=ServerSection)
    env: dict[str, str] = field(default_factory=dict)
    rpc: tuple[str, ...] = ()  # llama.cpp RPC workers ("host:port", `hal0 worker`) the model is split over
