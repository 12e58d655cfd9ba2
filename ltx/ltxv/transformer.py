"""LTX-Video 0.9.x diffusion transformer (the official "Transformer3DModel"), all of it in this file.

References: HaCohen et al., "LTX-Video: Realtime Video Latent Diffusion" (arXiv 2501.00103); the official
`ltx_video/models/transformers/{transformer3d,attention}.py` (ltx-video 0.1.2), which this matches number
for number (tests/parity).

Shapes: B batch · T video tokens · S text tokens · D = num_heads * head_dim · C latent channels.
x: (B, T, C) patchified latents (`ltx.ltxv.patchify.patchify`), token order (frame, row, column).
sigma: (B,), (B, 1) or (B, T) in [0, 1], 1 = pure noise. Per-token sigma drives AdaLN per token (conditioning
       tokens carry a smaller sigma). The model multiplies sigma by `timestep_scale` (1000) itself.
positions: (B, 3, T) float (seconds, pixel_y, pixel_x) of each token; see `ltx.ltxv.rope`.
context: (B, S, caption_channels) T5 states; context_mask: (B, S), 1 = real token, 0 = padding.
Output: (B, T, C) velocity v = noise - x0 (rectified flow, x_sigma = (1 - sigma) x0 + sigma noise).

fp32 islands (as in the official model): the sinusoidal timestep features, the RoPE angles, and the
variance inside RMSNorm. The text-padding bias is -10000 in the dtype of `x` (-9984 in bf16), not -inf.

Module names are the official checkpoint keys: attn1 = self-attention, attn2 = cross-attention to text,
ff = MLP, adaln_single = timestep embedding, scale_shift_table = per-block AdaLN offsets.

Spatio-temporal guidance (STG) perturbs chosen blocks for chosen batch rows: `skip_mask` (num_layers, B)
holds 1 for normal rows and 0 for perturbed rows, and `stg_mode` picks what "perturbed" means.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.nn import AdaLNSingle, CaptionProjection, FeedForward, QKNormAttention
from ltx.ltxv.rope import apply_rope, rope_tables


class STGMode(Enum):
    """What a perturbed (skip_mask = 0) row computes in a skipped block. Names as in the official configs."""

    attention_values = "attention_values"  # self-attention returns its values: an identity attention map
    attention_skip = "attention_skip"  # self-attention returns its input
    residual = "residual"  # official no-op for this model (its attention has no residual connection)
    transformer_block = "transformer_block"  # the whole block returns its input


@dataclass(kw_only=True)
class DiTConfig:
    """Defaults are LTX-Video 2B. Checkpoint metadata is read into this in ltx/ltxv/keys_official.py."""

    num_layers: int = 28
    num_heads: int = 32
    head_dim: int = 64
    in_channels: int = 128  # latent channels (patch size 1)
    out_channels: int = 128
    caption_channels: int = 4096  # T5-XXL width; projected to D by caption_projection
    max_positions: tuple[int, int, int] = (20, 2048, 2048)  # (seconds, px, px) mapped to [-1, 1] by RoPE
    rope_theta: float = 10_000.0
    timestep_scale: float = 1000.0
    norm_eps: float = 1e-6
    # Not used by the network: the pipeline reads it to place frame 0 at time 0 (0.9.5+; see ltx.ltxv.patchify).
    causal_temporal_positioning: bool = False

    def __post_init__(self):
        self.max_positions = tuple(int(m) for m in self.max_positions)
        if self.num_heads < 1 or self.head_dim < 1 or self.num_layers < 0:
            raise ValueError(f"invalid DiTConfig sizes: {self}")
        if self.dim < 6:
            raise ValueError(f"model width {self.dim} is too small for 3-axis RoPE (needs >= 6)")

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim


class Attention(QKNormAttention):
    """Multi-head attention with q/k RMSNorm over all heads jointly (official `qk_norm="rms_norm"`), RoPE on
    self-attention and the STG value / input passthrough."""

    def __init__(self, dim: int, num_heads: int):
        # context is already projected to D (caption_projection); official q/k norm eps 1e-5 (1e-6 elsewhere)
        super().__init__(dim, dim, num_heads, dim // num_heads, eps=1e-5)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        bias: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        skip: Tensor | None = None,
        stg_mode: STGMode = STGMode.attention_values,
    ) -> Tensor:
        # x: (B, T, D); context: (B, S, D) for cross-attention, None for self-attention; skip: (B, 1, 1)
        src = x if context is None else context
        q = self.q_norm(self.to_q(x))
        k = self.k_norm(self.to_k(src))
        v = self.to_v(src)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = self.attend(q, k, v, bias)  # (B, T, D)
        if skip is not None and stg_mode in (STGMode.attention_values, STGMode.attention_skip):
            keep = v if stg_mode is STGMode.attention_values else x
            out = out * skip + keep * (1 - skip)
        return self.to_out[0](out)


class Block(nn.Module):
    """Self-attention -> cross-attention to text -> MLP; self-attention and MLP modulated by AdaLN-single."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.attn1 = Attention(dim, num_heads)
        self.attn2 = Attention(dim, num_heads)
        self.ff = FeedForward(dim, 4 * dim)
        self.scale_shift_table = nn.Parameter(torch.empty(6, dim))
        self.eps = eps

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        context_bias: Tensor | None,
        rope: tuple[Tensor, Tensor],
        skip: Tensor | None = None,
        stg_mode: STGMode = STGMode.attention_values,
    ) -> Tensor:
        # x: (B, T, D); t: (B, 1 or T, 6D); context: (B, S, D); skip: (B, 1, 1), 0 = perturbed row
        D = x.shape[-1]
        ada = self.scale_shift_table + t.unflatten(-1, (6, D))  # (B, 1 or T, 6, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = ada.unbind(-2)
        h = F.rms_norm(x, (D,), eps=self.eps) * (1 + scale1) + shift1
        out = x + gate1 * self.attn1(h, rope=rope, skip=skip, stg_mode=stg_mode)
        out = out + self.attn2(out, context=context, bias=context_bias)  # 0.9.x: no norm, no gate here
        h = F.rms_norm(out, (D,), eps=self.eps) * (1 + scale2) + shift2
        out = out + gate2 * self.ff(h)
        if skip is not None and stg_mode is STGMode.transformer_block:
            out = out * skip + x * (1 - skip)
        return out


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.patchify_proj = nn.Linear(cfg.in_channels, D)
        self.adaln_single = AdaLNSingle(D)
        self.caption_projection = CaptionProjection(cfg.caption_channels, D)
        self.transformer_blocks = nn.ModuleList(Block(D, cfg.num_heads, cfg.norm_eps) for _ in range(cfg.num_layers))
        self.scale_shift_table = nn.Parameter(torch.empty(2, D))  # output head: shift, scale
        self.proj_out = nn.Linear(D, cfg.out_channels)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> DiT:
        """Training init (PixArt/DiT style); loading a checkpoint overwrites all of it."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.RMSNorm):
                nn.init.ones_(m.weight)
        D = self.cfg.dim
        for blk in self.transformer_blocks:
            blk.scale_shift_table.normal_(0, D**-0.5, generator=generator)
            nn.init.zeros_(blk.attn2.to_out[0].weight)  # text path starts silent
        self.scale_shift_table.normal_(0, D**-0.5, generator=generator)
        nn.init.zeros_(self.adaln_single.linear.weight)  # gates start at 0: every block starts as identity
        nn.init.normal_(self.adaln_single.emb.timestep_embedder.linear_1.weight, std=0.02, generator=generator)
        nn.init.normal_(self.adaln_single.emb.timestep_embedder.linear_2.weight, std=0.02, generator=generator)
        nn.init.zeros_(self.proj_out.weight)
        return self

    def forward(
        self,
        x: Tensor,
        sigma: Tensor,
        context: Tensor,
        context_mask: Tensor | None,
        positions: Tensor,
        *,
        skip_mask: Tensor | None = None,
        stg_mode: STGMode = STGMode.attention_values,
    ) -> Tensor:
        B, T, _ = x.shape
        cfg = self.cfg
        context_bias = None
        if context_mask is not None:  # (B, S) -> additive (B, 1, 1, S), in the dtype of the input latents
            context_bias = ((1 - context_mask.to(x.dtype)) * -10000.0)[:, None, None, :]
        h = self.patchify_proj(x)  # (B, T, D)
        dtype = h.dtype

        t = (cfg.timestep_scale * sigma).reshape(B, -1)  # (B, 1) or (B, T)
        if t.shape[1] == 1:
            mods, embedded = self.adaln_single(t.flatten(), dtype)  # (B, 6D), (B, D)
            mods, embedded = mods[:, None], embedded[:, None]
        else:  # per-token sigma takes few distinct values: embed each once, then gather
            values, index = torch.unique(t, return_inverse=True)
            mods, embedded = self.adaln_single(values, dtype)  # (U, 6D), (U, D)
            mods, embedded = mods[index], embedded[index]  # (B, T, 6D), (B, T, D)

        context = self.caption_projection(context)  # (B, S, D)
        rope = rope_tables(positions, cfg.dim, cfg.rope_theta, cfg.max_positions, dtype)

        for i, block in enumerate(self.transformer_blocks):
            skip = None if skip_mask is None else skip_mask[i].to(dtype).view(B, 1, 1)
            h = block(h, mods, context, context_bias, rope, skip, stg_mode)

        shift, scale = (self.scale_shift_table + embedded[:, :, None]).unbind(2)  # each (B, 1 or T, D)
        h = F.layer_norm(h, (cfg.dim,), eps=1e-6) * (1 + scale) + shift  # LayerNorm here, RMSNorm in blocks
        return self.proj_out(h)  # (B, T, C_out)
