"""Write a tiny Stable Diffusion 1.x checkpoint that ComfyUI loads as a full model.

Run with an interpreter that has torch (the ComfyUI virtualenv that ``hal0 backend install
comfyui`` makes); scripts/setup-backends does. The weights are random but deterministic,
and every tensor is a strided view into one small shared storage, which ``torch.save``
writes once: the file is a few hundred KB, yet ComfyUI sees an SD 1.x model with

* a UNet of width 320 and 768-wide cross-attention (what its SD 1.x detection needs),
  one level deep: one res block + transformer in, two out, no middle block;
* a complete CLIP-L text encoder (12 layers; missing weights would give NaN conditioning);
* a TAESD VAE (ComfyUI picks it up by its ``taesd_decoder`` keys).

Its images are deterministic noise of the requested size that depend on the seed and the
prompt: enough to prove the whole path from an OpenAI request to a PNG.

Usage:
    make_sd_checkpoint.py OUT.ckpt [--no-clip]

``--no-clip`` leaves the text encoder out, for tests of ComfyUI's execution errors.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import torch

SEED = 20261125
RANDOM = 65536  # random region: the token embedding's rows are overlapping windows of it
STRONG = 8192  # larger weights for TAESD and the UNet's last conv, so the noise reaches the pixels
ONES = 4096
ZEROS = 4096
HALF = 4  # the bias of TAESD's last conv: mid-grey output

CH, CTX, TIME = 320, 768, 1280  # UNet width, conditioning width, time embedding width
CLIP_LAYERS, CLIP_FF, VOCAB, POSITIONS = 12, 3072, 49408, 77
TAESD = 64
# Group and layer norm scales (and TAESD's latent scale) are ones; every bias is zero.
NORM_WEIGHTS = ("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "in_layers.0.weight",
                "out_layers.0.weight", "diffusion_model.out.0.weight", "vae_scale")
STRONG_WEIGHTS = ("first_stage_model.", "model.diffusion_model.out.2.")


def unet_shapes() -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {
        "time_embed.0.weight": (TIME, CH), "time_embed.0.bias": (TIME,),
        "time_embed.2.weight": (TIME, TIME), "time_embed.2.bias": (TIME,),
        "input_blocks.0.0.weight": (CH, 4, 3, 3), "input_blocks.0.0.bias": (CH,),
        "out.0.weight": (CH,), "out.0.bias": (CH,),
        "out.2.weight": (4, CH, 3, 3), "out.2.bias": (4,),
    }

    def res(prefix: str, c_in: int) -> None:
        out.update({
            f"{prefix}.in_layers.0.weight": (c_in,), f"{prefix}.in_layers.0.bias": (c_in,),
            f"{prefix}.in_layers.2.weight": (CH, c_in, 3, 3), f"{prefix}.in_layers.2.bias": (CH,),
            f"{prefix}.emb_layers.1.weight": (CH, TIME), f"{prefix}.emb_layers.1.bias": (CH,),
            f"{prefix}.out_layers.0.weight": (CH,), f"{prefix}.out_layers.0.bias": (CH,),
            f"{prefix}.out_layers.3.weight": (CH, CH, 3, 3), f"{prefix}.out_layers.3.bias": (CH,),
        })
        if c_in != CH:
            out.update({f"{prefix}.skip_connection.weight": (CH, c_in, 1, 1), f"{prefix}.skip_connection.bias": (CH,)})

    def transformer(prefix: str) -> None:
        t = f"{prefix}.transformer_blocks.0"
        out.update({
            f"{prefix}.norm.weight": (CH,), f"{prefix}.norm.bias": (CH,),
            f"{prefix}.proj_in.weight": (CH, CH, 1, 1), f"{prefix}.proj_in.bias": (CH,),
            f"{prefix}.proj_out.weight": (CH, CH, 1, 1), f"{prefix}.proj_out.bias": (CH,),
            f"{t}.ff.net.0.proj.weight": (CH * 8, CH), f"{t}.ff.net.0.proj.bias": (CH * 8,),
            f"{t}.ff.net.2.weight": (CH, CH * 4), f"{t}.ff.net.2.bias": (CH,),
        })
        for attn, kv in (("attn1", CH), ("attn2", CTX)):
            out.update({f"{t}.{attn}.to_q.weight": (CH, CH), f"{t}.{attn}.to_k.weight": (CH, kv),
                        f"{t}.{attn}.to_v.weight": (CH, kv), f"{t}.{attn}.to_out.0.weight": (CH, CH),
                        f"{t}.{attn}.to_out.0.bias": (CH,)})
        for n in (1, 2, 3):
            out.update({f"{t}.norm{n}.weight": (CH,), f"{t}.norm{n}.bias": (CH,)})

    res("input_blocks.1.0", CH)
    transformer("input_blocks.1.1")
    for i in (0, 1):  # each output block takes a skip connection: 2 * CH in
        res(f"output_blocks.{i}.0", 2 * CH)
        transformer(f"output_blocks.{i}.1")
    return {f"model.diffusion_model.{k}": v for k, v in out.items()}


def clip_shapes() -> dict[str, tuple[int, ...]]:
    d, p = CTX, "cond_stage_model.transformer.text_model"
    out: dict[str, tuple[int, ...]] = {
        f"{p}.embeddings.token_embedding.weight": (VOCAB, d),
        f"{p}.embeddings.position_embedding.weight": (POSITIONS, d),
        f"{p}.final_layer_norm.weight": (d,), f"{p}.final_layer_norm.bias": (d,),
    }
    for i in range(CLIP_LAYERS):
        layer = f"{p}.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out.update({f"{layer}.self_attn.{proj}.weight": (d, d), f"{layer}.self_attn.{proj}.bias": (d,)})
        for norm in ("layer_norm1", "layer_norm2"):
            out.update({f"{layer}.{norm}.weight": (d,), f"{layer}.{norm}.bias": (d,)})
        out.update({f"{layer}.mlp.fc1.weight": (CLIP_FF, d), f"{layer}.mlp.fc1.bias": (CLIP_FF,),
                    f"{layer}.mlp.fc2.weight": (d, CLIP_FF), f"{layer}.mlp.fc2.bias": (d,)})
    return out


def taesd_shapes() -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {"vae_scale": (), "vae_shift": ()}

    def conv(name: str, c_in: int, c_out: int, bias: bool = True) -> None:
        out[f"{name}.weight"] = (c_out, c_in, 3, 3)
        if bias:
            out[f"{name}.bias"] = (c_out,)

    def block(name: str) -> None:
        for i in (0, 2, 4):
            conv(f"{name}.conv.{i}", TAESD, TAESD)

    # The layouts of TAESD's encoder and decoder: nn.Sequential indices of the first conv,
    # the residual blocks, the bias-free resampling convs and the last conv.
    for part, (first, blocks, plain, last), (c_in, c_out) in (
            ("taesd_encoder", (0, (1, 3, 4, 5, 7, 8, 9, 11, 12, 13), (2, 6, 10), 14), (3, 4)),
            ("taesd_decoder", (1, (3, 4, 5, 8, 9, 10, 13, 14, 15, 18), (7, 12, 17), 19), (4, 3))):
        conv(f"{part}.{first}", c_in, TAESD)
        for i in blocks:
            block(f"{part}.{i}")
        for i in plain:
            conv(f"{part}.{i}", TAESD, TAESD, bias=False)
        conv(f"{part}.{last}", TAESD, c_out)
    return {f"first_stage_model.{k}": v for k, v in out.items()}


def _strides(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """Small, name-dependent strides so that a large tensor fits in the random region."""
    if not shape:
        return ()
    primes = (3, 5, 7, 11, 13)
    h = zlib.crc32(name.encode())
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = primes[(h >> (4 * i)) % len(primes)]
    return tuple(strides)


def build(include_clip: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    storage = torch.cat([torch.randn(RANDOM, generator=gen) * 0.02, torch.randn(STRONG, generator=gen) * 0.03,
                         torch.ones(ONES), torch.zeros(ZEROS), torch.full((HALF,), 0.5)])
    ones, zeros = RANDOM + STRONG, RANDOM + STRONG + ONES
    shapes = {**unet_shapes(), **taesd_shapes(), **(clip_shapes() if include_clip else {})}
    sd: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("token_embedding.weight"):
            base, strides = 0, (1, 1)  # row t is random[t : t + 768]: every token differs
        elif name == "first_stage_model.taesd_decoder.19.bias":
            base, strides = zeros + ZEROS, (1,)
        elif leaf == "bias" or name.endswith("vae_shift"):
            base, strides = zeros, (1,) * len(shape)
        elif name.endswith(NORM_WEIGHTS):
            base, strides = ones, (1,) * len(shape)
        else:
            start, size = (RANDOM, STRONG) if name.startswith(STRONG_WEIGHTS) else (0, RANDOM)
            strides = _strides(shape, name)
            span = sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) + 1
            if span > size:
                raise SystemExit(f"{name} {shape} does not fit its region")
            base = start + zlib.crc32(name.encode()) % (size - span + 1)
        sd[name] = storage.as_strided(shape, strides, base)
    return sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--no-clip", action="store_true", help="leave the text encoder out")
    args = parser.parse_args()
    sd = build(include_clip=not args.no_clip)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".part")
    torch.save({"state_dict": sd}, tmp)
    tmp.replace(args.out)
    print(f"{args.out}: {len(sd)} tensors, {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
