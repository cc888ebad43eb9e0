"""Providers by name. Providers not in ``PROVIDERS`` are not part of this build yet:
a slot using one reports ``slot.provider_unavailable`` instead of starting."""

from __future__ import annotations

from hal0.errors import ProviderUnavailable
from hal0.providers.base import LaunchSpec, Provider, Readiness
from hal0.providers.comfyui import ComfyUI
from hal0.providers.flm import FlmProvider
from hal0.providers.llama_server import LlamaServer
from hal0.providers.reserved import check_extra_args
from hal0.providers.runner import KokoroProvider, MoonshineProvider, WhisperProvider

__all__ = ["PROVIDERS", "LaunchSpec", "Provider", "Readiness", "check_extra_args", "get_provider"]

PROVIDERS: dict[str, Provider] = {
    p.name: p for p in (LlamaServer(), WhisperProvider(), MoonshineProvider(), KokoroProvider(), FlmProvider(),
                       ComfyUI())
}


def get_provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ProviderUnavailable(
            f"the {name} provider is not available in this hal0; this slot cannot start "
            f"(available: {', '.join(PROVIDERS)})", provider=name) from None
