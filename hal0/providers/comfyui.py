"""ComfyUI for the img slot: an external server hal0 runs and talks to over HTTP, never imports.

Each slot gets its own ComfyUI base directory, ``<slot state>/comfyui``, holding ComfyUI's
models/, input/, output/, temp/ and user/ folders and its database. The slot's model files
are linked into ``models/<folder>/`` before every start (and nothing else is left there), so
the workflow names them by file name. The OpenAI <-> workflow translation is hal0.images.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import aiohttp

from hal0.config.schema import ProviderConfig, SlotConfig
from hal0.errors import ProviderUnavailable, SlotStartFailed
from hal0.images.workflows import layout
from hal0.models.registry import Registry, ResolvedModel, resolve_model
from hal0.providers.argv import split_options
from hal0.providers.base import LaunchSpec, Readiness, base_env

__all__ = ["ComfyUI", "base_directory"]

RESERVED = frozenset({"--listen", "--port", "--base-directory", "--database-url"})  # hal0 sets them
MODEL_FOLDERS = ("checkpoints", "unet", "clip", "vae")


def base_directory(workdir: Path) -> Path:
    return workdir / "comfyui"


def link_model(base: Path, model: ResolvedModel) -> None:
    """Make ``model``'s files, and only them, visible in ComfyUI's model folders."""
    files = layout(model).files
    for folder in MODEL_FOLDERS:
        d = base / "models" / folder
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            if old.is_symlink():
                old.unlink()
    for folder, path in files.values():
        (base / "models" / folder / path.name).symlink_to(path.resolve())


class ComfyUI:
    """``--disable-metadata``: PNGs carry no copy of the workflow (no prompt leaks into files; the
    same request gives byte-identical images)."""

    name: ClassVar[str] = "comfyui"
    paths_served: ClassVar[tuple[str, ...]] = ("/v1/images/generations",)
    # A Python server that may hold GPU memory: give it time to let go before SIGKILL.
    stop_grace_s: ClassVar[float | None] = 20.0

    def resolve(self, ref: str, registry: Registry) -> ResolvedModel:
        model = resolve_model(ref, registry)
        layout(model)  # raises ModelFilesMissing for what ComfyUI could not load
        return model

    def launch(self, slot: SlotConfig, model: ResolvedModel, settings: ProviderConfig, workdir: Path) -> LaunchSpec:
        if not settings.python or not settings.bin:
            raise ProviderUnavailable(
                "ComfyUI is not installed: run `hal0 backend install comfyui`, or set [providers.comfyui].python "
                "(the interpreter of its virtualenv) and .bin (its main.py) in hal0.toml", provider="comfyui")
        main = Path(settings.bin)
        if not main.is_file():
            raise ProviderUnavailable(f"ComfyUI's main.py is not at {main}: reinstall it with "
                                      "`hal0 backend install comfyui` or fix [providers.comfyui].bin",
                                      provider="comfyui")
        reserved = [g[0] for g in split_options(slot.server.extra_args) if g[0] in RESERVED]
        if reserved:
            raise SlotStartFailed(f"[server].extra_args of slot {slot.name!r} may not set "
                                  f"{', '.join(reserved)}: hal0 sets them", slot=slot.name)
        base = base_directory(workdir)
        link_model(base, model)
        argv = [settings.python, str(main), "--listen", "127.0.0.1", "--port", str(slot.port),
                "--base-directory", str(base), "--database-url", f"sqlite:///{base / 'comfyui.db'}",
                "--disable-all-custom-nodes", "--disable-auto-launch", "--disable-metadata", "--log-stdout"]
        if slot.backend == "cpu":
            argv.append("--cpu")
        env = {**base_env(), **settings.env, **slot.env}
        if slot.server.threads > 0:
            env.setdefault("OMP_NUM_THREADS", str(slot.server.threads))
        return LaunchSpec((*argv, *slot.server.extra_args), env, cwd=main.parent)

    async def probe(self, session: aiohttp.ClientSession, base_url: str) -> Readiness:
        """Ready when ``/system_stats`` answers 200."""
        try:
            async with session.get(base_url + "/system_stats") as r:
                return Readiness.READY if r.status == 200 else Readiness.DOWN
        except (aiohttp.ClientError, OSError):
            return Readiness.DOWN
