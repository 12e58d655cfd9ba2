"""Image / video conditioning: first-frame images (I2V), keyframes at any frame, video extension.

Shapes: B batch · C latent channels · F, H, W latent grid · T tokens. Pixels are (B, 3, F_px, H_px, W_px) in
[-1, 1] with F_px = 8k + 1; latents are the VAE's *normalized* latents (per-channel statistics applied).
"8" here and below is the VAE's temporal factor (`scale[0]`, 8 for every released VAE and the demo VAE);
pixel sizes are latent sizes times its spatial factor (`scale[1:]`, 32 released, 8 demo).

What an item does depends on where it goes (official `LTXVideoPipeline.prepare_conditioning`):
- at frame 0 (an image, or a video = forward extension): its latents replace the first latent frames of
  the initial noise in place, lerp(noise, latents, strength); those tokens get conditioning mask = strength.
- at frame n > 0, an image (a keyframe): lerp(fresh noise, latents, strength) is added as *extra* tokens in
  front of the video tokens, positioned at the frame-0 time coordinate + n pixel frames, mask = strength;
  they are dropped before decoding (`num_prefix`).
- at frame n > 0, a video (backward extension / a middle clip; n must be a multiple of 8): its latent frames
  from the third on replace latent frames n/8 + 2 ... in place; its first two latent frames (which the causal
  VAE encodes differently) are added as extra tokens like a keyframe.
The sampler then gives a token with strength m the sigma min(sigma, 1 - m) and freezes it while
sigma >= 1 - m (ltx/sched/sample.py). `reinject_noise` is the official `image_cond_noise_scale`: each step,
strength-1 tokens are reset to their clean value plus scale * noise * sigma^2.

RNG order (for parity with the reference): the initial noise first (caller), then per item in order: the
VAE encode (its posterior sample uses the global RNG), then, for extra tokens, their noise from `generator`
drawn in (B, C, F, H, W) order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ltx.patchify import VAE_SCALE, Scale, patchify, pixel_grid, pixels_to_positions

NUM_PREFIX_LATENT_FRAMES = 2  # latent frames of a non-first video handled as extra tokens (official default)
HARD_EPS = 1e-6  # mask > 1 - eps counts as hard (strength-1) conditioning


@dataclass
class ConditioningItem:
    """pixels (B or 1, 3, F, H, W) in [-1, 1] with F = 8k + 1, placed at pixel frame `frame`."""

    pixels: Tensor
    frame: int = 0
    strength: float = 1.0


@dataclass
class ConditionedTokens:
    x: Tensor  # (B, T, C) initial tokens: extra (prefix) tokens first, then the video grid
    positions: Tensor  # (B, 3, T) float32 (seconds, px, px)
    mask: Tensor | None  # (B, T) conditioning strength per token; None without conditioning
    num_prefix: int  # extra tokens in front, removed before decoding


def check_items(items: Sequence[ConditioningItem], num_frames: int, temporal: int = VAE_SCALE[0]) -> None:
    """Validate frame indices and lengths before anything is encoded (errors name the valid range).

    temporal: the VAE's temporal compression (clips need temporal * k + 1 frames)."""
    t = temporal
    for i, it in enumerate(items):
        if it.pixels.ndim != 5 or it.pixels.shape[1] != 3:
            raise ValueError(f"conditioning item {i}: pixels must be (B, 3, F, H, W), got {tuple(it.pixels.shape)}")
        n = it.pixels.shape[2]
        if (n - 1) % t:
            raise ValueError(f"conditioning item {i}: {n} frames; a conditioning clip needs {t}k + 1 frames "
                             f"(nearest: {max(1, (n - 1) // t * t + 1)})")
        if not 0.0 <= it.strength <= 1.0:
            raise ValueError(f"conditioning item {i}: strength {it.strength} is outside [0, 1]")
        if not 0 <= it.frame <= num_frames - n:
            raise ValueError(f"conditioning item {i}: frame {it.frame} with {n} frame(s) does not fit a "
                             f"{num_frames}-frame video (valid start frames: 0..{num_frames - n})")
        if it.frame > 0 and n > 1 and it.frame % t:
            raise ValueError(f"conditioning item {i}: a video placed after frame 0 must start at a multiple of "
                             f"{t}, got {it.frame} (nearest: {round(it.frame / t) * t})")


