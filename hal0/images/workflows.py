"""Image model families, the files ComfyUI loads for each, and their workflow templates.

A template (``workflows/<family>.json``, shipped inside the zipapp) is an API-format ComfyUI
graph plus ``bind`` (which node input each value goes to), ``defaults`` (steps, cfg, sampler,
scheduler, size) and ``output`` (the node whose images are the answer). Adding a family is
adding a file and a line in ``family_of``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from hal0.errors import ModelFilesMissing
from hal0.images.request import ImageRequest
from hal0.models.registry import ResolvedModel

__all__ = ["CHECKPOINT_SUFFIXES", "FAMILIES", "ModelLayout", "Workflow", "build_workflow", "layout", "template"]

FAMILIES = ("sd15", "sdxl-turbo", "flux-schnell")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".sft")
# The parts of a Flux folder: template binding -> (ComfyUI models/ folder, name patterns).
FLUX_PARTS = {"unet_name": ("unet", ("flux",)), "clip_l": ("clip", ("clip_l",)),
              "t5xxl": ("clip", ("t5",)), "vae_name": ("vae", ("ae.", "vae"))}


@dataclass(frozen=True)
class ModelLayout:
    """Which template a model uses and where its files go under ComfyUI's ``models/``."""

    family: str
    files: dict[str, tuple[str, Path]]  # template binding -> (models/ sub-folder, file)


@dataclass(frozen=True)
class Workflow:
    graph: dict[str, Any]
    output: str  # the node whose images are the answer
    settings: dict[str, Any]  # what was used: echoed to the client in `_hal0`


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


@cache
def template(family: str) -> dict[str, Any]:
    text = resources.files("hal0.images").joinpath("workflows", f"{family}.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def build_workflow(model: ModelLayout, req: ImageRequest, prefix: str) -> Workflow:
    """The API-format graph for one request: the family's template with every binding filled."""
    t = template(model.family)
    d = t["defaults"]
    width, height = req.size or (d["width"], d["height"])
    values: dict[str, Any] = {
        "prompt": req.prompt, "negative_prompt": req.negative_prompt, "width": width, "height": height,
        "batch_size": req.n, "seed": req.seed, "steps": req.steps or d["steps"],
        "cfg": d["cfg"] if req.cfg is None else req.cfg, "sampler": d["sampler"], "scheduler": d["scheduler"],
        **{binding: f.name for binding, (_, f) in model.files.items()},
    }
    graph = copy.deepcopy(t["workflow"])
    for key, (node, field) in t["bind"].items():
        graph[node]["inputs"][field] = values[key]
    graph[t["output"]]["inputs"]["filename_prefix"] = prefix
    settings = {k: values[k] for k in ("seed", "steps", "cfg", "sampler", "scheduler", "width", "height")}
    settings["family"] = model.family
    settings["negative_prompt"] = req.negative_prompt if "negative_prompt" in t["bind"] else None
    return Workflow(graph, t["output"], settings)
