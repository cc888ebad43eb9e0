"""ComfyUI for the img slot: an external server hal0 runs and talks to over HTTP, never imports.

Each slot gets its own ComfyUI base directory, ``<slot state>/comfyui``, holding ComfyUI's
models/, input/, output/, temp/ and user/ folders and its database. The slot's model files
are linked into ``models/<folder>/`` before every start (and nothing else is left there), so
the workflow names them by file name. The OpenAI <-> workflow translation is hal0.images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import aiohttp

from hal0.config.schema import ProviderConfig, SlotConfig
from hal0.errors import ModelFilesMissing, ProviderUnavailable
from hal0.models.registry import Registry, ResolvedModel, resolve_model
from hal0.providers.base import LaunchSpec, Readiness, base_env

__all__ = ["CHECKPOINT_SUFFIXES", "ComfyUI", "ModelLayout", "base_directory", "layout"]

MODEL_FOLDERS = ("checkpoints", "unet", "clip", "vae")


@dataclass(frozen=True)
class ModelLayout:
    """Which workflow family a model uses and where its files go under ComfyUI's ``models/``."""

    family: str
    files: dict[str, tuple[str, Path]]  # template binding -> (models/ sub-folder, file)


CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".sft")
# The parts of a Flux folder: template binding -> (ComfyUI models/ folder, name patterns).
FLUX_PARTS = {"unet_name": ("unet", ("flux",)), "clip_l": ("clip", ("clip_l",)),
              "t5xxl": ("clip", ("t5",)), "vae_name": ("vae", ("ae.", "vae"))}


def family_of(name: str) -> str:
    lower = name.lower()
    if "turbo" in lower:
        return "sdxl-turbo"
    return "sd15"


def layout(model: ResolvedModel) -> ModelLayout:
    """The family and files of ``model``: a single checkpoint file (SD 1.x/2.x, SDXL Turbo), or a
    folder with Flux Schnell's four parts. Raises ModelFilesMissing."""
    path = model.path
    if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return ModelLayout(family_of(path.name), {"ckpt_name": ("checkpoints", path)})
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
        found: dict[str, tuple[str, Path]] = {}
        for binding, (folder, patterns) in FLUX_PARTS.items():
            for f in files:
                taken = any(f == p for _, p in found.values())
                if not taken and any(pat in f.name.lower() for pat in patterns):
                    found[binding] = (folder, f)
                    break
        missing = [b for b in FLUX_PARTS if b not in found]
        if missing:
            raise ModelFilesMissing(
                f"{path} is not a Flux Schnell folder: it needs the diffusion model (*flux*), clip_l*, t5*xxl* "
                f"and the autoencoder (ae.* or *vae*); missing {', '.join(missing)}", model=model.id,
                missing=missing)
        return ModelLayout("flux-schnell", found)
    raise ModelFilesMissing(f"{path} is not an image model: expected a checkpoint file "
                            f"({', '.join(CHECKPOINT_SUFFIXES)}) or a Flux folder", model=model.id)


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
        base = base_directory(workdir)  # [server].extra_args are checked before (hal0.providers.reserved)
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
