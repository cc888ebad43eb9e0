"""Each provisioned artifact works on its own (scripts/setup-backends, SPEC section 9)."""

from __future__ import annotations

import math
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.helpers.env import manifest
from tests.helpers.llama import llama_server, post

pytestmark = [pytest.mark.backends, pytest.mark.slow]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_llama_server_chats_on_the_tiny_model() -> None:
    with llama_server(manifest()["models"]["tiny-chat"]) as url:
        out = post(url + "/v1/chat/completions",
                   {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "ignore_eos": True})
    assert out["usage"]["completion_tokens"] == 5
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["prompt_tokens"] > 5  # the ChatML template wrapped the message


def test_llama_server_chats_on_gemma() -> None:
    with llama_server(manifest()["models"]["gemma3-270m"]) as url:
        out = post(url + "/v1/completions",
                   {"prompt": "Monday, Tuesday, Wednesday,", "max_tokens": 8, "temperature": 0})
    assert out["choices"][0]["text"].startswith(" Thursday, Friday")


def test_minilm_embeddings_rank_similar_sentences_closer() -> None:
    with llama_server(manifest()["models"]["all-minilm-l6-v2"], "--embedding") as url:
        out = post(url + "/v1/embeddings", {"input": [
            "A man is eating food.", "A man is eating bread.", "A man is riding a horse."]})
    a, b, c = (d["embedding"] for d in out["data"])
    assert len(a) == 384
    assert cosine(a, b) > cosine(a, c) + 0.2


def test_tiny_embed_and_rerank_models_serve() -> None:
    m = manifest()["models"]
    with llama_server(m["tiny-embed"], "--embedding") as url:
        out = post(url + "/v1/embeddings", {"input": "hello world"})
    assert len(out["data"][0]["embedding"]) == 64
    with llama_server(m["tiny-rerank"], "--reranking") as url:
        out = post(url + "/v1/rerank", {"query": "hello", "documents": ["hello world", "a horse"]})
    assert sorted(r["index"] for r in out["results"]) == [0, 1]
    assert all(isinstance(r["relevance_score"], float) for r in out["results"])


def _transcribe(wav: Path) -> str:
    w = manifest()["whisper"]
    code = textwrap.dedent(f"""
        from faster_whisper import WhisperModel
        m = WhisperModel({w['model_dir']!r}, device="cpu", compute_type="int8", cpu_threads=1)
        segs, _ = m.transcribe({str(wav)!r}, language="en", beam_size=1)
        print("".join(s.text for s in segs).strip())
    """)
    return subprocess.run([w["python"], "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def test_whisper_transcribes_espeak_hello_world(tmp_path: Path) -> None:
    wav = tmp_path / "hello.wav"
    subprocess.run([manifest()["tools"]["espeak_ng"], "-w", str(wav), "hello world"], check=True)
    assert _words(_transcribe(wav)) == ["hello", "world"]


def test_kokoro_speech_is_transcribed_back_by_whisper(tmp_path: Path) -> None:
    k = manifest()["kokoro"]
    wav = tmp_path / "fox.wav"
    code = textwrap.dedent(f"""
        import wave
        import numpy as np
        from kokoro_onnx import Kokoro
        k = Kokoro({k['model']!r}, {k['voices']!r})
        samples, rate = k.create("The quick brown fox jumps over the lazy dog.", voice="jf_alpha",
                                 speed=1.0, lang="en-us")
        with wave.open({str(wav)!r}, "wb") as w:
            w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
            w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    """)
    subprocess.run([k["python"], "-c", code], check=True, capture_output=True)
    assert _words(_transcribe(wav)) == ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
