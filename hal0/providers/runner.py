"""Providers whose backend is a ``hal0 runner`` process under the engine's own interpreter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import aiohttp

import hal0
from hal0.config.schema import ProviderConfig, SlotConfig
from hal0.errors import ModelFilesMissing, ProviderUnavailable
from hal0.models.registry import Registry, ResolvedModel, resolve_model
from hal0.providers.base import LaunchSpec, Readiness, base_env
from hal0.runners.engines.moonshine import MOONSHINE_FILES

__all__ = ["KokoroProvider", "MoonshineProvider", "WhisperProvider", "runner_launch"]


def runner_launch(kind: str, slot: SlotConfig, model: ResolvedModel, settings: ProviderConfig) -> LaunchSpec:
    """``<engine python> -m hal0 runner KIND ...`` with this hal0 importable (a checkout or the
    unpacked zipapp, whose own dependencies come along when the Python versions match)."""
    if not settings.python:
        raise ProviderUnavailable(
            f"the {slot.provider} engine is not installed: run `hal0 backend install {slot.provider}`, or set "
            f"[providers.{slot.provider}].python in hal0.toml to the interpreter of a virtualenv that has it",
            provider=slot.provider)
    hal0_root = str(Path(hal0.__file__).resolve().parent.parent)
    env = {**base_env(), **settings.env, **slot.env}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (hal0_root, env.get("PYTHONPATH", "")) if p)
    argv = [settings.python, "-m", "hal0", "runner", kind, "--host", "127.0.0.1", "--port", str(slot.port),
            "--model", str(model.path), "--model-id", model.id]
    if slot.server.threads > 0:
        argv += ["--threads", str(slot.server.threads)]
    return LaunchSpec((*argv, *slot.server.extra_args), env)


async def probe_runner(session: aiohttp.ClientSession, base_url: str) -> Readiness:
    """The runners' one readiness check: /health says ``model_loaded``."""
    try:
        async with session.get(base_url + "/health") as r:
            if r.status != 200:
                return Readiness.DOWN
            body = await r.json()
    except (aiohttp.ClientError, OSError, ValueError):
        return Readiness.DOWN
    return Readiness.READY if body.get("model_loaded") else Readiness.LOADING


class _RunnerProvider:
    """What the runner-backed providers share; each adds a check of its model's files."""

    name: ClassVar[str]
    stop_grace_s: ClassVar[float | None] = None

    def check(self, model: ResolvedModel, ref: str) -> None:
        """Raise ModelFilesMissing unless ``model`` has what the engine loads."""

    def resolve(self, ref: str, registry: Registry) -> ResolvedModel:
        model = resolve_model(ref, registry)
        self.check(model, ref)
        return model

    def launch(self, slot: SlotConfig, model: ResolvedModel, settings: ProviderConfig,
               workdir: Path) -> LaunchSpec:
        return runner_launch(self.name, slot, model, settings)

    async def probe(self, session: aiohttp.ClientSession, base_url: str) -> Readiness:
        return await probe_runner(session, base_url)


class WhisperProvider(_RunnerProvider):
    """faster-whisper (CTranslate2 Whisper models) for speech-to-text."""

    name: ClassVar[str] = "whisper"

    def check(self, model: ResolvedModel, ref: str) -> None:
        if not (model.path / "model.bin").is_file():
            raise ModelFilesMissing(f"{model.path} is not a CTranslate2 Whisper model folder (no model.bin)",
                                    model=ref)


class MoonshineProvider(_RunnerProvider):
    """Moonshine (useful-moonshine-onnx) for speech-to-text, the seed's default."""

    name: ClassVar[str] = "moonshine"

    def check(self, model: ResolvedModel, ref: str) -> None:
        missing = [f for f in MOONSHINE_FILES if not (model.path / f).is_file()]
        if missing:
            raise ModelFilesMissing(
                f"Moonshine weights are missing in {model.path}: {', '.join(missing)}. They are not on PyPI: put "
                "the onnx/merged/<tiny|base>/float files of UsefulSensors/moonshine in a folder named after the "
                "variant (e.g. moonshine-base) and register it with `hal0 model register`", model=ref,
                missing=missing)


class KokoroProvider(_RunnerProvider):
    """Kokoro (kokoro-onnx) for text-to-speech; the voices file lies beside the model."""

    name: ClassVar[str] = "kokoro"

    def check(self, model: ResolvedModel, ref: str) -> None:
        if not model.path.is_file() or model.path.suffix != ".onnx":
            raise ModelFilesMissing(f"{model.path} is not a Kokoro .onnx model file", model=ref)
