"""Latent video <-> transformer tokens, and each token's position in (seconds, pixels, pixels).

Shapes: B batch · C latent channels · F, H, W latent frames / rows / columns · T = F·H·W tokens.
Patch size is 1 (every released checkpoint): a token is one latent voxel, order (frame, row, column),
channels last. This is the official `SymmetricPatchifier(patch_size=1)`.

Positions are what the transformer's RoPE consumes: (B, 3, T) float32 = (time in seconds, y in pixels,
x in pixels) of each latent voxel's top-left corner. A latent voxel spans `scale` = (temporal, spatial,
spatial) pixel frames / rows / columns: the VAE's own compression factors (`VideoVAE.cfg.temporal_factor`,
`spatial_factor`; `VAE_SCALE = (8, 32, 32)` for every released VAE, (8, 8, 8) for the demo VAE). With
`causal` (0.9.5+ checkpoints, `DiTConfig.causal_temporal_positioning`) the causal VAE's first latent frame
covers a single pixel frame, so pixel frame f becomes max(0, f + 1 - temporal): with 8x, latent frames
0, 1, 2 -> pixel frames 0, 1, 9. `frame_offset` (pixel frames, applied after that fix) places keyframe
tokens at their target frame. Seconds = pixel frame * (1 / fps), computed in float32 exactly as the
official pipeline does (multiplication by the reciprocal, so positions match it bit for bit).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

VAE_SCALE = (8, 32, 32)  # pixel frames, rows, columns per latent voxel (all released VAEs)
Scale = tuple[int, int, int]  # (temporal, spatial, spatial) compression of a VAE


def patchify(latents: Tensor) -> Tensor:
    """(B, C, F, H, W) -> (B, F·H·W, C)."""
    return rearrange(latents, "b c f h w -> b (f h w) c")


def unpatchify(tokens: Tensor, frames: int, height: int, width: int) -> Tensor:
    """(B, F·H·W, C) -> (B, C, F, H, W)."""
    if tokens.shape[1] != frames * height * width:
        raise ValueError(f"{tokens.shape[1]} tokens do not form a {frames}x{height}x{width} latent grid")
    return rearrange(tokens, "b (f h w) c -> b c f h w", f=frames, h=height, w=width)


def pixel_grid(
    frames: int, height: int, width: int, *, batch: int = 1, causal: bool, frame_offset: int = 0,
    scale: Scale = VAE_SCALE, device: torch.device | str | None = None,
) -> Tensor:
    """Integer pixel coordinates (frame, y, x) of every token of a latent grid: (B, 3, F·H·W) int64."""
    f, h, w = torch.meshgrid(
        torch.arange(frames, device=device), torch.arange(height, device=device),
        torch.arange(width, device=device), indexing="ij",
    )
    factors = torch.tensor(scale, device=device)[:, None]
    coords = torch.stack([f.flatten(), h.flatten(), w.flatten()]) * factors  # (3, T) pixels
    if causal:  # the first latent frame holds one pixel frame, later ones `scale[0]`
        coords[0] = (coords[0] + 1 - scale[0]).clamp(min=0)
    coords[0] += frame_offset
    return coords[None].expand(batch, 3, -1).clone()


def pixels_to_positions(coords: Tensor, fps: float) -> Tensor:
    """Integer pixel coordinates (B, 3, T) -> float32 (seconds, px, px)."""
    pos = coords.to(torch.float32)
    pos[:, 0] = pos[:, 0] * (1.0 / fps)  # reciprocal, as the official pipeline (bit-exact positions)
    return pos


def token_positions(
    frames: int, height: int, width: int, *, fps: float, causal: bool, batch: int = 1, frame_offset: int = 0,
    scale: Scale = VAE_SCALE, device: torch.device | str | None = None,
) -> Tensor:
    """Positions (B, 3, F·H·W) float32 in (seconds, px, px) of a latent grid's tokens (see the file docstring)."""
    coords = pixel_grid(frames, height, width, batch=batch, causal=causal, frame_offset=frame_offset, scale=scale,
                        device=device)
    return pixels_to_positions(coords, fps)
