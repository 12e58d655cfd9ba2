"""Building blocks that both model families use with the same math and the same checkpoint keys.

Module and parameter names are checkpoint keys. The 0.9.x DiT (`ltx.ltxv.transformer`) and the LTX-2 transformer
and text connectors (`ltx.ltx2.transformer`, `ltx.ltx2.text`) share the attention projections with the call into
the attention dispatch, the timestep embedding, adaLN-single, the caption projection and the MLP. The 0.9.x and
LTX-2 latent upsamplers (`ltx.ltxv.upsampler`, `ltx.ltx2.upsampler`) share their trunk and residual block. Each
family keeps what differs: its attention forward (RoPE, STG / perturbations, gates), its upsampling step.

Shapes: N flattened (batch x tokens) · D width · B batch · F, H, W latent grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.core.attention import attention

# ------------------------------------------------------------------------------------------ transformer pieces


class QKNormAttention(nn.Module):
    """Multi-head attention projections with q/k RMSNorm over all heads jointly (official `qk_norm="rms_norm"`),
    and `attend`, the call into the one attention dispatch (`ltx.core.attention.attention`).

    Keys: to_q, to_k, to_v, to_out.0, q_norm, k_norm. Each family's `Attention` subclasses this and writes its
    forward (its RoPE, STG / perturbations, gates). `attention_backend` is set from outside, for a whole model:
    `ltx.core.attention.set_attention_backend(model, name)`.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int, eps: float):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner)
        self.to_k = nn.Linear(context_dim, inner)
        self.to_v = nn.Linear(context_dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])  # a list only so the key is to_out.0.weight
        self.q_norm = nn.RMSNorm(inner, eps=eps)
        self.k_norm = nn.RMSNorm(inner, eps=eps)
        self.attention_backend = "sdpa"

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        """q: (B, T, inner), k/v: (B, S, inner), bias: additive, broadcastable to (B, H, T, S) -> (B, T, inner)."""
        B, T, inner = q.shape
        h, head_dim = self.heads, inner // self.heads
        out = attention(q.view(B, T, h, head_dim), k.view(B, -1, h, head_dim), v.view(B, -1, h, head_dim), bias,
                        self.attention_backend)  # (B, T, H, Dh)
        return out.reshape(B, T, inner)