def resize_pixels(pixels: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of every frame to (height, width) (align_corners=False), as the official pipeline."""
    if pixels.shape[-2:] == (height, width):
        return pixels
    B, _, n = pixels.shape[:3]
    flat = pixels.transpose(1, 2).flatten(0, 1)  # (B F, 3, H, W)
    flat = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return flat.unflatten(0, (B, n)).transpose(1, 2)


def apply_conditioning(
    init: Tensor,
    items: Sequence[ConditioningItem],
    encode: Callable[[Tensor], Tensor],
    *,
    num_frames: int,
    fps: float,
    causal: bool,
    generator: torch.Generator | None,
    scale: Scale = VAE_SCALE,
) -> ConditionedTokens:
    """Merge conditioning items into the initial latents init (B, C, F, H, W) and patchify.

    encode: pixels (B, 3, F_px, H_px, W_px) -> normalized latents (B, C, F, H, W).
    scale: the VAE's (temporal, spatial, spatial) compression.
    """
    B, C, Fl, Hl, Wl = init.shape
    height, width = Hl * scale[1], Wl * scale[2]
    check_items(items, num_frames, scale[0])
    init = init.clone()
    mask = torch.zeros(B, Fl, Hl, Wl, dtype=torch.float32, device=init.device)
    extra_x, extra_coords, extra_mask = [], [], []
    for it in items:
        lat = encode(resize_pixels(it.pixels, height, width)).to(device=init.device, dtype=init.dtype)
        f_l = lat.shape[2]
        if it.frame == 0:  # replace the first latent frames in place
            init[:, :, :f_l] = torch.lerp(init[:, :, :f_l], lat, it.strength)
            mask[:, :f_l] = it.strength
            continue
        if f_l > 1:  # a later video: all but its first two latent frames replace frames in place
            p = NUM_PREFIX_LATENT_FRAMES
            if f_l < p:
                raise ValueError(f"a video placed after frame 0 needs >= {p} latent frames ({(p - 1) * scale[0] + 1} "
                                 "pixel frames)")
            start = it.frame // scale[0] + p
            if f_l > p:
                init[:, :, start : start + f_l - p] = torch.lerp(init[:, :, start : start + f_l - p], lat[:, :, p:],
                                                                 it.strength)
                mask[:, start : start + f_l - p] = it.strength
            lat = lat[:, :, :p]
        noise = torch.randn(lat.shape, generator=generator, device=lat.device, dtype=lat.dtype)
        lat = torch.lerp(noise, lat, it.strength)
        extra_x.append(patchify(lat))  # (b, f_l H W, C)
        extra_coords.append(pixel_grid(lat.shape[2], Hl, Wl, batch=lat.shape[0], causal=causal,
                                       frame_offset=it.frame, scale=scale, device=init.device))
        extra_mask.append(torch.full(extra_x[-1].shape[:2], it.strength, dtype=torch.float32, device=init.device))
    x = patchify(init)
    coords = pixel_grid(Fl, Hl, Wl, batch=B, causal=causal, scale=scale, device=init.device)
    if not items:
        return ConditionedTokens(x, pixels_to_positions(coords, fps), None, 0)
    token_mask = mask.flatten(1)  # (B, T) in token order (f, h, w)
    num_prefix = sum(e.shape[1] for e in extra_x)
    if extra_x:
        x = torch.cat([*[e.expand(B, -1, -1) for e in extra_x], x], dim=1)
        coords = torch.cat([*[c.expand(B, -1, -1) for c in extra_coords], coords], dim=2)
        token_mask = torch.cat([*[m.expand(B, -1) for m in extra_mask], token_mask], dim=1)
    return ConditionedTokens(x, pixels_to_positions(coords, fps), token_mask, num_prefix)


def reinject_noise(x: Tensor, clean: Tensor, mask: Tensor, sigma: Tensor, scale: float,
                   generator: torch.Generator | None) -> Tensor:
    """Reset hard-conditioned tokens (mask ~ 1) to clean + scale * noise * sigma^2 (official
    `image_cond_noise_scale`); the noise (B, T, C) is drawn every call, hard tokens or not."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    hard = (mask > 1.0 - HARD_EPS)[..., None]
    return torch.where(hard, clean + scale * noise * sigma**2, x)
