"""Write the GGUF models hal0's tests and dev setup use, deterministically.

Run with an interpreter that has ``gguf`` and ``numpy`` (scripts/setup-backends
prepares one). Three tiny random-weight models are generated from nothing:

* ``tiny-chat.gguf``   - llama architecture, SPM vocab with byte fallback, ChatML template
* ``tiny-embed.gguf``  - BERT, mean pooling (an embedding model)
* ``tiny-rerank.gguf`` - BERT, rank pooling with a classifier head (a reranker)

``minilm`` converts all-MiniLM-L6-v2 (safetensors + vocab.txt) to an F16 GGUF
with numpy alone, reading safetensors by hand so no torch is needed.

``llama 1b|8b`` writes an F16 llama of a real model's shape (Llama 3.2 1B, Llama 3.1 8B:
layers, widths, grouped-query heads) with random weights and a 32,000-token vocab: its text is
meaningless, but loading and running it costs what the real model costs (scripts/gpu-check).

Usage:
    make_models.py tiny OUT_DIR
    make_models.py minilm MODEL_DIR OUT_FILE
    make_models.py llama 1b|8b OUT_FILE
    make_models.py bert minilm OUT_FILE   (a random BERT of all-MiniLM-L6-v2's shape)
"""

from __future__ import annotations

import json
import string
import struct
import sys
from pathlib import Path

import gguf
import numpy as np

SEED = 20261125
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
WORDS = ["hello", "world", "the", "a", "man", "is", "eating", "food", "bread", "riding", "horse"]


def _rand(rng: np.random.Generator, *shape: int, scale: float = 0.02) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.float32)


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.float32)


def _write(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _llama_header(w: gguf.GGUFWriter, *, n_ctx: int, shape: tuple[int, int, int, int, int], rope_base: float,
                  file_type: gguf.LlamaFileType, vocab: tuple[list[str], list[float], list[gguf.TokenType]]) -> None:
    """A llama's metadata: ``shape`` is (n_embd, n_layer, n_head, n_head_kv, n_ff); an SPM vocab
    with <s>, ChatML's <|im_end|> as end of turn, and the ChatML template."""
    n_embd, n_layer, n_head, n_head_kv, n_ff = shape
    tokens, scores, types = vocab
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(rope_base)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(file_type)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(4)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)


