"""Pure parts of providers: argv merging and the llama-server launch."""

from __future__ import annotations

from pathlib import Path

import pytest

from hal0.config.schema import PROVIDER_NAMES, ModelSection, ProviderConfig, ServerSection, SlotConfig
from hal0.errors import ProviderUnavailable
from hal0.models.registry import ResolvedModel
from hal0.providers import PROVIDERS, get_provider
from hal0.providers.argv import merge_args, split_options
from hal0.providers.llama_server import ALIASES, REPEATABLE, LlamaServer
from hal0.providers.reserved import refused_args


def test_split_options_groups_flags_with_values() -> None:
    assert split_options(["-c", "4096", "--embedding", "-ngl", "-1", "--x=1", "word"]) == [
        ["-c", "4096"], ["--embedding"], ["-ngl", "-1"], ["--x", "1"], ["word"]]


def test_slot_flags_win_and_repeatable_flags_add_up() -> None:
    base = ["--ctx-size", "8192", "--n-gpu-layers", "99", "--lora", "a.gguf", "--embedding"]
    extra = ["-c", "2048", "--lora", "b.gguf", "-fa", "on"]
    merged = merge_args(base, extra, aliases=ALIASES, repeatable=REPEATABLE)
    assert merged == ["--n-gpu-layers", "99", "--lora", "a.gguf", "--embedding",
                      "-c", "2048", "--lora", "b.gguf", "-fa", "on"]


def slot(**kw: object) -> SlotConfig:
    base: dict[str, object] = {"name": "primary", "backend": "cpu", "port": 8081,
                               "model": ModelSection(default="m", context_size=4096, gpu_layers=-1)}
    return SlotConfig(**{**base, **kw})  # type: ignore[arg-type]


MODEL = ResolvedModel("qwen3-4b", Path("/models/q.gguf"))
BIN = ProviderConfig(bin="/opt/llama/llama-server", env={"GGML_X": "1"})


def test_launch_on_cpu_binds_loopback_and_offloads_nothing() -> None:
    spec = LlamaServer().launch(slot(env={"FOO": "bar"}), MODEL, BIN, Path("/nonexistent"))
    assert spec.argv == ("/opt/llama/llama-server", "--model", "/models/q.gguf", "--host", "127.0.0.1",
                         "--port", "8081", "--alias", "qwen3-4b", "--ctx-size", "4096", "--n-gpu-layers", "0",
                         "--metrics", "--slot-save-path", "/nonexistent/prompt-cache")
    assert spec.env["FOO"] == "bar" and spec.env["GGML_X"] == "1"
    assert spec.env["LD_LIBRARY_PATH"] == "/opt/llama"


def test_launch_for_embed_on_gpu_with_overrides() -> None:
    s = slot(name="embed", backend="vulkan", server=ServerSection(extra_args=("-ngl", "20"), threads=2))
    argv = LlamaServer().launch(s, MODEL, BIN, Path("/nonexistent")).argv
    assert "--embedding" in argv and argv[-2:] == ("-ngl", "20") and "--n-gpu-layers" not in argv
    assert argv[argv.index("--threads") + 1] == "2"


def test_parallel_decoding_gives_each_sequence_the_context() -> None:
    """[server].parallel N: --parallel N with continuous batching, and N times the context (one shared cache)."""
    argv = LlamaServer().launch(slot(server=ServerSection(parallel=3)), MODEL, BIN, Path("/w")).argv
    assert argv[argv.index("--parallel") + 1] == "3" and "--cont-batching" in argv
    assert argv[argv.index("--ctx-size") + 1] == str(3 * 4096)
    assert "--parallel" not in LlamaServer().launch(slot(), MODEL, BIN, Path("/w")).argv  # 0: the backend decides


def test_only_chat_slots_keep_a_prompt_cache() -> None:
    embed = LlamaServer().launch(slot(name="embed"), MODEL, BIN, Path("/w")).argv
    assert "--slot-save-path" not in embed


def test_extra_args_may_not_move_the_port() -> None:
    """One check for every provider (hal0.providers.reserved; tests/test_hardening.py has the rest)."""
    assert refused_args("llama-server", ["--port", "9999"], [Path("/none")]) == ["--port: hal0 sets --port itself"]


def test_every_configurable_provider_exists_and_others_say_so() -> None:
    assert sorted(PROVIDERS) == sorted(PROVIDER_NAMES)
    with pytest.raises(ProviderUnavailable, match="the sdcpp provider is not available"):
        get_provider("sdcpp")
