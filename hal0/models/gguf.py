"""Read a GGUF file's header (metadata and tensor table) without touching tensor data.

Layout (ggml's gguf.cpp, v2 and v3, little-endian): magic ``GGUF``, u32 version, u64 tensor
count, u64 metadata count, the metadata key/values, one info per tensor, padding to
``general.alignment``, then the tensor data, which is never read. Every length and count is
bounded by what is left of the file and by a sane maximum, so a truncated or hostile file
raises ``ModelInvalid`` naming the file; it never allocates more than the file holds, loops
unboundedly or leaks ``struct.error``. Arrays under ``tokenizer.ggml.`` and any longer than
``_INLINE`` items are skipped, with only their length kept (``GgufArray``). Blocks on I/O.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO, TypeAlias

from hal0.errors import ModelFilesMissing, ModelInvalid

__all__ = ["FILE_TYPES", "GgufArray", "GgufInfo", "MetaValue", "read_gguf"]

# llama.cpp's enum llama_ftype (include/llama.h); 4-6 and 33-35 were removed upstream.
FILE_TYPES: Mapping[int, str] = MappingProxyType({
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
})

_SCALARS = {t: struct.Struct(f) for t, f in {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f",
                                              7: "<?", 10: "<Q", 11: "<q", 12: "<d"}.items()}
_STRING, _ARRAY = 8, 9
# Real files carry tens of keys, at most tens of thousands of tensors and vocabularies of
# about a million entries; anything far past that is hostile, and bounding it bounds the time.
_MAX_KV, _MAX_TENSORS, _MAX_ITEMS = 1 << 16, 1 << 20, 1 << 24
_MAX_KEY, _MAX_STRING = 1 << 16, 1 << 24   # a key; one kept string (chat templates: tens of KiB)
# Kept (materialised) array items: per array, and in all, so that nested arrays of floats
# cannot turn a small file into many times its size in Python objects.
_INLINE, _MAX_KEPT, _MAX_DEPTH, _MAX_DIMS = 1024, 1 << 16, 4, 8


@dataclass(frozen=True)
class GgufArray:
    """A metadata array that was skipped rather than read: its item type and length."""

    item_type: int
    length: int


MetaValue: TypeAlias = "int | float | bool | str | GgufArray | tuple[MetaValue, ...]"


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF header says. Architecture numbers are None where the file has no such key
    (an mmproj or vocab-only file); ``parameters`` and ``file_size`` cover this file only,
    one shard of a split model (``split_no`` of ``split_count``)."""

    architecture: str
    name: str | None
    version: int
    tensor_count: int
    parameters: int
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    vocab_size: int | None
    key_length: int | None
    value_length: int | None
    pooling_type: int | None
    file_type: int | None
    quantization: str | None
    has_chat_template: bool
    file_size: int
    split_no: int | None
    split_count: int | None
    metadata: Mapping[str, MetaValue] = field(default_factory=dict, repr=False, compare=False)


