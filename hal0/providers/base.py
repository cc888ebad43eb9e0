"""The provider interface: everything hal0 knows about one kind of backend.

A provider turns a slot and a model into a launch (argv, environment), says how
to tell that the backend is ready, how long to let it stop, and which OpenAI
paths it serves. Providers are stateless; slots own the processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Protocol

import aiohttp

from hal0.config.schema import ProviderConfig, SlotConfig
from hal0.models.registry import Registry, ResolvedModel

__all__ = ["BASE_ENV_KEYS", "LaunchSpec", "Provider", "Readiness", "base_env"]

BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


class Readiness(StrEnum):
    READY = "ready"  # serving requests
    LOADING = "loading"  # up, still loading its model: stays warming, never idle
    DOWN = "down"  # not answering (yet)


@dataclass(frozen=True)
class LaunchSpec:
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def base_env() -> dict[str, str]:
    """The clean environment every backend starts from (slot [env] and provider env go on top)."""
    return {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}


class Provider(Protocol):
    name: ClassVar[str]
    stop_grace_s: ClassVar[float | None]  # None: the slot's [slots].stop_grace_s

    def resolve(self, ref: str, registry: Registry) -> ResolvedModel:
        """The model ``ref`` names; raises ModelNotFound, ModelFilesMissing or ModelInvalid."""
        ...

    def launch(self, slot: SlotConfig, model: ResolvedModel, settings: ProviderConfig,
               workdir: Path) -> LaunchSpec:
        """The command that serves ``model`` for ``slot`` on 127.0.0.1:slot.port; ``workdir`` is the
        slot's state folder, for a backend that keeps files of its own."""
        ...

    async def probe(self, session: aiohttp.ClientSession, base_url: str) -> Readiness:
        """One readiness check; never raises for a backend that is down."""
        ...
