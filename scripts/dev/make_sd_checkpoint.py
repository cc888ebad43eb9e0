"""Write a Stable Diffusion 1.x checkpoint with random weights that ComfyUI loads as a full model.

Run with an interpreter that has torch (and safetensors for ``--full``): the ComfyUI
virtualenv that ``hal0 backend install comfyui`` makes (scripts/setup-backends does), or any
python with both, such as a GPU box's; it does not import ComfyUI. Weights are random but
deterministic: norm scales are ones, biases zeros (but for a mid-grey one in the tiny TAESD),
the rest small normal noise.

By default the checkpoint is tiny: every tensor is a strided view into one small shared
storage, which ``torch.save`` writes once, so the file is a few hundred KB, yet ComfyUI sees
an SD 1.x model with

* a UNet of width 320 and 768-wide cross-attention (what its SD 1.x detection needs),
  one level deep: one res block + transformer in, two out, no middle block;
* a complete CLIP-L text encoder (12 layers; missing weights would give NaN conditioning);
* a TAESD VAE (ComfyUI picks it up by its ``taesd_decoder`` keys).

Its images are deterministic noise of the requested size that depend on the seed and the
prompt: enough to prove the whole path from an OpenAI request to a PNG.

``--full`` writes a checkpoint of SD 1.5's real size and layout instead, in fp16 as
``.safetensors`` (about 2 GB, some seconds to generate): the UNet of width 320 with channel
multipliers 1, 2, 4, 4, two res blocks per level, transformers at the first three levels and
a middle block; the complete CLIP-L; the KL-f8 VAE with 4 latent channels. It loads a GPU
with a real SD 1.x workload, for scripts/gpu-check; its images are meaningless noise.

Usage:
    make_sd_checkpoint.py OUT.ckpt [--no-clip]
    make_sd_checkpoint.py OUT.safetensors --full [--no-clip]

``--no-clip`` leaves the text encoder out, for tests of ComfyUI's execution errors.
"""

from __future__ import annotations

import argparse
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

SEED = 20261125
RANDOM = 65536  # random region: the token embedding's rows are overlapping windows of it
STRONG = 8192  # larger weights for TAESD and the UNet's last conv, so the noise reaches the pixels
ONES = 4096
ZEROS = 4096
HALF = 4  # the bias of TAESD's last conv: mid-grey output
FULL_STD = 0.02  # the full checkpoint's random weights: activations stay near unit scale

CH, CTX, TIME = 320, 768, 1280  # UNet width, conditioning width, time embedding width
LATENT = 4
CLIP_LAYERS, CLIP_FF, VOCAB, POSITIONS = 12, 3072, 49408, 77
TAESD = 64
VAE_CH, VAE_MULT, VAE_BLOCKS = 128, (1, 2, 4, 4), 2
STRONG_WEIGHTS = ("first_stage_model.", "model.diffusion_model.out.2.")


@dataclass(frozen=True)
class UNet:
    """The layout of an SD 1.x UNet (ComfyUI's openaimodel, in LDM key names)."""

    mult: tuple[int, ...]  # channel multiplier of each level
    res_blocks: int  # res blocks per level on the way down (one more on the way up)
    attention: tuple[int, ...]  # levels whose blocks carry a transformer
    middle: bool


TINY_UNET = UNet(mult=(1,), res_blocks=1, attention=(0,), middle=False)
SD15_UNET = UNet(mult=(1, 2, 4, 4), res_blocks=2, attention=(0, 1, 2), middle=True)


def _conv(out: dict[str, tuple[int, ...]], name: str, c_in: int, c_out: int, k: int = 3, bias: bool = True) -> None:
    out[f"{name}.weight"] = (c_out, c_in, k, k)
    if bias:
        out[f"{name}.bias"] = (c_out,)


def _norm(out: dict[str, tuple[int, ...]], name: str, c: int) -> None:
    out.update({f"{name}.weight": (c,), f"{name}.bias": (c,)})