class _Reader:
    """Bounded reads from a buffered file; every failure is a ``ModelInvalid``."""

    def __init__(self, f: BinaryIO, path: Path, size: int) -> None:
        self.f, self.path, self.size = f, path, size
        self.pos = self.items = self.kept = 0

    def fail(self, what: str) -> ModelInvalid:
        return ModelInvalid(f"{self.path} is not a valid GGUF file: {what} (at byte {self.pos})",
                            path=str(self.path))

    def read(self, n: int, what: str, *, skip: bool = False) -> bytes:
        if n > self.size - self.pos:
            raise self.fail(f"{what} needs {n} bytes, the file has {self.size - self.pos} left")
        data = b"" if skip else self.f.read(n)
        if skip:
            self.f.seek(n, 1)
        elif len(data) != n:
            raise self.fail(f"{what}: short read (did the file shrink?)")
        self.pos += n
        return data

    def u32(self, what: str) -> int:
        return int.from_bytes(self.read(4, what), "little")

    def u64(self, what: str) -> int:
        return int.from_bytes(self.read(8, what), "little")

    def count(self, what: str, limit: int, min_item: int) -> int:
        n = self.u64(what)
        if n > limit or n * min_item > self.size - self.pos:
            raise self.fail(f"{what} {n} cannot fit in the {self.size - self.pos} bytes left")
        return n

    def string(self, what: str, limit: int = _MAX_STRING) -> str:
        n = self.u64(f"{what} length")
        if n > limit:
            raise self.fail(f"{what} length {n} exceeds {limit}")
        try:
            return self.read(n, what).decode()
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None

    def skip_strings(self, n: int, what: str) -> None:
        # The hot loop of a vocabulary walk: locals only, one read and one seek per string.
        f, size, pos, unpack = self.f, self.size, self.pos, _SCALARS[10].unpack
        for _ in range(n):
            head = f.read(8) if size - pos >= 8 else b""
            if len(head) != 8:
                raise self.fail(f"{what} ends inside a string length")
            (length,) = unpack(head)
            pos += 8
            if length > size - pos:
                self.pos = pos
                raise self.fail(f"{what} holds a string of {length} bytes, the file has {size - pos} left")
            f.seek(length, 1)
            pos += length
        self.pos = pos

    def value(self, vtype: int, what: str, keep: bool, depth: int = 0) -> MetaValue:
        scalar = _SCALARS.get(vtype)
        if scalar is not None:
            v: int | float | bool = scalar.unpack(self.read(scalar.size, what))[0]
            return v
        if vtype == _STRING:
            return self.string(what)
        if vtype != _ARRAY:
            raise self.fail(f"{what} has unknown value type {vtype}")
        if depth >= _MAX_DEPTH:
            raise self.fail(f"{what} nests arrays deeper than {_MAX_DEPTH}")
        itype = self.u32(f"{what} item type")
        item = _SCALARS.get(itype)
        if item is None and itype not in (_STRING, _ARRAY):
            raise self.fail(f"{what} has unknown item type {itype}")
        n = self.count(f"{what} length", _MAX_ITEMS, item.size if item else 8 if itype == _STRING else 12)
        self.items += n
        if self.items > _MAX_ITEMS:
            raise self.fail(f"more than {_MAX_ITEMS} array items in all")
        if keep and n <= _INLINE and self.kept + n <= _MAX_KEPT:
            self.kept += n
            return tuple(self.value(itype, what, keep, depth + 1) for _ in range(n))
        if item is not None:
            self.read(n * item.size, what, skip=True)
        elif itype == _STRING:
            self.skip_strings(n, what)
        else:
            for _ in range(n):
                self.value(_ARRAY, what, False, depth + 1)
        return GgufArray(itype, n)


def _header(r: _Reader) -> tuple[int, int, int]:
    magic = r.read(4, "magic")
    if magic != b"GGUF":
        raise r.fail(f"magic is {magic!r}, not b'GGUF'")
    raw = r.read(4, "version")
    version = int.from_bytes(raw, "little")
    if version in (2, 3):
        return version, r.count("tensor count", _MAX_TENSORS, 24), r.count("metadata count", _MAX_KV, 13)
    if int.from_bytes(raw, "big") in (1, 2, 3):
        raise r.fail("big-endian GGUF is not supported")
    if version == 1:
        raise r.fail("GGUF v1 is obsolete and not supported: convert the model again")
    raise r.fail(f"unsupported GGUF version {version}")