def tiny_chat(out: Path) -> None:
    """A 2-layer llama with a 320-token SPM vocab and ChatML special tokens."""
    rng = np.random.default_rng(SEED)
    tokens: list[str] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 4
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces = ["\u2581"] + [f"\u2581{w}" for w in WORDS] + list(string.ascii_lowercase)
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * 261 + [-float(i) for i in range(len(pieces))]
    n_vocab, n_embd, n_head, n_ff, n_layer = len(tokens), 64, 4, 128, 2

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("hal0-tiny-chat")
    _llama_header(w, n_ctx=2048, shape=(n_embd, n_layer, n_head, n_head, n_ff), rope_base=10000.0,
                  file_type=gguf.LlamaFileType.ALL_F32, vocab=(tokens, scores, types))

    w.add_tensor("token_embd.weight", _rand(rng, n_vocab, n_embd))
    w.add_tensor("output_norm.weight", _ones(n_embd))
    # Text pieces get large output rows and bytes/control tokens none, so sampling picks whole
    # ASCII pieces: byte tokens would make invalid UTF-8, which llama-server answers with a 500.
    output = _rand(rng, n_vocab, n_embd)
    output[:261] = 0.0
    output[261:] *= 50.0
    w.add_tensor("output.weight", output)
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", _ones(n_embd))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", _rand(rng, n_embd, n_embd))
        w.add_tensor(p + "ffn_norm.weight", _ones(n_embd))
        w.add_tensor(p + "ffn_gate.weight", _rand(rng, n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", _rand(rng, n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", _rand(rng, n_embd, n_ff))
    _write(w)


# (n_embd, n_layer, n_head, n_head_kv, n_ff) of the real models these stand in for
LLAMA_SHAPES = {"1b": (2048, 16, 32, 8, 8192), "8b": (4096, 32, 32, 8, 14336)}


def llama_shaped(out: Path, shape: str) -> None:
    """A random-weight F16 llama with a real model's dimensions (see LLAMA_SHAPES).

    Weights are slices of one random block, so billions of them are written at disk speed.
    As in tiny_chat, only whole ASCII pieces get output weight, so answers stay valid UTF-8.
    """
    n_embd, n_layer, n_head, n_head_kv, n_ff = LLAMA_SHAPES[shape]
    rng = np.random.default_rng(SEED)
    pool = (rng.standard_normal(1 << 22) * 0.02).astype(np.float16)

    def rand(rows: int, cols: int) -> np.ndarray:
        start = int(rng.integers(0, pool.size))
        return np.resize(np.roll(pool, start), (rows, cols))

    tokens: list[str] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 4
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    letters = string.ascii_lowercase
    pieces = list(dict.fromkeys(["\u2581"] + [f"\u2581{w}" for w in WORDS] + list(letters)))
    i = 0
    while len(tokens) + len(pieces) < 32000:  # two- to four-letter pieces, deterministic
        i += 1
        word = "".join(letters[(i // 26 ** k) % 26] for k in range(2 + i % 3))
        pieces.append(("\u2581" if i % 2 else "") + word)
        pieces = list(dict.fromkeys(pieces))
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    scores = [0.0] * 261 + [-float(j) for j in range(len(pieces))]
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(f"hal0-random-llama-{shape}")
    _llama_header(w, n_ctx=8192, shape=LLAMA_SHAPES[shape], rope_base=500000.0,
                  file_type=gguf.LlamaFileType.MOSTLY_F16, vocab=(tokens, scores, types))
    kv = n_embd // n_head * n_head_kv
    w.add_tensor("token_embd.weight", rand(n_vocab, n_embd))
    w.add_tensor("output_norm.weight", _ones(n_embd))
    output = rand(n_vocab, n_embd).copy()
    output[:261] = 0.0
    output[261:] *= 50.0
    w.add_tensor("output.weight", output)
    for layer in range(n_layer):
        p = f"blk.{layer}."
        w.add_tensor(p + "attn_norm.weight", _ones(n_embd))
        w.add_tensor(p + "attn_q.weight", rand(n_embd, n_embd))
        w.add_tensor(p + "attn_k.weight", rand(kv, n_embd))
        w.add_tensor(p + "attn_v.weight", rand(kv, n_embd))
        w.add_tensor(p + "attn_output.weight", rand(n_embd, n_embd))
        w.add_tensor(p + "ffn_norm.weight", _ones(n_embd))
        w.add_tensor(p + "ffn_gate.weight", rand(n_ff, n_embd))
        w.add_tensor(p + "ffn_up.weight", rand(n_ff, n_embd))
        w.add_tensor(p + "ffn_down.weight", rand(n_embd, n_ff))
    _write(w)


def _bert_header(w: gguf.GGUFWriter, *, n_embd: int, n_head: int, n_ff: int, n_layer: int,
                 n_ctx: int, pooling: gguf.PoolingType, vocab: list[str]) -> None:
    special = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    tokens = [t if t in special else (t[2:] if t.startswith("##") else "\u2581" + t) for t in vocab]
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in vocab]
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_block_count(n_layer)
    w.add_head_count(n_head)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(pooling)
    w.add_token_type_count(2)
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_pad_token_id(vocab.index("[PAD]"))
    w.add_unk_token_id(vocab.index("[UNK]"))
    w.add_bos_token_id(vocab.index("[CLS]"))
    w.add_eos_token_id(vocab.index("[SEP]"))
    w.add_sep_token_id(vocab.index("[SEP]"))
    w.add_mask_token_id(vocab.index("[MASK]"))
    w.add_add_bos_token(True)
    w.add_add_sep_token(True)


# (n_embd, n_head, n_ff, n_layer) of the tiny test BERTs and of all-MiniLM-L6-v2
BERT_SHAPES = {"tiny": (64, 4, 128, 2), "minilm": (384, 12, 1536, 6)}


def tiny_bert(out: Path, *, rerank: bool, shape: str = "tiny") -> None:
    """A random BERT (2 layers when tiny); ``rerank`` adds the classifier head and rank pooling."""
    rng = np.random.default_rng(SEED + (1 if rerank else 0))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    vocab += list(string.digits + string.punctuation)
    vocab = list(dict.fromkeys(vocab))  # "a" is a word and a letter: BERT vocabs must be unique
    n_embd, n_head, n_ff, n_layer = BERT_SHAPES[shape]
    n_vocab, n_ctx = len(vocab), 512
    w = gguf.GGUFWriter(str(out), "bert")
    w.add_name(f"hal0-{shape}-rerank" if rerank else f"hal0-{shape}-embed")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    pooling = gguf.PoolingType.RANK if rerank else gguf.PoolingType.MEAN
    _bert_header(w, n_embd=n_embd, n_head=n_head, n_ff=n_ff, n_layer=n_layer,
                 n_ctx=n_ctx, pooling=pooling, vocab=vocab)
    w.add_tensor("token_embd.weight", _rand(rng, n_vocab, n_embd, scale=0.5))
    w.add_tensor("token_types.weight", _rand(rng, 2, n_embd))
    w.add_tensor("position_embd.weight", _rand(rng, n_ctx, n_embd))
    w.add_tensor("token_embd_norm.weight", _ones(n_embd))
    w.add_tensor("token_embd_norm.bias", _zeros(n_embd))
    for i in range(n_layer):
        p = f"blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + name + ".weight", _rand(rng, n_embd, n_embd))
            w.add_tensor(p + name + ".bias", _zeros(n_embd))
        for name in ("attn_output_norm", "layer_output_norm"):
            w.add_tensor(p + name + ".weight", _ones(n_embd))
            w.add_tensor(p + name + ".bias", _zeros(n_embd))
        w.add_tensor(p + "ffn_up.weight", _rand(rng, n_ff, n_embd))
        w.add_tensor(p + "ffn_up.bias", _zeros(n_ff))
        w.add_tensor(p + "ffn_down.weight", _rand(rng, n_embd, n_ff))
        w.add_tensor(p + "ffn_down.bias", _zeros(n_embd))
    if rerank:
        w.add_tensor("cls.weight", _rand(rng, n_embd, n_embd, scale=0.5))
        w.add_tensor("cls.bias", _zeros(n_embd))
        w.add_tensor("cls.output.weight", _rand(rng, 1, n_embd, scale=0.5))
        w.add_tensor("cls.output.bias", _zeros(1))
    _write(w)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    dtypes = {"F32": np.float32, "F16": np.float16}
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in dtypes:
            continue  # integer buffers such as position_ids are not weights
        start, end = meta["data_offsets"]
        arr = np.frombuffer(data[start:end], dtype=dtypes[meta["dtype"]])
        out[name] = arr.reshape(meta["shape"]).astype(np.float32)
    return out


_BERT_NAMES = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_EMBED_NAMES = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.LayerNorm": "token_embd_norm",
}


def _gguf_name(hf: str) -> str | None:
    hf = hf.removeprefix("bert.")
    stem, _, kind = hf.rpartition(".")
    if stem in _EMBED_NAMES:
        return f"{_EMBED_NAMES[stem]}.{kind}"
    if stem.startswith("encoder.layer."):
        _, _, rest = stem.partition("encoder.layer.")
        idx, _, sub = rest.partition(".")
        if sub in _BERT_NAMES:
            return f"blk.{idx}.{_BERT_NAMES[sub]}.{kind}"
    return None  # the pooler is unused by llama.cpp


def minilm(model_dir: Path, out: Path) -> None:
    """Convert all-MiniLM-L6-v2 to GGUF: weight matrices F16, the rest F32."""
    cfg = json.loads((model_dir / "config.json").read_text())
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    w = gguf.GGUFWriter(str(out), "bert")
    w.add_name("all-MiniLM-L6-v2")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _bert_header(w, n_embd=cfg["hidden_size"], n_head=cfg["num_attention_heads"],
                 n_ff=cfg["intermediate_size"], n_layer=cfg["num_hidden_layers"],
                 n_ctx=cfg["max_position_embeddings"], pooling=gguf.PoolingType.MEAN, vocab=vocab)
    for hf, arr in sorted(_read_safetensors(model_dir / "model.safetensors").items()):
        name = _gguf_name(hf)
        if name is None:
            continue
        # Matrices that are multiplied or looked up go F16; ones llama.cpp adds stay F32.
        half = arr.ndim == 2 and (name.startswith("blk.") or name == "token_embd.weight")
        w.add_tensor(name, arr.astype(np.float16) if half else arr)
    _write(w)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "tiny":
        out = Path(argv[1])
        out.mkdir(parents=True, exist_ok=True)
        tiny_chat(out / "tiny-chat.gguf")
        tiny_bert(out / "tiny-embed.gguf", rerank=False)
        tiny_bert(out / "tiny-rerank.gguf", rerank=True)
        return 0
    if len(argv) == 3 and argv[0] == "bert" and argv[1] in BERT_SHAPES:
        tiny_bert(Path(argv[2]), rerank=False, shape=argv[1])
        return 0
    if len(argv) == 3 and argv[0] == "llama" and argv[1] in LLAMA_SHAPES:
        llama_shaped(Path(argv[2]), argv[1])
        return 0
    if len(argv) == 3 and argv[0] == "minilm":
        minilm(Path(argv[1]), Path(argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
