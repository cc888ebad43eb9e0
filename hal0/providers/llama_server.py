"""llama.cpp's ``llama-server``: chat, completions, embeddings and rerank."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

import aiohttp

from hal0.config.schema import ProviderConfig, SlotConfig
from hal0.errors import Hal0Error, ProviderUnavailable
from hal0.models.catalog import catalog_entry
from hal0.models.gguf import read_gguf
from hal0.models.registry import Registry, ResolvedModel, resolve_model
from hal0.providers.argv import merge_args
from hal0.providers.base import LaunchSpec, Readiness, base_env
from hal0.roles import Modality, slot_kind

__all__ = ["LlamaServer"]

ALIASES = {
    "-m": "--model", "-c": "--ctx-size", "-ngl": "--n-gpu-layers", "--gpu-layers": "--n-gpu-layers",
    "-t": "--threads", "-a": "--alias", "-np": "--parallel", "-b": "--batch-size",
    "-ub": "--ubatch-size", "-fa": "--flash-attn", "-ctk": "--cache-type-k", "-ctv": "--cache-type-v",
    "--embeddings": "--embedding", "--rerank": "--reranking",
}
REPEATABLE = frozenset({"--lora", "--lora-scaled", "--control-vector", "--control-vector-scaled",
                        "--override-kv", "--override-tensor", "-ot"})
_MODE_FLAGS = {Modality.EMBEDDINGS: "--embedding", Modality.RERANK: "--reranking"}


# llama.cpp's built-in chat templates for families whose base GGUFs carry none (llama-server would
# fall back to ChatML, which such a model answers with ChatML's own markers).
FAMILY_TEMPLATES = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3n": "gemma",
                    "qwen2": "chatml", "qwen3": "chatml", "qwen3moe": "chatml"}
_TEMPLATE_FLAGS = frozenset({"--chat-template", "--chat-template-file", "--jinja", "--no-jinja"})


def family_template(path: Path, extra_args: tuple[str, ...], hint: str | None = None) -> str | None:
    """The template to pass for a GGUF without one: the catalogue's ``hint``, else its family's
    (from the architecture); None when the file has one or the slot sets one itself. Reads the
    file's header (tens of ms for a large vocabulary)."""
    if path.suffix.lower() != ".gguf" or _TEMPLATE_FLAGS & set(extra_args):
        return None
    try:
        info = read_gguf(path)
    except Hal0Error:
        return None  # llama-server will say what is wrong with the file
    return None if info.has_chat_template else hint or FAMILY_TEMPLATES.get(info.architecture)


class LlamaServer:
    name: ClassVar[str] = "llama-server"
    stop_grace_s: ClassVar[float | None] = None

    def resolve(self, ref: str, registry: Registry) -> ResolvedModel:
        return resolve_model(ref, registry)

    @staticmethod
    def binary(settings: ProviderConfig) -> Path:
        if settings.bin:
            return Path(settings.bin)
        found = shutil.which("llama-server")
        if found is None:
            raise ProviderUnavailable(
                "llama-server was not found: set [providers.llama-server].bin in hal0.toml "
                "or put llama-server on PATH", provider="llama-server")
        return Path(found)

    def launch(self, slot: SlotConfig, model: ResolvedModel, settings: ProviderConfig,
               workdir: Path) -> LaunchSpec:
        binary = self.binary(settings)  # [server].extra_args are checked before (hal0.providers.reserved)
        # Layers offloaded go to the RPC workers too (llama.cpp counts each worker as a device).
        gpu_layers = 0 if slot.backend == "cpu" and not slot.rpc else slot.model.gpu_layers
        parallel = slot.server.parallel
        # Each of ``parallel`` sequences gets the slot's context_size (they share one KV cache).
        base = [str(binary), "--model", str(model.path), "--host", "127.0.0.1", "--port", str(slot.port),
                "--alias", model.id, "--ctx-size", str(slot.model.context_size * max(parallel, 1)),
                "--n-gpu-layers", str(gpu_layers), "--metrics"]  # re-exported by hal0's /metrics
        if parallel > 0:
            base += ["--parallel", str(parallel), "--cont-batching"]
        if slot.rpc:
            base += ["--rpc", ",".join(slot.rpc)]
        if slot.server.threads > 0:
            base += ["--threads", str(slot.server.threads)]
        kind = slot_kind(slot.name, self.name, slot.server.extra_args)
        if mode := _MODE_FLAGS.get(kind):
            base.append(mode)  # embed and embed-rerank need no flag in their TOML
        if kind is Modality.CHAT:  # the prompt cache is saved there across unloads (hal0.slots.prompt_cache)
            base += ["--slot-save-path", str(workdir / "prompt-cache")]
        hint = entry.chat_template if (entry := catalog_entry(model.id)) else None
        if kind is Modality.CHAT and (template := family_template(model.path, slot.server.extra_args, hint)):
            base += ["--no-jinja", "--chat-template", template]  # a built-in name, not Jinja source
        argv = merge_args(base, slot.server.extra_args, aliases=ALIASES, repeatable=REPEATABLE)
        # llama.cpp builds ship their shared libraries next to the binary.
        env = {**base_env(), "LD_LIBRARY_PATH": str(binary.parent), **settings.env, **slot.env}
        return LaunchSpec(tuple(argv), env)

    async def probe(self, session: aiohttp.ClientSession, base_url: str) -> Readiness:
        """Ready when /health is 200 and /v1/models lists a model; 503 means still loading."""
        try:
            async with session.get(base_url + "/health") as r:
                if r.status == 503:
                    return Readiness.LOADING
                if r.status != 200:
                    return Readiness.DOWN
            async with session.get(base_url + "/v1/models") as r:
                if r.status != 200:
                    return Readiness.LOADING
                body = await r.json()
                return Readiness.READY if body.get("data") else Readiness.LOADING
        except (aiohttp.ClientError, OSError, ValueError):
            return Readiness.DOWN
