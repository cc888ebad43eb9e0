"""Image model families' workflow templates (which files a family loads: ``providers.comfyui``).

A template (``workflows/<family>.json``, shipped inside the zipapp) is an API-format ComfyUI
graph plus ``bind`` (which node input each value goes to), ``defaults`` (steps, cfg, sampler,
scheduler, size) and ``output`` (the node whose images are the answer). Adding a family is
adding a file here and a line in ``providers.comfyui.family_of``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from hal0.images.request import ImageRequest
from hal0.providers.comfyui import CHECKPOINT_SUFFIXES, ModelLayout, layout

__all__ = ["CHECKPOINT_SUFFIXES", "FAMILIES", "ModelLayout", "Workflow", "build_workflow", "layout", "template"]

FAMILIES = ("sd15", "sdxl-turbo", "flux-schnell")  # one template each; the provider picks by file names


@dataclass(frozen=True)
class Workflow:
    graph: dict[str, Any]
    output: str  # the node whose images are the answer
    settings: dict[str, Any]  # what was used: echoed to the client in `_hal0`


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
