"""FastFlowLM (``flm serve <tag>``) on AMD XDNA NPUs: chat and completions."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import ClassVar

import aiohttp

from hal0.config.schema import ProviderConfig, SlotConfig
from hal0.errors import ModelInvalid, ProviderUnavailable
from hal0.models.registry import Registry, ResolvedModel
from hal0.providers.base import LaunchSpec, Readiness, base_env

__all__ = ["FlmProvider", "flm_binary"]

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def flm_binary(settings: ProviderConfig) -> str | None:
    """The flm executable: ``[providers.flm].bin`` if it exists, else ``flm`` on PATH."""
    if settings.bin:
        return settings.bin if Path(settings.bin).is_file() else None
    return shutil.which("flm")


class FlmProvider:
    name: ClassVar[str] = "flm"
    stop_grace_s: ClassVar[float | None] = None

    def resolve(self, ref: str, registry: Registry) -> ResolvedModel:
        """FLM models are tags FLM pulls and keeps itself (``llama3.2:1b``), not files."""
        if not _TAG.match(ref):
            raise ModelInvalid(f"{ref!r} is not an FLM model tag (such as llama3.2:1b)", model=ref)
        return ResolvedModel(ref, Path(ref))

    def launch(self, slot: SlotConfig, model: ResolvedModel, settings: ProviderConfig,
               workdir: Path) -> LaunchSpec:
        binary = flm_binary(settings)
        if binary is None:
            raise ProviderUnavailable("the FLM runtime is not installed: put `flm` on PATH or set "
                                      "[providers.flm].bin", provider="flm")
        argv = (binary, "serve", model.id, "--port", str(slot.port), *slot.server.extra_args)
        return LaunchSpec(argv, {**base_env(), **settings.env, **slot.env})

    async def probe(self, session: aiohttp.ClientSession, base_url: str) -> Readiness:
        """Ready when a one-token completion answers: FLM's server is up before the NPU is."""
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        try:
            async with session.post(base_url + "/v1/chat/completions", json=body,
                                    timeout=aiohttp.ClientTimeout(total=30)) as r:
                return Readiness.READY if r.status == 200 else Readiness.LOADING
        except (aiohttp.ClientError, OSError, TimeoutError):
            return Readiness.DOWN
