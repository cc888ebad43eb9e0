"""The image pieces that need no backend: request checks, workflow templates, the cache, the
ComfyUI launch, and the torch pins of `hal0 backend install comfyui`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from hal0.backends import MARKER, comfyui_constraints, engine_settings, torch_pins
from hal0.config.schema import ProviderConfig, ServerSection, SlotConfig
from hal0.errors import ModelFilesMissing, ProviderUnavailable, RequestInvalid
from hal0.images.cache import ImageCache
from hal0.images.request import parse_image_request
from hal0.images.workflows import FAMILIES, build_workflow, layout, template
from hal0.models.registry import ResolvedModel
from hal0.paths import resolve_paths
from hal0.providers.comfyui import ComfyUI


@pytest.mark.parametrize(("body", "param", "code"), [
    ({}, "prompt", "request.invalid"),
    ({"prompt": "  "}, "prompt", "request.invalid"),
    ({"prompt": "x", "size": "100x7"}, "size", "request.invalid_size"),
    ({"prompt": "x", "size": "512"}, "size", "request.invalid_size"),
    ({"prompt": "x", "size": "2056x512"}, "size", "request.invalid_size"),
    ({"prompt": "x", "size": "56x512"}, "size", "request.invalid_size"),
    ({"prompt": "x", "size": 512}, "size", "request.invalid_size"),
    ({"prompt": "x", "n": 0}, "n", "request.invalid"),
    ({"prompt": "x", "n": True}, "n", "request.invalid"),
    ({"prompt": "x", "response_format": "png"}, "response_format", "request.invalid"),
    ({"prompt": "x", "output_format": "webp"}, "output_format", "request.invalid"),
    ({"prompt": "x", "stream": True}, "stream", "request.invalid"),
    ({"prompt": "x", "seed": -1}, "seed", "request.invalid"),
    ({"prompt": "x", "steps": 0}, "steps", "request.invalid"),
    ({"prompt": "x", "cfg": "high"}, "cfg", "request.invalid"),
    ({"prompt": "x", "negative_prompt": 3}, "negative_prompt", "request.invalid"),
    ({"prompt": "x", "model": 3}, "model", "request.invalid"),
])
def test_bad_image_requests(body: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(RequestInvalid) as e:
        parse_image_request(body)
    assert (e.value.param, e.value.code) == (param, code)


def test_a_full_request_and_the_ignored_openai_fields() -> None:
    req = parse_image_request({"prompt": "a fox", "n": 3, "size": "640X384", "response_format": "b64_json",
                               "quality": "hd", "style": "vivid", "user": "u1", "seed": 42, "steps": 9, "cfg": 4,
                               "negative_prompt": "blurry", "model": "dall-e-3"})
    assert (req.n, req.size, req.response_format, req.seed, req.steps, req.cfg) == (
        3, (640, 384), "b64_json", 42, 9, 4.0)
    defaults = parse_image_request({"prompt": "a fox", "size": "auto"})
    assert (defaults.n, defaults.size, defaults.response_format, defaults.steps) == (1, None, "url", None)
    assert 0 <= defaults.seed < 2**32


def graph_inputs(graph: dict[str, Any], class_type: str) -> dict[str, Any]:
    return next(n["inputs"] for n in graph.values() if n["class_type"] == class_type)


def test_an_sd15_checkpoint_fills_the_template(tmp_path: Path) -> None:
    ckpt = tmp_path / "dreamshaper-8.safetensors"
    ckpt.write_bytes(b"x")
    lay = layout(ResolvedModel("dreamshaper", ckpt))
    assert lay.family == "sd15" and lay.files == {"ckpt_name": ("checkpoints", ckpt)}
    req = parse_image_request({"prompt": "a fox", "n": 2, "size": "768x512", "seed": 5, "negative_prompt": "dull"})
    flow = build_workflow(lay, req, prefix="hal0/abc")
    g = flow.graph
    assert graph_inputs(g, "CheckpointLoaderSimple")["ckpt_name"] == "dreamshaper-8.safetensors"
    assert graph_inputs(g, "EmptyLatentImage") == {"width": 768, "height": 512, "batch_size": 2}
    sampler = graph_inputs(g, "KSampler")
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["sampler_name"]) == (5, 20, 7.0, "euler")
    texts = sorted(n["inputs"]["text"] for n in g.values() if n["class_type"] == "CLIPTextEncode")
    assert texts == ["a fox", "dull"]
    assert g[flow.output]["inputs"]["filename_prefix"] == "hal0/abc"
    assert flow.settings["family"] == "sd15" and flow.settings["width"] == 768
    assert template("sd15")["workflow"]["latent"]["inputs"]["width"] is None  # the template itself is untouched


def test_turbo_checkpoints_take_their_own_defaults(tmp_path: Path) -> None:
    ckpt = tmp_path / "sd_xl_turbo_1.0_fp16.safetensors"
    ckpt.write_bytes(b"x")
    flow = build_workflow(layout(ResolvedModel("sdxl-turbo", ckpt)), parse_image_request({"prompt": "a"}), "p")
    sampler = graph_inputs(flow.graph, "KSampler")
    assert (sampler["steps"], sampler["cfg"]) == (1, 1.0)
    assert graph_inputs(flow.graph, "EmptyLatentImage")["width"] == 512


def test_a_flux_folder_needs_its_four_parts(tmp_path: Path) -> None:
    folder = tmp_path / "flux1-schnell"
    folder.mkdir()
    for name in ("flux1-schnell.safetensors", "clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors"):
        (folder / name).write_bytes(b"x")
    with pytest.raises(ModelFilesMissing, match="vae_name"):
        layout(ResolvedModel("flux", folder))
    (folder / "ae.safetensors").write_bytes(b"x")
    lay = layout(ResolvedModel("flux", folder))
    assert lay.family == "flux-schnell"
    assert {k: (d, p.name) for k, (d, p) in lay.files.items()} == {
        "unet_name": ("unet", "flux1-schnell.safetensors"), "clip_l": ("clip", "clip_l.safetensors"),
        "t5xxl": ("clip", "t5xxl_fp8_e4m3fn.safetensors"), "vae_name": ("vae", "ae.safetensors")}
    flow = build_workflow(lay, parse_image_request({"prompt": "a", "size": "512x512"}), "p")
    assert graph_inputs(flow.graph, "DualCLIPLoader")["clip_name1"] == "t5xxl_fp8_e4m3fn.safetensors"
    assert graph_inputs(flow.graph, "KSampler")["steps"] == 4
    assert flow.settings["negative_prompt"] is None  # Flux has no negative prompt


def test_not_an_image_model(tmp_path: Path) -> None:
    gguf = tmp_path / "qwen.gguf"
    gguf.write_bytes(b"x")
    with pytest.raises(ModelFilesMissing, match="not an image model"):
        layout(ResolvedModel("qwen", gguf))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_template_binds_existing_inputs(family: str) -> None:
    t = template(family)
    for key, (node, field) in t["bind"].items():
        assert field in t["workflow"][node]["inputs"], (key, node, field)
    assert t["workflow"][t["output"]]["class_type"] == "SaveImage"
    assert set(t["defaults"]) == {"steps", "cfg", "sampler", "scheduler", "width", "height"}


def test_the_cache_forgets_the_least_recently_used_and_survives_a_restart(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path, max_files=2, max_bytes=10_000)
    a, b = (asyncio.run(cache.put(bytes([i]) * 100)) for i in range(2))
    assert cache.path(a) is not None  # a is now the most recently used
    c = asyncio.run(cache.put(b"c" * 100))
    assert cache.path(b) is None and not (tmp_path / b).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a, c])
    assert (tmp_path / a).stat().st_mode & 0o777 == 0o600
    again = ImageCache(tmp_path, max_files=2, max_bytes=150)  # smaller by bytes: one must go
    assert len(again) == 1 and again.size == 100
    assert again.path("../etc/passwd") is None and again.path("x.png") is None


def comfy_slot(**kw: Any) -> SlotConfig:
    return SlotConfig(**{"name": "img", "provider": "comfyui", "backend": "cpu", "port": 8085, **kw})


def test_the_comfyui_launch(tmp_path: Path) -> None:
    main = tmp_path / "ComfyUI" / "main.py"
    main.parent.mkdir()
    main.write_text("")
    ckpt = tmp_path / "models" / "tiny.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    stale = tmp_path / "slot" / "comfyui" / "models" / "checkpoints" / "old.ckpt"
    stale.parent.mkdir(parents=True)
    stale.symlink_to(ckpt)
    settings = ProviderConfig(python="/venv/bin/python", bin=str(main), env={"A": "1"})
    spec = ComfyUI().launch(comfy_slot(server=ServerSection(extra_args=("--cache-none",), threads=2)),
                            ResolvedModel("tiny", ckpt), settings, tmp_path / "slot")
    base = tmp_path / "slot" / "comfyui"
    assert spec.argv[:10] == ("/venv/bin/python", str(main), "--listen", "127.0.0.1", "--port", "8085",
                              "--base-directory", str(base), "--database-url", f"sqlite:///{base / 'comfyui.db'}")
    assert "--cpu" in spec.argv and "--disable-metadata" in spec.argv and spec.argv[-1] == "--cache-none"
    assert spec.cwd == main.parent and spec.env["A"] == "1" and spec.env["OMP_NUM_THREADS"] == "2"
    assert [p.name for p in (base / "models" / "checkpoints").iterdir()] == ["tiny.ckpt"]  # old link gone
    assert (base / "models" / "checkpoints" / "tiny.ckpt").resolve() == ckpt
    gpu = ComfyUI().launch(comfy_slot(backend="rocm"), ResolvedModel("tiny", ckpt), settings, tmp_path / "slot")
    assert "--cpu" not in gpu.argv
    with pytest.raises(ProviderUnavailable, match="hal0 backend install comfyui"):
        ComfyUI().launch(comfy_slot(), ResolvedModel("t", ckpt), ProviderConfig(), tmp_path / "slot")


def test_torch_comes_as_a_matched_pair() -> None:
    assert torch_pins("x86_64") == ("torch==2.14.1", "torchvision==0.29.1")
    assert torch_pins("aarch64") == ("torch==2.9.1", "torchvision==0.24.1")


def test_comfyuis_requirements_are_installed_at_tested_versions() -> None:
    pins = comfyui_constraints()
    assert pins and all("==" in p for p in pins)
    names = {p.split("==")[0].lower().replace("_", "-") for p in pins}
    assert {"transformers", "numpy", "comfyui-frontend-package", "torchsde"} <= names
    assert not names & {"torch", "torchvision", "torchaudio"}  # the matched pair comes from torch_pins()


def test_an_installed_comfyui_provides_python_and_main(tmp_path: Path) -> None:
    paths = resolve_paths({"HAL0_HOME": str(tmp_path)})
    assert engine_settings(paths, "comfyui") == {}
    venv = paths.backends_dir / "comfyui" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / MARKER).write_text(json.dumps({"kind": "comfyui", "bin": "/x/main.py"}))
    assert engine_settings(paths, "comfyui") == {"python": str(venv / "bin" / "python"), "bin": "/x/main.py"}
