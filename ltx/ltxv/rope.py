"""LTX-Video rotary position embedding over the full model width (not per head).

positions: (B, 3, T) float = (seconds, pixel_y, pixel_x) of each token (see `ltx.ltxv.patchify.token_positions`).
Each coordinate is divided by its `max_positions` entry, mapped to [-1, 1], and multiplied by F = D // 6
frequencies 10000^(k/(F-1)) * pi/2. The 3F angles are interleaved per frequency (t, y, x, t, y, x, ...) and
each angle rotates one adjacent channel pair (2p, 2p+1). The D % 6 leftover channels come *first* and are not
rotated. This is the official `Transformer3DModel.precompute_freqs_cis` + `Attention.apply_rotary_emb`.

We keep one angle per channel pair, (B, T, D/2), instead of the official duplicated (B, T, D) tables.
The angles are computed in float32 (an fp32 island: pixel coordinates up to 2048 need it); `rope_tables`
then casts cos/sin to the model dtype, as the official model does, so bf16 rotations round like the reference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rope_tables(
    positions: Tensor, dim: int, theta: float, max_positions: tuple[int, int, int], dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos and sin of every channel pair's angle: each (B, T, dim // 2) in `dtype`."""
    num_freqs = dim // 6
    device = positions.device
    freqs = theta ** torch.linspace(math.log(1, theta), math.log(theta, theta), num_freqs, device=device)
    freqs = freqs * (math.pi / 2)  # (F,) fp32
    # divide (not multiply by 1/max): angles reach 10^4 * pi/2, so one ulp here moves them by ~1e-3
    max_pos = torch.tensor(max_positions, device=device, dtype=torch.float32)
    frac = positions.float().transpose(1, 2) / max_pos  # (B, T, 3) in [0, 1] for in-range positions
    angles = freqs[:, None] * (frac[..., None, :] * 2 - 1)  # (B, T, F, 3): per frequency, then t/y/x
    angles = angles.flatten(2)  # (B, T, 3F)
    cos, sin = angles.cos(), angles.sin()
    pad = (dim % 6) // 2  # leading channel pairs that are not rotated (cos 1, sin 0)
    if pad:
        cos = torch.cat([cos.new_ones(*cos.shape[:2], pad), cos], dim=-1)
        sin = torch.cat([sin.new_zeros(*sin.shape[:2], pad), sin], dim=-1)
    return cos.to(dtype), sin.to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent channel pairs of x (B, T, D) by the angles in cos/sin (B, T, D/2)."""
    x_even, x_odd = x.unflatten(-1, (-1, 2)).unbind(-1)  # each (B, T, D/2)
    out_even = x_even * cos - x_odd * sin
    out_odd = x_odd * cos + x_even * sin
    return torch.stack((out_even, out_odd), dim=-1).flatten(-2)  # (B, T, D)
