"""Will a GGUF model fit at a context size? A pure estimate from its header, no I/O.

``total = weights + kv + overhead``, each term an upper bound where a guess is needed,
because an over-estimate refuses a load that would have fitted while an under-estimate
lets a backend die out of memory halfway through loading:

* **weights** = the file size. llama.cpp maps or copies tensors exactly as stored, so the
  quantised file is what becomes resident; the header (metadata, vocabulary) is a few MB.
* **kv** = ``block_count x tokens x head_count_kv x (key_length + value_length) x
  kv_bytes_per_elem``, that is ``2 (K and V) x layers x tokens x KV heads x mean head width
  x bytes``, with ``tokens = context_size x parallel``. Each layer caches one K and one V
  vector per KV head per token; grouped-query models have fewer KV than query heads
  (Gemma 3 270M: 1 of 4), hence ``head_count_kv``. An F16 cache (llama.cpp's default) is
  2 bytes an element, q8_0 34/32, q4_0 18/32. Sliding-window layers (5 of every 6 in Gemma
  3), MLA latents (DeepSeek) and recurrent layers need less, so for them this over-counts:
  Gemma 3 270M at 32k context caches 133.5 MiB (4 slots), this says 576 MiB; at 2k, both 36.
  Encoders (embedding and rerank models) are counted the same way although llama.cpp gives
  BERT-family models no KV cache at all: the term is small for them.
* **overhead** = ``max(256 MiB, 5 % of weights)``: llama.cpp reserves compute buffers for
  its worst micro-batch (512 tokens) plus an output buffer, and a GPU backend adds a host
  staging buffer and its own context. These grow with model width, hence the share of the
  weights, and have a fixed part that dominates small models, hence the floor. Measured with
  the pinned llama-server on CPU: Gemma 3 270M reserves 22 MiB at 2k context and 52 MiB at
  32k, all-MiniLM-L6-v2 6 MiB, so the floor is generous, as it should be for a GPU.

``parallel`` is how many sequences each get ``context_size`` tokens at once: llama-server
then needs ``--ctx-size context_size * parallel``, because its slots share (or split) that
one context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hal0.models.gguf import GgufInfo

__all__ = ["MemoryEstimate", "estimate", "fits"]

MIB = 1 << 20


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model needs once loaded; ``total_bytes`` is the sum of the other three."""

    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    total_bytes: int


def estimate(info: GgufInfo, context_size: int, *, kv_bytes_per_elem: float = 2.0,
             parallel: int = 1) -> MemoryEstimate:
    """Estimate memory for ``info`` at ``context_size`` tokens per sequence (module docstring).

    Numbers the header lacks (an attention-free model) count as 0. Raises ``ValueError`` for a
    context size or ``parallel`` below 1 or a negative ``kv_bytes_per_elem``.
    """
    if context_size < 1 or parallel < 1 or kv_bytes_per_elem < 0:
        raise ValueError(f"context_size ({context_size}) and parallel ({parallel}) must be >= 1, "
                         f"kv_bytes_per_elem ({kv_bytes_per_elem}) >= 0")
    head_width = (info.key_length or 0) + (info.value_length or 0)  # 2 x their mean
    elems = (info.block_count or 0) * context_size * parallel * (info.head_count_kv or 0) * head_width
    kv = math.ceil(elems * kv_bytes_per_elem)
    weights = info.file_size
    overhead = max(256 * MIB, math.ceil(weights * 0.05))
    return MemoryEstimate(weights, kv, overhead, weights + kv + overhead)


def fits(estimate: MemoryEstimate, available_bytes: int) -> bool:
    """Whether ``estimate`` fits in ``available_bytes`` (free VRAM, or RAM for a CPU slot)."""
    return estimate.total_bytes <= available_bytes
