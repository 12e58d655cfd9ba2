"""LTX-2.5's diffusion video decoder ("DiffVAE"): video latents -> pixels through a small diffusion process.

The decoder that ships with the LTX-2.5 video VAE (metadata `vae._class_name` other than "CausalVideoAutoencoder",
e.g. "CausalDiffusionVAE"). It reads the same latents as the convolutional decoder (`ltx.ltx2.vae`) and has no
encoder of its own. References: ltx-core `model/video_vae/diffusion_video_decoder.py`, `transformer/*.py`,
`model_configurator.py` (Lightricks/LTX-2 at 400fd31); diffusers 0.42.1 `models/autoencoders/
ltx2_diffusion_decoder.py` and `pipelines/ltx2/pipeline_ltx2_diffusion_decode.py`.

Shapes: B batch · C latent channels (128) · F', H', W' latent grid · F = 8 (F' - 1) + 1 frames, H = 32 H', W = 32 W'
pixels (the factors of the released layout; in general the products of the upsample strides, times the patch size
in space) · D stage width · all features channels-last (B, T, H, W, D), as the references.

The network, in two halves:

    context(z)      stages 1-4: Linear C -> D1, then per stage [NA blocks, pixel-shuffle upsample] (deterministic),
                    z raw (de-normalized) latents -> context (B, F, H / p, W / p, D_ctx), p = patch_size
    denoiser(x, context, sigma)                                 stage 5, one diffusion step in pixel space:
        h     = Linear(patchify_p(x))                           (B, F, H / p, W / p, D5)
        m     = Linear(silu(timestep_embedding(sigma * timestep_scale_multiplier)))   7 chunks of (B, 1, 1, 1, D5)
        per block:  (a_k = m_k + scale_shift_table[k]; k = 0 scale_msa, 1 shift_msa, 3 scale_mlp, 4 shift_mlp)
            h = h + context_proj(context)
            h = h + NA(rmsnorm(h) (1 + a_0) + a_1)
            h = h + SwiGLU(rmsnorm(h) (1 + a_3) + a_4)
        out   = unpatchify_p(Linear(rmsnorm(h)))                the model's x0 or velocity prediction, (B, 3, F, H, W)

The residuals are ungated: the chunks 2, 5, 6 (gate_msa, gate_mlp, gate_ctx) are computed and never read, as in
ltx-core; the static gates of older ("standalone distilled") files are folded into `attn.proj`, `mlp.w_down` and
`context_proj` when the file is read (`from_official_file`). A deterministic block (`NABlock`) is the same without
the context and the modulation. SwiGLU: w_down(silu(w_gate x) * w_up x), hidden width 4 D rounded up to 16.

Neighbourhood attention (NA), as NATTEN's `na3d`: a token attends to a (k_t, k_h, k_w) box of tokens centred on it
and shifted inward at the grid borders, so every box holds exactly k_t k_h k_w tokens (a grid smaller than the
kernel is an error). Per head: q = rmsnorm(W_q x) / sqrt(head_dim), k = rmsnorm(W_k x), both rotated by an absolute
3D RoPE (head_dim split into (t, h, w) chunks, a quarter to t, pairs (2i, 2i + 1) rotated by position x base^(-2i /
chunk)), then softmax(q k^T) v with no further scale. By default the numbers come from
`torch.nn.functional.scaled_dot_product_attention` over query tiles and the boxes around them, with a boolean
mask (`neighborhood_attention`). It calls SDPA directly rather than `ltx.core.attention.attention`: the reference
scales q before RoPE and attends with scale 1, which that function (fixed 1 / sqrt(head_dim), no per-box masks)
does not express. Optional, switched from outside: `use_natten(decoder)` runs every NA through NATTEN when the
natten package is installed (`natten_attention`: ltx-core's call `natten.na3d(q, k, v, kernel_size, scale=1.0)`,
stride and dilation 1, not causal; an axis with kernel 1 is folded into the batch, NATTEN taking kernels >= 2).
Measured only on a CPU, where natten 0.21.7 (built without CUDA) has just its flex-attention backend, uncompiled:
dense scores, 10x and 64x slower than the torch path on two (3, 7, 7)-kernel grids of 3840 and 7680 tokens, so
for checking. There, float32: within 4.8e-7 of the torch path per attention, 1.9e-6 through the tiny test decoder
(tests/ltx2/test_ltx2_natten.py). Its CUDA kernels (cutlass / hopper / blackwell FNA) are untested here.

The latent frames: the NA window shifts inward at the last frame, so the last latent frame is repeated
(k_t1 // 2) * 2 times (k_t1 the first stage's temporal kernel) through stages 1-4 and cropped off the context
again, keeping at least the stage-5 temporal kernel; a temporal upsample x2 drops its duplicated first frame (the
causal 1 + 2k frame mapping, composed 8 (F' - 1) + 1). Latents smaller than any stage's kernel are first padded by
edge replication (time at the end, space on both sides) and the pixels cropped back, as ltx-core. (ltx-core's
"NATTEN border" workaround; it and this code apply it whichever attention backend runs.)

Sampling (`decode`), rectified flow with sigma = 1 pure noise: sigmas linspace(1, 1 / n, n), then 0. Each step
turns the prediction into a velocity (an x0 prediction: v = (x - x0) / sigma) and steps x <- x - (sigma_i -
sigma_{i+1}) v in float32, rounded back to the latents' dtype. With an x0 model the last step returns the
prediction itself (ltx-core; diffusers takes the Euler step to sigma 0, the same value up to float rounding); one
step of an x0 model is therefore one denoiser call on pure noise. The noise is drawn from `generator` in the
latents' dtype, one tensor of the output's shape.

Keys: the module names are ltx-core's (`det_stages.{i}.{j}.attn.qkv.to_q`, `attn.proj`, `attn.q_norm`,
`t_embedder.timestep_embedder.linear_1`, `per_channel_statistics.mean-of-means`, ...), so the decoder's state dict
is what ltx-core's `DiffusionVideoDecoder` holds after its loader. The official files store it under `vae.decoder.`
(bundled VAE) or `decoder.` (standalone) with fused `attn.qkv.weight` / `.bias` (3 D, D), `t_embedder.mlp.{0,2}`,
possibly `gate_*` and `coarse_*` (a preview head ltx-core ignores), and the statistics at
`vae.per_channel_statistics.*`; `from_official_file` / `to_official_file` convert, so an official file loads with
`load_state_dict(strict=True)`. `to_diffusers_keys` / `from_diffusers_keys` map to and from diffusers'
`LTX2VideoDiffusionDecoderModel` (prefix `decoder.`, attn.to_q / to_out.0 / norm_q, statistics as `latents_mean` /
`latents_std`).

fp32 islands: the RoPE rotation, the timestep features and the Euler update (all as both references).

The pixel grid per latent voxel is computed from the config (`cfg.scale`: the strides' products, times the patch
size in space); ltx-core hard-codes (8, 32, 32) for its crops, the same numbers for the released layout.

Tiled decoding (`decode(..., tiling=DiffusionDecodeTiling(...))`), ltx-core's `tiled_decode`: stages 1-3 run once
on the whole latents; stage 4 and the sampling run per tile of the stage-4 grid (cells of (2, 8, 8) output frames /
pixels released), tiles of a given size overlapping by at least the tiled stages' reach, the tile at frame 0
dropping the duplicated frame and the last one carrying the ghost frames, blended with trapezoid weights; a one-step
x0 decode draws each tile's noise in tile order, a multi-step one cuts every tile's start from one noise canvas.
The canvas is accumulated in float32 (ltx-core: float16 for bfloat16 features) and the whole video returned
(ltx-core yields temporal chunks). diffusers tiles the same two stages another way (tiles every stride, the last
absorbing a short remnant, seams blended in place and cropped to the stride); not followed. ltx-core's tile sizes
from the free GPU memory (`recommended_tiling_config`) are not here: the sizes are the caller's.

Not here: the Triton / CuTe-DSL attention kernels, ltx-core's DiffVAE modes (torch.compile presets), the W-chunked
and deferred stage-4 paths (memory layouts of the same maths). Parity
(tests/ltx2/test_ltx2_diffusion_decoder.py): diffusers 0.42.1 on tiny random weights, float32 <= 1e-5 (context,
denoiser, whole decodes step by step, its pipeline) and float64 <= 1e-12;
opt-in, ltx-core at 400fd31 (its eager attention fallback): untiled decodes, padded short clips included, and its
loader ops on a gated file, bitwise. Tiled (tests/ltx2/test_ltx2_diffusion_decoder_tiling.py): one tile is the
untiled decode bitwise; opt-in against ltx-core's tiled decode, <= 9.5e-7 in float32 (0.0 in three of six).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core import shapes
from ltx.core.checkpoint import CheckpointError, SafetensorsReader, load_strict
from ltx.core.keymap import Rule, apply, invert
from ltx.core.nn import LatentStatistics, TimestepEmbedder
from ltx.ltx2.vae import _ramp, _split_overlapping, patchify, unpatchify

CONV_VAE_CLASS = "CausalVideoAutoencoder"  # metadata vae._class_name of the convolutional VAE (ltx.ltx2.vae)
DIFFUSION_VAE_CLASS = "CausalDiffusionVAE"  # the released diffusion VAE's class name (written by to_metadata)
OUTPUT_TYPES = ("v", "x0")
USED_STATISTICS = ("mean-of-means", "std-of-means")
UNREAD_STATISTICS = ("channel", "mean-of-stds")  # in the VAE files, never read by the decoder
NORM_EPS = 1e-6  # every RMSNorm of the decoder
ROPE_BASE = 10_000.0
SWIGLU_TOKENS = 16_384  # the MLP runs on this many tokens at a time (memory only: rows are independent)
NA_SCORE_BUDGET = 2**24  # query x key mask elements per attention call in `neighborhood_attention`
NATTEN_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what NATTEN's kernels take
NATTEN_INSTALL = ("CPU, flex attention only: pip install --no-deps --no-build-isolation natten==0.21.7; CUDA: the "
                  "natten wheel built for your torch, https://whl.natten.org")


def _triple(v, what: str) -> tuple[int, int, int]:
    t = tuple(v)
    if len(t) != 3 or not all(isinstance(n, int) and n >= 1 for n in t):
        raise ValueError(f"diffusion decoder {what}={v!r}: expected three positive ints (t, h, w)")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class DiffusionDecoderConfig:
    """The decoder's architecture, in ltx-core's vocabulary (`DiffusionVideoDecoder.__init__`). Defaults are
    ltx-core's class defaults, which its configurator keeps for keys the metadata lacks; a released file names its
    own values in the metadata."""

    in_channels: int = 128  # latent channels
    out_channels: int = 3
    patch_size: int = 4  # stage 5 works on p x p pixel patches
    head_dim: int = 64
    stage_channels: tuple[int, ...] = (1024, 512, 256, 256, 128)  # 4 deterministic stages + the context width
    stage_depths: tuple[int, ...] = (4, 6, 4, 2, 8)  # the last one: stage-5 (diffusion) blocks
    # per-stage NA kernels (t, h, w); ltx-core wants one per stage_channels entry and never reads the fifth
    stage_kernels: tuple[tuple[int, int, int], ...] = ((3, 7, 7), (3, 7, 7), (3, 5, 5), (3, 5, 5), (3, 3, 3))
    # after each deterministic stage: (stride (t, h, w), channel reduction); the next stage has width / reduction
    upsamples: tuple[tuple[tuple[int, int, int], int], ...] = (
        ((1, 2, 2), 2), ((2, 1, 1), 2), ((2, 2, 2), 1), ((2, 2, 2), 2))  # fmt: skip
    stage5_kernel: tuple[int, int, int] = (3, 7, 7)
    stage5_channels: int | None = None  # stage-5 width; None: the context width stage_channels[-1]
    t_emb_dim: int = 384
    default_num_inference_steps: int = 2
    timestep_scale_multiplier: float = 1.0  # the timestep embedding sees sigma x this
    model_output_type: str = "v"  # what stage 5 predicts: "v" (velocity) or "x0"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_channels", tuple(self.stage_channels))
        object.__setattr__(self, "stage_depths", tuple(self.stage_depths))
        object.__setattr__(self, "stage_kernels", tuple(_triple(k, "stage_kernels entry") for k in self.stage_kernels))
        ups = []
        for entry in self.upsamples:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], int)):
                raise ValueError(f"diffusion decoder upsamples entry {entry!r}: expected [[t, h, w], reduction]")
            ups.append((_triple(entry[0], "upsample stride"), entry[1]))
        object.__setattr__(self, "upsamples", tuple(ups))
        object.__setattr__(self, "stage5_kernel", _triple(self.stage5_kernel, "stage5_kernel"))
        object.__setattr__(self, "timestep_scale_multiplier", float(self.timestep_scale_multiplier))
        if self.model_output_type not in OUTPUT_TYPES:
            raise ValueError(f"diffusion decoder model_output_type={self.model_output_type!r} is not supported "
                             f"(supported: {OUTPUT_TYPES})")
        counts = (len(self.stage_channels), len(self.stage_depths), len(self.stage_kernels), len(self.upsamples) + 1)
        if counts != (5, 5, 5, 5):
            raise ValueError(f"diffusion decoder: {counts[0]} stage_channels, {counts[1]} stage_depths, {counts[2]} "
                             f"stage_kernels, {counts[3] - 1} upsamples; supported: 5, 5, 5, 4 (4 deterministic "
                             "stages, then the diffusion stage)")
        sizes = (self.in_channels, self.out_channels, self.patch_size, self.t_emb_dim, self.default_num_inference_steps)
        if min(sizes) < 1 or min(self.stage_channels) < 1 or min(self.stage_depths) < 0:
            raise ValueError(f"diffusion decoder sizes must be positive (depths >= 0): {self}")
        if self.head_dim % 8 or self.head_dim < 16:
            raise ValueError(f"diffusion decoder head_dim={self.head_dim} is not supported (a multiple of 8, at "
                             "least 16: the 3D RoPE splits it into whole (t, h, w) rotation pairs)")
        for c in (*self.stage_channels, self.stage5_dim):
            if c % self.head_dim:
                raise ValueError(f"diffusion decoder width {c} is not a multiple of head_dim={self.head_dim}")
        for i, ((stride, reduction), c) in enumerate(zip(self.upsamples, self.stage_channels)):
            if stride[0] not in (1, 2):
                raise ValueError(f"diffusion decoder upsample {i} temporal stride {stride[0]} is not supported "
                                 "(supported: 1, 2; the causal frame mapping)")
            if reduction < 1 or c % reduction or self.stage_channels[i + 1] != c // reduction:
                raise ValueError(f"diffusion decoder upsample {i}: {c} channels / reduction {reduction} must divide "
                                 f"evenly and equal stage_channels[{i + 1}]={self.stage_channels[i + 1]}")

    @property
    def stage5_dim(self) -> int:
        return self.stage_channels[-1] if self.stage5_channels is None else self.stage5_channels

    @property
    def scale(self) -> tuple[int, int, int]:
        """Pixel (frames, rows, columns) per latent voxel: (8, 32, 32) for the released layout."""
        t, h, w = (math.prod(s[a] for s, _ in self.upsamples) for a in range(3))
        return t, h * self.patch_size, w * self.patch_size

    @property
    def ghost_frames(self) -> int:
        """Copies of the last latent frame run through stages 1-4 (the NA border workaround)."""
        return (self.stage_kernels[0][0] // 2) * 2

    @property
    def min_latent_size(self) -> tuple[int, int, int]:
        """The smallest latent grid every stage's NA accepts (ltx-core `all_stages_min_tile_size`); smaller latents
        are edge-padded up to it."""
        mins, cum = [1, 1, 1], [1, 1, 1]
        for kernel, (stride, _) in zip(self.stage_kernels[:4], self.upsamples):
            mins = [max(m, -(-k // c)) for m, k, c in zip(mins, kernel, cum)]
            cum = [c * s for c, s in zip(cum, stride)]
        return tuple(max(m, -(-k // c)) for m, k, c in zip(mins, self.stage5_kernel, cum))  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------ metadata

    @classmethod
    def from_metadata(cls, vae: dict) -> DiffusionDecoderConfig:
        """The checkpoint's `config["vae"]` sub-dict -> config, read as ltx-core's `VideoDecoderConfigurator`: the
        decoder's keys under `vae.decoder` (or `vae` itself), `model_output_type` and `latent_channels` beside it,
        absent keys at the class defaults. Values we do not implement raise one ValueError line."""
        name = vae.get("_class_name", CONV_VAE_CLASS)
        if name == CONV_VAE_CLASS:
            why = " (absent, which ltx-core reads as that)" if "_class_name" not in vae else ""
            raise ValueError(f"vae._class_name={name!r}{why} is the convolutional VAE (ltx.ltx2.vae), not a diffusion "
                             f"decoder (supported: any other class, e.g. {DIFFUSION_VAE_CLASS!r})")
        d = vae.get("decoder", vae)
        base = cls()
        try:
            kw = dict(
                in_channels=d.get("in_channels", vae.get("latent_channels", base.in_channels)),
                out_channels=d.get("out_channels", base.out_channels),
                patch_size=d.get("patch_size", base.patch_size),
                head_dim=d.get("head_dim", d.get("na_head_dim", base.head_dim)),
                t_emb_dim=d.get("t_emb_dim", base.t_emb_dim),
                default_num_inference_steps=d.get("default_num_inference_steps", base.default_num_inference_steps),
                timestep_scale_multiplier=d.get("timestep_scale_multiplier", base.timestep_scale_multiplier),
                model_output_type=vae.get("model_output_type", base.model_output_type),
                stage_channels=tuple(d.get("stage_channels", base.stage_channels)),
                stage_depths=tuple(d.get("stage_depths", base.stage_depths)),
                stage_kernels=tuple(tuple(k) for k in d.get("stage_kernels", base.stage_kernels)),
                upsamples=tuple((tuple(s), r) for s, r in d.get("upsamples", base.upsamples)),
                stage5_kernel=tuple(d.get("stage5_kernel", base.stage5_kernel)),
                stage5_channels=d.get("stage5_channels"),
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"vae.decoder metadata is malformed ({e}): stage lists must be lists, kernels [t, h, w], "
                             "upsamples [[t, h, w], reduction] pairs") from None
        return cls(**kw)

    def to_metadata(self) -> dict:
        """Config -> the decoder's part of an official-style `config["vae"]` dict (read back by `from_metadata` and
        by ltx-core); the encoder's keys are the VAE's business."""
        decoder = {
            "in_channels": self.in_channels, "out_channels": self.out_channels, "patch_size": self.patch_size,
            "head_dim": self.head_dim, "t_emb_dim": self.t_emb_dim,
            "default_num_inference_steps": self.default_num_inference_steps,
            "timestep_scale_multiplier": self.timestep_scale_multiplier,
            "stage_channels": list(self.stage_channels), "stage_depths": list(self.stage_depths),
            "stage_kernels": [list(k) for k in self.stage_kernels],
            "upsamples": [[list(s), r] for s, r in self.upsamples], "stage5_kernel": list(self.stage5_kernel),
        }  # fmt: skip
        if self.stage5_channels is not None:
            decoder["stage5_channels"] = self.stage5_channels
        return {"_class_name": DIFFUSION_VAE_CLASS, "latent_channels": self.in_channels,
                "model_output_type": self.model_output_type, "decoder": decoder}

    # ------------------------------------------------------------------------------------------ diffusers

    def to_diffusers_config(self) -> dict:
        """The `LTX2VideoDiffusionDecoderModel` constructor arguments for this architecture (diffusers has no
        separate stage-5 width and no fifth stage kernel)."""
        if self.stage5_channels not in (None, self.stage_channels[-1]):
            raise ValueError(f"diffusers' decoder has no stage5_channels ({self.stage5_channels}) other than the "
                             f"context width {self.stage_channels[-1]}")
        t, h, w = self.scale
        if h != w:
            raise ValueError(f"diffusers' decoder has one spatial compression ratio; this layout has {h} x {w}")
        return dict(
            out_channels=self.out_channels, latent_channels=self.in_channels, patch_size=self.patch_size,
            scaling_factor=1.0, decoder_head_dim=self.head_dim, decoder_stage_channels=self.stage_channels,
            decoder_stage_depths=self.stage_depths, decoder_stage_kernels=self.stage_kernels[:4],
            decoder_upsample_strides=tuple(s for s, _ in self.upsamples),
            decoder_upsample_channel_reductions=tuple(r for _, r in self.upsamples),
            decoder_stage5_kernel=self.stage5_kernel, decoder_t_emb_dim=self.t_emb_dim,
            decoder_timestep_scale_multiplier=self.timestep_scale_multiplier,
            decoder_model_output_type=self.model_output_type,
            decoder_num_inference_steps=self.default_num_inference_steps,
            spatial_compression_ratio=h, temporal_compression_ratio=t,
        )  # fmt: skip

    @classmethod
    def from_diffusers_config(cls, d: dict) -> DiffusionDecoderConfig:
        """A diffusers `LTX2VideoDiffusionDecoderModel` config -> ours. diffusers does not store the fifth stage
        kernel (never read); it gets the class default."""
        if d.get("scaling_factor", 1.0) != 1.0:
            raise ValueError(f"diffusers decoder scaling_factor={d['scaling_factor']} is not supported "
                             "(supported: 1.0)")
        kernels = tuple(tuple(k) for k in d["decoder_stage_kernels"])
        return cls(
            in_channels=d["latent_channels"], out_channels=d["out_channels"], patch_size=d["patch_size"],
            head_dim=d["decoder_head_dim"], stage_channels=tuple(d["decoder_stage_channels"]),
            stage_depths=tuple(d["decoder_stage_depths"]), stage_kernels=(*kernels, cls().stage_kernels[4]),
            upsamples=tuple((tuple(s), r) for s, r in zip(d["decoder_upsample_strides"],
                                                           d["decoder_upsample_channel_reductions"])),
            stage5_kernel=tuple(d["decoder_stage5_kernel"]), t_emb_dim=d["decoder_t_emb_dim"],
            default_num_inference_steps=d["decoder_num_inference_steps"],
            timestep_scale_multiplier=d["decoder_timestep_scale_multiplier"],
            model_output_type=d["decoder_model_output_type"],
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------ attention


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """head_dim -> the (t, h, w) RoPE chunk sizes: about a quarter to t, the rest halved, all even (ltx-core
    `default_rope_dim_split`)."""
    t = (head_dim // 4) // 2 * 2
    hw = (head_dim - t) // 2
    if hw % 2:
        t -= 2
        hw = (head_dim - t) // 2
    return t, hw, hw


def rope_3d(x: Tensor, split: tuple[int, int, int], base: float = ROPE_BASE) -> Tensor:
    """Absolute 3D RoPE of x (B, T, H, W, heads, head_dim) at positions 0.. on each axis, in float32, returned in
    x's dtype. Chunk a of `split` rotates its pairs (2i, 2i + 1) by position_a x base^(-2i / chunk)."""
    out, start = [], 0
    for axis, dim in zip((1, 2, 3), split):
        # the frequencies in float64 then float32, as ltx-core (computed on the CPU: some devices have no float64)
        inv = (1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)).float().to(x.device)
        pos = torch.arange(x.shape[axis], dtype=torch.float32, device=x.device)
        shape = [1, 1, 1, 1, 1, dim // 2]
        shape[axis] = x.shape[axis]
        angle = (pos[:, None] * inv[None]).reshape(shape)  # varies along `axis` and the pair index only
        cos, sin = angle.cos(), angle.sin()
        pairs = x[..., start:start + dim].unflatten(-1, (dim // 2, 2))  # (..., dim / 2, 2)
        even, odd = pairs[..., 0].float(), pairs[..., 1].float()
        out.append(torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).to(x.dtype))
        start += dim
    return torch.cat(out, dim=-1)


def _window_start(i: int, length: int, kernel: int) -> int:
    # the first key of query i's window: centred, shifted inward at the borders (NATTEN)
    return min(max(i - kernel // 2, 0), length - kernel)


def _query_tile(dims: tuple[int, int, int], kernel: tuple[int, int, int], budget: int) -> list[int]:
    # halve the query tile along the axis longest relative to its kernel until tile x key box fits the budget
    tile = list(dims)

    def cost(t: list[int]) -> int:
        return math.prod(t) * math.prod(min(d, n + k - 1) for n, k, d in zip(t, kernel, dims))

    while cost(tile) > budget and max(tile) > 1:
        a = max((a for a in range(3) if tile[a] > 1), key=lambda a: tile[a] / kernel[a])
        tile[a] = (tile[a] + 1) // 2
    return tile


def neighborhood_attention(q: Tensor, k: Tensor, v: Tensor, kernel: tuple[int, int, int],
                           budget: int = NA_SCORE_BUDGET) -> Tensor:
    """3D neighbourhood attention with NATTEN `na3d` semantics and scale 1 (q comes scaled).

    q, k, v: (B, T, H, W, heads, head_dim) -> (B, T, H, W, heads, head_dim). Queries are taken in tiles whose
    key boxes (the union of their windows) keep tile x box <= `budget`; each tile is one SDPA call with a
    boolean mask, which leaves each query exactly its own window.
    """
    B, T, H, W, heads, head_dim = q.shape
    dims = (T, H, W)
    if any(d < kk for d, kk in zip(dims, kernel)):
        raise ValueError(f"neighborhood attention needs a grid at least its kernel: (T, H, W) = {dims}, "
                         f"kernel {tuple(kernel)}")
    tile = _query_tile(dims, kernel, budget)
    out = torch.empty_like(v)
    for t0 in range(0, T, tile[0]):
        for h0 in range(0, H, tile[1]):
            for w0 in range(0, W, tile[2]):
                queries, keys, visible = [], [], []
                for a0, n, length, kk in zip((t0, h0, w0), tile, dims, kernel):
                    a1 = min(a0 + n, length)
                    r0, r1 = _window_start(a0, length, kk), _window_start(a1 - 1, length, kk) + kk
                    starts = (torch.arange(a0, a1, device=q.device) - kk // 2).clamp(0, length - kk)
                    j = torch.arange(r0, r1, device=q.device)
                    visible.append((j[None] >= starts[:, None]) & (j[None] < starts[:, None] + kk))  # (n_a, m_a)
                    queries.append(slice(a0, a1))
                    keys.append(slice(r0, r1))
                vt, vh, vw = visible
                mask = (vt[:, None, None, :, None, None] & vh[None, :, None, None, :, None]
                        & vw[None, None, :, None, None, :])  # (nt, nh, nw, mt, mh, mw)
                nq = vt.shape[0] * vh.shape[0] * vw.shape[0]
                mask = mask.reshape(nq, -1)  # (Nq, Nk)
                qs = q[:, queries[0], queries[1], queries[2]]  # (B, nt, nh, nw, heads, head_dim)
                ks, vs = (x[:, keys[0], keys[1], keys[2]].reshape(B, -1, heads, head_dim) for x in (k, v))
                o = F.scaled_dot_product_attention(qs.reshape(B, nq, heads, head_dim).transpose(1, 2),
                                                   ks.transpose(1, 2), vs.transpose(1, 2), attn_mask=mask,
                                                   scale=1.0)  # (B, heads, Nq, head_dim)
                out[:, queries[0], queries[1], queries[2]] = o.transpose(1, 2).reshape(qs.shape)
    return out


def natten_available() -> bool:
    """The natten package is importable (NATTEN's kernels; without CUDA it has only flex attention, uncompiled)."""
    return importlib.util.find_spec("natten") is not None


def natten_attention(q: Tensor, k: Tensor, v: Tensor, kernel: tuple[int, int, int],
                     natten_backend: str | None = None) -> Tensor:
    """`neighborhood_attention` through NATTEN: ltx-core's call, `natten.na3d(q, k, v, kernel_size, scale=1.0)`
    (stride, dilation 1, not causal; q, k, v already in na3d's heads-last layout (B, T, H, W, heads, head_dim)).

    NATTEN takes kernels >= 2 only: an axis with kernel 1 (each token sees its own position on it) is folded into
    the batch and the rest goes to na2d / na1d (all three 1: the output is v). `natten_backend` is NATTEN's own
    kernel choice ("cutlass-fna", "hopper-fna", "blackwell-fna", "flex-fna"; None: NATTEN picks, flex-fna on a
    CPU). float32 / float16 / bfloat16 only (NATTEN has no float64).
    """
    B, T, H, W, heads, head_dim = q.shape
    dims = (T, H, W)
    if any(d < kk for d, kk in zip(dims, kernel)):
        raise ValueError(f"neighborhood attention needs a grid at least its kernel: (T, H, W) = {dims}, "
                         f"kernel {tuple(kernel)}")
    if q.dtype not in NATTEN_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"natten attention takes float32 / float16 / bfloat16 q, k, v of one dtype, got {q.dtype}, "
                         f"{k.dtype}, {v.dtype}; switch it off with use_natten(model, False)")
    try:
        import natten  # optional: see use_natten
    except ImportError:
        raise ImportError(f"natten attention: the natten package is not installed ({NATTEN_INSTALL})") from None
    kept = [a for a in range(3) if kernel[a] > 1]
    if not kept:
        return v.clone()  # a window of one token: softmax weight 1 on itself
    folded = [a for a in range(3) if kernel[a] == 1]
    order = (0, *(1 + a for a in folded), *(1 + a for a in kept), 4, 5)  # folded axes next to the batch
    grid = [dims[a] for a in kept]

    def fold(x: Tensor) -> Tensor:  # (B, T, H, W, heads, d) -> (B x folded, *kept, heads, d), contiguous
        return x.permute(order).reshape(-1, *grid, heads, head_dim).contiguous()

    na = (natten.na1d, natten.na2d, natten.na3d)[len(kept) - 1]
    out = na(fold(q), fold(k), fold(v), kernel_size=tuple(kernel[a] for a in kept), scale=1.0,
             backend=natten_backend)
    out = out.reshape(B, *(dims[a] for a in folded), *grid, heads, head_dim)
    return out.permute([order.index(i) for i in range(6)]).contiguous()


def use_natten(model: nn.Module, enabled: bool = True, natten_backend: str | None = None) -> int:
    """Run every `NeighborhoodAttention` under `model` through NATTEN (`natten_attention`) or, `enabled=False`,
    back through `neighborhood_attention`; returns how many modules were switched. The same numbers up to float
    rounding (tests/ltx2/test_ltx2_natten.py). `natten_backend`: NATTEN's kernel choice (see `natten_attention`)."""
    if enabled and not natten_available():
        raise ImportError(f"use_natten: the natten package is not installed ({NATTEN_INSTALL})")
    modules = [m for m in model.modules() if isinstance(m, NeighborhoodAttention)]
    for m in modules:
        m.na_backend = "natten" if enabled else "torch"
        m.natten_backend = natten_backend if enabled else None
    return len(modules)


class QKVProjections(nn.Module):
    """q, k, v as three Linears (ltx-core `QKVProjections`, keys qkv.to_q / to_k / to_v; the files fuse them)."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)


class NeighborhoodAttention(nn.Module):
    """Multi-head 3D NA with per-head q/k RMSNorm and absolute RoPE: (B, T, H, W, D) -> (B, T, H, W, D).
    `score_budget` (mask elements per SDPA call) trades memory for calls; it does not change the result.
    `na_backend` "natten" (set by `use_natten`) runs the attention through NATTEN instead, the same up to rounding."""

    def __init__(self, dim: int, kernel: tuple[int, int, int], head_dim: int):
        super().__init__()
        self.heads, self.head_dim, self.kernel = dim // head_dim, head_dim, tuple(kernel)
        self.split = rope_split(head_dim)
        self.score_budget = NA_SCORE_BUDGET
        self.na_backend = "torch"  # "natten": natten_attention (set from outside by use_natten)
        self.natten_backend: str | None = None  # NATTEN's own kernel choice, None: its pick
        self.qkv = QKVProjections(dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(head_dim, eps=NORM_EPS)
        self.k_norm = nn.RMSNorm(head_dim, eps=NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        shape = (*x.shape[:-1], self.heads, self.head_dim)  # (B, T, H, W, heads, head_dim)
        q = self.q_norm(self.qkv.to_q(x).view(shape)) * self.head_dim**-0.5  # scaled before RoPE, as ltx-core
        k = self.k_norm(self.qkv.to_k(x).view(shape))
        v = self.qkv.to_v(x).view(shape)
        q, k = rope_3d(q, self.split), rope_3d(k, self.split)
        if self.na_backend == "natten":
            out = natten_attention(q, k, v, self.kernel, self.natten_backend)
        else:
            out = neighborhood_attention(q, k, v, self.kernel, self.score_budget)
        return self.proj(out.flatten(-2))


class SwiGLU(nn.Module):
    """w_down(silu(w_gate x) * w_up x), no biases, on SWIGLU_TOKENS tokens at a time."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_up = nn.Linear(dim, hidden, bias=False)
        self.w_gate = nn.Linear(dim, hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (N, D): the hidden width is 4 D, so bound N at a time
        parts = [self.w_down(F.silu(self.w_gate(c)) * self.w_up(c)) for c in flat.split(SWIGLU_TOKENS)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).view(x.shape)


def _mlp_hidden(dim: int) -> int:
    return (dim * 4 + 15) // 16 * 16  # ltx-core: int(dim * mlp_ratio 4.0) rounded up to 16


class NABlock(nn.Module):
    """Deterministic pre-norm block: x + NA(rmsnorm x), then x + SwiGLU(rmsnorm x)."""

    def __init__(self, dim: int, kernel: tuple[int, int, int], head_dim: int):
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=NORM_EPS)
        self.attn = NeighborhoodAttention(dim, kernel, head_dim)
        self.norm2 = nn.RMSNorm(dim, eps=NORM_EPS)
        self.mlp = SwiGLU(dim, _mlp_hidden(dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DiffusionNABlock(nn.Module):
    """Stage-5 block: adds the projected context, then NA and SwiGLU on adaLN-modulated norms, ungated."""

    def __init__(self, dim: int, kernel: tuple[int, int, int], context_dim: int, head_dim: int):
        super().__init__()
        self.context_proj = nn.Linear(context_dim, dim)
        self.scale_shift_table = nn.Parameter(torch.zeros(AdaLNZero.CHUNKS, dim))
        self.norm1 = nn.RMSNorm(dim, eps=NORM_EPS)
        self.attn = NeighborhoodAttention(dim, kernel, head_dim)
        self.norm2 = nn.RMSNorm(dim, eps=NORM_EPS)
        self.mlp = SwiGLU(dim, _mlp_hidden(dim))

    def forward(self, x: Tensor, context: Tensor, modulation: tuple[Tensor, ...]) -> Tensor:
        # x: (B, T, H, W, D5), context: (B, T, H, W, D_ctx), modulation: 7 x (B, 1, 1, 1, D5)
        scale_msa, shift_msa, _, scale_mlp, shift_mlp, _, _ = (
            m + row.view(1, 1, 1, 1, -1) for m, row in zip(modulation, self.scale_shift_table))
        x = x + self.context_proj(context)
        x = x + self.attn(self.norm1(x) * (1 + scale_msa) + shift_msa)
        return x + self.mlp(self.norm2(x) * (1 + scale_mlp) + shift_mlp)


class AdaLNZero(nn.Module):
    """Timestep embedding -> 7 chunks (B, 1, 1, 1, D): scale_msa, shift_msa, gate_msa, scale_mlp, shift_mlp,
    gate_mlp, gate_ctx (the gates are unused: the residuals are ungated). Shared by all stage-5 blocks."""

    CHUNKS = 7

    def __init__(self, dim: int, t_emb_dim: int):
        super().__init__()
        self.proj = nn.Linear(t_emb_dim, self.CHUNKS * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, t_emb: Tensor) -> tuple[Tensor, ...]:
        return tuple(c[:, None, None, None] for c in self.proj(F.silu(t_emb)).chunk(self.CHUNKS, dim=-1))


class PixelShuffleUpsample(nn.Module):
    """Linear D -> s_t s_h s_w D / r, then depth-to-space (channel = c s_t s_h s_w + i_t s_h s_w + i_h s_w + i_w);
    a temporal stride 2 drops the first output frame (the causal 1 + 2k mapping) unless `drop_first=False` (a
    temporal tile that does not start at frame 0: its first frame is an interior one, both output frames real)."""

    def __init__(self, dim: int, stride: tuple[int, int, int], reduction: int):
        super().__init__()
        self.stride, self.out_dim = stride, dim // reduction
        self.proj = nn.Linear(dim, math.prod(stride) * dim // reduction)

    def forward(self, x: Tensor, drop_first: bool = True) -> Tensor:
        B, T, H, W, _ = x.shape
        st, sh, sw = self.stride
        x = self.proj(x).view(B, T, H, W, self.out_dim, st, sh, sw)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(B, T * st, H * sh, W * sw, self.out_dim)
        return x[:, 1:] if st == 2 and drop_first else x


class TimestepEmbedding(nn.Module):
    """Holds the timestep MLP under the official key `t_embedder.timestep_embedder.*` (PixArt-alpha's combined
    embedding without size conditioning)."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        return self.timestep_embedder(t, dtype)


# ------------------------------------------------------------------------------------------------ the decoder


class DiffusionDecoder(nn.Module):
    """`context(z)`: raw latents -> stage-5 context; `forward(x, context, sigma)`: one denoiser call (the model's
    prediction at noise level sigma). `decode(decoder, latents)` runs the whole procedure."""

    def __init__(self, cfg: DiffusionDecoderConfig):
        super().__init__()
        self.cfg = cfg
        channels, p = cfg.stage_channels, cfg.patch_size
        self.per_channel_statistics = LatentStatistics(cfg.in_channels, USED_STATISTICS)
        with torch.no_grad():  # identity until loaded (ltx-core's defaults)
            self.per_channel_statistics.mean.zero_()
            self.per_channel_statistics.std.fill_(1.0)
        self.conv_in = nn.Linear(cfg.in_channels, channels[0])
        self.det_stages = nn.ModuleList(
            nn.ModuleList(NABlock(c, kernel, cfg.head_dim) for _ in range(depth))
            for c, depth, kernel in zip(channels[:4], cfg.stage_depths[:4], cfg.stage_kernels[:4]))
        self.upsamples = nn.ModuleList(
            PixelShuffleUpsample(c, stride, reduction) for c, (stride, reduction) in zip(channels[:4], cfg.upsamples))
        self.t_embedder = TimestepEmbedding(cfg.t_emb_dim)
        d5 = cfg.stage5_dim
        self.conv_in_x_t = nn.Linear(cfg.out_channels * p * p, d5)
        self.shared_adaln = AdaLNZero(d5, cfg.t_emb_dim)
        self.diff_blocks = nn.ModuleList(
            DiffusionNABlock(d5, cfg.stage5_kernel, channels[-1], cfg.head_dim) for _ in range(cfg.stage_depths[-1]))
        self.norm_out = nn.RMSNorm(d5, eps=NORM_EPS)
        self.conv_out = nn.Linear(d5, cfg.out_channels * p * p)

    def context(self, z: Tensor) -> Tensor:
        """Stages 1-4. z: raw (de-normalized) latents (B, C, F', H', W'), at least `cfg.min_latent_size` ->
        context (B, F5, H5, W5, D_ctx), F5 = max(8 (F' - 1) + 1, stage-5 temporal kernel), H5 = H' x 8 (strides)."""
        return self.stage_4(self.stages_1_to_3(z))

    def stages_1_to_3(self, z: Tensor) -> Tensor:
        """The ghost frames appended, conv_in and stages 1-3: raw latents (B, C, F', H', W') -> the stage-4 input
        (B, F4 + ghost x s, H4, W4, D4), ghost frames still at the end (s: the three upsamples' temporal product)."""
        ghost = self.cfg.ghost_frames
        z = torch.cat([z, z[:, :, -1:].expand(-1, -1, ghost, -1, -1)], dim=2)  # (B, C, F' + ghost, H', W')
        x = self.conv_in(z.permute(0, 2, 3, 4, 1))  # (B, F' + ghost, H', W', D1)
        for blocks, upsample in zip(self.det_stages[:3], self.upsamples[:3]):
            for block in blocks:
                x = block(x)
            x = upsample(x)
        return x

    def stage_4(self, x: Tensor, first: bool = True, last: bool = True) -> Tensor:
        """Stage 4 on the stage-4 input or a tile of it -> context. `first`: the tile starts at frame 0 (the
        upsample drops its duplicated first frame); `last`: it holds the ghost frames, cropped off again keeping at
        least the stage-5 temporal kernel (ltx-core)."""
        for block in self.det_stages[3]:
            x = block(x)
        x = self.upsamples[3](x, drop_first=first)
        if not last:
            return x
        frames = max(x.shape[1] - self.cfg.ghost_frames * self.cfg.scale[0], 1)
        return x[:, :max(frames, self.cfg.stage5_kernel[0])]

    def forward(self, x: Tensor, context: Tensor, sigma: Tensor | float) -> Tensor:
        """x: (B, out_channels, F, H, W) noisy pixels at noise level sigma (float or (B,)), context from
        `context` on the (F, H / p, W / p) grid -> the prediction (x0 or velocity, `cfg.model_output_type`)."""
        cfg, p = self.cfg, self.cfg.patch_size
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        modulation = self.shared_adaln(self.t_embedder(cfg.timestep_scale_multiplier * sigma, context.dtype))
        h = self.conv_in_x_t(patchify(x, p).permute(0, 2, 3, 4, 1))  # (B, F, H / p, W / p, D5)
        for block in self.diff_blocks:
            h = block(h, context, modulation)
        h = self.conv_out(self.norm_out(h))  # (B, F, H / p, W / p, out_channels p^2)
        return unpatchify(h.permute(0, 4, 1, 2, 3), p)  # (B, out_channels, F, H, W)


def _pad_to(z: Tensor, size: tuple[int, int, int]) -> tuple[Tensor, tuple[int, int]]:
    # edge-replicate z (B, C, T, H, W) up to `size`: time at the end, space split before / after (the extra one
    # after); returns the rows / columns added before
    need = [max(0, n - d) for n, d in zip(size, z.shape[2:])]
    if need[0]:
        z = torch.cat([z, z[:, :, -1:].expand(-1, -1, need[0], -1, -1)], dim=2)
    before = []
    for dim, n in ((3, need[1]), (4, need[2])):
        lo, hi = n // 2, n - n // 2
        parts = [z.narrow(dim, 0, 1).repeat_interleave(lo, dim)] if lo else []
        parts += [z] + ([z.narrow(dim, z.shape[dim] - 1, 1).repeat_interleave(hi, dim)] if hi else [])
        z = torch.cat(parts, dim=dim) if n else z
        before.append(lo)
    return z, (before[0], before[1])


def _steps_and_generator(cfg: DiffusionDecoderConfig, steps: int | None, generator: torch.Generator | None,
                         seed: int | None) -> tuple[int, torch.Generator | None]:
    steps = cfg.default_num_inference_steps if steps is None else steps
    if steps < 1:
        raise ValueError(f"diffusion decode needs at least one step, got {steps}")
    if seed is not None:
        if generator is not None:
            raise ValueError("diffusion decode takes a generator or a seed, not both")
        generator = torch.Generator().manual_seed(seed)
    return steps, generator


def _noise(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    # drawn on the generator's device in `like`'s dtype, then moved to `like`'s device
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _grown(x: Tensor, frames: int) -> Tensor:
    # x (B, C, F, H, W) with its last frame repeated up to `frames` (ltx-core's pixel canvas for the stage-5 kernel)
    return torch.cat([x, x[:, :, -1:].expand(-1, -1, frames - x.shape[2], -1, -1)], dim=2)


def _denoise(decoder: DiffusionDecoder, x: Tensor, context: Tensor, steps: int,
             callback: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """The sampling loop (module docstring) from the noise x (B, C, F, H, W) on `context`'s grid."""
    cfg = decoder.cfg
    sigmas = torch.linspace(1.0, 1.0 / steps, steps).to(x.device)
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    for i in range(steps):
        if callback is not None:
            callback(i, x)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        pred = decoder(x, context, sigma.expand(x.shape[0]))
        if cfg.model_output_type == "x0" and i == steps - 1:
            return pred  # the velocity step to sigma 0 would land on the prediction itself
        x32, pred = x.float(), pred.float()
        velocity = pred if cfg.model_output_type == "v" else (x32 - pred) / sigma
        x = (x32 - (sigma - sigma_next) * velocity).to(x.dtype)
    return x


def decode(decoder: DiffusionDecoder, latents: Tensor, *, steps: int | None = None,
           generator: torch.Generator | None = None, seed: int | None = None, normalized: bool = True,
           callback: Callable[[int, Tensor], None] | None = None,
           tiling: DiffusionDecodeTiling | None = None) -> Tensor:
    """Latents -> pixels (B, out_channels, 8 (F' - 1) + 1, 32 H', 32 W') in about [-1, 1] (factors: `cfg.scale`).

    Args:
        decoder: the diffusion decoder.
        latents: (B, C, F', H', W'); normalized (the transformer's latent space) unless `normalized=False`, in
            which case they are raw and the statistics are not applied.
        steps: denoising steps (default `cfg.default_num_inference_steps`).
        generator: draws the initial noise (on its own device, in the latents' dtype); or `seed` for a fresh CPU
            generator. Neither: the global RNG.
        callback: called as callback(i, x) with the pixels entering step i (x is pure noise for i = 0); untiled
            decodes only.
        tiling: stages 4-5 tile by tile (`DiffusionDecodeTiling`, ltx-core's tiled decode); None: untiled.
    """
    cfg = decoder.cfg
    shapes.check_latent_shape(tuple(latents.shape), channels=cfg.in_channels, vae_name=" (diffusion decoder)")
    steps, generator = _steps_and_generator(cfg, steps, generator, seed)
    if tiling is not None and callback is not None:
        raise ValueError("diffusion decode: callback= sees the one canvas of an untiled decode; pass tiling=None")
    B, _, frames, height, width = latents.shape
    z = decoder.per_channel_statistics.denormalize(latents) if normalized else latents
    z, (top, left) = _pad_to(z, cfg.min_latent_size)
    (ft, fh, fw), p = cfg.scale, cfg.patch_size
    if tiling is not None:
        x = _tiled(decoder, z, tiling, steps, generator)
    else:
        context = decoder.context(z)  # (B, F5, H5, W5, D_ctx)
        canvas = (B, cfg.out_channels, context.shape[1], context.shape[2] * p, context.shape[3] * p)
        if steps == 1 and cfg.model_output_type == "x0":
            x = _noise(canvas, generator, latents)
        else:  # ltx-core draws the output's shape and repeats the last frame up to the stage-5 kernel
            x = _noise((B, cfg.out_channels, (z.shape[2] - 1) * ft + 1, *canvas[3:]), generator, latents)
            x = _grown(x, canvas[2])
        x = _denoise(decoder, x, context, steps, callback)
    out_frames = (frames - 1) * ft + 1
    return x[:, :, :out_frames, top * fh:(top + height) * fh, left * fw:(left + width) * fw]


# ------------------------------------------------------------------------------------------------ tiled decoding


@dataclass(frozen=True, kw_only=True)
class DiffusionDecodeTiling:
    """Tile sizes and overlaps for `decode(..., tiling=)`, in output pixels (both spatial axes) and frames; None:
    that axis untiled. The defaults are ltx-core's `TileSizeConfig.default()`. Against a decoder (`check_tiling`):
    sizes and overlaps are multiples of its stage-4 cell (`tile_cell`: 2 frames, 8 px released), a tile holds at
    least the tiled stages' kernels (`min_tile`) and an overlap covers their reach (`min_tile_overlap`: 8 frames,
    64 px for the released decoder)."""

    spatial_tile_px: int | None = 768
    spatial_overlap_px: int = 64
    temporal_tile_frames: int | None = 80
    temporal_overlap_frames: int = 24

    def __post_init__(self) -> None:
        for what, tile, overlap in (("spatial", self.spatial_tile_px, self.spatial_overlap_px),
                                    ("temporal", self.temporal_tile_frames, self.temporal_overlap_frames)):
            if tile is not None and not (isinstance(tile, int) and isinstance(overlap, int) and 0 <= overlap < tile):
                raise ValueError(f"diffusion decode {what} tile {tile!r} with overlap {overlap!r}: expected integers "
                                 "with 0 <= overlap < tile (or tile None: that axis untiled)")


class AxisTile(NamedTuple):
    """One tile along one axis: stage-4 cells [start, end), output pixels / frames [pixel_start, pixel_end) and the
    blend weights over them (length 1 on an untiled axis: broadcast)."""

    start: int
    end: int
    pixel_start: int
    pixel_end: int
    weights: Tensor


def tile_cell(cfg: DiffusionDecoderConfig) -> tuple[int, int, int]:
    """Output (frames, rows, columns) per cell of the stage-4 input, the grid tiles are cut on: the last upsample's
    strides, times the patch size in space ((2, 8, 8) for the released layout)."""
    (st, sh, sw), p = cfg.upsamples[3][0], cfg.patch_size
    return st, sh * p, sw * p


def min_tile(cfg: DiffusionDecoderConfig) -> tuple[int, int, int]:
    """The smallest tile in stage-4 cells: stage 4 sees it as is, stage 5 upsampled (ltx-core
    `compute_tile_min_size`)."""
    stride = cfg.upsamples[3][0]
    return tuple(max(k4, -(-k5 // s)) for k4, k5, s in zip(cfg.stage_kernels[3], cfg.stage5_kernel, stride))  # type: ignore[return-value]


def min_tile_overlap(cfg: DiffusionDecoderConfig) -> tuple[int, int]:
    """The least (frames, pixels) overlap: the farther reach of stage 4 (depth x half kernel, in cells) or stage 5
    (depth x half kernel, in its own grid, over the upsample), in output units, rounded up to the pixels per latent
    voxel (ltx-core `recommended_pixel_overlaps`, which rounds to its fixed 8 / 32)."""
    stride, cell = cfg.upsamples[3][0], tile_cell(cfg)
    reach = [max(cfg.stage_depths[3] * (k4 // 2), -(-cfg.stage_depths[4] * (k5 // 2) // s))
             for k4, k5, s in zip(cfg.stage_kernels[3], cfg.stage5_kernel, stride)]
    frames = -(-reach[0] * cell[0] // cfg.scale[0]) * cfg.scale[0]
    pixels = -(-max(reach[1], reach[2]) * cell[1] // cfg.scale[1]) * cfg.scale[1]
    return frames, pixels


def check_tiling(cfg: DiffusionDecoderConfig, tiling: DiffusionDecodeTiling) -> None:
    """One ValueError line when `tiling` does not fit the decoder (see `DiffusionDecodeTiling`)."""
    cell, smallest, (least_t, least_s) = tile_cell(cfg), min_tile(cfg), min_tile_overlap(cfg)
    axes = (("temporal", "frames", tiling.temporal_tile_frames, tiling.temporal_overlap_frames, (0,), least_t),
            ("spatial", "px", tiling.spatial_tile_px, tiling.spatial_overlap_px, (1, 2), least_s))
    for what, unit, tile, overlap, dims, least in axes:
        if tile is None:
            continue
        step = math.lcm(*(cell[d] for d in dims))
        lowest = max(max(2, smallest[d]) * cell[d] for d in dims)
        lowest = -(-lowest // step) * step
        if tile % step or overlap % step or tile < lowest or overlap < least:
            raise ValueError(f"diffusion decode {what} tile {tile} {unit} with overlap {overlap} {unit}: this decoder "
                             f"needs both multiples of {step} {unit} (its stage-4 cell), the tile at least {lowest} "
                             f"{unit} (its kernels) and the overlap at least {least} {unit} (the tiled stages' reach)")


def _axis_tiles(cells: int, tile: int | None, overlap: int, cell: int, smallest: int, causal: bool) -> list[AxisTile]:
    """ltx-core's `split_by_size` (the last tile grown back to `smallest` cells) and its interval propagation: cells
    times `cell` pixels; with `causal` and a 2x temporal upsample a tile ends one frame early and, unless it starts
    at 0, starts one frame early (the origin tile drops the duplicated frame, the others keep it). Symmetric linear
    ramps over the overlaps, ltx-core's trapezoid masks."""
    drop = causal and cell == 2
    pixels = cells * cell - drop
    size, overlap = tile // cell if tile is not None else cells, overlap // cell
    if tile is None or cells <= size or cells < smallest:
        return [AxisTile(0, cells, 0, pixels, torch.ones(1))]
    spans = [list(s) for s in _split_overlapping(cells, size, overlap)]  # [start, end, left ramp, right ramp]
    if spans[-1][1] - spans[-1][0] < smallest:  # it stays after its neighbour's start: size >= smallest
        start = cells - smallest
        spans[-2][3] = spans[-1][2] = spans[-2][1] - start
        spans[-1][0] = start
    out = []
    for start, end, left, right in spans:
        p0, p1 = start * cell - (drop and start > 0), end * cell - drop
        out.append(AxisTile(start, end, p0, p1, _ramp(p1 - p0, left * cell, right * cell, from_zero=False)))
    return out


def tile_layout(cfg: DiffusionDecoderConfig, latent_size: tuple[int, int, int],
                tiling: DiffusionDecodeTiling) -> tuple[list[AxisTile], list[AxisTile], list[AxisTile]]:
    """The (frames, rows, columns) tiles of a decode of latents of `latent_size` (F', H', W', at least
    `cfg.min_latent_size`), each axis over the stage-4 grid; a decode runs every combination (frames slowest)."""
    check_tiling(cfg, tiling)
    cells = [latent_size[0], latent_size[1], latent_size[2]]
    for stride, _ in cfg.upsamples[:3]:
        cells = [cells[0] * stride[0] - (stride[0] == 2), cells[1] * stride[1], cells[2] * stride[2]]
    cell, smallest = tile_cell(cfg), min_tile(cfg)
    sizes = (tiling.temporal_tile_frames, tiling.spatial_tile_px, tiling.spatial_tile_px)
    overlaps = (tiling.temporal_overlap_frames, tiling.spatial_overlap_px, tiling.spatial_overlap_px)
    return tuple(_axis_tiles(cells[a], sizes[a], overlaps[a], cell[a], smallest[a], a == 0)  # type: ignore[return-value]
                 for a in range(3))


def _tiled(decoder: DiffusionDecoder, z: Tensor, tiling: DiffusionDecodeTiling, steps: int,
           generator: torch.Generator | None) -> Tensor:
    """ltx-core's `DiffusionVideoDecoder._decode_pixels` with a tiling config: stages 1-3 once on the whole (padded)
    latents z, then per tile (frames slowest, then rows, columns) stage 4 on its cells (the tile at frame 0 drops
    the duplicated frame, the last one carries the ghost frames), the stage-5 sampling on its pixels, blended with
    the tile's separable weights into a float32 canvas (divided by the summed weights where they do not sum to 1).
    Noise: one-step x0 draws each tile's own, in tile order; otherwise one canvas is drawn and each tile starts
    from its part of it. Returns (B, C, 8 (F' - 1) + 1, H' 32, W' 32) pixels of z (uncropped), in z's dtype."""
    cfg, p = decoder.cfg, decoder.cfg.patch_size
    ft, fh, fw = cfg.scale
    frames_t, rows, cols = tile_layout(cfg, tuple(z.shape[2:]), tiling)  # type: ignore[arg-type]
    features = decoder.stages_1_to_3(z)  # (B, F4 + ghost cells, H4, W4, D4)
    cells = frames_t[-1].end
    B = z.shape[0]
    canvas = (B, cfg.out_channels, (z.shape[2] - 1) * ft + 1, z.shape[3] * fh, z.shape[4] * fw)
    start_noise = None if steps == 1 and cfg.model_output_type == "x0" else _noise(canvas, generator, z)
    out = torch.zeros(canvas, dtype=torch.float32, device=z.device)
    for t in frames_t:
        first, last = t.start == 0, t.end == cells
        group = torch.zeros((*canvas[:2], t.pixel_end - t.pixel_start, *canvas[3:]), dtype=torch.float32,
                            device=z.device)
        for r in rows:
            for c in cols:
                end = features.shape[1] if last else t.end
                context = decoder.stage_4(features[:, t.start:end, r.start:r.end, c.start:c.end], first, last)
                shape = (B, cfg.out_channels, context.shape[1], context.shape[2] * p, context.shape[3] * p)
                if start_noise is None:
                    x = _noise(shape, generator, z)
                else:
                    x = start_noise[:, :, t.pixel_start:t.pixel_end, r.pixel_start:r.pixel_end,
                                    c.pixel_start:c.pixel_end]
                    x = _grown(x, shape[2])
                x = _denoise(decoder, x, context, steps)[:, :, :t.pixel_end - t.pixel_start].float()
                wt, wr, wc = (a.weights.to(z.device) for a in (t, r, c))
                group[:, :, :, r.pixel_start:r.pixel_end, c.pixel_start:c.pixel_end] += (
                    x * wt[:, None, None] * wr[:, None] * wc)
        out[:, :, t.pixel_start:t.pixel_end] += group
    sums = []
    for axis, length in zip((frames_t, rows, cols), canvas[2:]):
        total = torch.zeros(length)
        for a in axis:
            total[a.pixel_start:a.pixel_end] += a.weights
        sums.append(total)
    if not all(torch.allclose(s, torch.ones_like(s), atol=1e-5, rtol=0) for s in sums):  # ltx-core's test
        weight = sums[0][:, None, None] * sums[1][:, None] * sums[2]
        out = out / weight.clamp(min=1e-8).to(z.device)
    return out.to(z.dtype)


# ------------------------------------------------------------------------------------------------ key layouts

OFFICIAL_PREFIXES = ("vae.decoder.", "decoder.")  # bundled VAE file, standalone decoder file
STATISTICS_PREFIXES = ("vae.per_channel_statistics.", "per_channel_statistics.")
_GATE_TARGETS = {  # ltx-core folds a file's static gates into the Linear after them: W <- g W, b <- g b
    "attn.proj": "gate_msa", "mlp.w_down": "gate_mlp", "context_proj": "gate_ctx"}
_T_EMBEDDER = (("t_embedder.mlp.0.", "t_embedder.timestep_embedder.linear_1."),
               ("t_embedder.mlp.2.", "t_embedder.timestep_embedder.linear_2."))


def _strip(key: str, prefixes: tuple[str, ...]) -> str | None:
    return next((key[len(p):] for p in prefixes if key.startswith(p)), None)


def from_official_file(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An official file's tensors -> the decoder's state dict (ltx-core's loader ops, strict).

    Reads `vae.decoder.*` / `decoder.*` and `vae.per_channel_statistics.*` (other components, e.g. the encoder, are
    left alone): splits the fused `attn.qkv.{weight,bias}` into q, k, v, renames `t_embedder.mlp.{0,2}`, folds
    `gate_msa` / `gate_mlp` / `gate_ctx` into the following Linear (in float32, rounded back), drops `coarse_*` (a
    preview head) and the statistics the decoder never reads (`channel`, `mean-of-stds`).
    """
    out: dict[str, Tensor] = {}
    decoder: dict[str, Tensor] = {}
    gates: dict[str, Tensor] = {}
    for key, value in sd.items():
        name = _strip(key, STATISTICS_PREFIXES)
        if name is not None:
            if name in USED_STATISTICS:
                out[f"per_channel_statistics.{name}"] = value
            elif name not in UNREAD_STATISTICS:
                raise ValueError(f"unknown latent statistic {key!r} (known: {USED_STATISTICS + UNREAD_STATISTICS})")
            continue
        name = _strip(key, OFFICIAL_PREFIXES)
        if name is None or name.startswith("coarse_"):
            continue
        for old, new in _T_EMBEDDER:
            if name.startswith(old):
                name = new + name[len(old):]
        if name.rsplit(".", 1)[-1] in _GATE_TARGETS.values():
            gates[name] = value
        else:
            decoder[name] = value
    folded = set()
    for name, value in decoder.items():
        owner, _, leaf = name.rpartition(".")  # e.g. "diff_blocks.0.attn.proj", "weight"
        for target, gate_name in _GATE_TARGETS.items():
            gate_key = owner[: -len(target)] + gate_name
            if owner.endswith("." + target) and gate_key in gates:
                g = gates[gate_key].float()
                value = ((g[:, None] if value.ndim == 2 else g) * value.float()).to(value.dtype)
                folded.add(gate_key)
        if owner.endswith(".attn.qkv"):
            for proj, part in zip(("to_q", "to_k", "to_v"), value.chunk(3)):
                out[f"{owner}.{proj}.{leaf}"] = part
        else:
            out[name] = value
    unused = sorted(set(gates) - folded)
    if unused:
        raise ValueError(f"{len(unused)} gates have no Linear to fold into, e.g. {unused[:3]}")
    return out


def to_official_file(sd: Mapping[str, Tensor], prefix: str = "vae.decoder.") -> dict[str, Tensor]:
    """The decoder's state dict -> the official file layout (fused qkv, `t_embedder.mlp.{0,2}`, statistics under
    `vae.per_channel_statistics.`), which `from_official_file` and ltx-core read back. No gates (folded)."""
    if prefix not in OFFICIAL_PREFIXES:
        raise ValueError(f"official decoder prefix {prefix!r} (supported: {OFFICIAL_PREFIXES})")
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.startswith("per_channel_statistics."):
            out[("vae." if prefix.startswith("vae.") else "") + key] = value
            continue
        owner, _, leaf = key.rpartition(".")
        if owner.endswith(".attn.qkv.to_q"):
            base = owner[: -len(".to_q")]
            key, value = f"{base}.{leaf}", torch.cat([value, sd[f"{base}.to_k.{leaf}"], sd[f"{base}.to_v.{leaf}"]])
        elif owner.endswith((".attn.qkv.to_k", ".attn.qkv.to_v")):
            continue  # fused with to_q
        for old, new in _T_EMBEDDER:
            if key.startswith(new):
                key = old + key[len(new):]
        out[prefix + key] = value
    return out


def _attention_rules(block: str) -> tuple[Rule, ...]:
    pairs = (("qkv.to_q", "to_q"), ("qkv.to_k", "to_k"), ("qkv.to_v", "to_v"), ("proj", "to_out.0"),
             ("q_norm", "norm_q"), ("k_norm", "norm_k"))
    return tuple(Rule(f"{block}.attn.{ours}.{{rest}}", f"decoder.{block}.attn.{theirs}.{{rest}}")
                 for ours, theirs in pairs)


# ours -> diffusers' LTX2VideoDiffusionDecoderModel; every other key gains the prefix `decoder.`
DIFFUSERS_RULES: tuple[Rule, ...] = (
    Rule("per_channel_statistics.mean-of-means", "latents_mean"),
    Rule("per_channel_statistics.std-of-means", "latents_std"),
    *_attention_rules("det_stages.{i}.{j}"),
    *_attention_rules("diff_blocks.{i}"),
    Rule("{rest}", "decoder.{rest}"),
)


def to_diffusers_keys(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The decoder's state dict -> diffusers `LTX2VideoDiffusionDecoderModel` keys (values not copied)."""
    return apply(sd, DIFFUSERS_RULES)


def from_diffusers_keys(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers `LTX2VideoDiffusionDecoderModel` keys -> the decoder's state dict (values not copied)."""
    return apply(sd, invert(DIFFUSERS_RULES))


# ------------------------------------------------------------------------------------------------ files


def read_decoder_file(path: str | os.PathLike) -> DiffusionDecoderConfig:
    """The config of an LTX-2.5 diffusion-VAE file (`ltx-2.5-video-vae-bf16.safetensors`: the decoder under
    `vae.decoder.`), checked against its header before any tensor is read: the keys and shapes the file's tensors
    become (`from_official_file`, run on `meta`) must be the decoder's. One line (CheckpointError) otherwise."""
    reader = SafetensorsReader(path)
    try:
        vae = json.loads(reader.metadata.get("config", "{}")).get("vae")
    except (json.JSONDecodeError, AttributeError):
        vae = None
    if not isinstance(vae, dict):
        raise CheckpointError(f"{path}: no `vae` object in the metadata config; an LTX-2.5 diffusion-VAE file carries "
                              "its decoder's architecture there")
    try:
        cfg = DiffusionDecoderConfig.from_metadata(vae)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    ghosts = {k: torch.empty(i.shape, dtype=i.dtype, device="meta") for k, i in reader.infos.items()
              if _strip(k, OFFICIAL_PREFIXES + STATISTICS_PREFIXES) is not None}
    try:
        found = {k: tuple(v.shape) for k, v in from_official_file(ghosts).items()}
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in DiffusionDecoder(cfg).state_dict().items()}
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if missing or extra or wrong:
        raise CheckpointError(f"{path}: the decoder tensors do not fit its metadata config: {len(missing)} missing "
                              f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}), {len(wrong)} of "
                              f"another shape (e.g. {wrong[:2]})")
    return cfg


def load_decoder(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None) -> DiffusionDecoder:
    """`read_decoder_file`, then the decoder built on `meta` and filled strictly from the file (cast to `dtype`)."""
    cfg = read_decoder_file(path)
    reader = SafetensorsReader(path)
    tensors = {k: reader.get(k) for k in reader.keys() if _strip(k, OFFICIAL_PREFIXES + STATISTICS_PREFIXES)}
    sd = from_official_file(tensors)
    with torch.device("meta"):
        decoder = DiffusionDecoder(cfg)
    sd = {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
          for k, v in sd.items()}
    load_strict(decoder, sd, what=str(path))
    return decoder.eval()