def unet_shapes(u: UNet) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {
        "time_embed.0.weight": (TIME, CH), "time_embed.0.bias": (TIME,),
        "time_embed.2.weight": (TIME, TIME), "time_embed.2.bias": (TIME,),
        "input_blocks.0.0.weight": (CH, LATENT, 3, 3), "input_blocks.0.0.bias": (CH,),
        "out.0.weight": (CH,), "out.0.bias": (CH,),
        "out.2.weight": (LATENT, CH, 3, 3), "out.2.bias": (LATENT,),
    }

    def res(prefix: str, c_in: int, c: int) -> None:
        out.update({
            f"{prefix}.in_layers.0.weight": (c_in,), f"{prefix}.in_layers.0.bias": (c_in,),
            f"{prefix}.in_layers.2.weight": (c, c_in, 3, 3), f"{prefix}.in_layers.2.bias": (c,),
            f"{prefix}.emb_layers.1.weight": (c, TIME), f"{prefix}.emb_layers.1.bias": (c,),
            f"{prefix}.out_layers.0.weight": (c,), f"{prefix}.out_layers.0.bias": (c,),
            f"{prefix}.out_layers.3.weight": (c, c, 3, 3), f"{prefix}.out_layers.3.bias": (c,),
        })
        if c_in != c:
            _conv(out, f"{prefix}.skip_connection", c_in, c, k=1)

    def transformer(prefix: str, c: int) -> None:
        t = f"{prefix}.transformer_blocks.0"
        out.update({
            f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,),
            f"{prefix}.proj_in.weight": (c, c, 1, 1), f"{prefix}.proj_in.bias": (c,),
            f"{prefix}.proj_out.weight": (c, c, 1, 1), f"{prefix}.proj_out.bias": (c,),
            f"{t}.ff.net.0.proj.weight": (c * 8, c), f"{t}.ff.net.0.proj.bias": (c * 8,),
            f"{t}.ff.net.2.weight": (c, c * 4), f"{t}.ff.net.2.bias": (c,),
        })
        for attn, kv in (("attn1", c), ("attn2", CTX)):
            out.update({f"{t}.{attn}.to_q.weight": (c, c), f"{t}.{attn}.to_k.weight": (c, kv),
                        f"{t}.{attn}.to_v.weight": (c, kv), f"{t}.{attn}.to_out.0.weight": (c, c),
                        f"{t}.{attn}.to_out.0.bias": (c,)})
        for n in (1, 2, 3):
            out.update({f"{t}.norm{n}.weight": (c,), f"{t}.norm{n}.bias": (c,)})

    def block(prefix: str, c_in: int, c: int, level: int) -> None:
        res(f"{prefix}.0", c_in, c)
        if level in u.attention:
            transformer(f"{prefix}.1", c)

    c, skips, i = CH, [CH], 1  # skips: the width of each input block, which an output block takes
    for level, m in enumerate(u.mult):
        for _ in range(u.res_blocks):
            block(f"input_blocks.{i}", c, CH * m, level)
            c, i = CH * m, i + 1
            skips.append(c)
        if level < len(u.mult) - 1:
            _conv(out, f"input_blocks.{i}.0.op", c, c)
            skips.append(c)
            i += 1
    if u.middle:
        res("middle_block.0", c, c)
        transformer("middle_block.1", c)
        res("middle_block.2", c, c)
    i = 0
    for level, m in reversed(list(enumerate(u.mult))):
        for j in range(u.res_blocks + 1):
            block(f"output_blocks.{i}", c + skips.pop(), CH * m, level)
            c = CH * m
            if level and j == u.res_blocks:
                _conv(out, f"output_blocks.{i}.{2 if level in u.attention else 1}.conv", c, c)
            i += 1
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

    def block(name: str) -> None:
        for i in (0, 2, 4):
            _conv(out, f"{name}.conv.{i}", TAESD, TAESD)

    # The layouts of TAESD's encoder and decoder: nn.Sequential indices of the first conv,
    # the residual blocks, the bias-free resampling convs and the last conv.
    for part, (first, blocks, plain, last), (c_in, c_out) in (
            ("taesd_encoder", (0, (1, 3, 4, 5, 7, 8, 9, 11, 12, 13), (2, 6, 10), 14), (3, LATENT)),
            ("taesd_decoder", (1, (3, 4, 5, 8, 9, 10, 13, 14, 15, 18), (7, 12, 17), 19), (LATENT, 3))):
        _conv(out, f"{part}.{first}", c_in, TAESD)
        for i in blocks:
            block(f"{part}.{i}")
        for i in plain:
            _conv(out, f"{part}.{i}", TAESD, TAESD, bias=False)
        _conv(out, f"{part}.{last}", TAESD, c_out)
    return {f"first_stage_model.{k}": v for k, v in out.items()}