def _tensors(r: _Reader, n: int, alignment: int) -> int:
    """Walk the tensor infos; the parameter count. Checks offsets against the data size."""
    params, last = 0, -1
    for i in range(n):
        name = r.string(f"tensor {i} name", _MAX_KEY)
        n_dims = r.u32(f"tensor {name!r} dimension count")
        if n_dims > _MAX_DIMS:
            raise r.fail(f"tensor {name!r} has {n_dims} dimensions, at most {_MAX_DIMS} allowed")
        dims = struct.unpack(f"<{n_dims}Q", r.read(8 * n_dims, f"tensor {name!r} dimensions"))
        if any(d >= 1 << 63 for d in dims):
            raise r.fail(f"tensor {name!r} has a negative dimension")
        r.u32(f"tensor {name!r} type")
        offset = r.u64(f"tensor {name!r} offset")
        if offset % alignment:
            raise r.fail(f"tensor {name!r} offset {offset} is not a multiple of {alignment}")
        params, last = params + math.prod(dims), max(last, offset)
    data_start = -(-r.pos // alignment) * alignment
    if last >= 0 and data_start + last >= r.size:
        raise r.fail(f"tensor data is truncated: a tensor starts at data offset {last}, "
                     f"the file has {max(0, r.size - data_start)} bytes of data")
    return params


def _count(r: _Reader, meta: Mapping[str, MetaValue], key: str) -> int | None:
    v = meta.get(key)
    if isinstance(v, tuple) and v and all(type(x) is int for x in v):
        v = max(x for x in v if isinstance(x, int))  # per-layer values (hybrid models): the largest bounds all
    if v is None:
        return None
    if type(v) is not int or v < 0:
        raise r.fail(f"{key} is {v!r}, expected a non-negative integer")
    return v


def _parse(f: BinaryIO, path: Path, size: int) -> GgufInfo:
    r = _Reader(f, path, size)
    version, n_tensors, n_kv = _header(r)
    meta: dict[str, MetaValue] = {}
    for _ in range(n_kv):
        key = r.string("metadata key", _MAX_KEY)
        if key in meta:
            raise r.fail(f"metadata key {key!r} appears twice")
        meta[key] = r.value(r.u32(f"{key} type"), key, not key.startswith("tokenizer.ggml."))
    alignment = _count(r, meta, "general.alignment")
    if alignment is not None and (alignment < 1 or alignment & (alignment - 1)):
        raise r.fail(f"general.alignment {alignment} is not a power of two")
    params = _tensors(r, n_tensors, alignment or 32)
    arch, name, tokens = (meta.get(k) for k in ("general.architecture", "general.name", "tokenizer.ggml.tokens"))
    if not isinstance(arch, str) or not arch:
        raise r.fail(f"general.architecture is {arch!r}, expected a name")
    n = {k: _count(r, meta, f"{arch}.{k}") for k in (
        "context_length", "block_count", "embedding_length", "vocab_size", "pooling_type", "attention.head_count",
        "attention.head_count_kv", "attention.key_length", "attention.value_length")}
    embd, heads = n["embedding_length"], n["attention.head_count"]
    head_dim = embd // heads if embd is not None and heads else None
    file_type = _count(r, meta, "general.file_type")
    vocab = tokens.length if isinstance(tokens, GgufArray) else len(tokens) if isinstance(tokens, tuple) else None
    return GgufInfo(
        architecture=arch, name=name if isinstance(name, str) else None, version=version,
        tensor_count=n_tensors, parameters=params, context_length=n["context_length"],
        block_count=n["block_count"], embedding_length=embd, head_count=heads,
        head_count_kv=_first(n["attention.head_count_kv"], heads), vocab_size=n["vocab_size"] or vocab,
        key_length=_first(n["attention.key_length"], head_dim),
        value_length=_first(n["attention.value_length"], head_dim), pooling_type=n["pooling_type"],
        file_type=file_type, quantization=None if file_type is None else FILE_TYPES.get(file_type),
        has_chat_template=isinstance(meta.get("tokenizer.chat_template"), str), file_size=size,
        split_no=_count(r, meta, "split.no"), split_count=_count(r, meta, "split.count"),
        metadata=MappingProxyType(meta))


def _first(value: int | None, default: int | None) -> int | None:
    return default if value is None else value


def read_gguf(path: Path) -> GgufInfo:
    """Read ``path``'s GGUF header; tensor data is skipped, not read.

    Raises ``ModelFilesMissing`` if there is no such file and ``ModelInvalid`` (naming the file
    and the fault) if it is not a well-formed little-endian GGUF v2/v3 file. Blocks on file I/O.
    """
    try:
        with open(path, "rb", buffering=1 << 16) as f:
            return _parse(f, path, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise ModelFilesMissing(f"{path} does not exist", path=str(path)) from None
