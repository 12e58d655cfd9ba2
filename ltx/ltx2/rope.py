"""LTX-2 fractional-position rotary embedding (ltx-core `model/transformer/rope.py`), tables built once per call.

Reference: ltx-core 1.0.0 `precompute_freqs_cis` / `apply_rotary_emb`; digest §2.7 and §8 items 1-2.

Each token carries, per axis, a position or a `[start, end)` interval (the mid-point is used). For axis i the
position p_i becomes `2 * p_i / max_pos_i - 1` in [-1, 1] and is multiplied by F = dim // (2 * n_axes)
frequencies `(pi / 2) * theta ** linspace(0, 1, F)` (not the classic `theta ** (-2k / d)`). The F * n_axes
angles are ordered frequency-major, axis-minor: `[f0 t, f0 y, f0 x, f1 t, ...]`.

Two layouts rotate the channels with those angles:
- "split" (all released LTX-2 models): the angle vector is left-padded with `dim // 2 - F * n_axes` no-op
  angles (cos 1, sin 0; 2 for the 19B video stream), then cut into one contiguous chunk per head. Inside a
  head of width Dh the pairs are `(x[j], x[j + Dh/2])`.
- "interleaved" (the ltx-core default, unused by the checkpoints): every angle is repeated for the adjacent
  pair `(x[2j], x[2j + 1])` across the full width, with `dim % (2 * n_axes)` no-op channels in front.

Precision, as in the reference: the frequency grid is built on the CPU, in float64 (numpy) then rounded to
fp32 when `float64_grid`, or directly in fp32 otherwise. Mid-points and `2 * p / max_pos - 1` are computed in
the dtype the positions arrive in (bf16 in the official pipelines, whose rounding this reproduces), the
angles and their cos/sin in fp32 (the grid's dtype wins the promotion), and cos/sin are finally cast to the
activation dtype.

Shapes: B batch · T tokens · A position axes (3 video: seconds, pixel y, pixel x; 1 audio or time-only) ·
H heads · Dh head width · D = H * Dh.
positions: (B, A, T, 2) `[start, end)` bounds, or (B, A, T) plain positions.
split table: cos/sin (B, T, H, Dh/2); interleaved table: cos/sin (B, T, D).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

RopeLayout = Literal["split", "interleaved"]
ROPE_LAYOUTS: tuple[str, ...] = ("split", "interleaved")


@dataclass(frozen=True)
class RopeTable:
    """cos/sin of every rotated pair, shared by all blocks of one forward pass."""

    cos: Tensor  # split: (B, T, H, Dh/2); interleaved: (B, T, D)
    sin: Tensor
    layout: RopeLayout


@functools.lru_cache(maxsize=16)
def frequency_grid(theta: float, num_axes: int, dim: int, float64_grid: bool) -> Tensor:
    """The F = dim // (2 * num_axes) frequencies (pi/2) * theta ** linspace(0, 1, F): fp32, on the CPU."""
    n = dim // (2 * num_axes)
    if float64_grid:  # numpy float64 then one rounding to fp32, as the reference's generate_freq_grid_np
        grid = np.power(theta, np.linspace(0.0, 1.0, n, dtype=np.float64)) * math.pi / 2
        return torch.tensor(grid, dtype=torch.float32)
    exponents = torch.linspace(0.0, 1.0, n, dtype=torch.float32)
    return theta**exponents * math.pi / 2  # every step in fp32


def rope_angles(
    positions: Tensor, max_pos: tuple[int, ...] | list[int], theta: float, dim: int, float64_grid: bool,
    middle: bool = True,
) -> Tensor:
    """Angles (B, T, F * A) for positions (B, A, T, 2) or (B, A, T); see the module docstring for the order."""
    if positions.ndim == 4:
        # [start, end) bounds -> the mid-point (or the start), in the positions' own dtype
        positions = (positions[..., 0] + positions[..., 1]) / 2.0 if middle else positions[..., 0]
    num_axes = positions.shape[1]
    if num_axes != len(max_pos):
        raise ValueError(f"positions have {num_axes} axes but max_pos has {len(max_pos)} entries ({list(max_pos)})")
    frac = torch.stack([positions[:, i] / max_pos[i] for i in range(num_axes)], dim=-1)  # (B, T, A)
    grid = frequency_grid(float(theta), num_axes, dim, float64_grid).to(positions.device)  # (F,)
    angles = grid * (frac[..., None] * 2 - 1)  # (B, T, A, F); 2p/max - 1 in the positions' dtype, then fp32
    return angles.transpose(-1, -2).flatten(2)  # (B, T, F * A), frequency-major


def rope_table(
    positions: Tensor,
    *,
    dim: int,
    num_heads: int,
    max_pos: tuple[int, ...] | list[int],
    theta: float,
    layout: RopeLayout,
    float64_grid: bool,
    dtype: torch.dtype,
    middle: bool = True,
) -> RopeTable:
    """cos/sin tables for attention of width `dim` = num_heads * Dh, cast to `dtype` (the activation dtype)."""
    if layout not in ROPE_LAYOUTS:
        raise ValueError(f"rope layout {layout!r} is not supported (supported: {ROPE_LAYOUTS})")
    angles = rope_angles(positions, max_pos, theta, dim, float64_grid, middle)  # (B, T, n)
    B, T, n = angles.shape
    if layout == "split":
        cos, sin = angles.cos(), angles.sin()
        pad = dim // 2 - n  # leading no-op pairs: 2 for the 19B video stream (4096 // 6 * 3 = 2046 angles)
        if pad:
            cos = torch.cat([cos.new_ones(B, T, pad), cos], dim=-1)
            sin = torch.cat([sin.new_zeros(B, T, pad), sin], dim=-1)
        cos, sin = cos.view(B, T, num_heads, -1), sin.view(B, T, num_heads, -1)  # (B, T, H, Dh/2)
    else:
        cos, sin = angles.cos().repeat_interleave(2, dim=-1), angles.sin().repeat_interleave(2, dim=-1)
        pad = dim % (2 * positions.shape[1])  # leading no-op channels
        if pad:
            cos = torch.cat([cos.new_ones(B, T, pad), cos], dim=-1)
            sin = torch.cat([sin.new_zeros(B, T, pad), sin], dim=-1)  # (B, T, D)
    return RopeTable(cos.to(dtype), sin.to(dtype), layout)


def apply_rope(x: Tensor, table: RopeTable) -> Tensor:
    """Rotate x (B, T, H * Dh) by `table`; returns a contiguous (B, T, H * Dh) tensor."""
    if table.layout == "split":
        B, T, H, half = table.cos.shape
        xs = x.view(B, T, H, 2, half)  # [..., 0, :] first half of each head, [..., 1, :] second half
        cos, sin = table.cos.unsqueeze(-2), table.sin.unsqueeze(-2)  # (B, T, H, 1, Dh/2)
        out = xs * cos
        # out1 = x1 cos - x2 sin, out2 = x2 cos + x1 sin; addcmul as the reference (one rounding in bf16)
        out[..., :1, :].addcmul_(-sin, xs[..., 1:, :])
        out[..., 1:, :].addcmul_(sin, xs[..., :1, :])
        return out.view(B, T, H * 2 * half)
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, T, D/2) each
    rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)  # (B, T, D): (-x[2j+1], x[2j])
    return x * table.cos + rotated * table.sin