class TimestepEmbedder(nn.Module):
    """256 sinusoidal features (cos first) of t in [0, 1000] -> MLP. The features are an fp32 island."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.linear_1 = nn.Linear(freq_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, t: Tensor, dtype: torch.dtype) -> Tensor:
        # t: (N,) already scaled to [0, 1000] -> (N, D) in `dtype`
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]  # (N, half)
        feats = torch.cat([args.cos(), args.sin()], dim=-1).to(dtype)  # (N, freq_dim)
        return self.linear_2(F.silu(self.linear_1(feats)))


class _Emb(nn.Module):
    # exists only for the checkpoint key *.emb.timestep_embedder.*
    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)


class AdaLNSingle(nn.Module):
    """One timestep embedding shared by all blocks (PixArt-alpha's adaLN-single): t (N,) -> the (N, rows * D)
    modulation values and the (N, D) embedding. The 0.9.x DiT uses 6 rows; LTX-2 uses 6, 9, 4, 2 or 1."""

    def __init__(self, dim: int, rows: int = 6):
        super().__init__()
        self.emb = _Emb(dim)
        self.linear = nn.Linear(dim, rows * dim)

    def forward(self, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        embedded = self.emb.timestep_embedder(t, dtype)  # (N, D)
        return self.linear(F.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    """Text-encoder width -> D: Linear, tanh GELU, Linear (PixArtAlphaTextProjection)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


class GELUProj(nn.Module):
    """Linear followed by tanh-approximated GELU (official `GELU(approximate="tanh")`, key `net.0.proj`)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """The transformer MLP: D -> hidden (tanh GELU) -> D; keys net.0.proj.*, net.2.* (no biases when bias=False,
    as LTX-2.5's video MLP)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        # net.1 is the official (parameter-free) dropout slot; Identity keeps the key indices net.0 / net.2
        self.net = nn.ModuleList([GELUProj(dim, hidden, bias), nn.Identity(), nn.Linear(hidden, dim, bias=bias)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


# ------------------------------------------------------------------------------------------ latent upsamplers


class ResBlock(nn.Module):
    """conv 3x3x3 -> GroupNorm(32) -> SiLU -> conv -> GroupNorm, then SiLU(x + input); channels kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(32, channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        # in place where nothing else holds the tensor: GroupNorm's backward does not need its output
        h = F.silu(self.norm1(self.conv1(x)), inplace=True)
        h = self.norm2(self.conv2(h))
        return F.silu(h.add_(x), inplace=True)


class UpsamplerTrunk(nn.Module):
    """The latent upsampler network of both families around a family's upsampling step:
    conv 3x3x3 C -> D, GroupNorm(32), SiLU, `num_blocks` ResBlocks, `upsampler`, `num_blocks` ResBlocks, conv D -> C.

    Raw (un-normalized) latents in and out. `upsampler` is registered between the two stages, where the official
    files have it; a subclass builds it and defines `_upsample(x)`: (B, D, F, H, W) -> (B, D, F2, H2, W2).
    """

    def __init__(self, in_channels: int, mid_channels: int, num_blocks: int, upsampler: nn.Module):
        super().__init__()
        C, D = in_channels, mid_channels
        self.in_channels = in_channels
        self.initial_conv = nn.Conv3d(C, D, 3, padding=1)
        self.initial_norm = nn.GroupNorm(32, D)
        self.res_blocks = nn.ModuleList(ResBlock(D) for _ in range(num_blocks))
        self.upsampler = upsampler
        self.post_upsample_res_blocks = nn.ModuleList(ResBlock(D) for _ in range(num_blocks))
        self.final_conv = nn.Conv3d(D, C, 3, padding=1)

    @torch.no_grad()
    def init_weights(self) -> UpsamplerTrunk:
        """PyTorch default init (the official models have no custom init); loading overwrites all of it."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.GroupNorm)):
                m.reset_parameters()
        return self

    def _upsample(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, latents: Tensor) -> Tensor:
        # latents: (B, C, F', H', W') raw -> raw, upsampled
        if latents.ndim != 5 or latents.shape[1] != self.in_channels:
            raise ValueError(
                f"upsampler takes (B, {self.in_channels}, F, H, W) raw latents, got shape {tuple(latents.shape)}"
            )
        x = F.silu(self.initial_norm(self.initial_conv(latents)), inplace=True)  # (B, D, F', H', W')
        for block in self.res_blocks:
            x = block(x)
        x = self._upsample(x)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        return self.final_conv(x)  # (B, C, ...)


class LatentStatistics(nn.Module):
    """Per-channel latent statistics of a video VAE, as buffers under the file's names (`per_channel_statistics.*`):
    `mean-of-means` and `std-of-means` map raw latents to the transformer's latent space; a file may hold more
    (kept for round trips, never read). `names` gives the buffers in the family's order."""

    def __init__(self, channels: int, names: tuple[str, ...]):
        super().__init__()
        for name in names:
            self.register_buffer(name, torch.empty(channels))

    @property
    def mean(self) -> Tensor:
        return self.get_buffer("mean-of-means")

    @property
    def std(self) -> Tensor:
        return self.get_buffer("std-of-means")

    def normalize(self, z: Tensor) -> Tensor:
        """Raw latents (B, C, F', H', W') -> normalized: (z - mean) / std per channel, in z's dtype."""
        return (z - self.mean.view(1, -1, 1, 1, 1).to(z)) / self.std.view(1, -1, 1, 1, 1).to(z)

    def denormalize(self, z: Tensor) -> Tensor:
        return z * self.std.view(1, -1, 1, 1, 1).to(z) + self.mean.view(1, -1, 1, 1, 1).to(z)
