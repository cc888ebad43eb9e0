"""A tiny random-weight llama GGUF (about 60 kB), written with the standard library, for
checking that a llama-server build really runs on this box: it loads a model and computes a
token (a build for a newer CPU dies with SIGILL only then)."""

from __future__ import annotations

import random
import struct
from pathlib import Path

__all__ = ["write_tiny_llama"]

_ALIGN = 32
_U32, _I32, _F32, _BOOL, _STR, _ARR = 4, 5, 6, 7, 8, 9
_WORDS = ("hello", "world", "the", "a", "is", "ok")


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, kind: int, value: object) -> bytes:
    out = _s(key) + struct.pack("<I", kind)
    if kind == _U32:
        return out + struct.pack("<I", value)
    if kind == _F32:
        return out + struct.pack("<f", value)
    if kind == _BOOL:
        return out + struct.pack("<?", value)
    return out + _s(str(value))


def _arr(key: str, elem: int, items: list[str] | list[float] | list[int]) -> bytes:
    body = b"".join(_s(v) if isinstance(v, str) else struct.pack("<f" if elem == _F32 else "<i", v) for v in items)
    return _s(key) + struct.pack("<IIQ", _ARR, elem, len(items)) + body


def write_tiny_llama(path: Path, seed: int = 20261130) -> None:
    """Write the model to ``path``: 1 layer, 32 wide, an SPM vocabulary of whole words and letters
    (no byte tokens, so any sampled token is valid UTF-8)."""
    rng = random.Random(seed)
    tokens = ["<unk>", "<s>", "</s>", "\u2581", *(f"\u2581{w}" for w in _WORDS), *"abcdefghijklmnopqrstuvwxyz"]
    types = [2, 3, 3] + [1] * (len(tokens) - 3)  # unknown, control, control, normal...
    n_vocab, n_embd, n_head, n_ff = len(tokens), 32, 2, 64
    kvs = [
        _kv("general.architecture", _STR, "llama"), _kv("general.name", _STR, "hal0-smoke"),
        _kv("general.file_type", _U32, 0), _kv("llama.context_length", _U32, 512),
        _kv("llama.embedding_length", _U32, n_embd), _kv("llama.block_count", _U32, 1),
        _kv("llama.feed_forward_length", _U32, n_ff), _kv("llama.attention.head_count", _U32, n_head),
        _kv("llama.attention.head_count_kv", _U32, n_head), _kv("llama.rope.dimension_count", _U32, n_embd // n_head),
        _kv("llama.rope.freq_base", _F32, 10000.0), _kv("llama.attention.layer_norm_rms_epsilon", _F32, 1e-5),
        _kv("tokenizer.ggml.model", _STR, "llama"), _kv("tokenizer.ggml.pre", _STR, "default"),
        _arr("tokenizer.ggml.tokens", _STR, tokens),
        _arr("tokenizer.ggml.scores", _F32, [0.0, 0.0, 0.0] + [-float(i) for i in range(n_vocab - 3)]),
        _arr("tokenizer.ggml.token_type", _I32, types),
        _kv("tokenizer.ggml.bos_token_id", _U32, 1), _kv("tokenizer.ggml.eos_token_id", _U32, 2),
        _kv("tokenizer.ggml.unknown_token_id", _U32, 0), _kv("tokenizer.ggml.add_bos_token", _BOOL, False),
    ]
    shapes: dict[str, tuple[int, ...]] = {  # GGUF order: the fastest-moving dimension first
        "token_embd.weight": (n_embd, n_vocab), "output_norm.weight": (n_embd,), "output.weight": (n_embd, n_vocab),
        "blk.0.attn_norm.weight": (n_embd,), "blk.0.ffn_norm.weight": (n_embd,),
        **{f"blk.0.{n}.weight": (n_embd, n_embd) for n in ("attn_q", "attn_k", "attn_v", "attn_output")},
        "blk.0.ffn_gate.weight": (n_embd, n_ff), "blk.0.ffn_up.weight": (n_embd, n_ff),
        "blk.0.ffn_down.weight": (n_ff, n_embd),
    }
    infos, blobs, offset = [], [], 0
    for name, shape in shapes.items():
        count = 1
        for d in shape:
            count *= d
        values = [1.0] * count if "norm" in name else [rng.gauss(0.0, 0.5) for _ in range(count)]
        blob = struct.pack(f"<{count}f", *values)
        blob += b"\0" * (-len(blob) % _ALIGN)
        infos.append(_s(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
                     + struct.pack("<IQ", 0, offset))
        blobs.append(blob)
        offset += len(blob)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += b"\0" * (-len(head) % _ALIGN)
    path.write_bytes(head + b"".join(blobs))
