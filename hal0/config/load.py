"""Read and validate hal0.toml and slots/*.toml, once, into frozen dataclasses.

Every problem is a ``ConfigInvalid`` naming the file and the key path; nothing
here ever writes or "repairs" a user's file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from hal0.config.defaults import builtin_slot
from hal0.config.schema import BUILTIN_SLOTS, PROVIDER_NAMES, Hal0Config, SlotConfig
from hal0.config.sizes import parse_size
from hal0.errors import ConfigInvalid
from hal0.paths import Paths
from hal0.roles import Modality

__all__ = ["SLOT_NAME_RE", "is_loopback", "load_config", "load_slot", "load_slots", "parse_section", "split_hostport",
           "to_dict"]

SLOT_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
T = TypeVar("T")


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigInvalid(str(file), "", f"not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigInvalid(str(file), "", f"not UTF-8 text (byte {e.start}: {e.reason})") from None
    except RecursionError:
        raise ConfigInvalid(str(file), "", "not valid TOML (arrays or tables nested too deeply)") from None
    except OSError as e:
        raise ConfigInvalid(str(file), "", f"cannot be read ({e.strerror})") from None


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list"
    if typing.get_origin(tp) is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, file: str, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def bad() -> ConfigInvalid:
        return ConfigInvalid(file, key, f"expected {_type_name(tp)}, got {value!r}")

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return parse_section(tp, value, file, key)  # type: ignore[arg-type]
    if origin is types.UnionType and set(args) == {int, str}:  # a size: bytes or "12GiB"
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigInvalid(file, key, f"expected a size (bytes or a string such as \"12GiB\"), got {value!r}")
        return value
    if origin is Literal:
        if value not in args:
            raise bad()
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, file, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigInvalid(file, key, f"expected a list of {len(args)} items, got {value!r}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, v, file, f"{key}[{i}]") for i, (a, v) in pairs)
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        return {k: _convert(args[1], v, file, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"unsupported config type {tp}")  # a schema bug, not a user error


def parse_section(cls: type[T], data: dict[str, Any], file: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a TOML table; unknown keys and wrong types are errors."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ConfigInvalid(file, path, "unknown key")
        kwargs[key] = _convert(hints[key], value, file, path)
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in kwargs and no_default:
            raise ConfigInvalid(file, f"{prefix}.{name}" if prefix else name, "required key is missing")
    return cls(**kwargs)


def _check_port(file: str, key: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigInvalid(file, key, f"port {port} is outside 1-65535")


_POSITIVE = ("header_timeout_s", "body_timeout_s", "send_timeout_s", "max_connections", "max_header_bytes",
             "max_headers", "max_json_depth", "max_messages", "max_inputs")


def _check_limits(file: str, cfg: Hal0Config) -> None:
    for key in _POSITIVE:
        value = getattr(cfg.api, key)
        if not value > 0 or value != value or value == float("inf"):
            raise ConfigInvalid(file, f"api.{key}", f"must be a positive finite number, got {value!r}")
    for origin in cfg.api.cors_origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigInvalid(file, "api.cors_origins", f"{origin!r} is not an origin such as "
                                "\"https://chat.example.lan\" (scheme and host, no path) or \"*\"")


def load_config(paths: Paths) -> Hal0Config:
    """``hal0.toml``, or the defaults when it does not exist. Raises ConfigInvalid."""
    file = paths.hal0_toml
    if not file.exists():
        return Hal0Config()
    cfg = parse_section(Hal0Config, _read_toml(file), str(file))
    _check_port(str(file), "api.port", cfg.api.port)
    lo, hi = cfg.slots.port_range
    _check_port(str(file), "slots.port_range[0]", lo)
    _check_port(str(file), "slots.port_range[1]", hi)
    if lo > hi:
        raise ConfigInvalid(str(file), "slots.port_range", f"{lo} is above {hi}")
    if cfg.api.max_body_mb < 1:
        raise ConfigInvalid(str(file), "api.max_body_mb", "must be at least 1")
    _check_limits(str(file), cfg)
    for name in cfg.providers:
        if name not in PROVIDER_NAMES:
            raise ConfigInvalid(str(file), f"providers.{name}", f"unknown provider; known: {', '.join(PROVIDER_NAMES)}")
    for name, up in cfg.upstreams.items():
        if not up.url.startswith(("http://", "https://")):
            raise ConfigInvalid(str(file), f"upstreams.{name}.url", "must be an http(s) URL")
    for name, peer in cfg.peers.items():
        if not peer.url.startswith(("http://", "https://")):
            raise ConfigInvalid(str(file), f"peers.{name}.url", "must be an http(s) URL")
        if name in cfg.upstreams:
            raise ConfigInvalid(str(file), f"peers.{name}", "an upstream has this name too; names are shared")
    if cfg.images.public_url and not cfg.images.public_url.startswith(("http://", "https://")):
        raise ConfigInvalid(str(file), "images.public_url", "must be an http(s) URL")
    if cfg.images.cache_max_files < 1 or cfg.images.cache_max_mb < 1:
        raise ConfigInvalid(str(file), "images.cache_max_files", "cache_max_files and cache_max_mb must be >= 1")
    if not 0 < cfg.metrics.backend_timeout_s <= 60:
        raise ConfigInvalid(str(file), "metrics.backend_timeout_s", "must be above 0 and at most 60")
    for root in cfg.models.roots:
        if not root.startswith("/") or ".." in root.split("/"):
            raise ConfigInvalid(str(file), "models.roots", f"{root!r} must be an absolute path without '..'")
    _check_ollama(str(file), cfg)
    _check_wyoming(str(file), cfg)
    _check_memory(str(file), cfg)
    _check_openwebui(str(file), cfg)
    return cfg


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_hostport(addr: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port). Raises ValueError."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{addr!r} is not host:port")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"{addr!r} is not host:port")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{addr!r}: write an IPv6 address as [addr]:port")
    return host, int(port)


def _check_ollama(file: str, cfg: Hal0Config) -> None:
    ollama = cfg.ollama
    _check_port(file, "ollama.port", ollama.port)
    if not ollama.enabled:
        return
    if ollama.port == cfg.api.port:
        raise ConfigInvalid(file, "ollama.port", f"{ollama.port} is [api].port; the Ollama listener needs its own")
    if ollama.auth == "off" and not is_loopback(ollama.host):
        raise ConfigInvalid(file, "ollama.host", f"{ollama.host!r} is not a loopback address: a listener without "
                            "tokens (auth = \"off\") may only bind 127.0.0.1 or ::1; set [ollama] auth = \"on\" to "
                            "serve other hosts with hal0 tokens")


def _check_wyoming(file: str, cfg: Hal0Config) -> None:
    wy = cfg.wyoming
    try:
        ipaddress.ip_address(wy.host)
    except ValueError:
        raise ConfigInvalid(file, "wyoming.host",
                            f"{wy.host!r} must be an IP address (127.0.0.1, 0.0.0.0, ::)") from None
    _check_port(file, "wyoming.stt_port", wy.stt_port)
    _check_port(file, "wyoming.tts_port", wy.tts_port)
    if wy.idle_timeout_s <= 0:
        raise ConfigInvalid(file, "wyoming.idle_timeout_s", "must be above 0")
    if wy.stt_port == wy.tts_port:
        raise ConfigInvalid(file, "wyoming.tts_port", f"stt_port and tts_port are both {wy.stt_port}")
    for i, net in enumerate(wy.allow):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigInvalid(file, f"wyoming.allow[{i}]",
                                f"{net!r} is not a network (192.168.1.0/24) or an address") from None


def _check_memory(file: str, cfg: Hal0Config) -> None:
    mem = cfg.memory
    for key in ("ram_budget", "gpu_budget", "reserve", "prompt_cache_max"):
        value = getattr(mem, key)
        if key.endswith("budget") and value in ("auto", "off"):
            continue
        try:
            parse_size(value)
        except ValueError as e:
            raise ConfigInvalid(file, f"memory.{key}", str(e)) from None
    for key in ("drain_wait_s", "measure_interval_s"):
        if getattr(mem, key) < 0:
            raise ConfigInvalid(file, f"memory.{key}", "must not be negative")
    if not 0 <= mem.release_above_share < 1:
        raise ConfigInvalid(file, "memory.release_above_share", "must be a share from 0 (off) to below 1")
    for kind, seconds in mem.idle_unload_s.items():
        if kind not in set(Modality):
            raise ConfigInvalid(file, f"memory.idle_unload_s.{kind}",
                                f"unknown slot kind; known: {', '.join(Modality)}")
        if seconds < 0:
            raise ConfigInvalid(file, f"memory.idle_unload_s.{kind}", "must not be negative")


def _check_openwebui(file: str, cfg: Hal0Config) -> None:
    owui = cfg.openwebui
    try:
        ipaddress.ip_address(owui.host)
    except ValueError:
        raise ConfigInvalid(file, "openwebui.host",
                            f"{owui.host!r} must be an IP address (0.0.0.0, 127.0.0.1, ::)") from None
    _check_port(file, "openwebui.port", owui.port)
    if owui.start_timeout_s <= 0:
        raise ConfigInvalid(file, "openwebui.start_timeout_s", "must be above 0")
    if owui.bin and not owui.bin.startswith("/"):
        raise ConfigInvalid(file, "openwebui.bin", f"{owui.bin!r} must be an absolute path")
    taken = {cfg.api.port: "[api].port"}
    if cfg.ollama.enabled:
        taken[cfg.ollama.port] = "[ollama].port"
    if cfg.wyoming.enabled:
        taken.update({cfg.wyoming.stt_port: "[wyoming].stt_port", cfg.wyoming.tts_port: "[wyoming].tts_port"})
    lo, hi = cfg.slots.port_range
    if owui.port in taken:
        raise ConfigInvalid(file, "openwebui.port", f"{owui.port} is {taken[owui.port]}; Open WebUI needs its own")
    if lo <= owui.port <= hi:
        raise ConfigInvalid(file, "openwebui.port", f"{owui.port} is in [slots].port_range ({lo}-{hi})")


def load_slot(file: Path) -> SlotConfig:
    """One ``slots/<name>.toml``. Raises ConfigInvalid."""
    data = _read_toml(file)
    name = data.get("name", file.stem)
    if name != file.stem:
        raise ConfigInvalid(str(file), "name", f"{name!r} must equal the file name {file.stem!r}")
    if not isinstance(name, str) or not SLOT_NAME_RE.match(name):
        raise ConfigInvalid(str(file), "name", "must match ^[a-z][a-z0-9_-]{0,31}$")
    slot = parse_section(SlotConfig, {**data, "name": name}, str(file))
    _check_port(str(file), "port", slot.port)
    for key in ("idle_timeout_s", "unload_after_s"):
        if getattr(slot, key) < 0:
            raise ConfigInvalid(str(file), key, "must not be negative")
    if slot.server.parallel < 0:
        raise ConfigInvalid(str(file), "server.parallel", "must not be negative")
    if slot.max_queue < 0 or slot.max_inflight < 1:
        raise ConfigInvalid(str(file), "max_inflight", "max_inflight must be >= 1, max_queue >= 0")
    for i, addr in enumerate(slot.rpc):
        try:
            split_hostport(addr)
        except ValueError as e:
            raise ConfigInvalid(str(file), f"rpc[{i}]", str(e)) from None
    if slot.rpc and slot.provider != "llama-server":
        raise ConfigInvalid(str(file), "rpc", "RPC workers serve llama-server slots only")
    if len(set(slot.rpc)) != len(slot.rpc):
        raise ConfigInvalid(str(file), "rpc", "a worker is listed twice")
    return slot


def load_slots(paths: Paths) -> dict[str, SlotConfig]:
    """Every slot: built-ins first (defaults where the TOML is missing), then the rest by name."""
    found = {f.stem: f for f in sorted(paths.slots_dir.glob("*.toml"))} if paths.slots_dir.is_dir() else {}
    slots = {n: load_slot(found[n]) if n in found else builtin_slot(n) for n in BUILTIN_SLOTS}
    for name, file in found.items():
        if name not in slots:
            slots[name] = load_slot(file)
    ports: dict[int, str] = {}
    for s in slots.values():
        if s.port in ports:
            raise ConfigInvalid(str(paths.slot_toml(s.name)), "port",
                                f"port {s.port} is also used by slot {ports[s.port]!r}")
        ports[s.port] = s.name
    return slots


def to_dict(obj: Any) -> Any:
    """A dataclass as plain TOML/JSON data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj

