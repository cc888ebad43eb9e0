"""GGUF headers and memory estimates: the provisioned models, crafted files and hostile bytes."""

from __future__ import annotations

import io
import os
import random
import re
import string
import struct
import subprocess
from pathlib import Path

import pytest

from hal0.errors import ModelFilesMissing, ModelInvalid
from hal0.models import gguf
from hal0.models.fit import MIB, estimate, fits
from hal0.models.gguf import GgufArray, GgufInfo, read_gguf
from tests.helpers.env import free_port, manifest

pytestmark = pytest.mark.timeout(60)  # a reader that loops on a hostile length fails here, not in CI's limit

# Shapes from scripts/dev/make_models.py. tiny-chat: 5 specials, 256 byte tokens, "▁", 11 "▁word"s
# and 26 letters; the BERT vocabulary: 5 specials, 11 words, 26 letters, 26 "##" letters, digits and
# punctuation, less the "a" that is both a word and a letter.
E, FF, LAYERS = 64, 128, 2
CHAT_VOCAB = 5 + 256 + 1 + 11 + 26
BERT_VOCAB = 5 + 11 + 26 + 26 + len(string.digits + string.punctuation) - 1
CHAT_PARAMS = 2 * CHAT_VOCAB * E + E + LAYERS * (2 * E + 4 * E * E + 3 * FF * E)
EMBED_PARAMS = (BERT_VOCAB + 2 + 512 + 2) * E + LAYERS * (4 * (E * E + E) + 4 * E + 2 * FF * E + FF + E)
RERANK_PARAMS = EMBED_PARAMS + E * E + E + E + 1  # cls.weight, cls.bias, cls.output.{weight,bias}
# all-MiniLM-L6-v2 (config.json): vocab 30522, hidden 384, 6 layers, FFN 1536, 512 positions, 2 token types.
H, MFF = 384, 1536
MINILM_PARAMS = (30522 + 512 + 2 + 2) * H + 6 * (4 * (H * H + H) + 4 * H + 2 * H * MFF + MFF + H)


def model(name: str) -> Path:
    return Path(manifest()["models"][name])


@pytest.mark.backends
@pytest.mark.parametrize(("name", "want"), [
    ("tiny-chat", dict(architecture="llama", name="hal0-tiny-chat", parameters=CHAT_PARAMS, context_length=2048,
                       block_count=2, embedding_length=64, head_count=4, head_count_kv=4, key_length=16,
                       value_length=16, vocab_size=CHAT_VOCAB, pooling_type=None, file_type=0,
                       quantization="F32", has_chat_template=True, tensor_count=3 + 9 * LAYERS)),
    ("tiny-embed", dict(architecture="bert", name="hal0-tiny-embed", parameters=EMBED_PARAMS, context_length=512,
                        block_count=2, embedding_length=64, head_count=4, head_count_kv=4, key_length=16,
                        vocab_size=BERT_VOCAB, pooling_type=1, quantization="F32", has_chat_template=False)),
    ("tiny-rerank", dict(architecture="bert", name="hal0-tiny-rerank", parameters=RERANK_PARAMS,
                         context_length=512, block_count=2, pooling_type=4, quantization="F32",
                         has_chat_template=False)),
    ("all-minilm-l6-v2", dict(architecture="bert", name="all-MiniLM-L6-v2", parameters=MINILM_PARAMS,
                              context_length=512, block_count=6, embedding_length=384, head_count=12,
                              head_count_kv=12, key_length=32, value_length=32, vocab_size=30522,
                              pooling_type=1, file_type=1, quantization="F16", has_chat_template=False)),
    # Gemma 3 270M (the base model, Q4_K_M): grouped-query attention with 1 KV head of width 256.
    # Its parameter count is what gguf-py's GGUFReader sums over the same tensor table.
    ("gemma3-270m", dict(architecture="gemma3", name="Gemma 3 270m", parameters=268_098_176, context_length=32768,
                         block_count=18, embedding_length=640, head_count=4, head_count_kv=1, key_length=256,
                         value_length=256, vocab_size=262144, pooling_type=None, file_type=15,
                         quantization="Q4_K_M", has_chat_template=False, tensor_count=236)),
])
def test_real_models_report_their_shape(name: str, want: dict[str, object]) -> None:
    info = read_gguf(model(name))
    assert {k: getattr(info, k) for k in want} == want
    assert (info.version, info.file_size) == (3, model(name).stat().st_size)
    assert (info.split_no, info.split_count) == (None, None)


@pytest.mark.backends
def test_vocabulary_arrays_are_skipped_with_their_length_and_small_arrays_kept() -> None:
    meta = read_gguf(model("gemma3-270m")).metadata
    assert meta["tokenizer.ggml.tokens"] == GgufArray(item_type=8, length=262144)
    assert meta["tokenizer.ggml.scores"] == GgufArray(item_type=6, length=262144)
    assert meta["general.tags"] == ("gemma3", "gemma", "google", "text-generation")
    assert "tokenizer.chat_template" not in meta  # a base model: no template, unlike tiny-chat's ChatML
    assert meta["gemma3.attention.sliding_window"] == 512
    chat = read_gguf(model("tiny-chat")).metadata["tokenizer.chat_template"]
    assert isinstance(chat, str) and chat.startswith("{% for message in messages %}")


class CountingRaw(io.RawIOBase):
    """A file that counts the bytes read through it (seeks past data are free)."""

    def __init__(self, f: io.FileIO) -> None:
        self.f, self.bytes = f, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self.f.readinto(b) or 0
        self.bytes += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()


def read_counting(path: Path) -> tuple[GgufInfo, int]:
    with open(path, "rb", buffering=0) as f:
        raw = CountingRaw(f)
        info = gguf._parse(io.BufferedReader(raw, 1 << 16), path, path.stat().st_size)
    return info, raw.bytes


@pytest.mark.backends
def test_gemma_header_is_read_without_its_tensor_data() -> None:
    """The 253 MB file's header is 6.2 MiB (6,525,120 bytes, per gguf-py), nearly all of it the
    262k-token vocabulary, which must be walked string by string; the tensor data is never read."""
    path = model("gemma3-270m")
    info, read = read_counting(path)
    assert info == read_gguf(path)
    assert read < 6_525_120 + (1 << 16) + 1
    assert info.file_size > 250_000_000


def test_skipped_arrays_are_seeked_over_not_read(tmp_path: Path) -> None:
    head = craft([*BASE_KVS, kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 1 << 20) + bytes(4 << 20))],
                 [tensor("w", (1 << 20, 64))], data=0)
    path = tmp_path / "big.gguf"
    with path.open("wb") as f:
        f.write(head)
        f.truncate(len(head) + (1 << 28))  # a sparse 256 MiB of "tensor data"
    info, read = read_counting(path)
    assert info.parameters == 1 << 26
    assert info.metadata["tokenizer.ggml.scores"] == GgufArray(6, 1 << 20)
    assert read < len(head) - (4 << 20) + (1 << 17)  # neither the 4 MiB of scores nor any data


# --- crafted files ------------------------------------------------------------------------------

def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def u32(key: str, value: int) -> bytes:
    return kv(key, 4, struct.pack("<I", value))


def tensor(name: str, dims: tuple[int, ...], offset: int = 0, n_dims: int | None = None) -> bytes:
    count = len(dims) if n_dims is None else n_dims
    return s(name) + struct.pack(f"<I{len(dims)}QIQ", count, *dims, 0, offset)


def craft(kvs: list[bytes], tensors: list[bytes], *, version: bytes = struct.pack("<I", 3),
          n_kv: int | None = None, n_tensors: int | None = None, data: int = 64) -> bytes:
    counts = struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv)
    body = b"GGUF" + version + counts + b"".join(kvs) + b"".join(tensors)
    return body + bytes(-len(body) % 32 + data)


BASE_KVS = [kv("general.architecture", 8, s("llama")), u32("llama.block_count", 2),
            u32("llama.embedding_length", 8), u32("llama.attention.head_count", 2),
            u32("llama.context_length", 128)]
BASE_TENSORS = [tensor("w", (4, 4))]


def array(itype: int, items: list[bytes]) -> bytes:
    return struct.pack("<IQ", itype, len(items)) + b"".join(items)


def test_a_crafted_file_with_every_value_type(tmp_path: Path) -> None:
    scalars = [(0, "<B", 200), (1, "<b", -3), (2, "<H", 60000), (3, "<h", -300), (4, "<I", 7), (5, "<i", -7),
               (6, "<f", 0.5), (7, "<?", True), (10, "<Q", 2**40), (11, "<q", -(2**40)), (12, "<d", 0.25)]
    kvs = [*BASE_KVS, *(kv(f"t.{t}", t, struct.pack(fmt, v)) for t, fmt, v in scalars),
           kv("general.name", 8, s("crafted")),
           kv("t.nested", 9, array(9, [array(4, [struct.pack("<I", 1), struct.pack("<I", 2)]), array(8, [s("x")])])),
           kv("t.long", 9, array(4, [struct.pack("<I", i) for i in range(2000)])),
           kv("tokenizer.ggml.tokens", 9, array(8, [s("a"), s("bb"), s("")])),
           kv("tokenizer.chat_template", 8, s("{{ messages }}")), u32("general.file_type", 30)]
    path = tmp_path / "ok.gguf"
    path.write_bytes(craft(kvs, [tensor("a", (4, 4)), tensor("b", (3, 5, 2), offset=64)], data=128))
    info = read_gguf(path)
    assert {f"t.{t}": v for t, _, v in scalars} == {k: v for k, v in info.metadata.items() if k[2:].isdigit()}
    assert info.metadata["t.nested"] == ((1, 2), ("x",))
    assert info.metadata["t.long"] == GgufArray(4, 2000)
    assert info.metadata["tokenizer.ggml.tokens"] == GgufArray(8, 3)
    assert (info.name, info.parameters, info.vocab_size, info.quantization) == ("crafted", 46, 3, "IQ4_XS")
    assert (info.head_count_kv, info.key_length, info.value_length) == (2, 4, 4)  # defaults: head_count, 8 // 2
    assert info.has_chat_template and info.pooling_type is None


def nested(depth: int) -> bytes:
    return struct.pack("<IQ", 4, 0) if depth == 0 else struct.pack("<IQ", 9, 1) + nested(depth - 1)


BE3 = struct.pack(">I", 3)
HOSTILE = {
    "empty file": (b"", "magic needs 4 bytes"),
    "wrong magic": (b"GGML" + craft(BASE_KVS, BASE_TENSORS)[4:], "magic is b'GGML'"),
    "version 1": (craft(BASE_KVS, BASE_TENSORS, version=struct.pack("<I", 1)), "GGUF v1 is obsolete"),
    "version 99": (craft(BASE_KVS, BASE_TENSORS, version=struct.pack("<I", 99)), "unsupported GGUF version 99"),
    "big-endian": (craft(BASE_KVS, BASE_TENSORS, version=BE3), "big-endian GGUF is not supported"),
    "kv count 10**12": (craft(BASE_KVS, BASE_TENSORS, n_kv=10**12), "metadata count 1000000000000"),
    "tensor count 10**12": (craft(BASE_KVS, BASE_TENSORS, n_tensors=10**12), "tensor count 1000000000000"),
    "key length 2**63": (craft([struct.pack("<Q", 2**63) + b"general.name"], []), "metadata key length"),
    "string length 2**63": (craft([kv("general.name", 8, struct.pack("<Q", 2**63) + b"abc")], []),
                            "general.name length 9223372036854775808 exceeds"),
    "array count 2**40": (craft([kv("general.tags", 9, struct.pack("<IQ", 4, 2**40))], []),
                          "general.tags length 1099511627776 cannot fit"),
    "string array count 2**40": (craft([kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2**40))], []),
                                 "tokenizer.ggml.tokens length 1099511627776"),
    "vocabulary string past the end": (craft([kv("tokenizer.ggml.tokens", 9, array(8, [s("a"), s("b")])
                                                 .replace(s("b"), struct.pack("<Q", 2**62) + b"b"))], []),
                                       "holds a string of 4611686018427387904 bytes"),
    "arrays nested 50 deep": (craft([kv("t.deep", 9, nested(50))], []), "nests arrays deeper than"),
    "unknown value type": (craft([kv("t.x", 13, bytes(8))], []), "t.x has unknown value type 13"),
    "unknown item type": (craft([kv("t.x", 9, struct.pack("<IQ", 99, 1) + bytes(8))], []), "unknown item type 99"),
    "key not UTF-8": (craft([kv(b"\xff\xfe", 4, bytes(4))], []), "metadata key is not UTF-8"),
    "duplicate key": (craft([*BASE_KVS, u32("llama.block_count", 3)], BASE_TENSORS), "appears twice"),
    "n_dims 100": (craft(BASE_KVS, [tensor("w", (4,) * 100)]), "tensor 'w' has 100 dimensions"),
    "n_dims 100 with no dims": (craft(BASE_KVS, [tensor("w", (), n_dims=100)]), "tensor 'w' has 100 dimensions"),
    "negative dimension": (craft(BASE_KVS, [tensor("w", (2**63 + 4, 4))]), "negative dimension"),
    "tensor past the end": (craft(BASE_KVS, [tensor("w", (4, 4), offset=4096)]), "tensor data is truncated"),
    "misaligned tensor": (craft(BASE_KVS, [tensor("w", (4, 4), offset=3)]), "is not a multiple of 32"),
    "no architecture": (craft(BASE_KVS[1:], BASE_TENSORS), "general.architecture is None"),
    "architecture not a string": (craft([u32("general.architecture", 5), *BASE_KVS[1:]], BASE_TENSORS),
                                  "general.architecture is 5"),
    "block count a string": (craft([BASE_KVS[0], kv("llama.block_count", 8, s("two"))], BASE_TENSORS),
                             "llama.block_count is 'two'"),
    "alignment 0": (craft([*BASE_KVS, u32("general.alignment", 0)], BASE_TENSORS), "general.alignment 0"),
    "alignment 3": (craft([*BASE_KVS, u32("general.alignment", 3)], BASE_TENSORS), "general.alignment 3"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_is_refused_with_a_reason(tmp_path: Path, case: str) -> None:
    data, reason = HOSTILE[case]
    path = tmp_path / "hostile.gguf"
    path.write_bytes(data)
    with pytest.raises(ModelInvalid, match=re.escape(reason)) as caught:
        read_gguf(path)
    assert str(path) in caught.value.message


def test_the_valid_base_of_the_hostile_files_reads(tmp_path: Path) -> None:
    """The hostile cases are one corruption away from this file, so each fails for its own reason."""
    path = tmp_path / "base.gguf"
    path.write_bytes(craft(BASE_KVS, BASE_TENSORS))
    info = read_gguf(path)
    assert (info.architecture, info.block_count, info.parameters, info.context_length) == ("llama", 2, 16, 128)


def test_missing_file_is_files_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesMissing, match="does not exist"):
        read_gguf(tmp_path / "nope.gguf")


@pytest.mark.backends
def test_truncated_gemma_is_refused_at_every_cut(tmp_path: Path) -> None:
    src = model("gemma3-270m")
    with src.open("rb") as f:
        head = f.read(8_000_000)
    cuts = [*range(0, 4096, 7), 65_536, 1_000_000, 6_000_000, 6_525_119, 6_525_120, 8_000_000]
    path = tmp_path / "cut.gguf"
    for cut in cuts:
        path.write_bytes(head[:cut])
        with pytest.raises(ModelInvalid, match=re.escape(str(path))):
            read_gguf(path)


@pytest.mark.backends
def test_random_corruption_of_a_real_header_is_refused_or_read() -> None:
    """Seeded fuzzing: flipped bytes and hostile u64s anywhere in tiny-chat's header either still
    parse or raise ModelInvalid; never struct.error, UnicodeDecodeError, MemoryError or a hang."""
    path = model("tiny-chat")
    data = path.read_bytes()
    rng = random.Random(20261130)
    refused = 0
    for _ in range(1500):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(8864 - 8)  # the header's size, per gguf-py
            if rng.random() < 0.5:
                bad[at] = rng.randrange(256)
            else:
                bad[at:at + 8] = struct.pack("<Q", rng.choice([2**63, 2**40, 2**32 - 1, 10**12, 101]))
        try:
            gguf._parse(io.BytesIO(bytes(bad)), path, len(bad))
        except ModelInvalid:
            refused += 1
    assert refused > 500  # most corruptions are caught, not silently read


# --- the estimate -------------------------------------------------------------------------------

@pytest.mark.backends
def test_tiny_chat_estimate_is_the_formula() -> None:
    info = read_gguf(model("tiny-chat"))
    got = estimate(info, 512)
    kv = 2 * 2 * 512 * 4 * 16 * 2  # K and V, 2 layers, 512 tokens, 4 KV heads, width 64/4, F16
    assert got.weights_bytes == model("tiny-chat").stat().st_size
    assert (got.kv_bytes, got.overhead_bytes) == (kv, 256 * MIB)  # the floor beats 5 % and 512 x 299 x 4
    assert got.total_bytes == got.weights_bytes + kv + 256 * MIB
    assert estimate(info, 512, parallel=4).kv_bytes == 4 * kv
    assert estimate(info, 512, kv_bytes_per_elem=34 / 32).kv_bytes == kv * 17 // 32  # q8_0
    assert fits(got, got.total_bytes) and not fits(got, got.total_bytes - 1)


@pytest.mark.backends
def test_gemma_estimate_grows_with_context() -> None:
    info = read_gguf(model("gemma3-270m"))
    short, long = estimate(info, 2048), estimate(info, 32768)
    assert short.kv_bytes == 2 * 18 * 2048 * 1 * 256 * 2
    assert long.kv_bytes == 16 * short.kv_bytes and long.total_bytes > short.total_bytes
    assert short.overhead_bytes == 256 * MIB  # 5 % of 253 MB is less than the floor
    assert fits(short, 1 << 30) and not fits(long, 1 << 30)


@pytest.mark.backends
def test_encoders_are_sized_like_decoders() -> None:
    got = estimate(read_gguf(model("all-minilm-l6-v2")), 512)
    assert got.kv_bytes == 2 * 6 * 512 * 12 * 32 * 2
    assert got.overhead_bytes == 256 * MIB


KV_LINE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB")
BUFFER_LINE = re.compile(r"(?:compute|output) buffer size =\s*([\d.]+) MiB")


def llama_memory(path: Path, *args: str) -> tuple[int, int]:
    """The KV cache and the compute and output buffers, in bytes, that llama-server reports
    while loading ``path`` on the CPU (its log, at verbosity 4); it is stopped once idle."""
    m = manifest()["llama_server"]
    argv = [m["bin"], "-m", str(path), "--host", "127.0.0.1", "--port", str(free_port()), "--threads", "1",
            "-ngl", "0", "-lv", "4", *args]
    kv = buffers = 0.0
    with subprocess.Popen(argv, env={**os.environ, **m["env"]}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if hit := KV_LINE.search(line):
                    kv += float(hit[1])
                elif hit := BUFFER_LINE.search(line):
                    buffers += float(hit[1])
                elif "listening on" in line:
                    break
            else:
                raise AssertionError(f"llama-server exited {proc.wait()} before serving")
        finally:
            proc.terminate()
            try:
                proc.communicate(timeout=30)  # drained, so that its last log lines cannot block it
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    return round(kv * MIB), round(buffers * MIB)


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.parametrize(("name", "args", "context", "exact"), [
    ("tiny-chat", ("--parallel", "1"), 512, True),
    # 4 slots: the sliding-window layers' cache (4 x 512 + 512 cells) holds all 2048 tokens ...
    ("gemma3-270m", ("--parallel", "4"), 2048, True),
    # ... but not 32768, where 15 of 18 layers keep 2560 cells: the estimate is an upper bound.
    ("gemma3-270m", ("--parallel", "4"), 32768, False),
    ("all-minilm-l6-v2", ("--embedding",), 512, False),  # BERT: no KV cache at all
])
def test_estimate_against_what_llama_server_allocates(name: str, args: tuple[str, ...], context: int,
                                                      exact: bool) -> None:
    got = estimate(read_gguf(model(name)), context)
    kv, buffers = llama_memory(model(name), "-c", str(context), *args)
    assert kv == got.kv_bytes if exact else kv < got.kv_bytes
    assert 0 < buffers < got.overhead_bytes


@pytest.mark.backends
def test_estimate_refuses_nonsense() -> None:
    info = read_gguf(model("tiny-chat"))
    with pytest.raises(ValueError, match="context_size"):
        estimate(info, 0)
    with pytest.raises(ValueError, match="parallel"):
        estimate(info, 512, parallel=0)