def vae_shapes() -> dict[str, tuple[int, ...]]:
    """SD's KL-f8 autoencoder (ComfyUI's AutoencoderKL, diffusionmodules/model.py)."""
    out: dict[str, tuple[int, ...]] = {}

    def res(name: str, c_in: int, c: int) -> None:
        _norm(out, f"{name}.norm1", c_in)
        _conv(out, f"{name}.conv1", c_in, c)
        _norm(out, f"{name}.norm2", c)
        _conv(out, f"{name}.conv2", c, c)
        if c_in != c:
            _conv(out, f"{name}.nin_shortcut", c_in, c, k=1)

    def middle(name: str, c: int) -> None:
        res(f"{name}.block_1", c, c)
        _norm(out, f"{name}.attn_1.norm", c)
        for proj in ("q", "k", "v", "proj_out"):
            _conv(out, f"{name}.attn_1.{proj}", c, c, k=1)
        res(f"{name}.block_2", c, c)

    c = VAE_CH
    _conv(out, "encoder.conv_in", 3, c)
    for level, m in enumerate(VAE_MULT):
        for j in range(VAE_BLOCKS):
            res(f"encoder.down.{level}.block.{j}", c, VAE_CH * m)
            c = VAE_CH * m
        if level < len(VAE_MULT) - 1:
            _conv(out, f"encoder.down.{level}.downsample.conv", c, c)
    middle("encoder.mid", c)
    _norm(out, "encoder.norm_out", c)
    _conv(out, "encoder.conv_out", c, 2 * LATENT)  # mean and log-variance
    _conv(out, "decoder.conv_in", LATENT, c)
    middle("decoder.mid", c)
    for level, m in reversed(list(enumerate(VAE_MULT))):
        for j in range(VAE_BLOCKS + 1):
            res(f"decoder.up.{level}.block.{j}", c, VAE_CH * m)
            c = VAE_CH * m
        if level:
            _conv(out, f"decoder.up.{level}.upsample.conv", c, c)
    _norm(out, "decoder.norm_out", c)
    _conv(out, "decoder.conv_out", c, 3)
    _conv(out, "quant_conv", 2 * LATENT, 2 * LATENT, k=1)
    _conv(out, "post_quant_conv", LATENT, LATENT, k=1)
    return {f"first_stage_model.{k}": v for k, v in out.items()}


def _constant(name: str, shape: tuple[int, ...]) -> float | None:
    """What a tensor is filled with: norm scales (and TAESD's latent scale) one, biases (and its
    shift) zero; None for the random weights."""
    if name.endswith((".bias", "vae_shift")):
        return 0.0
    if name.endswith("vae_scale") or (len(shape) == 1 and name.endswith(".weight")):
        return 1.0
    return None


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


def build_tiny(include_clip: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    storage = torch.cat([torch.randn(RANDOM, generator=gen) * 0.02, torch.randn(STRONG, generator=gen) * 0.03,
                         torch.ones(ONES), torch.zeros(ZEROS), torch.full((HALF,), 0.5)])
    ones, zeros = RANDOM + STRONG, RANDOM + STRONG + ONES
    shapes = {**unet_shapes(TINY_UNET), **taesd_shapes(), **(clip_shapes() if include_clip else {})}
    sd: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        constant = _constant(name, shape)
        strides: tuple[int, ...]
        if name.endswith("token_embedding.weight"):
            base, strides = 0, (1, 1)  # row t is random[t : t + 768]: every token differs
        elif name == "first_stage_model.taesd_decoder.19.bias":
            base, strides = zeros + ZEROS, (1,)
        elif constant is not None:
            base, strides = (ones if constant else zeros), (1,) * len(shape)
        else:
            start, size = (RANDOM, STRONG) if name.startswith(STRONG_WEIGHTS) else (0, RANDOM)
            strides = _strides(shape, name)
            span = sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) + 1
            if span > size:
                raise SystemExit(f"{name} {shape} does not fit its region")
            base = start + zlib.crc32(name.encode()) % (size - span + 1)
        sd[name] = storage.as_strided(shape, strides, base)
    return sd


def build_full(include_clip: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    shapes = {**unet_shapes(SD15_UNET), **vae_shapes(), **(clip_shapes() if include_clip else {})}
    sd: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        constant = _constant(name, shape)
        t = torch.empty(shape, dtype=torch.float16)
        sd[name] = t.fill_(constant) if constant is not None else t.normal_(0.0, FULL_STD, generator=gen)
    return sd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--no-clip", action="store_true", help="leave the text encoder out")
    parser.add_argument("--full", action="store_true",
                        help="SD 1.5's real size and layout, fp16 .safetensors (about 2 GB)")
    args = parser.parse_args()
    if args.full and args.out.suffix != ".safetensors":
        parser.error("--full writes safetensors: OUT must end in .safetensors")
    t0 = time.monotonic()
    sd = (build_full if args.full else build_tiny)(include_clip=not args.no_clip)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".part")
    if args.full:
        from safetensors.torch import save_file

        save_file(sd, str(tmp))
    else:
        torch.save({"state_dict": sd}, tmp)
    tmp.replace(args.out)
    print(f"{args.out}: {len(sd)} tensors, {args.out.stat().st_size // 1024} KB, {time.monotonic() - t0:.0f}s")


if __name__ == "__main__":
    main()
